"""Sampling Sim-RFT's groups with the served engine, rebuilt from the current policy.

`transformers.generate` decodes SmolLM2-135M at ~25-30 tok/s on this CPU; the planner's own
engine (`model_repo/remed_planner/<v>/engine.py`, `qengine.py`) about ten times that. So the
policy being trained is copied into the engine after every optimizer step (LoRA merged into
the base weights in memory: W + B·A·scale, the adapter left untouched) and a whole group is
decoded as one batch, in the weight format the model is served in (`weights` in
`config.pbtxt`: q4, q8 or fp32), with the chat template the served model applies.

Sampling is plain temperature sampling, as the served model does it (no top-k / top-p), seeded
per completion, so a group can be re-drawn exactly. The per-token log-probabilities of the
sampled tokens under the engine's (temperature-scaled) distribution are returned beside them
for the rollout log. How far the quantised engine is from the policy: trl computes the loss on
the fp32 policy and applies no importance correction to a custom rollout function (only to
vLLM), so q4/q8 sampling is slightly off-policy; `fp32` removes that at ~6x the decode cost.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from remed_stack.paths import REPO_ROOT

PLANNER_DIR = REPO_ROOT / "model_repo" / "remed_planner"
FORMATS = ("fp32", "q8", "q4")


@dataclass(frozen=True)
class Sample:
    token_ids: list[int]  # the completion, with its EOS token when it ended on one
    logprobs: list[float]
    finished: bool  # ended on EOS rather than at max_tokens


class _StateDictModel:
    """What the engines read from an HF model: `.config` and `.state_dict()`."""

    def __init__(self, config: Any, state: dict[str, torch.Tensor]) -> None:
        self.config = config
        self._state = state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


def merged_state(model: Any, adapter: str = "default") -> _StateDictModel:
    """The policy as plain Llama weights: for a PEFT model, each LoRA layer's base weight plus
    the `adapter`'s delta (other adapters, e.g. trl's frozen `ref`, are ignored)."""
    try:
        from peft import PeftModel
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a train dependency
        PeftModel = LoraLayer = None  # type: ignore[misc,assignment]
    if PeftModel is None or not isinstance(model, PeftModel):
        return _StateDictModel(model.config, dict(model.state_dict()))
    base = model.get_base_model()
    state: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, tensor in base.state_dict().items():
            if "lora_" in name or ".ref." in name:
                continue
            state[name.replace(".base_layer.", ".")] = tensor
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer) and adapter in getattr(module, "lora_A", {}):
                weight = module.get_base_layer().weight
                delta = module.get_delta_weight(adapter)  # type: ignore[attr-defined]
                state[f"{name}.weight"] = (weight + delta.to(weight.dtype)).detach()
    return _StateDictModel(base.config, state)


def _load_modules(version_dir: Path) -> tuple[ModuleType, ModuleType]:
    """engine.py and qengine.py of a served version (they import each other by bare name)."""
    path = str(version_dir)
    sys.path.insert(0, path)
    try:
        import engine
        import qengine
    finally:
        sys.path.remove(path)
    return engine, qengine


def _native_lib(qengine: ModuleType) -> Any:
    spec = importlib.util.spec_from_file_location(
        "remed_planner_native_build", PLANNER_DIR / "native" / "build.py"
    )
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"{PLANNER_DIR / 'native' / 'build.py'} is missing")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return qengine.load_kernels(build.ensure_built())


class EngineSampler:
    """The served engine over the current policy; `rebuild` after each optimizer step."""

    def __init__(
        self, tokenizer: Any, *, weights: str = "q4", slots: int = 8, threads: int = 2,
        version_dir: Path | None = None,
    ) -> None:  # fmt: skip
        if weights not in FORMATS:
            raise ValueError(f"sampling weights must be one of {FORMATS}, not {weights!r}")
        self.tokenizer = tokenizer
        self.weights = weights
        self.slots = slots
        self.threads = threads
        self.engine_mod, self.qengine_mod = _load_modules(version_dir or PLANNER_DIR / "1")
        self.lib = _native_lib(self.qengine_mod) if weights != "fp32" else None
        self.engine: Any = None
        self.built_at_step: int | None = None
        self.last_rebuild_s = 0.0
        eos = tokenizer.eos_token_id
        self.eos_ids = {int(eos)} if eos is not None else set()

    def rebuild(self, model: Any, step: int) -> float:
        """Copy the policy into a fresh engine (merged, quantised); returns the seconds taken."""
        started = time.monotonic()
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if gen_eos is not None:
            self.eos_ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        shim = merged_state(model)
        self.engine = None  # free the old one first: two engines at once double the memory
        if self.weights == "fp32":
            self.engine = self.engine_mod.Engine(shim, slots=self.slots)
        else:
            self.engine = self.qengine_mod.QuantEngine(
                shim, self.slots, lib=self.lib, weights=self.weights, threads=self.threads
            )
        self.built_at_step = step
        self.last_rebuild_s = time.monotonic() - started
        return self.last_rebuild_s

    def prompt_ids(self, prompt: str) -> list[int]:
        """The served model's encoding: one user turn in the chat template."""
        ids = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=True
        )["input_ids"]
        return [int(i) for i in ids]

    def sample(
        self, prompt_ids: Sequence[int], seeds: Sequence[int], *, max_tokens: int,
        temperature: float,
    ) -> list[Sample]:  # fmt: skip
        """len(seeds) completions of one prompt, decoded together (one slot each)."""
        if self.engine is None:
            raise RuntimeError("EngineSampler.rebuild(model) first")
        n = len(seeds)
        if n > self.slots:
            raise ValueError(f"{n} completions need {n} engine slots; the sampler has {self.slots}")
        eng = self.engine
        prompt = list(prompt_ids)
        # Prefill the prompt once, then share its cache: the group's rows differ only after it.
        eng.reserve(0, len(prompt) + max_tokens)
        first = _as_tensor(eng.prefill(0, prompt))
        for slot in range(1, n):
            eng.reserve(slot, len(prompt) + max_tokens)
            eng.copy_prefix(0, slot, len(prompt))
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        tokens: list[list[int]] = [[] for _ in range(n)]
        logps: list[list[float]] = [[] for _ in range(n)]
        done = [False] * n
        rows = {slot: first for slot in range(n)}
        try:
            while True:
                for slot, logits in rows.items():
                    token, logp = _draw(logits, temperature, gens[slot])
                    tokens[slot].append(token)
                    logps[slot].append(logp)
                    if token in self.eos_ids or len(tokens[slot]) >= max_tokens:
                        done[slot] = True
                active = [s for s in range(n) if not done[s]]
                if not active:
                    break
                out = _as_tensor(eng.decode(active, [tokens[s][-1] for s in active]))
                rows = {s: out[i] for i, s in enumerate(active)}
        finally:
            for slot in range(n):
                eng.release(slot)
            eng.shrink()
        return [
            Sample(tokens[s], logps[s], bool(tokens[s]) and tokens[s][-1] in self.eos_ids)
            for s in range(n)
        ]

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(token_ids), skip_special_tokens=True))


def _as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(x)


def _draw(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> tuple[int, float]:
    logits = logits.float()
    if temperature <= 0:
        token = int(logits.argmax())
        return token, float(torch.log_softmax(logits, -1)[token])
    logp = torch.log_softmax(logits / temperature, dim=-1)
    token = int(torch.multinomial(logp.exp(), 1, generator=gen))
    return token, float(logp[token])
