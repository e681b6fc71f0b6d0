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

The same two steps serve every stage (`STAGES`): an SFT run (`result.json`), a Sim-RFT run
(`summary.json`, trainer/sim_rft.py) and a Real-RFT round (`training.json`,
trainer/real_rft/). The stage is found from the run directory's files (or named with
`stage_name=`); the card says `stage: candidate (<stage>)` until the gate passes and `stage:
<stage>` after.

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
STAGES = ("sft", "sim-rft", "real-rft")
PLOTS = ("loss.png", "reward_curve.png", "signal_fraction.png")  # copied beside the card
SERVING_FILE = "serving.json"  # model_repo/remed_planner/1/model.py reads it (read_serving)


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


@dataclass(frozen=True)
class Finished:
    """A finished training run of one stage: its directory, its summary, its artifact."""

    stage: str
    run: RunDir
    result: dict[str, Any]  # result.json (sft), summary.json (sim-rft), training.json (real-rft)
    artifact: Path  # adapter/ or weights/


def _summary_file(run_dir: Path, stage_name: str) -> Path:
    name = {"sft": "result.json", "sim-rft": "summary.json", "real-rft": "training.json"}
    return run_dir / name[stage_name]


def detect_stage(run_dir: Path) -> str | None:
    """The stage whose finished run `run_dir` is, by the file its training wrote last (a
    Real-RFT round writes its own result.json after the gate, so it is asked first)."""
    for name in ("real-rft", "sim-rft", "sft"):
        if _summary_file(run_dir, name).is_file():
            return name
    return None


def finished(run_dir: Path, stage_name: str | None = None) -> Finished:
    """The run as promotion needs it; `PromoteError` says what is missing."""
    run = RunDir(run_dir)
    if stage_name is not None and stage_name not in STAGES:
        raise PromoteError(f"stage must be one of {', '.join(STAGES)}, got {stage_name!r}")
    kind = stage_name or detect_stage(run_dir) or "sft"
    summary = _summary_file(run_dir, kind)
    if not summary.is_file():
        how = {"sft": f"`remed train sft --config {run.config}`",
               "sim-rft": "`remed train sim-rft --run-dir RUN`",
               "real-rft": "the Real-RFT round that owns it"}[kind]  # fmt: skip
        raise PromoteError(
            f"{run_dir} is not a finished training run (no {summary.name}): finish it with {how}"
        )
    artifact = run.artifact()
    if artifact is None:
        raise PromoteError(f"{run_dir} has no adapter/ or weights/ to promote")
    return Finished(kind, run, json.loads(summary.read_text()), artifact)


