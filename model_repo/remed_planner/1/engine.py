"""A lean Llama decode loop for the planner, with a slot-based KV cache for continuous batching.

Why not `transformers.generate`: on this CPU, SmolLM2-135M spends most of each decoded token in
framework overhead (module hooks, cache objects, logits processors, mask building), not in
arithmetic. This module runs the same maths as `LlamaForCausalLM` in fp32 with plain tensor ops:

- q/k/v and gate/up projections are fused into one matmul each (fewer, larger kernels);
- the KV cache is one preallocated tensor per layer with a row ("slot") per in-flight request,
  so decoding N requests is one forward pass of N tokens (continuous batching: a request joins
  or leaves the batch between any two steps);
- only the last position's logits are computed during prefill;
- a request's prompt may reuse the cached keys/values of an earlier prompt that starts with the
  same tokens (prefix caching: the chat template's system prompt is shared by every request).

How it deviates from HF `generate`: no logits processors besides temperature; greedy takes
`argmax` of the fp32 logits exactly as HF does. Batched decode multiplies several rows at once,
and the fused projections are one matmul where HF does three; BLAS may sum in a different order
for those shapes, so logits can differ from HF's in the last bits. Greedy output matched HF's
token for token on the test prompts (tests/unit/test_planner_engine.py); a near-tie between the
top two logits could in principle resolve differently.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

CACHE_GROW_TOKENS = 256  # the cache grows in steps of this many positions per slot


@dataclass(frozen=True)
class LlamaShape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    rms_eps: float
    rope_theta: float
    max_positions: int

    @classmethod
    def from_hf(cls, config: Any) -> LlamaShape:
        rope = getattr(config, "rope_parameters", None) or {}
        theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"rope type {rope['rope_type']!r} is not supported by the engine")
        heads = config.num_attention_heads
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            heads=heads,
            kv_heads=config.num_key_value_heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            vocab=config.vocab_size,
            rms_eps=config.rms_norm_eps,
            rope_theta=float(theta),
            max_positions=config.max_position_embeddings,
        )


@dataclass
class Layer:
    norm1: torch.Tensor
    qkv: torch.Tensor  # [(heads + 2 * kv_heads) * head_dim, hidden]
    o: torch.Tensor
    norm2: torch.Tensor
    gate_up: torch.Tensor  # [2 * intermediate, hidden]
    down: torch.Tensor


class SlotCache(ABC):
    """The KV cache's slot bookkeeping and growth policy, shared by both engines: one slot per
    concurrent request; capacity grows in CACHE_GROW_TOKENS steps up to the model's context
    and shrinks back once the long requests have left. Subclasses own the storage
    (`_resize(cap)`, `copy_prefix`)."""

    shape: LlamaShape
    slots: int
    capacity: int
    lengths: list[int]

    @abstractmethod
    def _resize(self, cap: int) -> None:
        """Reallocate the cache to `cap` positions per slot, keeping what the slots hold."""

    def _grow(self, needed: int) -> None:
        if needed > self.capacity:
            self._resize(self._rounded(needed))

    def _rounded(self, needed: int) -> int:
        return min(self.shape.max_positions, -(-needed // CACHE_GROW_TOKENS) * CACHE_GROW_TOKENS)

    def shrink(self) -> None:
        """Give back the memory a long request grew the cache to, keeping what slots hold."""
        needed = max(CACHE_GROW_TOKENS, *self.lengths)
        if needed + CACHE_GROW_TOKENS <= self.capacity:
            self._resize(self._rounded(needed))

    def reserve(self, slot: int, total_tokens: int) -> None:
        """Make room for `total_tokens` positions in `slot` before its request starts."""
        if total_tokens > self.shape.max_positions:
            raise ValueError(
                f"{total_tokens} tokens exceed the model's context of {self.shape.max_positions}"
            )
        self.lengths[slot] = 0
        self._grow(total_tokens)

    def release(self, slot: int) -> None:
        self.lengths[slot] = 0


class Engine(SlotCache):
    """Weights, rope tables and the KV cache of `slots` concurrent sequences."""

    def __init__(self, hf_model: Any, slots: int) -> None:
        self.shape = s = LlamaShape.from_hf(hf_model.config)
        if getattr(hf_model.config, "attention_bias", False) or getattr(
            hf_model.config, "mlp_bias", False
        ):
            raise ValueError("biased attention/MLP projections are not supported by the engine")
        # Copies, not views: HF's parameters may be views of the mmapped checkpoint file, which
        # would otherwise stay mapped (and resident) for as long as the engine lives.
        sd = {k: v.detach().to(torch.float32, copy=True) for k, v in hf_model.state_dict().items()}
        self.embed = sd["model.embed_tokens.weight"].contiguous()
        # Tied embeddings: the checkpoint's lm_head is the embedding matrix; share its memory.
        lm_head = sd.get("lm_head.weight")
        tied = lm_head is None or torch.equal(lm_head, self.embed)
        self.lm_head = self.embed if tied else lm_head.contiguous()
        self.final_norm = sd["model.norm.weight"]
        self.layers = []
        for i in range(s.layers):
            p = f"model.layers.{i}."
            self.layers.append(
                Layer(
                    norm1=sd[p + "input_layernorm.weight"],
                    qkv=torch.cat(
                        [sd[p + f"self_attn.{n}_proj.weight"] for n in "qkv"], dim=0
                    ).contiguous(),
                    o=sd[p + "self_attn.o_proj.weight"].contiguous(),
                    norm2=sd[p + "post_attention_layernorm.weight"],
                    gate_up=torch.cat(
                        [sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]], dim=0
                    ).contiguous(),
                    down=sd[p + "mlp.down_proj.weight"].contiguous(),
                )
            )
        self.intermediate = self.layers[0].down.shape[1]
        self.cos, self.sin = rope_tables(s)
        self.slots = slots
        self.capacity = 0
        self.k_cache: list[torch.Tensor] = []
        self.v_cache: list[torch.Tensor] = []
        self.lengths = [0] * slots
        self._grow(CACHE_GROW_TOKENS)

    # -- cache ------------------------------------------------------------------------------

    def _resize(self, cap: int) -> None:
        s = self.shape
        shape = (self.slots, s.kv_heads, cap, s.head_dim)
        new_k = [torch.zeros(shape) for _ in range(s.layers)]
        new_v = [torch.zeros(shape) for _ in range(s.layers)]
        keep = min(cap, self.capacity)
        if keep:
            for old, new in zip(self.k_cache + self.v_cache, new_k + new_v, strict=True):
                new[:, :, :keep].copy_(old[:, :, :keep])
        self.k_cache, self.v_cache, self.capacity = new_k, new_v, cap

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Reuse the first `length` cached positions of slot `src` as slot `dst`'s prefix."""
        for cache in (*self.k_cache, *self.v_cache):
            cache[dst, :, :length].copy_(cache[src, :, :length])
        self.lengths[dst] = length

    # -- forward ----------------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, slot: int, tokens: list[int]) -> torch.Tensor:
        """Run `tokens` after what the slot already holds; returns the last position's logits."""
        s = self.shape
        start = self.lengths[slot]
        n = len(tokens)
        positions = torch.arange(start, start + n)
        x = self.embed[torch.tensor(tokens)][None]  # [1, n, hidden]
        cos, sin = self.cos[positions][None, None], self.sin[positions][None, None]
        total = start + n
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(x, layer, cos, sin)  # [1, heads, n, d]
            self.k_cache[i][slot, :, start:total] = k[0]
            self.v_cache[i][slot, :, start:total] = v[0]
            keys = self.k_cache[i][slot : slot + 1, :, :total]
            values = self.v_cache[i][slot : slot + 1, :, :total]
            # Causal over the new tokens, full over the cached prefix.
            mask = None
            if start:
                mask = torch.ones(n, total, dtype=torch.bool).tril(diagonal=start)
            attn = F.scaled_dot_product_attention(
                q, keys, values, attn_mask=mask, is_causal=not start, enable_gqa=True
            )
            x = self._after_attention(x, attn, layer)
        self.lengths[slot] = total
        last = _rms_norm(x[:, -1:], self.final_norm, s.rms_eps)
        return F.linear(last, self.lm_head)[0, 0]

    @torch.inference_mode()
    def decode(self, slots: list[int], tokens: list[int]) -> torch.Tensor:
        """One token for each of `slots`; returns logits [len(slots), vocab]."""
        s = self.shape
        b = len(slots)
        positions = torch.tensor([self.lengths[i] for i in slots])
        x = self.embed[torch.tensor(tokens)][:, None]  # [b, 1, hidden]
        cos, sin = self.cos[positions][:, None, None], self.sin[positions][:, None, None]
        total = int(positions.max()) + 1
        slot_idx = torch.tensor(slots)
        contiguous = slots == list(range(slots[0], slots[0] + b))
        mask = None
        if b > 1 and int(positions.min()) + 1 != total:
            # Rows of shorter sequences must not see stale cache beyond their own length.
            beyond = torch.arange(total)[None, :] > positions[:, None]
            mask = torch.zeros(b, total).masked_fill_(beyond, float("-inf"))[:, None, None, :]
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(x, layer, cos, sin)  # [b, heads, 1, d]
            kc, vc = self.k_cache[i], self.v_cache[i]
            kc[slot_idx, :, positions] = k[:, :, 0]
            vc[slot_idx, :, positions] = v[:, :, 0]
            if contiguous:
                keys = kc[slots[0] : slots[0] + b, :, :total]
                values = vc[slots[0] : slots[0] + b, :, :total]
            else:
                keys, values = kc[slot_idx, :, :total], vc[slot_idx, :, :total]
            x = self._after_attention(x, self._decode_attention(q, keys, values, mask), layer)
        for i in slots:
            self.lengths[i] += 1
        x = _rms_norm(x, self.final_norm, s.rms_eps)
        return F.linear(x[:, 0], self.lm_head)

    def _decode_attention(
        self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Attention of one new query per row, as two small matmuls.

        torch's CPU SDPA kernel costs milliseconds per call for a single query (it is tuned for
        long query blocks), which made attention most of a decode step. Query heads are grouped
        by the KV head they share (HF's repeat_kv order: kv head j serves q heads j*g..j*g+g-1).
        """
        s = self.shape
        b = q.shape[0]
        group = s.heads // s.kv_heads
        q = q.reshape(b, s.kv_heads, group, s.head_dim)  # [b, kv, g, d]
        scores = torch.matmul(q, keys.transpose(-1, -2)) * (s.head_dim**-0.5)  # [b, kv, g, T]
        if mask is not None:
            scores = scores + mask
        probs = torch.softmax(scores, dim=-1)
        return torch.matmul(probs, values).reshape(b, s.heads, 1, s.head_dim)

    def _qkv(
        self, x: torch.Tensor, layer: Layer, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.shape
        b, n, _ = x.shape
        h = _rms_norm(x, layer.norm1, s.rms_eps)
        qkv = F.linear(h, layer.qkv).view(b, n, s.heads + 2 * s.kv_heads, s.head_dim)
        qkv = qkv.transpose(1, 2)
        q = qkv[:, : s.heads]
        k = qkv[:, s.heads : s.heads + s.kv_heads]
        v = qkv[:, s.heads + s.kv_heads :]
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        return q, k, v

    def _after_attention(self, x: torch.Tensor, attn: torch.Tensor, layer: Layer) -> torch.Tensor:
        b, _, n, _ = attn.shape
        x = x + F.linear(attn.transpose(1, 2).reshape(b, n, -1), layer.o)
        h = _rms_norm(x, layer.norm2, self.shape.rms_eps)
        gate, up = F.linear(h, layer.gate_up).split(self.intermediate, dim=-1)
        return x + F.linear(F.silu(gate) * up, layer.down)


def rope_tables(s: LlamaShape) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [max_positions, head_dim], computed the way HF does (fp32 position * inv_freq,
    then cos/sin), so the rotated q/k match bit for bit."""
    inv_freq = 1.0 / (
        s.rope_theta ** (torch.arange(0, s.head_dim, 2, dtype=torch.int64).float() / s.head_dim)
    )
    freqs = torch.arange(s.max_positions).float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
