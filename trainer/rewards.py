"""Sim-RFT's rewards: plain functions of one rollout record (`trainer.rollout.RolloutRecord`,
or its JSON form from `rollouts.jsonl`), so a run can be re-scored offline from its log.

What happened to a completion decides its reward:

| outcome (`record.outcome`) | reward |
|---|---|
| `no_playbook` (nothing extractable) or `syntax_error` (ansible-playbook cannot parse it) | -1 |
| `rejected` (the daemon's guard refused it; nothing ran) | -1 |
| `needs_approval` (high risk: the daemon would wait for a person, not run it) | -0.5 |
| `applied` or `check_failed`, fault verified gone (`recovered`) | +1 minus shaping |
| `applied` or `check_failed`, not recovered | 0 |
| `unconfirmed` (the fault did not show after injection) or `lab_error` | None: dropped |

A dropped rollout is not scored: trl's GRPOTrainer leaves a `None` reward out of its group's
baseline and gives it zero advantage, the same rule as `remed bench`, where an unconfirmed
injection leaves the denominator.

Shaping, only for a recovered rollout, never more than `MAX_SHAPING` in total so that a
recovered rollout always scores above one that did not recover: a little less for each task
beyond the first (the smallest fix is the one an operator reviews fastest), and a little less
the longer the time to recover (from the start of the apply to the first passing verification).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

RECOVERED_REWARD = 1.0
NOT_RECOVERED_REWARD = 0.0
REFUSED_REWARD = -1.0
NO_PLAYBOOK_REWARD = -1.0
NEEDS_APPROVAL_REWARD = -0.5
TASK_PENALTY = 0.02  # per task beyond the first
MAX_TASK_PENALTY = 0.1
TTR_PENALTY_PER_S = 0.005  # 20 s to recover costs 0.1
MAX_TTR_PENALTY = 0.1
MAX_SHAPING = MAX_TASK_PENALTY + MAX_TTR_PENALTY

# record.outcome values (written by trainer.rollout)
NO_PLAYBOOK, SYNTAX_ERROR, REJECTED, NEEDS_APPROVAL = (
    "no_playbook", "syntax_error", "rejected", "needs_approval"
)  # fmt: skip
CHECK_FAILED, APPLIED, UNCONFIRMED, LAB_ERROR = (
    "check_failed", "applied", "unconfirmed", "lab_error"
)  # fmt: skip
OUTCOMES = (
    NO_PLAYBOOK, SYNTAX_ERROR, REJECTED, NEEDS_APPROVAL, CHECK_FAILED, APPLIED, UNCONFIRMED,
    LAB_ERROR,
)  # fmt: skip
# Outcomes decided before the lab: they never cost an injection.
BEFORE_LAB = frozenset({NO_PLAYBOOK, SYNTAX_ERROR, REJECTED, NEEDS_APPROVAL})
DROPPED = frozenset({UNCONFIRMED, LAB_ERROR})


def _doc(record: Any) -> Mapping[str, Any]:
    if is_dataclass(record) and not isinstance(record, type):
        return asdict(record)
    if not isinstance(record, Mapping):
        raise TypeError(f"a rollout record is a RolloutRecord or its JSON mapping, not {record!r}")
    return record


def _outcome(doc: Mapping[str, Any]) -> str:
    outcome = str(doc.get("outcome", ""))
    if outcome not in OUTCOMES:
        raise ValueError(f"rollout outcome {outcome!r} is none of {', '.join(OUTCOMES)}")
    return outcome


def outcome_reward(record: Any) -> float | None:
    """The reward for what happened, without shaping; None when the rollout is dropped."""
    doc = _doc(record)
    outcome = _outcome(doc)
    if outcome in DROPPED:
        return None
    if outcome in (NO_PLAYBOOK, SYNTAX_ERROR):
        return NO_PLAYBOOK_REWARD
    if outcome == REJECTED:
        return REFUSED_REWARD
    if outcome == NEEDS_APPROVAL:
        return NEEDS_APPROVAL_REWARD
    return RECOVERED_REWARD if doc.get("recovered") else NOT_RECOVERED_REWARD


def shaping_reward(record: Any) -> float | None:
    """<= 0: fewer tasks and a shorter time to recover score higher; 0 unless recovered, None
    when the rollout is dropped."""
    doc = _doc(record)
    if outcome_reward(doc) is None:
        return None
    if not doc.get("recovered") or _outcome(doc) not in (APPLIED, CHECK_FAILED):
        return 0.0
    tasks = max(0, int(doc.get("playbook_tasks") or 0) - 1)
    ttr = float(doc.get("ttr_s") or 0.0)
    penalty = min(MAX_TASK_PENALTY, TASK_PENALTY * tasks)
    penalty += min(MAX_TTR_PENALTY, TTR_PENALTY_PER_S * max(0.0, ttr))
    return -round(penalty, 6)


def total_reward(record: Any) -> float | None:
    """outcome + shaping (what GRPO optimises, with trl's reward weights at 1); None: dropped."""
    outcome = outcome_reward(record)
    if outcome is None:
        return None
    return round(outcome + (shaping_reward(record) or 0.0), 6)


# -- trl reward functions: f(prompts, completions, **columns) -> list[float | None] ------------
# The rollout function hands each completion's record to them as the `rollout` column.


def lab_outcome(
    prompts: Sequence[Any], completions: Sequence[Any], rollout: Sequence[Any], **_: Any
) -> list[float | None]:
    return [outcome_reward(r) for r in rollout]


def lab_shaping(
    prompts: Sequence[Any], completions: Sequence[Any], rollout: Sequence[Any], **_: Any
) -> list[float | None]:
    return [shaping_reward(r) for r in rollout]


REWARD_FUNCS = (lab_outcome, lab_shaping)
