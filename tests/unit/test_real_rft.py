"""Real-RFT's examples, store and rounds, without Kafka or training (real SQLite, real guard):
the label table, repeats counted once, the per-author cap, the poisoning cases (a guard-refused
correction never trained on; a harmful-but-allowed one stopped by the gate) and a round that
a crash interrupted running again on the same examples."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from real_rft_fakes import GENTLE, KILL, RESTART_DB, WIPE, feedback, instant_train, outcome

from trainer.real_rft.config import RealRftConfig, RealRftConfigError
from trainer.real_rft.examples import answer
from trainer.real_rft.rounds import GateResult, RoundRunner, install_version
from trainer.real_rft.store import Store

pytestmark = pytest.mark.unit


def where(n: int, topic: str = "t") -> tuple[str, int, int]:
    return (topic, 0, n)


def store(tmp_path: Path, grace_s: float = 0.0) -> Store:
    return Store(tmp_path / "s.sqlite3", feedback_grace_s=grace_s)


def labels(s: Store) -> list[tuple[str, bool, str]]:
    return sorted((e.completion, e.label, e.source) for e in s.examples())


def test_label_table(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.add_outcome(outcome("i1", [(KILL, "failed"), (GENTLE, "passed")]), where(1), now=10)
    s.add_outcome(outcome("i2", [(WIPE, "refused")]), where(2), now=10)
    s.add_outcome(outcome("i3", [(GENTLE, "shadow")]), where(3), now=10)
    assert labels(s) == sorted(
        [
            (answer(KILL), False, "failed"),
            (answer(GENTLE), True, "verified"),
            (answer(WIPE), False, "refused"),
        ]
    )  # fmt: skip  (shadow without feedback: nothing)
    s.add_feedback(feedback("i3", "good", "bob"), where(4), now=11)
    s.add_feedback(feedback("i1", "bad", "carol"), where(5), now=11)
    got = {(e.incident_id, e.completion, e.label, e.source) for e in s.examples()}
    assert ("i3", answer(GENTLE), True, "feedback:good") in got
    assert ("i1", answer(GENTLE), False, "feedback:bad") in got  # bad beats verified
    assert ("i1", answer(GENTLE), True, "verified") not in got


def test_prompts_are_the_ones_the_planner_saw(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.add_outcome(outcome("i1", [(KILL, "failed"), (GENTLE, "passed")]), where(1), now=10)
    by_completion = {e.completion: e for e in s.examples()}
    assert all(e.prompt_exact for e in by_completion.values())
    assert "Previous attempt 1 failed" in by_completion[answer(GENTLE)].prompt
    assert "Previous attempt" not in by_completion[answer(KILL)].prompt


def test_correction_is_desirable_and_the_executed_playbook_not(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.add_feedback(
        feedback("i1", "bad", "alice", KILL.replace("kill", "x") and GENTLE), where(1, "f"), now=5
    )  # fmt: skip  (before its outcome: joined later)
    assert s.examples() == []
    s.add_outcome(outcome("i1", [(KILL, "passed")]), where(1), now=10)
    assert labels(s) == sorted([(answer(KILL), False, "feedback:bad"),
                                (answer(GENTLE), True, "corrected")])  # fmt: skip
    (fix,) = [e for e in s.examples() if e.label]
    assert fix.author == "alice" and "cart is down (i1)" in fix.prompt


def test_the_same_message_twice_counts_once(tmp_path: Path) -> None:
    s = store(tmp_path)
    doc = outcome("i1", [(GENTLE, "passed")])
    fb = feedback("i1", "good", "bob", fid="fb-1")
    assert s.add_outcome(doc, where(1), now=1)
    assert not s.add_outcome(doc, where(1), now=1)  # redelivered offset
    assert not s.add_outcome(doc, where(2), now=1)  # the daemon's at-least-once repeat
    assert s.add_feedback(fb, where(1, "f"), now=1)
    assert not s.add_feedback(fb, where(1, "f"), now=1)
    assert not s.add_feedback(fb, where(2, "f"), now=1)  # resent: same feedback_id
    counts = s.counts()
    assert (counts["outcomes"], counts["feedback"]) == (1, 1)
    assert counts["categories"]["process-killed"]["verdicts"] == {"good": 1}
    assert len(s.examples()) == 1


def test_latest_verdict_per_author_and_complaints_win(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.add_outcome(outcome("i1", [(GENTLE, "passed")]), where(1), now=1)
    s.add_feedback(feedback("i1", "bad", "bob", at="2026-01-01T00:00:00Z"), where(1, "f"), now=2)
    s.add_feedback(feedback("i1", "good", "bob", at="2026-01-02T00:00:00Z"), where(2, "f"), now=3)
    assert labels(s) == [(answer(GENTLE), True, "feedback:good")]  # bob changed his mind
    s.add_feedback(feedback("i1", "unsafe", "eve"), where(3, "f"), now=4)
    assert labels(s) == [(answer(GENTLE), False, "feedback:unsafe")]


def test_no_complaint_waits_for_the_grace_period(tmp_path: Path) -> None:
    s = store(tmp_path, grace_s=100)
    s.add_outcome(outcome("i1", [(GENTLE, "passed")]), where(1), now=1000)
    assert s.ready(1050)[0] == 0 and s.ready(1100)[0] == 1
    s.add_feedback(feedback("i1", "bad"), where(1, "f"), now=1050)
    assert s.ready(1050)[0] == 1  # a complaint needs no waiting


def test_one_author_is_capped_per_category(tmp_path: Path) -> None:
    s = store(tmp_path)
    for n in range(10):
        s.add_outcome(outcome(f"i{n}", [(KILL, "passed")], hosts=("app", "db")), where(n), now=1)
        s.add_feedback(feedback(f"i{n}", "bad", "mallory", RESTART_DB, fid=f"m{n}"),
                       where(n, "f"), now=1)  # fmt: skip
    s.add_outcome(outcome("j", [(KILL, "passed")]), where(99), now=1)
    s.add_feedback(feedback("j", "good", "alice"), where(99, "f"), now=1)
    rnd = s.claim_round(now=2, cap_per_author_category=3)
    assert rnd is not None
    authors = [e.author for e in rnd.examples]
    assert authors.count("mallory") == 3 and authors.count("alice") == 1
    assert rnd.capped == 17  # 20 of mallory's (a correction and a complaint each), 3 taken
    counts = s.counts()["categories"]["process-killed"]
    assert counts["authors"] == {"mallory": 10, "alice": 1}
    assert counts["verdicts"] == {"bad": 10, "good": 1}


def test_poisoning_guard_refused_correction_is_never_trained_on(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.add_outcome(outcome("i1", [(GENTLE, "passed")]), where(1), now=1)
    # straight onto the topic, past any CLI check: the trainer judges it itself
    s.add_feedback(feedback("i1", "bad", "mallory", WIPE), where(1, "f"), now=1)
    # allowed playbook, but on a host outside the incident: refused as well
    s.add_feedback(feedback("i1", "bad", "mallory2", RESTART_DB), where(2, "f"), now=1)
    assert all(e.completion != answer(WIPE) for e in s.examples())
    assert all(e.completion != answer(RESTART_DB) for e in s.examples())
    rows = {r["author"]: r for r in s.feedback_rows()}
    assert rows["mallory"]["accepted"] == 0 and "destructive" in rows["mallory"]["rules"]
    assert rows["mallory2"]["accepted"] == 0 and "hosts.not_incident" in rows["mallory2"]["rules"]
    counts = s.counts()["categories"]["process-killed"]
    assert counts["corrections_refused"] == 2 and counts["corrections_accepted"] == 0
    rnd = s.claim_round(now=2, cap_per_author_category=100)
    assert rnd is not None and all(WIPE not in e.completion for e in rnd.examples)


def suite_gate(held_out_before: float) -> Any:
    """A gate in the shape of stage 1's: the candidate's held-out suite must not drop. The
    "candidate" of `instant_train` writes what it learned; a database restart for a cart
    incident fixes nothing, so the suite drops by the share of what it learned that way."""

    def gate(adapter: Path, served: int, run_dir: Path) -> GateResult:
        learned = json.loads((adapter / "learned.json").read_text())
        harmful = sum("restart the database" in c for c in learned) / max(len(learned), 1)
        after = held_out_before * (1 - harmful)
        ok = after >= held_out_before
        return GateResult(ok, f"held-out suite {held_out_before:.2f} -> {after:.2f}",
                          {"suite_before": held_out_before, "suite_after": after})  # fmt: skip

    return gate


def repo(tmp_path: Path) -> Path:
    root = tmp_path / "model_repo"
    (root / "remed_planner" / "1").mkdir(parents=True)
    (root / "remed_planner" / "1" / "model.py").write_text("# serving code\n")
    return root


def test_poisoning_harmful_but_allowed_does_not_pass_the_gate(tmp_path: Path) -> None:
    cfg = RealRftConfig(state_dir=tmp_path / "state", model_repo=repo(tmp_path),
                        round_min_examples=2, round_min_examples_on_age=1)  # fmt: skip
    s = store(tmp_path)
    hosts = ("app", "db")  # cart depends on the database: restarting it is allowed here
    for n in range(4):
        s.add_outcome(outcome(f"i{n}", [(GENTLE, "passed")], hosts=hosts), where(n), now=1)
        s.add_feedback(feedback(f"i{n}", "bad", f"op{n}", RESTART_DB), where(n, "f"), now=1)
    assert sum(e.label and e.source == "corrected" for e in s.examples()) == 4  # allowed
    promoted: list[int] = []
    runner = RoundRunner(cfg, s, train=instant_train, gate=suite_gate(0.9),
                         promote=lambda *a: promoted.append(2) or 2, served=lambda: 1)  # fmt: skip
    assert runner.due(2)
    rnd = s.claim_round(2, cfg.max_examples_per_author_per_category)
    assert rnd is not None
    result = runner.run(rnd, threading.Event())
    assert result["status"] == "refused" and promoted == []
    (row,) = s.rounds()
    assert row["status"] == "refused" and "0.90 -> 0.00" in row["reason"]
    assert row["gate"]["metrics"]["suite_after"] < row["gate"]["metrics"]["suite_before"]
    assert sorted(p.name for p in (cfg.model_repo / "remed_planner").iterdir()) == ["1"]


def test_a_good_round_is_promoted_with_its_card(tmp_path: Path) -> None:
    cfg = RealRftConfig(state_dir=tmp_path / "state", model_repo=repo(tmp_path),
                        round_min_examples=2, round_min_examples_on_age=1)  # fmt: skip
    s = store(tmp_path)
    for n in range(3):
        s.add_outcome(outcome(f"i{n}", [(KILL, "passed")]), where(n), now=1)
        s.add_feedback(feedback(f"i{n}", "bad", "alice", GENTLE), where(n, "f"), now=1)
    runner = RoundRunner(cfg, s, train=instant_train, gate=suite_gate(0.9),
                         promote=lambda run, served, card: install_version(cfg, run, served, card),
                         served=lambda: 1)  # fmt: skip
    rnd = s.claim_round(2, 16)
    assert rnd is not None
    assert runner.run(rnd, threading.Event())["status"] == "promoted"
    card = (cfg.model_repo / "remed_planner" / "2" / "MODEL_CARD.md").read_text()
    assert "stage: real-rft" in card and "gate: passed" in card and "parent: 1" in card
    assert "data_window: round 1: 6 examples from 3 incidents" in card
    assert json.loads((cfg.model_repo / "remed_planner" / "2" / "serving.json").read_text()) == {
        "weights": "q8"
    }
    assert (cfg.model_repo / "remed_planner" / "2" / "model.py").is_file()
    assert s.rounds()[0]["version"] == 2


def test_an_interrupted_round_runs_again_on_the_same_examples(tmp_path: Path) -> None:
    s = store(tmp_path)
    for n in range(3):
        s.add_outcome(outcome(f"i{n}", [(GENTLE, "passed")]), where(n), now=1)
    first = s.claim_round(2, 16)
    assert first is not None
    s.add_outcome(outcome("late", [(GENTLE, "passed")]), where(9), now=3)
    s.close()  # the crash
    again = Store(tmp_path / "s.sqlite3", feedback_grace_s=0).running_round()
    assert again is not None and again.id == first.id and again.attempts == 2
    assert sorted(e.id for e in again.examples) == sorted(e.id for e in first.examples)


def test_config_refuses_what_cannot_work(tmp_path: Path) -> None:
    with pytest.raises(RealRftConfigError, match="daemon's consumer group"):
        RealRftConfig(group_id="remed")
    with pytest.raises(RealRftConfigError, match="at least 2"):
        RealRftConfig(batch_size=1)
    toml = tmp_path / "t.toml"
    toml.write_text('[real_rft]\nround_min_exampels = 3\n[kafka]\nbootstrap = "h:1"\n')
    with pytest.raises(RealRftConfigError, match="did you mean 'round_min_examples'"):
        RealRftConfig.load(toml, env={})
    toml.write_text('[real_rft]\nround_min_examples = 3\nround_min_examples_on_age = 2\n'
                    'feedback_grace_s = 0\n[kafka]\nbootstrap = "h:1"\n')  # fmt: skip
    cfg = RealRftConfig.load(toml, env={})
    assert (cfg.round_min_examples, cfg.feedback_grace_s, cfg.kafka.bootstrap) == (3, 0.0, "h:1")
