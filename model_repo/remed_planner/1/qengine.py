"""The planner's quantised engine: block-quantised weights, one native call per forward step.

Same interface as `engine.Engine` (slots, reserve, copy_prefix, release, shrink, prefill,
decode), so `scheduler.Scheduler` drives either. The arithmetic lives in
`model_repo/remed_planner/native/planner_kernels.c` (its header says why and how), compiled
once into `.cache/native/` by `make setup` (`native/build.py`); this module quantises the
weights at load time and hands the kernels pointers into numpy buffers.

Weight formats (`weights` in config.pbtxt):
- `q8`: every matrix Q8_0 (int8, one fp16 scale per 32 weights): ~1.06 byte per weight;
- `q4`: the layers' matrices Q4_1 (4-bit, fp16 scale and minimum per 32 weights, ~0.63 byte),
  the embedding / lm_head (tied, 28M of the 134M weights) Q8_0, since the next-token choice
  is read straight off it.

How it deviates from the fp32 engine: weights are rounded to those grids, and so are the
activations entering every matmul (int8 per block of 32, like ggml's Q8 activations), so the
logits differ from HF's by quantisation noise and greedy output can differ from the fp32
path's after a near tie. Keys and values are cached in fp16 (a batched step reads every
request's whole cache, so its size is memory traffic); norms, rope, softmax and attention
arithmetic are fp32.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from engine import CACHE_GROW_TOKENS, LlamaShape, SlotCache, rope_tables

QK = 32
GROUP = 16  # rows stored together (GROUP in planner_kernels.c)
Q8_0, Q4_1 = 1, 2
FORMATS = ("q8", "q4")
PREFILL_CHUNK_TOKENS = 256  # bounds the scratch memory of one native call

_p = ctypes.c_void_p


class RpMatrix(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int32),
        ("rows", ctypes.c_int32),
        ("cols", ctypes.c_int32),
        ("q", _p),
        ("d", _p),
        ("m", _p),
        ("wsum", _p),
    ]


class RpModel(ctypes.Structure):
    _fields_ = [
        ("layers", ctypes.c_int32),
        ("hidden", ctypes.c_int32),
        ("heads", ctypes.c_int32),
        ("kv_heads", ctypes.c_int32),
        ("head_dim", ctypes.c_int32),
        ("inter", ctypes.c_int32),
        ("vocab", ctypes.c_int32),
        ("slots", ctypes.c_int32),
        ("capacity", ctypes.c_int32),
        ("threads", ctypes.c_int32),
        ("eps", ctypes.c_float),
        ("cos", _p),
        ("sin", _p),
        ("norm1", _p),
        ("norm2", _p),
        ("final_norm", _p),
        ("qkv", ctypes.POINTER(RpMatrix)),
        ("o", ctypes.POINTER(RpMatrix)),
        ("gate_up", ctypes.POINTER(RpMatrix)),
        ("down", ctypes.POINTER(RpMatrix)),
        ("embed", ctypes.POINTER(RpMatrix)),
        ("lm_head", ctypes.POINTER(RpMatrix)),
        ("k_cache", _p),
        ("v_cache", _p),
    ]


def load_kernels(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    i64, i32, f32p = ctypes.c_int64, ctypes.c_int, ctypes.POINTER(ctypes.c_float)
    lib.rp_quantize_q8_0.argtypes = [_p, i32, i32, _p, _p, _p]
    lib.rp_quantize_q8_0.restype = None
    lib.rp_quantize_q4_1.argtypes = [_p, i32, i32, _p, _p, _p]
    lib.rp_quantize_q4_1.restype = None
    lib.rp_dequantize_row.argtypes = [ctypes.POINTER(RpMatrix), i64, _p]
    lib.rp_dequantize_row.restype = None
    lib.rp_matmul.argtypes = [ctypes.POINTER(RpMatrix), _p, i32, _p, i32]
    lib.rp_matmul.restype = None
    lib.rp_forward.argtypes = [ctypes.POINTER(RpModel), i32, _p, _p, _p, _p, i32, f32p]
    lib.rp_forward.restype = ctypes.c_int
    lib.rp_isa.argtypes = []
    lib.rp_isa.restype = ctypes.c_char_p
    return lib


def kernel_isa(lib: ctypes.CDLL) -> str:
    """The instruction set the kernels were built for (native/build.py's ISAS)."""
    return str(lib.rp_isa().decode())


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


@dataclass
class QMatrix:
    """A [rows, cols] matrix in Q8_0 or Q4_1; owns the buffers `struct` points into."""

    kind: int
    rows: int
    cols: int
    q: np.ndarray
    d: np.ndarray
    m: np.ndarray | None  # Q4_1: the blocks' minima
    wsum: np.ndarray | None  # Q8_0: -128 * the blocks' sums of weights (rp_matrix in the kernels)

    @classmethod
    def quantize(cls, lib: ctypes.CDLL, w: np.ndarray, kind: int) -> QMatrix:
        w = np.ascontiguousarray(w, dtype=np.float32)
        rows, cols = w.shape
        if cols % QK:
            raise ValueError(f"matrix columns ({cols}) must be a multiple of {QK}")
        # Rows are stored in groups of GROUP, the last one padded with zero rows.
        stored = -(-rows // GROUP) * GROUP * cols
        d = np.empty(stored // QK, np.uint16)
        if kind == Q8_0:
            q = np.empty(stored, np.int8)
            wsum = np.empty(stored // QK, np.int32)
            lib.rp_quantize_q8_0(_ptr(w), rows, cols, _ptr(q), _ptr(d), _ptr(wsum))
            return cls(kind, rows, cols, q, d, None, wsum)
        q = np.empty(stored // 2, np.uint8)
        m = np.empty(stored // QK, np.uint16)
        lib.rp_quantize_q4_1(_ptr(w), rows, cols, _ptr(q), _ptr(d), _ptr(m))
        return cls(kind, rows, cols, q, d, m, None)

    def struct(self) -> RpMatrix:
        return RpMatrix(
            self.kind,
            self.rows,
            self.cols,
            _ptr(self.q),
            _ptr(self.d),
            _ptr(self.m),
            _ptr(self.wsum),
        )

    @property
    def nbytes(self) -> int:
        extra = [a.nbytes for a in (self.m, self.wsum) if a is not None]
        return self.q.nbytes + self.d.nbytes + sum(extra)


def _matrices(lib: ctypes.CDLL, mats: list[QMatrix]) -> Any:
    return (RpMatrix * len(mats))(*(m.struct() for m in mats))


class QuantEngine(SlotCache):
    """Quantised weights, rope tables and the fp16 KV cache of `slots` concurrent sequences."""

    def __init__(
        self, hf_model: Any, slots: int, *, lib: ctypes.CDLL, weights: str, threads: int
    ) -> None:
        if weights not in FORMATS:
            raise ValueError(f"weights must be one of {', '.join(FORMATS)}, got {weights!r}")
        self.shape = s = LlamaShape.from_hf(hf_model.config)
        if getattr(hf_model.config, "attention_bias", False) or getattr(
            hf_model.config, "mlp_bias", False
        ):
            raise ValueError("biased attention/MLP projections are not supported by the engine")
        if s.head_dim % 8:
            raise ValueError(f"head_dim {s.head_dim} is not a multiple of 8 (AVX2 lanes)")
        self.lib = lib
        self.weights = weights
        layer_kind = Q4_1 if weights == "q4" else Q8_0
        sd = hf_model.state_dict()

        def f32(name: str) -> np.ndarray:
            # A copy: a view would keep HF's tensor, and with it the mmapped checkpoint, alive.
            return np.array(sd[name].detach().float().numpy(), dtype=np.float32, copy=True)

        def quant(names: list[str], kind: int) -> QMatrix:
            return QMatrix.quantize(lib, np.concatenate([f32(n) for n in names], axis=0), kind)

        embed = quant(["model.embed_tokens.weight"], Q8_0)
        lm_name = "lm_head.weight"
        tied = lm_name not in sd or bool((sd[lm_name] == sd["model.embed_tokens.weight"]).all())
        lm_head = embed if tied else quant([lm_name], Q8_0)
        qkv, o, gate_up, down = [], [], [], []
        for i in range(s.layers):
            p = f"model.layers.{i}."
            qkv.append(quant([p + f"self_attn.{n}_proj.weight" for n in "qkv"], layer_kind))
            o.append(quant([p + "self_attn.o_proj.weight"], layer_kind))
            gate_up.append(
                quant([p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"], layer_kind)
            )
            down.append(quant([p + "mlp.down_proj.weight"], layer_kind))
        self.intermediate = down[0].cols
        self.norm1 = np.stack(
            [f32(f"model.layers.{i}.input_layernorm.weight") for i in range(s.layers)]
        )
        self.norm2 = np.stack(
            [f32(f"model.layers.{i}.post_attention_layernorm.weight") for i in range(s.layers)]
        )
        self.final_norm = f32("model.norm.weight")
        cos, sin = rope_tables(s)
        self.cos = np.ascontiguousarray(cos.numpy())
        self.sin = np.ascontiguousarray(sin.numpy())
        self._owned = [embed, lm_head, *qkv, *o, *gate_up, *down]
        self.weight_bytes = sum(m.nbytes for m in {id(m): m for m in self._owned}.values())
        self._qkv, self._o = _matrices(lib, qkv), _matrices(lib, o)
        self._gate_up, self._down = _matrices(lib, gate_up), _matrices(lib, down)
        self._embed, self._lm_head = embed.struct(), lm_head.struct()

        self.slots = slots
        self.capacity = 0
        self.k_cache = np.zeros((0,), np.float16)
        self.v_cache = np.zeros((0,), np.float16)
        self.lengths = [0] * slots
        self.model = RpModel(
            layers=s.layers,
            hidden=s.hidden,
            heads=s.heads,
            kv_heads=s.kv_heads,
            head_dim=s.head_dim,
            inter=self.intermediate,
            vocab=lm_head.rows,
            slots=slots,
            capacity=0,
            threads=max(1, threads),
            eps=s.rms_eps,
            cos=_ptr(self.cos),
            sin=_ptr(self.sin),
            norm1=_ptr(self.norm1),
            norm2=_ptr(self.norm2),
            final_norm=_ptr(self.final_norm),
            qkv=self._qkv,
            o=self._o,
            gate_up=self._gate_up,
            down=self._down,
            embed=ctypes.pointer(self._embed),
            lm_head=ctypes.pointer(self._lm_head),
        )
        self.vocab = lm_head.rows
        self._grow(CACHE_GROW_TOKENS)

    # -- cache (storage; the policy is SlotCache's) --------------------------------------

    def _resize(self, cap: int) -> None:
        s = self.shape
        shape = (s.layers, self.slots, s.kv_heads, cap, s.head_dim)
        new_k, new_v = np.zeros(shape, np.float16), np.zeros(shape, np.float16)
        keep = min(cap, self.capacity)
        if keep:
            new_k[:, :, :, :keep] = self.k_cache[:, :, :, :keep]
            new_v[:, :, :, :keep] = self.v_cache[:, :, :, :keep]
        self.k_cache, self.v_cache, self.capacity = new_k, new_v, cap
        self.model.k_cache, self.model.v_cache = _ptr(new_k), _ptr(new_v)
        self.model.capacity = cap

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        for cache in (self.k_cache, self.v_cache):
            cache[:, dst, :, :length] = cache[:, src, :, :length]
        self.lengths[dst] = length

    # -- forward ----------------------------------------------------------------------------

    def _forward(
        self, slots: list[int], tokens: list[int], positions: list[int], logit_rows: list[int]
    ) -> np.ndarray:
        if max(positions) >= self.capacity:
            raise ValueError(f"position {max(positions)} is beyond the cache ({self.capacity})")
        tok = np.asarray(tokens, np.int32)
        if tok.min() < 0 or tok.max() >= self.vocab:
            raise ValueError(
                f"token ids must be in [0, {self.vocab}), got {tok.min()}..{tok.max()}"
            )
        slot_arr = np.asarray(slots, np.int32)
        pos = np.asarray(positions, np.int32)
        rows = np.asarray(logit_rows, np.int32)
        logits = np.empty((len(logit_rows), self.vocab), np.float32)
        rc = self.lib.rp_forward(
            ctypes.byref(self.model),
            len(tokens),
            _ptr(tok),
            _ptr(slot_arr),
            _ptr(pos),
            _ptr(rows),
            len(logit_rows),
            logits.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
        )
        if rc != 0:
            raise MemoryError("the planner kernels could not allocate their scratch memory")
        return logits

    def prefill(self, slot: int, tokens: list[int]) -> np.ndarray:
        """Run `tokens` after what the slot already holds; returns the last position's logits."""
        start = self.lengths[slot]
        total = start + len(tokens)
        self._grow(total)
        logits = np.empty((0, self.vocab), np.float32)
        for c in range(0, len(tokens), PREFILL_CHUNK_TOKENS):
            chunk = tokens[c : c + PREFILL_CHUNK_TOKENS]
            first = start + c
            last = c + len(chunk) >= len(tokens)
            logits = self._forward(
                [slot] * len(chunk),
                chunk,
                list(range(first, first + len(chunk))),
                [len(chunk) - 1] if last else [],
            )
        self.lengths[slot] = total
        return logits[0]

    def decode(self, slots: list[int], tokens: list[int]) -> np.ndarray:
        """One token for each of `slots`; returns logits [len(slots), vocab]."""
        positions = [self.lengths[i] for i in slots]
        logits = self._forward(slots, tokens, positions, list(range(len(slots))))
        for i in slots:
            self.lengths[i] += 1
        return logits