def model_card(
    version: int,
    run: RunDir,
    result: dict[str, Any],
    *,
    parent: int | None,
    weights: str,
    decision: gate.GateDecision | None,
    table: str = "",
    stage_name: str = "sft",
) -> str:
    promoted = decision is not None and decision.passed
    if decision is None:
        gate_line = "pending: `remed train eval` this version, then `remed train promote`"
    else:
        gate_line = ("passed: " if decision.passed else "refused: ") + decision.reason()
    mb = result.get("artifact_bytes", 0) / 1e6
    data = (
        [f"dataset: {result.get('dataset')}"]
        if stage_name == "sft"
        else [f"data_window: {result.get('data_window', 'unknown')}"]
    )
    lines = [
        f"# remed_planner version {version}",
        "",
        f"stage: {stage_name if promoted else f'candidate ({stage_name})'}",
        f"parent: {parent if parent is not None else 'unknown'}",
        f"run: {_rel(run.root)}",
        *data,
        f"data_manifest_sha256: {result.get('data_manifest_sha256')}",
        f"artifact: {result.get('artifact')}/ ({result.get('method')}, {mb:.1f} MB)",
        f"artifact_sha256: {result.get('artifact_sha256')}",
        f"weights: {weights} (serving.json)",
        f"gate: {gate_line}",
        "",
        "## Training",
        "",
        *(_sft_training(run, result) if stage_name == "sft" else _rft_training(run, result)),
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


def _sft_training(run: RunDir, result: dict[str, Any]) -> list[str]:
    return [
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
    ]


def _rft_training(run: RunDir, result: dict[str, Any]) -> list[str]:
    """Sim-RFT and Real-RFT: the run's own summary (its per-step log left out)."""
    summary = {k: v for k, v in result.items() if k not in ("log", "rates", "tasks")}
    plots = [f"![{p.stem.replace('_', ' ')}]({p.name})" for p in _plots(run.root)]
    return ["```json", json.dumps(summary, indent=2, default=str), "```", *plots]


def _plots(run_dir: Path) -> list[Path]:
    return [run_dir / n for n in PLOTS if (run_dir / n).is_file()]


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def write_serving(version_dir: Path, weights: str) -> None:
    """`serving.json`: the weight format this version is served (and evaluated) in, whatever
    config.pbtxt's default (model.py `read_serving`)."""
    if weights not in WEIGHT_FORMATS:
        raise PromoteError(f"--weights must be one of {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
    (version_dir / SERVING_FILE).write_text(json.dumps({"weights": weights}) + "\n")


def stage(
    run_dir: Path,
    *,
    model_dir: Path = MODEL_DIR,
    weights: str = "q8",
    parent: int | None = None,
    stage_name: str | None = None,
) -> int:
    """Write the run's candidate version directory (or find it written); its number.
    `stage_name`: sft, sim-rft or real-rft (default: what the run directory holds)."""
    if weights not in WEIGHT_FORMATS:
        raise PromoteError(f"--weights must be one of {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
    done = finished(run_dir, stage_name)
    run, artifact = done.run, done.artifact
    digest = artifact_digest(artifact)
    recorded = done.result.get("artifact_sha256")
    if (recorded or done.stage == "sft") and digest != recorded:
        raise PromoteError(
            f"{artifact} changed after training (sha256 {digest[:12]}, "
            f"{_summary_file(run_dir, done.stage).name} says {str(recorded)[:12]}): retrain or "
            "restore it"
        )
    found = find_staged(model_dir, digest)
    if found is not None:
        return found
    result = _with_artifact(done, digest)
    version = max(_versions_on_disk(model_dir), default=0) + 1
    tmp = model_dir / f".{done.stage}-{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for src in sorted((model_dir / SERVING_CODE_FROM).glob("*.py")):
        shutil.copy2(src, tmp / src.name)
    shutil.copytree(artifact, tmp / artifact.name)
    write_serving(tmp, weights)
    for plot in _plots(run.root):
        shutil.copy2(plot, tmp / plot.name)
    card = model_card(version, run, result, parent=parent, weights=weights, decision=None,
                      stage_name=done.stage)  # fmt: skip
    (tmp / "MODEL_CARD.md").write_text(card)
    tmp.rename(model_dir / str(version))
    return version


def _with_artifact(done: Finished, digest: str) -> dict[str, Any]:
    """The run's summary with what the card says of its artifact (SFT records it; the RFT
    stages' summaries may not)."""
    size = sum(p.stat().st_size for p in done.artifact.rglob("*") if p.is_file())
    return {"artifact": done.artifact.name, "artifact_bytes": size, **done.result,
            "artifact_sha256": digest}  # fmt: skip


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
    stage_name: str | None = None,
) -> Outcome:
    """Gate the run's candidate against the served version and serve it if it passes.
    `versions` is a `remed_daemon.model_versions.ModelVersions` (or anything with `served()`
    and `load(n)`)."""
    done = finished(run_dir, stage_name)
    run = done.run
    served_now = versions.served()
    if len(served_now) != 1:
        raise PromoteError(f"Triton serves {served_now or 'nothing'}: serve one version first")
    version = stage(run_dir, model_dir=model_dir, weights=weights, parent=served_now[0],
                    stage_name=done.stage)  # fmt: skip
    if version in served_now:
        return Outcome(version, True, None, f"version {version} is served already")
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
    outcome = conclude(
        run_dir, version, decision, parent=served_now[0], model_dir=model_dir,
        table=_table(candidate, served), stage_name=done.stage,
    )  # fmt: skip
    if not decision.passed or not load:
        return outcome
    load_version(versions, version, run_dir, model_dir=model_dir)
    return Outcome(version, True, decision, f"gate passed; now serving version {version}")


def conclude(
    run_dir: Path,
    version: int,
    decision: gate.GateDecision,
    *,
    parent: int,
    model_dir: Path = MODEL_DIR,
    table: str = "",
    stage_name: str | None = None,
) -> Outcome:
    """Write the gate's decision into staged version `version`'s card; a refused version
    moves out of the model repository into `RUN/refused-vN/`, so that no restart serves it.
    Loads nothing."""
    done = finished(run_dir, stage_name)
    target = model_dir / str(version)
    pinned = json.loads((target / SERVING_FILE).read_text()).get("weights", "q8")
    result = _with_artifact(done, artifact_digest(done.artifact))
    card = model_card(version, done.run, result, parent=parent, weights=pinned,
                      decision=decision, table=table, stage_name=done.stage)  # fmt: skip
    (target / "MODEL_CARD.md").write_text(card)
    if not decision.passed:
        refused = move_out(model_dir, version, run_dir / f"refused-v{version}")
        return Outcome(
            version,
            False,
            decision,
            f"promotion of {_rel(run_dir)} refused: {decision.reason()}; version {version} "
            f"moved to {_rel(refused)}, still serving {parent}",
        )
    return Outcome(version, False, decision, f"gate passed; version {version} not loaded")


def move_out(model_dir: Path, version: int, dest: Path) -> Path:
    """Version `version` out of the model repository (Triton loads by directory)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    (model_dir / str(version)).rename(dest)
    return dest


def load_version(
    versions: Any, version: int, run_dir: Path, *, model_dir: Path = MODEL_DIR
) -> None:
    """`remed model load N` for a version the gate passed; one that fails to load moves out
    of the repository into `RUN/failed-vN/` (no restart serves it) and the error propagates
    (the old version keeps serving)."""
    try:
        versions.load(version)
    except Exception:
        move_out(model_dir, version, run_dir / f"failed-v{version}")
        raise


def print_outcome(outcome: Outcome) -> None:
    stream = sys.stdout if outcome.promoted or outcome.decision is None else sys.stderr
    print(outcome.message, file=stream)
