"""A Real-RFT candidate through the stage-1 gate, with the SFT stage's own machinery.

One round's candidate (`RUN` = `<state_dir>/rounds/round-<id>/`, with `adapter/` or `weights/`
and `training.json`) goes the way `make train` takes an SFT run:

1. **Stage** (`trainer.promote.stage`, stage `real-rft`): `model_repo/remed_planner/N/` with
   version 1's serving code, the artifact, `serving.json` (`real_rft.weights`, default q8) and
   a card saying `stage: candidate (real-rft)`, its parent (the served version) and its data
   window. Nothing is loaded.
2. **Evaluate** both (`trainer.evaluate.evaluate_version`, which is `remed train eval`): the
   served version as it is, then the candidate, loaded for its measurement and the served
   version loaded again afterwards; each offline on `gate_dataset`'s `gate_split` and live on
   `gate_suite` (`remed bench`, which holds the lab lock) and/or `gate_loop_suite`. While the
   candidate is loaded, `<state_dir>/evaluating.json` says so.
3. **Gate** (`trainer.promote.promote(..., load=False)`, so `trainer/gate.py` decides): the
   held-out suite's success must not drop, guard rejections must not rise, nothing dangerous.
   Refused: the card says why and the version moves out of the repository into
   `RUN/refused-vN/`. Passed: the card says `stage: real-rft`; the round's promoter then loads
   it (`trainer.promote.load_version`, i.e. `remed model load N`).

`recover` is what a round does first, so kill -9 anywhere above leaves nothing behind: a
candidate still loaded for its evaluation is replaced by the version served before, and a
version this round staged but never concluded moves out of the repository (a passed-and-loaded
one is reported, so the round is recorded as promoted rather than trained again).

The candidate is served to everyone for the minutes of its live measurement, exactly as
`remed train eval` does it; in the lab that is the benchmark's own traffic. A fleet whose
daemons must never see an ungated version needs a second Triton for the gate.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from trainer import evaluate, gate, promote
from trainer.real_rft.config import ROOT, RealRftConfig

log = structlog.get_logger("remed.trainer")

STAGE = "real-rft"

EvaluateFn = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str
    metrics: dict[str, Any] = field(default_factory=dict)


def _norm_url(url: str) -> str:
    return url.strip().rstrip("/").removeprefix("http://").removeprefix("https://")


def stack_triton_url() -> str | None:
    """The dev stack's Triton, which `remed bench --remediator model` measures; None when the
    dev stack is not known here."""
    try:
        from remed_stack.paths import StackPaths
        from remed_stack.triton import Triton

        return Triton(StackPaths.from_env()).http_url
    except Exception:
        return None


class Stage1Gate:
    """`GateFn` of a round (rounds.py): stage, evaluate candidate and served, decide."""

    def __init__(
        self,
        cfg: RealRftConfig,
        versions: evaluate.Versions,
        *,
        evaluate_fn: EvaluateFn | None = None,
        bench_url: Callable[[], str | None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.versions = versions
        self.evaluate = evaluate_fn or evaluate.evaluate_version
        self.bench_url = bench_url or (lambda: stack_triton_url())

    @property
    def model_dir(self) -> Path:
        return self.cfg.model_repo / self.cfg.model_name

    def __call__(self, candidate: Path, served: int, run_dir: Path) -> GateResult:
        cfg = self.cfg
        if cfg.gate == "none":
            return GateResult(False, "real_rft.gate = 'none': candidates are never promoted")
        if cfg.gate_suite or cfg.gate_loop_suite:
            bench = self.bench_url()
            if bench is None or _norm_url(bench) != _norm_url(cfg.triton_url):
                return GateResult(False, (
                    f"the live gate benches the dev stack's Triton ({bench or 'not known here'}) "
                    f"but this trainer serves through real_rft.triton_url = {cfg.triton_url}: "
                    "set triton_url to the stack's, or the gate would measure another model"
                ))  # fmt: skip
        version = promote.stage(run_dir, model_dir=self.model_dir, weights=cfg.weights,
                                parent=served, stage_name=STAGE)  # fmt: skip
        log.info("candidate staged", version=version, served=served, run=str(run_dir))
        served_doc = self._measure(served, run_dir / "eval" / "served")
        marker = evaluating_marker(cfg)
        marker.write_text(json.dumps({"run": str(run_dir), "served": served,
                                      "candidate": version}) + "\n")  # fmt: skip
        try:
            cand_doc = self._measure(version, run_dir / "eval" / "candidate")
        finally:
            with contextlib.suppress(Exception):  # Triton unreachable: recover() decides later
                if served in self.versions.served():
                    marker.unlink(missing_ok=True)
        outcome = promote.promote(
            run_dir, self.versions, suite=cfg.gate_row_name, model_dir=self.model_dir,
            weights=cfg.weights, load=False, stage_name=STAGE,
        )  # fmt: skip
        decision = outcome.decision
        if decision is None:  # served already: only a broken repository gets here
            return GateResult(False, outcome.message, {"candidate_version": version})
        metrics = {
            "candidate_version": version,
            "served_version": served,
            "row": cfg.gate_row_name,
            "candidate": summary(cand_doc, cfg.gate_row_name),
            "served": summary(served_doc, cfg.gate_row_name),
            "checks": [c.__dict__ for c in decision.checks],
        }
        return GateResult(decision.passed, decision.reason(), metrics)

    def _measure(self, version: int, out: Path) -> dict[str, Any]:
        cfg = self.cfg
        dataset = (ROOT / cfg.gate_dataset) if cfg.gate_dataset else None
        return self.evaluate(
            version, self.versions, url=cfg.triton_url, out=out, dataset=dataset,
            split=cfg.gate_split, limit=cfg.gate_offline_limit or None,
            concurrency=cfg.gate_concurrency,
            suites=[cfg.gate_suite] if cfg.gate_suite else [],
            loop_suites=[cfg.gate_loop_suite] if cfg.gate_loop_suite else [],
            bench_extra=list(cfg.gate_bench_args), restore=True, progress=False,
            timeout_s=cfg.gate_timeout_s,
        )  # fmt: skip


def summary(doc: dict[str, Any], row: str) -> dict[str, Any]:
    """The figures of one evaluation the round's record keeps (the files keep the rest)."""
    live = (doc.get("live") or {}).get(row) or {}
    offline = doc.get("offline") or {}
    return {
        "version": doc.get("version"),
        "success_rate": live.get("success_rate"),
        "recovered": live.get("recovered"),
        "injected": live.get("injected"),
        "guard_rejected": live.get("guard_rejected"),
        "by_category": live.get("by_category"),
        "offline_rate": offline.get("rate"),
        "offline_guard_refused": offline.get("guard_refused"),
    }


