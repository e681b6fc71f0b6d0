"""A Real-RFT round: claimed examples → KTO candidate → the stage-1 gate → promote, or the
reason not to.

`RoundRunner` takes its steps as plain callables (train, gate, promote, served version) so a
test can give it a tiny trainer or a gate of its own; the service wires the real ones:

- train: `kto.train_candidate`;
- gate: `stage1_gate`, trainer/gate.py's benchmark gate in the lab (the held-out suite must
  not drop, guard refusals must not rise). Where that module is missing or fails, the gate
  refuses: a candidate nobody measured is never served;
- promote: `install_version` writes `model_repo/remed_planner/N/` (the served version's
  serving code, the candidate's adapter and a MODEL_CARD.md naming stage, data window and gate
  result) and `ModelVersions.load(N)` switches Triton to it without downtime, as
  `remed model load N` does; a version that fails to load leaves the old one serving.

Nothing here runs without a claimed round, and a round's examples never change after it was
claimed, so a round that a crash interrupted runs again on exactly the same data.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from trainer.real_rft.config import RealRftConfig
from trainer.real_rft.examples import Example
from trainer.real_rft.kto import Cancelled
from trainer.real_rft.store import Round, Store

log = structlog.get_logger("remed.trainer")


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str
    metrics: dict[str, Any] = field(default_factory=dict)


TrainFn = Callable[[Sequence[Example], Path, Path, RealRftConfig, threading.Event], dict[str, Any]]
GateFn = Callable[[Path, int, Path], GateResult]
PromoteFn = Callable[[Path, int, dict[str, Any]], int]
ServedFn = Callable[[], int]


def stage1_gate(cfg: RealRftConfig) -> GateFn:
    """trainer/gate.py's gate on the candidate adapter, against the served version."""

    def gate(candidate: Path, served: int, run_dir: Path) -> GateResult:
        if cfg.gate == "none":
            return GateResult(False, "real_rft.gate = 'none': candidates are never promoted")
        try:
            from trainer import gate as gate_mod
        except ImportError as exc:
            return GateResult(False, f"no stage-1 gate (trainer/gate.py: {exc}); not promoted")
        evaluate = getattr(gate_mod, "evaluate_candidate", None)
        if evaluate is None:
            return GateResult(False, "trainer/gate.py has no evaluate_candidate(adapter, "
                              "served_version=, run_dir=); not promoted")  # fmt: skip
        try:
            doc = dict(evaluate(candidate, served_version=served, run_dir=run_dir))
        except Exception as exc:  # the gate failing is a refusal, never a pass
            return GateResult(False, f"the gate failed: {type(exc).__name__}: {exc}")
        return GateResult(bool(doc.get("passed")), str(doc.get("reason", "")), doc)

    return gate


def install_version(cfg: RealRftConfig, run_dir: Path, served: int, card: dict[str, Any]) -> int:
    """`model_repo/<model>/N/` from the served version's serving code and the candidate's
    adapter; written beside and renamed into place, so Triton never sees half a version."""
    model_dir = cfg.model_repo / cfg.model_name
    numbers = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    version = max(numbers, default=1) + 1
    src = model_dir / str(served)
    tmp = model_dir / f".real-rft-{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for item in src.iterdir():
        if item.is_file() and item.suffix == ".py":
            shutil.copy2(item, tmp / item.name)
    shutil.copytree(run_dir / "adapter", tmp / "adapter")
    (tmp / "MODEL_CARD.md").write_text(model_card(version, card))
    tmp.rename(model_dir / str(version))
    return version


def model_card(version: int, card: dict[str, Any]) -> str:
    gate = card.get("gate", {})
    lines = [
        f"# remed_planner version {version}",
        "",
        "stage: real-rft",
        f"from_version: {card.get('from_version')}",
        f"data_window: {card.get('data_window')}",
        f"data_manifest_sha256: {card.get('manifest_sha256')}",
        f"gate: {'passed' if gate.get('passed') else 'refused'}: {gate.get('reason', '')}",
        "",
        "## Training",
        "",
        "```json",
        json.dumps(card.get("training", {}), indent=2, default=str),
        "```",
        "",
        "## Evaluation (stage-1 gate)",
        "",
        "```json",
        json.dumps(gate.get("metrics", {}), indent=2, default=str),
        "```",
        "",
    ]
    return "\n".join(lines)


def triton_promoter(cfg: RealRftConfig) -> PromoteFn:
    def promote(run_dir: Path, served: int, card: dict[str, Any]) -> int:
        version = install_version(cfg, run_dir, served, card)
        versions_of(cfg).load(version)  # what `remed model load N` does
        return version

    return promote


