"""A Real-RFT round: claimed examples → KTO candidate → the stage-1 gate → promote, or the
reason not to.

`RoundRunner` takes its steps as plain callables (train, gate, promote, served version,
recover) so a test can give it a tiny trainer or a gate of its own; the service wires the real
ones:

- train: `kto.train_candidate`; the round then writes `training.json` (what training said,
  the data window, the examples' manifest digest and the artifact's sha256), which makes the
  round directory a finished `real-rft` run for trainer/promote.py;
- gate: `gating.Stage1Gate`: the candidate staged as `model_repo/remed_planner/N/` by
  trainer/promote.py (`stage: candidate (real-rft)`, serving.json, parent), evaluated with
  `remed train eval`'s machinery beside the served version, judged by trainer/gate.py (the
  held-out suite must not drop, guard refusals must not rise); a refused one leaves the
  repository. Where the gate fails to run, that is a refusal: a candidate nobody measured is
  never served;
- promote: `remed model load N` of the staged, passed version (`promote.load_version`: no
  downtime; one that fails to load leaves the old one serving and moves out);
- recover: `gating.recover`, first in every attempt: undo what a killed attempt left.

Nothing here runs without a claimed round, and a round's examples never change after it was
claimed, so a round that a crash interrupted runs again on exactly the same data.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from trainer import promote
from trainer.real_rft.config import RealRftConfig
from trainer.real_rft.examples import Example
from trainer.real_rft.gating import STAGE, GateResult, Stage1Gate, decision_of
from trainer.real_rft.gating import recover as recover_round
from trainer.real_rft.kto import Cancelled
from trainer.real_rft.store import Round, Store
from trainer.sft import RunDir, artifact_digest

log = structlog.get_logger("remed.trainer")


TrainFn = Callable[[Sequence[Example], Path, Path, RealRftConfig, threading.Event], dict[str, Any]]
GateFn = Callable[[Path, int, Path], GateResult]
PromoteFn = Callable[[Path, int, dict[str, Any]], int]
ServedFn = Callable[[], int]
RecoverFn = Callable[[Path], int | None]


def stage1_gate(cfg: RealRftConfig, versions: Any = None) -> GateFn:
    """trainer/gate.py's gate on the round's candidate, against the served version, in the
    lab (gating.py); `gate = "none"` refuses every candidate without measuring it. A gate that
    fails to run refuses, and takes back what it staged or loaded."""
    if cfg.gate == "none":
        return lambda candidate, served, run_dir: GateResult(
            False, "real_rft.gate = 'none': candidates are never promoted"
        )
    versions = versions or versions_of(cfg)
    stage1 = Stage1Gate(cfg, versions)

    def gate(candidate: Path, served: int, run_dir: Path) -> GateResult:
        try:
            return stage1(candidate, served, run_dir)
        except Exception as exc:  # the gate failing is a refusal, never a pass
            log.exception("the gate failed", run=str(run_dir))
            recover_round(cfg, versions, run_dir)
            return GateResult(False, f"the gate failed: {type(exc).__name__}: {exc}")

    return gate


def install_version(cfg: RealRftConfig, run_dir: Path, served: int, card: dict[str, Any]) -> int:
    """The round's candidate as `model_repo/<model>/N/`, by trainer/promote.py's staging
    (serving code, artifact, serving.json with `real_rft.weights`, card; written beside and
    renamed into place, so Triton never sees half a version). A gate that did not conclude
    the card itself (anything but `Stage1Gate`) has its verdict written into it here."""
    model_dir = cfg.model_repo / cfg.model_name
    version = promote.stage(run_dir, model_dir=model_dir, weights=cfg.weights, parent=served,
                            stage_name=STAGE)  # fmt: skip
    verdict = card.get("gate") or {}
    if "candidate_version" not in (verdict.get("metrics") or {}):
        result = GateResult(bool(verdict.get("passed")), str(verdict.get("reason", "")))
        promote.conclude(run_dir, version, decision_of(result, served, version), parent=served,
                         model_dir=model_dir, stage_name=STAGE)  # fmt: skip
    return version


def triton_promoter(cfg: RealRftConfig, versions: Any = None) -> PromoteFn:
    def promote_fn(run_dir: Path, served: int, card: dict[str, Any]) -> int:
        version = install_version(cfg, run_dir, served, card)  # staged by the gate: found
        promote.load_version(versions or versions_of(cfg), version, run_dir,
                             model_dir=cfg.model_repo / cfg.model_name)  # fmt: skip
        return version

    return promote_fn


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


def served_version(cfg: RealRftConfig, versions: Any = None) -> ServedFn:
    def served() -> int:
        numbers = (versions or versions_of(cfg)).served()
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
        recover: RecoverFn | None = None,
    ) -> None:
        import importlib

        module, _, name = cfg.train_entry.partition(":")
        self.cfg = cfg
        self.store = store
        self.train = train or getattr(importlib.import_module(module), name)
        self.gate = gate or stage1_gate(cfg)
        self.promote = promote or triton_promoter(cfg)
        self.served = served or served_version(cfg)
        # Triton is asked only when an earlier attempt left a marker or a version behind.
        self.recover = recover or (lambda run_dir: recover_round(cfg, versions_of(cfg), run_dir))

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
        manifest = "\n".join(json.dumps(e.__dict__, sort_keys=True) for e in rnd.examples)
        counts = {
            "examples": len(rnd.examples),
            "capped": rnd.capped,
            "by_source": dict(Counter(e.source for e in rnd.examples)),
            "by_author": dict(Counter(e.author or "(none)" for e in rnd.examples)),
            "by_category": dict(Counter(e.category for e in rnd.examples)),
            "inexact_prompts": sum(1 for e in rnd.examples if not e.prompt_exact),
        }
        window = (f"round {rnd.id}: {len(rnd.examples)} examples from "
                  f"{len({e.incident_id for e in rnd.examples})} incidents")  # fmt: skip
        t0 = time.monotonic()
        result: dict[str, Any]
        try:
            already = self.recover(run_dir)  # what a killed attempt left: undone first
            if already is not None:
                reason = f"gate passed; serving version {already} (loaded before a restart)"
                self.store.finish_round(rnd.id, "promoted", reason, {"passed": True}, already)
                result = {"round": rnd.id, "status": "promoted", "version": already}
            else:
                result = self._attempt(rnd, run_dir, manifest, window, counts, cancel)
        except Cancelled:
            log.warning("round interrupted; it runs again at the next start", round=rnd.id)
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.exception("round failed", round=rnd.id)
            self.store.finish_round(rnd.id, "failed", reason)
            result = {"round": rnd.id, "status": "failed", "reason": reason}
            try:  # nothing staged or loaded stays behind a failed round
                self.recover(run_dir)
            except Exception:
                log.exception("could not clean up after the failed round", round=rnd.id)
        result.update(counts, minutes=round((time.monotonic() - t0) / 60, 2))
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        log.info("round", **result)
        return result

    def _attempt(
        self,
        rnd: Round,
        run_dir: Path,
        manifest: str,
        window: str,
        counts: dict[str, Any],
        cancel: threading.Event,
    ) -> dict[str, Any]:
        shutil.rmtree(run_dir, ignore_errors=True)  # a re-run starts clean from the same data
        run_dir.mkdir(parents=True)
        (run_dir / "examples.jsonl").write_text(manifest + "\n")
        served = self.served()
        version_dir = self.cfg.model_repo / self.cfg.model_name / str(served)
        training = self.train(rnd.examples, version_dir, run_dir, self.cfg, cancel)
        if cancel.is_set():
            raise Cancelled("round cancelled")
        artifact = RunDir(run_dir).artifact()
        if artifact is None:
            raise RuntimeError(f"training left no adapter/ or weights/ in {run_dir}")
        # training.json makes the round a finished `real-rft` run for trainer/promote.py
        path = run_dir / "training.json"
        summary = {
            **(json.loads(path.read_text()) if path.is_file() else {}),
            **training,
            "round": rnd.id,
            "data_window": window,
            "data_manifest_sha256": hashlib.sha256(manifest.encode()).hexdigest(),
            "artifact": artifact.name,
            "artifact_sha256": artifact_digest(artifact),
            **counts,
        }
        path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        verdict = self.gate(artifact, served, run_dir)
        gate_doc: dict[str, Any] = {
            "passed": verdict.passed, "reason": verdict.reason, "metrics": verdict.metrics,
        }  # fmt: skip
        card: dict[str, Any] = {
            "from_version": served,
            "data_window": window,
            "manifest_sha256": summary["data_manifest_sha256"],
            "training": {k: v for k, v in summary.items() if k != "log"},
            "gate": gate_doc,
        }
        if not verdict.passed:
            self.store.finish_round(rnd.id, "refused", verdict.reason, gate_doc)
            return {"round": rnd.id, "status": "refused", "reason": verdict.reason}
        version = self.promote(run_dir, served, card)
        reason = f"gate passed; serving version {version}"
        self.store.finish_round(rnd.id, "promoted", reason, gate_doc, version)
        return {"round": rnd.id, "status": "promoted", "version": version}