def evaluating_marker(cfg: RealRftConfig) -> Path:
    return cfg.state_dir / "evaluating.json"


def _card_run(card: str) -> Path | None:
    m = re.search(r"^run: (.+)$", card, re.M)
    if not m:
        return None
    path = Path(m.group(1).strip())
    return path if path.is_absolute() else promote.REPO_ROOT / path


def recover(cfg: RealRftConfig, versions: Any, run_dir: Path) -> int | None:
    """Undo what an interrupted attempt of this round left (see the module doc). Returns the
    version this round had already promoted and loaded, if any."""
    marker = evaluating_marker(cfg)
    if marker.is_file():
        doc = json.loads(marker.read_text())
        if int(doc["candidate"]) in versions.served():
            log.warning("an ungated candidate was left loaded; serving the version before",
                        candidate=doc["candidate"], served=doc["served"])  # fmt: skip
            versions.load(int(doc["served"]))
        marker.unlink()
    model_dir = cfg.model_repo / cfg.model_name
    if not model_dir.is_dir():
        return None
    promoted = None
    for card_path in sorted(model_dir.glob("*/MODEL_CARD.md")):
        version_dir = card_path.parent
        if not version_dir.name.isdigit():
            continue
        card = card_path.read_text()
        where = _card_run(card)
        if where is None or where.resolve() != run_dir.resolve():
            continue
        version = int(version_dir.name)
        passed = re.search(rf"^stage: {STAGE}$", card, re.M) is not None
        if passed and version in versions.served():
            promoted = version
            continue
        dest = cfg.runs_dir / f"{run_dir.name}-unfinished-v{version}"
        promote.move_out(model_dir, version, dest)
        log.warning("moved an unfinished round's version out of the repository",
                    version=version, to=str(dest))  # fmt: skip
    return promoted


def decision_of(result: GateResult, served: int, version: int) -> gate.GateDecision:
    """A gate verdict that did not come from trainer/gate.py (a test's, an experiment's), in
    the shape the model card writes."""
    return gate.GateDecision(
        result.passed, "real-rft", version, served, [gate.Check("gate", result.passed,
                                                                 result.reason)],
    )  # fmt: skip