def versions_of(cfg: RealRftConfig) -> Any:
    from remed_daemon.model_versions import ModelVersions

    state = cfg.state_dir / "model_versions.json"
    try:  # in the checkout: the dev stack's history, so `remed model rollback` sees it
        from remed_stack.paths import StackPaths
        from remed_stack.triton import Triton

        paths = StackPaths.from_env()
        ours = (cfg.model_repo / cfg.model_name).resolve()
        if ours == (paths.model_repo / cfg.model_name).resolve():
            state = Triton(paths).versions_file
    except ImportError:
        pass
    return ModelVersions(cfg.triton_url, cfg.model_repo / cfg.model_name, state, cfg.model_name)


def served_version(cfg: RealRftConfig) -> ServedFn:
    def served() -> int:
        numbers = versions_of(cfg).served()
        return max(numbers) if numbers else 1

    return served


class RoundRunner:
    def __init__(
        self,
        cfg: RealRftConfig,
        store: Store,
        *,
        train: TrainFn | None = None,
        gate: GateFn | None = None,
        promote: PromoteFn | None = None,
        served: ServedFn | None = None,
    ) -> None:
        import importlib

        module, _, name = cfg.train_entry.partition(":")
        self.cfg = cfg
        self.store = store
        self.train = train or getattr(importlib.import_module(module), name)
        self.gate = gate or stage1_gate(cfg)
        self.promote = promote or triton_promoter(cfg)
        self.served = served or served_version(cfg)

    def due(self, now: float) -> bool:
        count, oldest = self.store.ready(now)
        if count >= self.cfg.round_min_examples:
            return True
        return (
            oldest is not None
            and count >= self.cfg.round_min_examples_on_age
            and now - oldest >= self.cfg.round_max_age_s
        )

    def run(self, rnd: Round, cancel: threading.Event) -> dict[str, Any]:
        """Run one claimed round to its end (promoted, refused or failed) and record it;
        `Cancelled` leaves it `running`, to run again."""
        run_dir = self.cfg.runs_dir / f"round-{rnd.id}"
        shutil.rmtree(run_dir, ignore_errors=True)  # a re-run starts clean from the same data
        run_dir.mkdir(parents=True)
        manifest = "\n".join(json.dumps(e.__dict__, sort_keys=True) for e in rnd.examples)
        (run_dir / "examples.jsonl").write_text(manifest + "\n")
        import hashlib

        counts = {
            "examples": len(rnd.examples),
            "capped": rnd.capped,
            "by_source": dict(Counter(e.source for e in rnd.examples)),
            "by_author": dict(Counter(e.author or "(none)" for e in rnd.examples)),
            "by_category": dict(Counter(e.category for e in rnd.examples)),
            "inexact_prompts": sum(1 for e in rnd.examples if not e.prompt_exact),
        }
        t0 = time.monotonic()
        try:
            served = self.served()
            version_dir = self.cfg.model_repo / self.cfg.model_name / str(served)
            training = self.train(rnd.examples, version_dir, run_dir, self.cfg, cancel)
            if cancel.is_set():
                raise Cancelled("round cancelled")
            verdict = self.gate(run_dir / "adapter", served, run_dir)
            gate_doc: dict[str, Any] = {
                "passed": verdict.passed, "reason": verdict.reason, "metrics": verdict.metrics,
            }
            card: dict[str, Any] = {
                "from_version": served,
                "data_window": f"round {rnd.id}: {len(rnd.examples)} examples from "
                f"{len({e.incident_id for e in rnd.examples})} incidents",
                "manifest_sha256": hashlib.sha256(manifest.encode()).hexdigest(),
                "training": {**{k: v for k, v in training.items() if k != "log"}, **counts},
                "gate": gate_doc,
            }
            if not verdict.passed:
                result = {"round": rnd.id, "status": "refused", "reason": verdict.reason}
                self.store.finish_round(rnd.id, "refused", verdict.reason, gate_doc)
            else:
                version = self.promote(run_dir, served, card)
                reason = f"gate passed; serving version {version}"
                result = {"round": rnd.id, "status": "promoted", "version": version}
                self.store.finish_round(rnd.id, "promoted", reason, gate_doc, version)
        except Cancelled:
            log.warning("round interrupted; it runs again at the next start", round=rnd.id)
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.exception("round failed", round=rnd.id)
            self.store.finish_round(rnd.id, "failed", reason)
            result = {"round": rnd.id, "status": "failed", "reason": reason}
        result.update(counts, minutes=round((time.monotonic() - t0) / 60, 2))
        (run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        log.info("round", **result)
        return result
