"""A Real-RFT round through the stage-1 gate with the SFT stage's machinery: the candidate is
staged by trainer/promote.py (stage real-rft, serving.json, parent), evaluated beside the
served version, judged by trainer/gate.py, loaded only when it passes, moved out of the
repository when it does not; an attempt killed mid-evaluation or mid-promotion leaves nothing
ungated served. Promotion's staging for each stage (sft, sim-rft, real-rft).

Without Triton or the lab: `FakeVersions` has `ModelVersions`' `served()`/`load(n)`, and the
measurement is a function of the version with `evaluate_version`'s contract (serve the version
asked for, write evaluation.json, serve the one before again). The same round against the real
stack is benchmarks/real_rft.py."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from real_rft_fakes import GENTLE, KILL, feedback, instant_train, outcome

from remed_stack.paths import REPO_ROOT
from trainer import evaluate, promote
from trainer.real_rft.config import RealRftConfig, RealRftConfigError
from trainer.real_rft.gating import Stage1Gate, evaluating_marker, recover
from trainer.real_rft.rounds import RoundRunner, stage1_gate, triton_promoter
from trainer.real_rft.store import Store
from trainer.sft import artifact_digest

pytestmark = pytest.mark.unit

URL = "http://127.0.0.1:18000"


class FakeVersions:
    def __init__(self, served: int = 1) -> None:
        self.serving = served
        self.loads: list[int] = []

    def served(self) -> list[int]:
        return [self.serving]

    def load(self, version: int) -> None:
        self.loads.append(version)
        self.serving = version


class Crash(BaseException):
    """kill -9: nothing after it runs (not an Exception, so no handler records anything)."""


def measured(rates: dict[int, float], rejected: int = 0, crash_on: int | None = None) -> Any:
    """A measurement per version with `evaluate_version`'s contract."""

    def evaluate_fn(version: int, versions: Any, *, out: Path, **kw: Any) -> dict[str, Any]:
        before = versions.served()
        if version not in before:
            versions.load(version)
        if version == crash_on:
            raise Crash()
        row = {"success_rate": rates.get(version, 0.5), "injected": 10,
               "recovered": int(rates.get(version, 0.5) * 10), "plans": 10,
               "guard_rejected": rejected if version != 1 else 0, "guard_dangerous": 0}  # fmt: skip
        doc = {"version": version, "served_before": before, "live": {"oneshot/hard": row}}
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(json.dumps(doc))
        if version not in before:
            versions.load(before[0])
        return doc

    return evaluate_fn


def setup(tmp_path: Path, n: int = 3) -> tuple[RealRftConfig, Store]:
    model_dir = tmp_path / "model_repo" / "remed_planner"
    (model_dir / "1").mkdir(parents=True)
    for src in (REPO_ROOT / "model_repo" / "remed_planner" / "1").glob("*.py"):
        shutil.copy2(src, model_dir / "1" / src.name)
    cfg = RealRftConfig(state_dir=tmp_path / "state", model_repo=tmp_path / "model_repo",
                        triton_url=URL, round_min_examples=2, round_min_examples_on_age=1,
                        gate_dataset="")  # fmt: skip
    s = Store(tmp_path / "s.sqlite3", feedback_grace_s=0)
    for i in range(n):
        s.add_outcome(outcome(f"i{i}", [(KILL, "passed")]), ("o", 0, i), now=1)
        s.add_feedback(feedback(f"i{i}", "bad", "alice", GENTLE), ("f", 0, i), now=1)
    return cfg, s


def runner(
    cfg: RealRftConfig, s: Store, versions: FakeVersions, evaluate_fn: Any,
    train: Callable[..., dict[str, Any]] = instant_train,
) -> RoundRunner:  # fmt: skip
    gate = Stage1Gate(cfg, versions, evaluate_fn=evaluate_fn, bench_url=lambda: URL)
    return RoundRunner(
        cfg, s, train=train, gate=gate, promote=triton_promoter(cfg, versions),
        served=lambda: versions.served()[0], recover=lambda d: recover(cfg, versions, d),
    )  # fmt: skip


def model_dir(cfg: RealRftConfig) -> Path:
    return cfg.model_repo / cfg.model_name


def test_a_better_candidate_is_staged_evaluated_and_promoted(tmp_path: Path) -> None:
    cfg, s = setup(tmp_path)
    versions = FakeVersions(served=1)
    rnd = s.claim_round(2, 16)
    assert rnd is not None
    result = runner(cfg, s, versions, measured({1: 0.5, 2: 0.7})).run(rnd, threading.Event())
    assert result["status"] == "promoted" and result["version"] == 2, result
    assert versions.loads == [2, 1, 2]  # measured, the served one back, then promoted
    version = model_dir(cfg) / "2"
    card = (version / "MODEL_CARD.md").read_text()
    assert "\nstage: real-rft\n" in card and "parent: 1" in card and "gate: passed" in card
    assert "data_window: round 1: 6 examples from 3 incidents" in card
    assert "- success: ok: live success on oneshot/hard 70.0% (v2) vs 50.0%" in card
    assert json.loads((version / "serving.json").read_text()) == {"weights": "q8"}
    assert (version / "model.py").is_file() and (version / "adapter" / "learned.json").is_file()
    run_dir = cfg.runs_dir / "round-1"
    training = json.loads((run_dir / "training.json").read_text())
    assert training["artifact_sha256"] == artifact_digest(version / "adapter")
    assert not evaluating_marker(cfg).exists()
    (row,) = s.rounds()
    assert row["status"] == "promoted" and row["version"] == 2
    assert row["gate"]["metrics"]["candidate"]["success_rate"] == 0.7
    assert row["gate"]["metrics"]["served"]["success_rate"] == 0.5


