"""remed_planner's native kernels (native/planner_kernels.c) and the quantised engine.

The kernels are held to a numpy reference of the same block formats; the quantised engine to
batch invariance (a request's tokens do not depend on what else is in its decode step, the
prefix cache or the thread count) and to closeness with the fp32 engine. Token-for-token
equality with HF is the fp32 engine's property (test_planner_engine.py), not this one's.
Every instruction-set build this CPU runs (native/build.py's ISAS) is held to all of it, and
the builds to identical results.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from remed_stack.paths import REPO_ROOT

pytestmark = pytest.mark.unit

PLANNER_DIR = REPO_ROOT / "model_repo" / "remed_planner"
VERSION_DIR = PLANNER_DIR / "1"
NATIVE_DIR = PLANNER_DIR / "native"
QK = 32
GROUP = 16
EOS = 2
PROMPTS = (
    "Which command restarts the nginx service on a Linux host?",
    "Write an Ansible task that restarts redis on host db.",
    "Disk /var is full on host app. What do you check first?",
    "Name three Linux log files.",
)
MAX_NEW_TOKENS = 16


def _build_module() -> Any:
    spec = importlib.util.spec_from_file_location("planner_native_build", NATIVE_DIR / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = _build_module()
ISAS_HERE = BUILD.supported_isas()


@pytest.fixture(scope="module")
def modules() -> Iterator[tuple[Any, Any, Any, Any]]:
    sys.path[:0] = [str(VERSION_DIR), str(NATIVE_DIR)]
    try:
        import build
        import engine
        import qengine
        import scheduler

        yield build, engine, qengine, scheduler
    finally:
        for path in (str(VERSION_DIR), str(NATIVE_DIR)):
            sys.path.remove(path)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module", params=ISAS_HERE)
def lib(request: pytest.FixtureRequest, modules: Any, cache_dir: Any) -> Any:
    build, _, qengine, _ = modules
    lib = qengine.load_kernels(build.ensure_built(cache_dir, request.param))
    assert qengine.kernel_isa(lib) == request.param
    return lib


# -- numpy reference of the formats -----------------------------------------------------------


def ref_q8_0(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = w.shape[0]
    blocks = w.reshape(-1, QK).astype(np.float32)
    d = (np.abs(blocks).max(axis=1) / np.float32(127)).astype(np.float16)
    ds = d.astype(np.float32)
    inv = np.where(ds > 0, np.float32(1) / np.where(ds > 0, ds, 1), 0).astype(np.float32)
    q = np.clip(np.rint(blocks * inv[:, None]), -127, 127).astype(np.int8)
    return _group_chunks(q.reshape(rows, -1, QK)).reshape(-1), _group_scales(d.reshape(rows, -1))


def ref_q4_1(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = w.shape[0]
    blocks = w.reshape(-1, QK).astype(np.float32)
    lo, hi = blocks.min(axis=1), blocks.max(axis=1)
    d = ((hi - lo) / np.float32(15)).astype(np.float16)
    m = lo.astype(np.float16)
    ds, ms = d.astype(np.float32), m.astype(np.float32)
    inv = np.where(ds > 0, np.float32(1) / np.where(ds > 0, ds, 1), 0).astype(np.float32)
    q = np.clip(np.rint((blocks - ms[:, None]) * inv[:, None]), 0, 15).astype(np.uint8)
    chunks = _group_chunks(q.reshape(rows, -1, QK))
    packed = chunks[:, :, :4] | (chunks[:, :, 4:] << 4)  # chunks c and c + 4 share bytes
    return (
        packed.reshape(-1),
        _group_scales(d.reshape(rows, -1)),
        _group_scales(m.reshape(rows, -1)),
    )


# The kernels' layout: rows in groups of GROUP (the last one zero-padded); per group and block,
# byte 4r + j of chunk c is row r's weight 4c + j; the scales are kept per group, block and row.


def _group_chunks(q: np.ndarray) -> np.ndarray:
    """[rows, blocks, QK] weights -> chunks [group, block, chunk, row * 4 + j]."""
    rows, nb, _ = q.shape
    q = np.concatenate([q, np.zeros((-rows % GROUP, nb, QK), q.dtype)])
    return q.reshape(-1, GROUP, nb, 8, 4).transpose(0, 2, 3, 1, 4).reshape(-1, nb, 8, 4 * GROUP)


def _group_scales(scale: np.ndarray) -> np.ndarray:
    """[rows, blocks] fp16 -> their bits as stored, [group, block, row]."""
    rows, nb = scale.shape
    scale = np.concatenate([scale, np.zeros((-rows % GROUP, nb), np.float16)])
    return scale.reshape(-1, GROUP, nb).transpose(0, 2, 1).reshape(-1).view(np.uint16)


def ref_dequant(qm: Any) -> np.ndarray:
    nb = qm.cols // QK
    if qm.m is None:
        chunks = qm.q.reshape(-1, nb, 8, GROUP, 4)  # [group, block, chunk, row, j]
    else:
        packed = qm.q.reshape(-1, nb, 4, GROUP, 4)
        chunks = np.concatenate([packed & 15, packed >> 4], axis=2)
    q = chunks.transpose(0, 3, 1, 2, 4).reshape(-1, nb, QK).astype(np.float64)

    def per_row(bits: np.ndarray) -> np.ndarray:
        scale = bits.view(np.float16).reshape(-1, nb, GROUP).transpose(0, 2, 1)
        return scale.reshape(-1, nb, 1).astype(np.float64)

    w = q * per_row(qm.d) + (0 if qm.m is None else per_row(qm.m))
    return w.reshape(-1, qm.cols)[: qm.rows]


def ref_quant_acts(x: np.ndarray) -> np.ndarray:
    """Activations as the kernels see them: int8 per block of 32, scale max|x| / 127."""
    blocks = x.reshape(x.shape[0], -1, QK).astype(np.float32)
    amax = np.abs(blocks).max(axis=2, keepdims=True)
    inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0)
    q = np.rint(blocks * inv)
    return (q * (amax / np.float32(127))).reshape(x.shape).astype(np.float64)


def _weights(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32) * 0.05
    w[0, :QK] = 0.0  # an all-zero block: scale 0 must not divide by zero
    w[1, 5] = 3.0  # an outlier
    return w


@pytest.mark.parametrize("kind", ["q8", "q4"])
def test_quantisation_matches_the_numpy_reference(modules: Any, lib: Any, kind: str) -> None:
    qengine = modules[2]
    w = _weights(61, 576)  # not a whole number of Q4_1 row groups
    qm = qengine.QMatrix.quantize(lib, w, qengine.Q8_0 if kind == "q8" else qengine.Q4_1)
    ref = ref_q8_0(w) if kind == "q8" else ref_q4_1(w)
    for got, want in zip((qm.q, qm.d, qm.m), ref, strict=False):
        # x * (1/d) rounds like numpy's; allow a rare half-way case to land on the other side.
        assert got.shape == want.shape
        assert np.mean(got != want) < 1e-3
    if kind == "q8":  # what VNNI's dots start each block's sums from: -128 * sum(w)
        block_sums = qm.q.reshape(-1, 576 // QK, 8, GROUP, 4).sum(axis=(2, 4), dtype=np.int32)
        assert np.array_equal(qm.wsum, -128 * block_sums.reshape(-1))
    row, st = np.empty(576, np.float32), qm.struct()
    for r in (1, 60):
        lib.rp_dequantize_row(ctypes.byref(st), r, row.ctypes.data)  # the embedding lookup
        np.testing.assert_allclose(row, ref_dequant(qm)[r], rtol=1e-6, atol=1e-7)
    step = 1 / 127 if kind == "q8" else 2 / 15  # a grid step, relative to the block max abs
    err = np.abs(ref_dequant(qm) - w).reshape(-1, QK).max(axis=1)
    span = np.abs(w).reshape(-1, QK).max(axis=1)
    assert np.all(err <= step * span * 0.5 + 1e-6 + 2e-3 * span)


@pytest.mark.parametrize("kind", ["q8", "q4"])
@pytest.mark.parametrize("rows", [1, 3, 8, 11, 17])
def test_matmul_matches_the_numpy_reference(modules: Any, lib: Any, kind: str, rows: int) -> None:
    qengine = modules[2]
    w = _weights(203, 1536, seed=rows)
    qm = qengine.QMatrix.quantize(lib, w, qengine.Q8_0 if kind == "q8" else qengine.Q4_1)
    x = np.random.default_rng(7).standard_normal((rows, 1536)).astype(np.float32)
    x[0, 40] = 25.0  # activation outlier in one block
    y = np.empty((rows, 203), np.float32)
    st = qm.struct()
    lib.rp_matmul(ctypes.byref(st), x.ctypes.data, rows, y.ctypes.data, 2)
    want = ref_quant_acts(x) @ ref_dequant(qm).T
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    exact = x.astype(np.float64) @ w.T.astype(np.float64)
    # 4 bits of random gaussian weights: ~10% noise; 8 bits: ~1%.
    assert np.linalg.norm(y - exact) < (0.02 if kind == "q8" else 0.15) * np.linalg.norm(exact)


def test_matmul_rows_and_threads_do_not_change_results(modules: Any, lib: Any) -> None:
    qengine = modules[2]
    qm = qengine.QMatrix.quantize(lib, _weights(300, 576), qengine.Q4_1)
    st = qm.struct()
    x = np.random.default_rng(3).standard_normal((13, 576)).astype(np.float32)
    together = np.empty((13, 300), np.float32)
    lib.rp_matmul(ctypes.byref(st), x.ctypes.data, 13, together.ctypes.data, 2)
    for threads in (1, 2):
        for r in range(13):
            row, one = x[r : r + 1].copy(), np.empty((1, 300), np.float32)
            lib.rp_matmul(ctypes.byref(st), row.ctypes.data, 1, one.ctypes.data, threads)
            assert np.array_equal(one[0], together[r])


@pytest.mark.skipif(len(ISAS_HERE) < 2, reason="this CPU runs one build only")
def test_every_isa_build_gives_the_same_numbers(modules: Any, cache_dir: Any) -> None:
    # VNNI's dots compute the same integer sums as AVX2's maddubs chains, so a model served on
    # either CPU gives the same tokens.
    build, _, qengine, _ = modules
    x = np.random.default_rng(5).standard_normal((11, 1536)).astype(np.float32)
    x[3, 100] = -40.0
    outputs: dict[str, list[np.ndarray]] = {}
    for isa in ISAS_HERE:
        lib = qengine.load_kernels(build.ensure_built(cache_dir, isa))
        for kind in (qengine.Q8_0, qengine.Q4_1):
            qm = qengine.QMatrix.quantize(lib, _weights(203, 1536, seed=kind), kind)
            st = qm.struct()  # points into qm's buffers: qm must outlive the call
            y = np.empty((11, 203), np.float32)
            lib.rp_matmul(ctypes.byref(st), x.ctypes.data, 11, y.ctypes.data, 2)
            outputs.setdefault(isa, []).append(y)
    first = outputs[ISAS_HERE[0]]
    for isa in ISAS_HERE[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(first, outputs[isa], strict=True)), isa


def test_build_picks_an_isa_the_cpu_runs_and_refuses_others(monkeypatch: Any) -> None:
    monkeypatch.delenv(BUILD.ISA_ENV, raising=False)
    avx2 = frozenset({"avx2", "fma", "f16c"})
    assert BUILD.select_isa(None, avx2).name == "avx2"
    assert BUILD.select_isa(None, avx2 | {"avx_vnni"}).name == "avxvnni"
    assert BUILD.select_isa("avx2", avx2 | {"avx_vnni"}).name == "avx2"
    with pytest.raises(BUILD.NativeBuildError, match="cannot run the avxvnni build"):
        BUILD.select_isa("avxvnni", avx2)
    with pytest.raises(BUILD.NativeBuildError, match="unknown ISA"):
        BUILD.select_isa("sse2", avx2)
    with pytest.raises(BUILD.NativeBuildError, match="lacks AVX2"):
        BUILD.select_isa(None, frozenset({"sse2"}))
    monkeypatch.setenv(BUILD.ISA_ENV, "avx2")
    assert BUILD.select_isa(None, avx2 | {"avx_vnni"}).name == "avx2"


# -- the quantised engine on the base model ---------------------------------------------------


@pytest.fixture(scope="module")
def prompts(hf: Any) -> list[list[int]]:
    tokenizer = hf[0]
    return [
        list(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, return_dict=True
            )["input_ids"]
        )
        for text in PROMPTS
    ]


@pytest.fixture(scope="module", params=["q8", "q4"])
def qeng(request: pytest.FixtureRequest, modules: Any, lib: Any, hf: Any) -> Any:
    return modules[2].QuantEngine(
        hf[1], len(PROMPTS) + 1, lib=lib, weights=request.param, threads=2
    )


def _run(
    sched_mod: Any, engine: Any, prompts: list[list[int]], *, together: bool, prefix: bool
) -> list[Any]:
    sched = sched_mod.Scheduler(engine, {EOS}, prefix_cache=prefix)
    results: list[Any] = [None] * len(prompts)
    for i, ids in enumerate(prompts):
        sched.submit(
            sched_mod.Job(
                ids, MAX_NEW_TOKENS, 0.0, None, lambda t, e, i=i: results.__setitem__(i, (t, e))
            )
        )
        if not together:
            sched.run_until_idle()
    sched.run_until_idle()
    assert all(e is None for _, e in results)
    return [t for t, _ in results]


def test_batched_prefix_cached_decode_equals_one_at_a_time(
    modules: Any, qeng: Any, prompts: Any
) -> None:
    # Each row's arithmetic is independent of the others in a step, and prefill rows equal
    # decode rows, so continuous batching and the prefix cache change no token.
    sched_mod = modules[3]
    alone = _run(sched_mod, qeng, prompts, together=False, prefix=False)
    batched = _run(sched_mod, qeng, prompts, together=True, prefix=True)
    assert batched == alone
    assert all(len(t) > 0 for t in alone)


def test_logits_are_close_to_fp32(modules: Any, qeng: Any, hf: Any, prompts: Any) -> None:
    fp32 = modules[1].Engine(hf[1], slots=1)
    for ids in prompts:
        fp32.reserve(0, len(ids))
        want = fp32.prefill(0, ids).numpy().astype(np.float64)
        qeng.reserve(0, len(ids))
        got = qeng.prefill(0, ids).astype(np.float64)
        cosine = got @ want / np.linalg.norm(got) / np.linalg.norm(want)
        assert cosine > (0.9995 if qeng.weights == "q8" else 0.99)
        # The fp32 choice stays among the quantised engine's top few.
        assert int(want.argmax()) in np.argsort(got)[-3:]


@pytest.mark.skipif(len(ISAS_HERE) < 2, reason="this CPU runs one build only")
@pytest.mark.parametrize("weights", ["q8", "q4"])
def test_every_isa_build_gives_the_same_logits(
    modules: Any, cache_dir: Any, hf: Any, prompts: Any, weights: str
) -> None:
    # The whole forward pass, attention and norms included: a model serves the same tokens on
    # an AVX2-only host as on one with AVX-512 VNNI.
    build, _, qengine, _ = modules
    runs = {}
    for isa in ISAS_HERE:
        lib = qengine.load_kernels(build.ensure_built(cache_dir, isa))
        engine = qengine.QuantEngine(hf[1], 1, lib=lib, weights=weights, threads=2)
        engine.reserve(0, len(prompts[0]) + 4)
        logits = [engine.prefill(0, prompts[0]).copy()]
        for _ in range(3):
            logits.append(engine.decode([0], [int(logits[-1].argmax())])[0].copy())
        runs[isa] = logits
    first = runs[ISAS_HERE[0]]
    for isa in ISAS_HERE[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(first, runs[isa], strict=True)), isa


def test_thread_count_does_not_change_tokens(modules: Any, lib: Any, hf: Any, prompts: Any) -> None:
    qengine, sched_mod = modules[2], modules[3]
    runs = [
        _run(
            sched_mod,
            qengine.QuantEngine(hf[1], 2, lib=lib, weights="q4", threads=t),
            prompts[:2],
            together=True,
            prefix=False,
        )
        for t in (1, 2)
    ]
    assert runs[0] == runs[1]


def test_bad_token_ids_are_refused(qeng: Any) -> None:
    qeng.reserve(0, 4)
    with pytest.raises(ValueError, match="token ids"):
        qeng.prefill(0, [1, 2, qeng.vocab])


def test_missing_kernels_fall_back_to_fp32_with_a_warning(
    hf: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util
    import types

    warnings: list[str] = []
    stand_in = types.ModuleType("pb_utils_stand_in")
    stand_in.Logger = types.SimpleNamespace(log_warn=warnings.append)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", stand_in)
    spec = importlib.util.spec_from_file_location(
        "remed_planner_model_fb", VERSION_DIR / "model.py"
    )
    assert spec is not None and spec.loader is not None
    model = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, model)
    spec.loader.exec_module(model)
    try:
        # A model directory without native/: no build script, so no kernels.
        engine, served = model._make_engine(hf[1], 2, "q4", 2, tmp_path)
    finally:
        sys.path.remove(str(VERSION_DIR))  # model.py put its directory first on sys.path
    assert served == "fp32" and type(engine).__name__ == "Engine"
    assert len(warnings) == 1 and "serving fp32" in warnings[0] and "make native" in warnings[0]
