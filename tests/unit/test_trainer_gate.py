"""The promotion gate's decisions and the promotion around it, without Triton: a fake version
manager stands in for `ModelVersions` (same `served()`/`load(n)` interface)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from remed_stack.paths import REPO_ROOT
from trainer import evaluate, gate, promote
from trainer.config import SFTConfig
from trainer.sft import RunDir, artifact_digest

pytestmark = pytest.mark.unit


def evaluation(version: int, success: float, rejected: int = 0, **extra: Any) -> dict[str, Any]:
    row = {"success_rate": success, "injected": 20, "recovered": int(success * 20),
           "guard_rejected": rejected, "guard_dangerous": 0}  # fmt: skip
    row.update(extra)
    return {"version": version, "live": {"oneshot/gate": row}}


def test_a_better_candidate_passes() -> None:
    decision = gate.decide(evaluation(2, 0.85), evaluation(1, 0.0, rejected=3))
    assert decision.passed, decision.reason()
    assert [c.name for c in decision.checks] == ["success", "guard_rejections", "dangerous"]


def test_an_equal_candidate_passes() -> None:
    assert gate.decide(evaluation(2, 0.5, 1), evaluation(1, 0.5, 1)).passed


NO_DANGER_FIELD = {"oneshot/gate": {"success_rate": 0.9, "injected": 20, "guard_rejected": 1}}
LOOP_DANGER = {**evaluation(2, 0.9)["live"], "loop/all": {"guard_dangerous": 2}}
NO_RATE = {"oneshot/gate": {"success_rate": None, "injected": 3}}
DANGER_LIST = [{"id": "t-07", "rules": ["shell.destructive"]}]


@pytest.mark.parametrize(
    ("candidate", "served", "failed", "says"),
    [
        (evaluation(2, 0.4), evaluation(1, 0.5), "success", "lower"),
        (evaluation(2, 0.9, 2), evaluation(1, 0.5, 1), "guard_rejections", "higher"),
        (
            evaluation(2, 0.9, 1, guard_dangerous=1),
            evaluation(1, 0.5, 1),
            "dangerous",
            "1 in live oneshot/gate",
        ),
        # guard_dangerous absent: every rejection counts as dangerous (fail closed)
        ({"version": 2, "live": NO_DANGER_FIELD}, evaluation(1, 0.5, 1), "dangerous", "1 in live"),
        ({**evaluation(2, 0.9), "dangerous": DANGER_LIST}, evaluation(1, 0.5), "dangerous",
         "t-07 (shell.destructive)"),
        ({"version": 2, "live": LOOP_DANGER}, evaluation(1, 0.5), "dangerous", "2 in live loop"),
        ({"version": 2, "live": {}}, evaluation(1, 0.5), "evaluation", "--version 2 --suite gate"),
        (evaluation(2, 0.9), {"version": 1}, "evaluation", "--version 1 --suite gate"),
        (evaluation(2, 0.9), evaluation(2, 0.5), "evaluation", "both of version 2"),
        ({"live": evaluation(2, 0.9)["live"]}, evaluation(1, 0.5), "evaluation", "integer version"),
        ({"version": 2, "live": NO_RATE}, evaluation(1, 0.5), "evaluation", "success_rate is"),
    ],
)  # fmt: skip
def test_a_refusal_names_the_condition_that_failed(
    candidate: dict[str, Any], served: dict[str, Any], failed: str, says: str
) -> None:
    decision = gate.decide(candidate, served)
    assert not decision.passed
    assert [c.name for c in decision.checks if not c.passed] == [failed]
    assert says in decision.reason()


def test_offline_rejections_count_when_both_ran_the_same_split() -> None:
    cand, served = evaluation(2, 0.9), evaluation(1, 0.5)
    cand["offline"] = {"dataset": "d", "split": "test", "total": 100, "guard_refused": 5,
                       "guard_dangerous": 0}  # fmt: skip
    served["offline"] = {"dataset": "d", "split": "test", "total": 100, "guard_refused": 1}
    decision = gate.decide(cand, served)
    assert [c.name for c in decision.checks if not c.passed] == ["guard_rejections"]
    assert "offline 5.0% vs 1.0%" in decision.reason()
    served["offline"]["split"] = "validation"  # not comparable: only the live rate counts
    assert gate.decide(cand, served).passed


def test_offline_dangerous_counts_harmful_refusals_not_malformed_playbooks() -> None:
    def case(why: str) -> dict[str, Any]:
        return {"id": why, "category": "c", "turn": "oneshot", "family": "f", "blind": False,
                "matched": False, "why": why, "completion_tokens": 1}  # fmt: skip

    summary = evaluate.summarise_offline([
        case("guard refused: shell.syntax"), case("guard refused: task.bad_args, yaml.invalid"),
        case("guard refused: destructive.disk, shell.syntax"), case("no playbook"),
    ])  # fmt: skip
    assert (summary["guard_refused"], summary["guard_dangerous"]) == (3, 1)
    assert evaluate.refused_rules("guard refused: a.b, c.d") == ["a.b", "c.d"]
    assert evaluate.refused_rules("no playbook") == []


def test_a_missing_or_broken_evaluation_file_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(gate.GateError, match="remed train eval"):
        gate.read_evaluation(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(gate.GateError, match="not JSON"):
        gate.read_evaluation(tmp_path / "bad.json")


# -- promotion ---------------------------------------------------------------------------------


class FakeVersions:
    def __init__(self, served: int) -> None:
        self.serving = served
        self.loads: list[int] = []

    def served(self) -> list[int]:
        return [self.serving]

    def load(self, version: int) -> None:
        self.loads.append(version)
        self.serving = version


def finished_run(root: Path) -> Path:
    """A run directory as `run_sft` leaves it (a fake adapter; promotion never loads it)."""
    cfg = SFTConfig(name="unit", runs_dir=str(root / "runs"))
    run = RunDir(cfg.run_dir)
    (run.root / "adapter").mkdir(parents=True)
    (run.root / "adapter" / "adapter_config.json").write_text('{"r": 16}')
    (run.root / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    run.config.write_text(cfg.to_toml())
    run.manifest.write_text("{}")
    result = {"name": "unit", "method": "lora", "artifact": "adapter", "artifact_bytes": 64,
              "artifact_sha256": artifact_digest(run.root / "adapter"), "steps": 3,
              "data_manifest_sha256": "m" * 64, "dataset": "fixture"}  # fmt: skip
    run.result.write_text(json.dumps(result))
    return run.root


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    out = tmp_path / "model_repo" / "remed_planner"
    (out / "1").mkdir(parents=True)
    for src in (REPO_ROOT / "model_repo" / "remed_planner" / "1").glob("*.py"):
        shutil.copy2(src, out / "1" / src.name)
    return out


def write_evals(run_dir: Path, candidate: dict[str, Any], served: dict[str, Any]) -> None:
    for who, doc in (("candidate", candidate), ("served", served)):
        (run_dir / "eval" / who).mkdir(parents=True, exist_ok=True)
        (run_dir / "eval" / who / "evaluation.json").write_text(json.dumps(doc))


def test_stage_writes_a_candidate_once(tmp_path: Path, model_dir: Path) -> None:
    run_dir = finished_run(tmp_path)
    version = promote.stage(run_dir, model_dir=model_dir, parent=1)
    assert version == 2
    staged = model_dir / "2"
    assert sorted(p.name for p in staged.glob("*.py")) == sorted(
        p.name for p in (model_dir / "1").glob("*.py")
    )
    assert (staged / "adapter" / "adapter_config.json").is_file()
    assert json.loads((staged / "serving.json").read_text()) == {"weights": "q8"}
    card = (staged / "MODEL_CARD.md").read_text()
    assert "stage: candidate (sft)" in card and "\nstage: sft" not in card
    assert "parent: 1" in card and "data_manifest_sha256: " + "m" * 64 in card
    assert "[sft]" in card  # the training config
    assert promote.stage(run_dir, model_dir=model_dir) == 2  # found again, not copied twice
    assert not list(model_dir.glob(".*tmp"))


def test_promote_serves_a_candidate_that_passes(tmp_path: Path, model_dir: Path) -> None:
    run_dir = finished_run(tmp_path)
    versions = FakeVersions(served=1)
    write_evals(run_dir, evaluation(2, 0.9), evaluation(1, 0.0, rejected=2))
    outcome = promote.promote(run_dir, versions, model_dir=model_dir)
    assert outcome.promoted and versions.loads == [2], outcome.message
    card = (model_dir / "2" / "MODEL_CARD.md").read_text()
    assert "\nstage: sft\n" in card and "gate: passed" in card
    assert "| candidate v2 oneshot/gate | 18/20 |" in card
    assert json.loads((run_dir / "gate.json").read_text())["passed"] is True
    again = promote.promote(run_dir, versions, model_dir=model_dir)
    assert again.promoted and versions.loads == [2]  # served already: nothing to do


def test_a_refused_promotion_serves_nothing_and_leaves_the_repository(
    tmp_path: Path, model_dir: Path
) -> None:
    run_dir = finished_run(tmp_path)
    versions = FakeVersions(served=1)
    write_evals(run_dir, evaluation(2, 0.3), evaluation(1, 0.5))
    outcome = promote.promote(run_dir, versions, model_dir=model_dir)
    assert not outcome.promoted and versions.loads == []
    assert "success: live success on oneshot/gate 30.0% (v2) vs 50.0%" in outcome.message
    assert not (model_dir / "2").exists()
    assert "gate: refused" in (run_dir / "refused-v2" / "MODEL_CARD.md").read_text()


def test_promotion_refuses_stale_evaluations(tmp_path: Path, model_dir: Path) -> None:
    run_dir = finished_run(tmp_path)
    write_evals(run_dir, evaluation(5, 0.9), evaluation(1, 0.5))
    with pytest.raises(promote.PromoteError, match="--version 2"):
        promote.promote(run_dir, FakeVersions(served=1), model_dir=model_dir)
    write_evals(run_dir, evaluation(2, 0.9), evaluation(1, 0.5))
    with pytest.raises(promote.PromoteError, match="Triton serves 3"):
        promote.promote(run_dir, FakeVersions(served=3), model_dir=model_dir)


def test_promotion_refuses_an_unfinished_or_altered_run(tmp_path: Path, model_dir: Path) -> None:
    run_dir = finished_run(tmp_path)
    (run_dir / "adapter" / "adapter_model.safetensors").write_bytes(b"\1" * 64)
    with pytest.raises(promote.PromoteError, match="changed after training"):
        promote.stage(run_dir, model_dir=model_dir)
    (run_dir / "result.json").unlink()
    with pytest.raises(promote.PromoteError, match="not a finished training run"):
        promote.stage(run_dir, model_dir=model_dir)


def test_the_cli_exit_code_says_refused(tmp_path: Path, model_dir: Path, monkeypatch: Any) -> None:
    import remed_cli
    from remed_cli import daemon

    run_dir = finished_run(tmp_path)
    write_evals(run_dir, evaluation(2, 0.9, rejected=3), evaluation(1, 0.9, rejected=0))
    monkeypatch.setattr(daemon, "_model_versions", lambda args: FakeVersions(served=1))
    code = remed_cli.main(["train", "promote", str(run_dir), "--model-repo", str(model_dir)])
    assert code == 1
    assert not (model_dir / "2").exists()
    assert json.loads((run_dir / "gate.json").read_text())["failures"]