def test_a_worse_candidate_is_refused_and_leaves_the_repository(tmp_path: Path) -> None:
    cfg, s = setup(tmp_path)
    versions = FakeVersions(served=1)
    rnd = s.claim_round(2, 16)
    assert rnd is not None
    result = runner(cfg, s, versions, measured({1: 0.5, 2: 0.4})).run(rnd, threading.Event())
    assert result["status"] == "refused" and "lower" in result["reason"]
    assert versions.loads == [2, 1] and versions.served() == [1]
    assert sorted(p.name for p in model_dir(cfg).iterdir()) == ["1"]
    refused = cfg.runs_dir / "round-1" / "refused-v2" / "MODEL_CARD.md"
    assert "stage: candidate (real-rft)" in refused.read_text()
    assert "gate: refused: success: live success" in refused.read_text()


def test_more_guard_rejections_are_refused(tmp_path: Path) -> None:
    cfg, s = setup(tmp_path)
    versions = FakeVersions(served=1)
    rnd = s.claim_round(2, 16)
    assert rnd is not None
    result = runner(cfg, s, versions, measured({1: 0.5, 2: 0.9}, rejected=2)).run(
        rnd, threading.Event()
    )
    assert result["status"] == "refused" and "guard_rejections" in result["reason"]
    assert versions.served() == [1]


def test_kill_during_the_candidates_evaluation_serves_the_old_version_again(
    tmp_path: Path,
) -> None:
    cfg, s = setup(tmp_path)
    versions = FakeVersions(served=1)
    rnd = s.claim_round(2, 16)
    assert rnd is not None
    with pytest.raises(Crash):
        runner(cfg, s, versions, measured({1: 0.5, 2: 0.7}, crash_on=2)).run(rnd, threading.Event())
    assert versions.served() == [2] and evaluating_marker(cfg).exists()  # ungated, loaded
    again = s.running_round()
    assert again is not None and again.id == rnd.id
    # the restart: first the old version back and the half-done candidate out, then the round
    trained: list[int] = []

    def train(*args: Any) -> dict[str, Any]:
        trained.append(1)
        return instant_train(*args)

    result = runner(cfg, s, versions, measured({1: 0.5, 2: 0.4}), train).run(
        again, threading.Event()
    )
    # the crash left 2 loaded; the restart served 1 again; the re-run measured 2, served 1
    assert versions.loads == [2, 1, 2, 1]
    assert result["status"] == "refused" and trained == [1]
    assert versions.served() == [1] and not evaluating_marker(cfg).exists()
    assert (cfg.runs_dir / "round-1-unfinished-v2" / "MODEL_CARD.md").is_file()
    assert sorted(p.name for p in model_dir(cfg).iterdir()) == ["1"]


def test_kill_after_the_swap_records_the_promotion_without_training_again(
    tmp_path: Path,
) -> None:
    cfg, s = setup(tmp_path)
    versions = FakeVersions(served=1)
    rnd = s.claim_round(2, 16)
    assert rnd is not None
    run = runner(cfg, s, versions, measured({1: 0.5, 2: 0.7}))
    inner = run.promote

    def promote_then_die(run_dir: Path, served: int, card: dict[str, Any]) -> int:
        inner(run_dir, served, card)
        raise Crash()

    run.promote = promote_then_die
    with pytest.raises(Crash):
        run.run(rnd, threading.Event())
    assert versions.served() == [2] and s.rounds()[0]["status"] == "running"
    again = s.running_round()
    assert again is not None

    def no_training(*args: Any) -> dict[str, Any]:
        raise AssertionError("a promoted round is not trained again")

    result = runner(cfg, s, versions, measured({}), no_training).run(again, threading.Event())
    assert result == {**result, "status": "promoted", "version": 2}
    assert s.rounds()[0]["status"] == "promoted" and versions.served() == [2]


