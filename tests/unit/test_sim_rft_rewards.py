"""Sim-RFT's rewards (trainer/rewards.py): plain functions of a rollout record."""

from __future__ import annotations

from typing import Any

import pytest

from trainer import rewards

pytestmark = pytest.mark.unit


def rec(outcome: str, **kw: Any) -> dict[str, Any]:
    return {"outcome": outcome, **kw}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (rec("applied", recovered=True, playbook_tasks=1, ttr_s=0.0), 1.0),
        (rec("applied", recovered=False, playbook_tasks=1, ttr_s=9.0), 0.0),
        (rec("check_failed", recovered=False), 0.0),
        (rec("rejected"), -1.0),
        (rec("no_playbook"), -1.0),
        (rec("syntax_error"), -1.0),
        (rec("needs_approval"), -0.5),
        (rec("unconfirmed"), None),
        (rec("lab_error"), None),
    ],
)
def test_outcomes(record: dict[str, Any], expected: float | None) -> None:
    assert rewards.total_reward(record) == expected


def test_shaping_prefers_fewer_tasks_and_shorter_ttr_but_never_below_not_recovered() -> None:
    short = rewards.total_reward(rec("applied", recovered=True, playbook_tasks=1, ttr_s=4.0))
    longer = rewards.total_reward(rec("applied", recovered=True, playbook_tasks=1, ttr_s=12.0))
    more = rewards.total_reward(rec("applied", recovered=True, playbook_tasks=4, ttr_s=4.0))
    worst = rewards.total_reward(rec("applied", recovered=True, playbook_tasks=99, ttr_s=1e6))
    assert short is not None and longer is not None and more is not None and worst is not None
    assert 1.0 > short > longer and short > more
    assert worst == pytest.approx(1.0 - rewards.MAX_SHAPING)
    assert worst > rewards.NOT_RECOVERED_REWARD


def test_shaping_only_for_recovered_and_none_when_dropped() -> None:
    assert rewards.shaping_reward(rec("applied", recovered=False, playbook_tasks=9)) == 0.0
    assert rewards.shaping_reward(rec("rejected", playbook_tasks=9)) == 0.0
    assert rewards.shaping_reward(rec("unconfirmed", recovered=True)) is None


def test_a_recovered_flag_does_not_rescue_a_plan_that_never_ran() -> None:
    # the fault may vanish by itself: only an applied plan earns the recovery reward
    assert rewards.total_reward(rec("rejected", recovered=True)) == -1.0
    assert rewards.total_reward(rec("needs_approval", recovered=True)) == -0.5


def test_trl_reward_functions_score_the_rollout_column() -> None:
    rollout = [rec("applied", recovered=True, playbook_tasks=3, ttr_s=2.0), rec("unconfirmed")]
    outcome = rewards.lab_outcome(["p", "p"], ["c", "c"], rollout=rollout, task_id=["a", "a"])
    shaping = rewards.lab_shaping(["p", "p"], ["c", "c"], rollout=rollout)
    assert outcome == [1.0, None]
    assert shaping[1] is None and shaping[0] == pytest.approx(-(0.04 + 0.01))


def test_unknown_outcome_is_an_error() -> None:
    with pytest.raises(ValueError, match="none of"):
        rewards.total_reward(rec("maybe"))
    with pytest.raises(TypeError):
        rewards.total_reward("applied")
