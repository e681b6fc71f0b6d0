"""`remed train promote RUN`: a finished training run becomes a served model version, only
through the gate (`trainer/gate.py`).

Two steps, because the live evaluation needs the candidate in Triton:

1. `remed train promote RUN --stage` writes `model_repo/remed_planner/N/` (written beside
   and renamed into place): the serving code of version 1 (`*.py`), the run's `adapter/` (or
   `weights/`), `serving.json` pinning the weight format it is served and evaluated in
   (`--weights`, default q8: the fine-tuned model loses under q4 what q8 and fp32 keep), the
   loss curve, and a MODEL_CARD.md saying `stage: candidate (sft)`. It loads nothing; it
   prints N. A second `--stage` of the same run finds the same N (by the artifact's sha256).
2. `remed train eval --version N ...` and `remed train eval --version <served> ...` measure
   both on the gate suite; `remed train promote RUN` reads the two `evaluation.json` files
   (default `RUN/eval/candidate/` and `RUN/eval/served/`), checks that they are of version N
   and of the version Triton serves now, and runs the gate. Passed: MODEL_CARD.md gets
   `stage: sft`, the evaluation table and the gate's checks, and `remed model load N` serves
   it (no downtime; the old version keeps serving if N fails to load). Refused: the message
   names each failed condition, and version N moves out of the model repository into
   `RUN/refused-vN/` so that no restart can serve it.

Exit codes (the CLI): 0 promoted (or staged), 1 refused or failed to load, 2 bad input.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer import gate
from trainer.config import REPO_ROOT
from trainer.sft import RunDir, artifact_digest

MODEL_DIR = REPO_ROOT / "model_repo" / "remed_planner"
SERVING_CODE_FROM = "1"  # the base version's serving code is the one every version ships
WEIGHT_FORMATS = ("q8", "fp32", "q4")


class PromoteError(RuntimeError):
    """The run cannot be staged or promoted as asked; the message says what to do."""


@dataclass(frozen=True)
class Outcome:
    version: int
    promoted: bool
    decision: gate.GateDecision | None
    message: str


def _versions_on_disk(model_dir: Path) -> list[int]:
    return sorted(
        int(p.name)
        for p in model_dir.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / "model.py").is_file()
    )


def find_staged(model_dir: Path, digest: str) -> int | None:
    """The version directory already holding the artifact with this sha256, if any."""
    for version in _versions_on_disk(model_dir):
        card = model_dir / str(version) / "MODEL_CARD.md"
        if card.is_file() and re.search(rf"^artifact_sha256: {digest}$", card.read_text(), re.M):
            return version
    return None


def _finished(run_dir: Path) -> tuple[RunDir, dict[str, Any], Path]:
    run = RunDir(run_dir)
    if not run.result.is_file():
        raise PromoteError(
            f"{run_dir} is not a finished training run (no result.json): finish it with "
            f"`remed train sft --config {run.config}`"
        )
    artifact = run.artifact()
    if artifact is None:
        raise PromoteError(f"{run_dir} has no adapter/ or weights/ to promote")
    return run, json.loads(run.result.read_text()), artifact


def model_card(
    version: int,
    run: RunDir,
    result: dict[str, Any],
    *,
    parent: int | None,
    weights: str,
    decision: gate.GateDecision | None,
    table: str = "",
) -> str:
    promoted = decision is not None and decision.passed
    if decision is None:
        gate_line = "pending: `remed train eval` this version, then `remed train promote`"
    else:
        gate_line = ("passed: " if decision.passed else "refused: ") + decision.reason()
    mb = result.get("artifact_bytes", 0) / 1e6
    lines = [
        f"# remed_planner version {version}",
        "",
        f"stage: {'sft' if promoted else 'candidate (sft)'}",
        f"parent: {parent if parent is not None else 'unknown'}",
        f"run: {_rel(run.root)}",
        f"dataset: {result.get('dataset')}",
        f"data_manifest_sha256: {result.get('data_manifest_sha256')}",
        f"artifact: {result.get('artifact')}/ ({result.get('method')}, {mb:.1f} MB)",
        f"artifact_sha256: {result.get('artifact_sha256')}",
        f"weights: {weights} (serving.json)",
        f"gate: {gate_line}",
        "",
        "## Training",
        "",
        f"- steps {result.get('steps')}, epochs {result.get('epochs')}, "
        f"tokens {result.get('tokens')}, {result.get('precision')}",
        f"- loss {_fmt(result.get('first_loss'))} -> {_fmt(result.get('final_loss'))} "
        f"(validation {_fmt(result.get('eval_loss'))})",
        f"- median {result.get('median_tok_per_s')} tok/s; dataset counts "
        f"{result.get('dataset_counts')}; dropped as too long: "
        f"{len(result.get('dropped_too_long') or [])}",
        "",
        "![loss curve](loss.png)",
        "",
        "Training config (`config.toml` of the run):",
        "",
        "```toml",
        run.config.read_text().rstrip() if run.config.is_file() else "# missing",
        "```",
        "",
        "## Evaluation",
        "",
    ]
    if decision is None:
        lines.append("Not evaluated yet.")
    else:
        lines += [table.rstrip() or "(no live rows)", "", "Gate checks:", ""]
        lines += [
            f"- {c.name}: {'ok' if c.passed else 'FAILED'}: {c.detail}" for c in decision.checks
        ]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def stage(
    run_dir: Path, *, model_dir: Path = MODEL_DIR, weights: str = "q8", parent: int | None = None
) -> int:
    """Write the run's candidate version directory (or find it written); its number."""
    if weights not in WEIGHT_FORMATS:
        raise PromoteError(f"--weights must be one of {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
    run, result, artifact = _finished(run_dir)
    digest = artifact_digest(artifact)
    if digest != result.get("artifact_sha256"):
        raise PromoteError(
            f"{artifact} changed after training (sha256 {digest[:12]}, result.json says "
            f"{str(result.get('artifact_sha256'))[:12]}): retrain or restore it"
        )
    found = find_staged(model_dir, digest)
    if found is not None:
        return found
    version = max(_versions_on_disk(model_dir), default=0) + 1
    tmp = model_dir / f".sft-{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for src in sorted((model_dir / SERVING_CODE_FROM).glob("*.py")):
        shutil.copy2(src, tmp / src.name)
    shutil.copytree(artifact, tmp / artifact.name)
    (tmp / "serving.json").write_text(json.dumps({"weights": weights}) + "\n")
    if run.loss_png.is_file():
        shutil.copy2(run.loss_png, tmp / "loss.png")
    (tmp / "MODEL_CARD.md").write_text(
        model_card(version, run, result, parent=parent, weights=weights, decision=None)
    )
    tmp.rename(model_dir / str(version))
    return version


def _table(candidate: dict[str, Any], served: dict[str, Any]) -> str:
    from trainer.evaluate import table

    rows: dict[str, Any] = {}
    for who, doc in (("candidate", candidate), ("served", served)):
        for name, row in (doc.get("live") or {}).items():
            rows[f"{who} v{doc.get('version')} {name}"] = row
    for doc in (candidate, served):  # baselines the evaluation measured beside (oracle, rules)
        for name, row in (doc.get("baselines") or {}).items():
            rows.setdefault(name, row)
    return table(rows) if rows else ""


def promote(
    run_dir: Path,
    versions: Any,
    *,
    candidate_eval: Path | None = None,
    served_eval: Path | None = None,
    suite: str = gate.DEFAULT_SUITE,
    model_dir: Path = MODEL_DIR,
    weights: str = "q8",
    load: bool = True,
) -> Outcome:
    """Gate the run's candidate against the served version and serve it if it passes.
    `versions` is a `remed_daemon.model_versions.ModelVersions` (or anything with `served()`
    and `load(n)`)."""
    run, result, _ = _finished(run_dir)
    served_now = versions.served()
    if len(served_now) != 1:
        raise PromoteError(f"Triton serves {served_now or 'nothing'}: serve one version first")
    version = stage(run_dir, model_dir=model_dir, weights=weights, parent=served_now[0])
    if version in served_now:
        return Outcome(version, True, None, f"version {version} is served already")
    target = model_dir / str(version)
    pinned = json.loads((target / "serving.json").read_text()).get("weights", weights)
    candidate = gate.read_evaluation(
        candidate_eval or run.root / "eval" / "candidate" / "evaluation.json"
    )
    served = gate.read_evaluation(served_eval or run.root / "eval" / "served" / "evaluation.json")
    if candidate.get("version") != version:
        raise PromoteError(
            f"the candidate evaluation is of version {candidate.get('version')}, but this run "
            f"is version {version}: run `remed train eval --version {version} ...`"
        )
    if served.get("version") not in served_now:
        raise PromoteError(
            f"the served evaluation is of version {served.get('version')}, but Triton serves "
            f"{served_now[0]}: run `remed train eval --version {served_now[0]} ...`"
        )
    decision = gate.decide(candidate, served, suite)
    (run.root / "gate.json").write_text(json.dumps(decision.to_json(), indent=2) + "\n")
    card = model_card(
        version,
        run,
        result,
        parent=served_now[0],
        weights=pinned,
        decision=decision,
        table=_table(candidate, served),
    )
    if not decision.passed:
        (target / "MODEL_CARD.md").write_text(card)
        refused = run.root / f"refused-v{version}"
        shutil.rmtree(refused, ignore_errors=True)
        target.rename(refused)
        return Outcome(
            version,
            False,
            decision,
            f"promotion of {_rel(run.root)} refused: {decision.reason()}; version {version} "
            f"moved to {_rel(refused)}, still serving {served_now[0]}",
        )
    (target / "MODEL_CARD.md").write_text(card)
    if not load:
        return Outcome(version, False, decision, f"gate passed; version {version} not loaded")
    try:
        versions.load(version)
    except Exception:
        failed = run.root / f"failed-v{version}"  # out of the repository: no restart serves it
        shutil.rmtree(failed, ignore_errors=True)
        target.rename(failed)
        raise
    return Outcome(version, True, decision, f"gate passed; now serving version {version}")


def print_outcome(outcome: Outcome) -> None:
    stream = sys.stdout if outcome.promoted or outcome.decision is None else sys.stderr
    print(outcome.message, file=stream)