def test_a_gate_that_fails_refuses_and_takes_back_what_it_staged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, s = setup(tmp_path)
    versions = FakeVersions(served=1)

    def broken(version: int, versions: Any, **kw: Any) -> dict[str, Any]:
        raise RuntimeError("remed bench: the lab is not up")

    monkeypatch.setattr(evaluate, "evaluate_version", broken)
    monkeypatch.setattr("trainer.real_rft.gating.stack_triton_url", lambda: URL)
    rnd = s.claim_round(2, 16)
    assert rnd is not None
    run = RoundRunner(cfg, s, train=instant_train, gate=stage1_gate(cfg, versions),
                      promote=triton_promoter(cfg, versions), served=lambda: 1,
                      recover=lambda d: recover(cfg, versions, d))  # fmt: skip
    result = run.run(rnd, threading.Event())
    assert result["status"] == "refused"
    assert "the gate failed" in result["reason"] and "lab is not up" in result["reason"]
    assert sorted(p.name for p in model_dir(cfg).iterdir()) == ["1"]
    assert (cfg.runs_dir / "round-1-unfinished-v2").is_dir() and versions.loads == []


def test_the_gate_refuses_to_measure_another_triton(tmp_path: Path) -> None:
    cfg, _ = setup(tmp_path, n=0)
    versions = FakeVersions(served=1)
    gate = Stage1Gate(cfg, versions, evaluate_fn=measured({}), bench_url=lambda: "127.0.0.1:9")
    verdict = gate(tmp_path, 1, tmp_path)
    assert not verdict.passed and "real_rft.triton_url" in verdict.reason
    assert sorted(p.name for p in model_dir(cfg).iterdir()) == ["1"]


def test_a_stage1_gate_needs_a_live_row() -> None:
    with pytest.raises(RealRftConfigError, match="gate_suite"):
        RealRftConfig(gate_suite="", gate_loop_suite="")
    assert RealRftConfig(gate_suite="", gate_loop_suite="all").gate_row_name == "loop/all"
    assert RealRftConfig(gate="none", gate_suite="").gate_row_name == ""


# -- trainer/promote.py for every stage ----------------------------------------------------------


def adapter_run(root: Path, summary: str, doc: dict[str, Any]) -> Path:
    (root / "adapter").mkdir(parents=True)
    (root / "adapter" / "adapter_config.json").write_text('{"r": 8}')
    (root / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 32)
    (root / summary).write_text(json.dumps(doc))
    return root


@pytest.mark.parametrize(
    ("summary", "stage", "says"),
    [("summary.json", "sim-rft", "grpo"), ("training.json", "real-rft", "kto")],
)
def test_every_stage_stages_the_same_way(
    tmp_path: Path, summary: str, stage: str, says: str
) -> None:
    cfg, _ = setup(tmp_path, n=0)
    run_dir = adapter_run(tmp_path / "run", summary, {"method": says, "steps": 4,
                                                       "log": [{"loss": 1.0}]})  # fmt: skip
    assert promote.detect_stage(run_dir) == stage
    version = promote.stage(run_dir, model_dir=model_dir(cfg), parent=1, weights="fp32")
    assert version == 2
    card = (model_dir(cfg) / "2" / "MODEL_CARD.md").read_text()
    assert f"stage: candidate ({stage})" in card and "parent: 1" in card
    assert f'"method": "{says}"' in card and '"loss"' not in card
    assert "artifact: adapter/" in card and "weights: fp32 (serving.json)" in card
    assert json.loads((model_dir(cfg) / "2" / "serving.json").read_text()) == {"weights": "fp32"}
    assert promote.stage(run_dir, model_dir=model_dir(cfg)) == 2  # found by its sha256
    with pytest.raises(promote.PromoteError, match="stage must be one of"):
        promote.stage(run_dir, model_dir=model_dir(cfg), stage_name="rlhf")
    with pytest.raises(promote.PromoteError, match=r"no result\.json"):
        promote.stage(run_dir, model_dir=model_dir(cfg), stage_name="sft")


def test_a_recorded_digest_is_checked_for_rft_runs_too(tmp_path: Path) -> None:
    cfg, _ = setup(tmp_path, n=0)
    run_dir = adapter_run(tmp_path / "run", "training.json", {"artifact_sha256": "0" * 64})
    with pytest.raises(promote.PromoteError, match="changed after training"):
        promote.stage(run_dir, model_dir=model_dir(cfg))


# -- evaluate_version: the version asked for, then the one before --------------------------------


def test_evaluate_version_serves_the_version_before_again_even_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(evaluate, "wait_ready", lambda url: None)  # no Triton here to ask
    versions = FakeVersions(served=1)
    doc = evaluate.evaluate_version(2, versions, url=URL, out=tmp_path / "e")
    assert doc["version"] == 2 and doc["served_before"] == [1] and versions.loads == [2, 1]
    assert json.loads((tmp_path / "e" / "evaluation.json").read_text())["version"] == 2
    with pytest.raises(Exception, match="no-such-dataset"):
        evaluate.evaluate_version(3, versions, url=URL, out=tmp_path / "f",
                                  dataset=tmp_path / "no-such-dataset")  # fmt: skip
    assert versions.loads == [2, 1, 3, 1] and versions.served() == [1]
    with pytest.raises(evaluate.EvaluationError, match="--version N"):
        evaluate.evaluate_version(None, type("Nothing", (), {"served": lambda self: []})(),
                                  url=URL, out=tmp_path / "g")  # fmt: skip
