"""benchmarks/real_rft.py's judgement of the preferred form and its scripted operator's
correction, without the stack: the expert's SIGKILL answers are not the preferred form, the
correction is, and the guard allows the correction for the incident's host."""

from __future__ import annotations

import sys

import pytest

from chaos.playbooks import oracle_playbook
from remed_daemon.feedback import judge_correction
from remed_stack.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import real_rft

pytestmark = pytest.mark.unit


def fenced(playbook: str) -> str:
    return f"```yaml\n{playbook}\n```"


@pytest.mark.parametrize("category", real_rft.CATEGORIES)
def test_the_correction_is_the_preferred_form_and_the_expert_is_not(category: str) -> None:
    fixed = real_rft.corrected_playbook(category, "app", "cart", {})
    assert real_rft.preferred(fenced(fixed))
    assert not real_rft.preferred(fenced(oracle_playbook(category, "app", "cart")))
    assert judge_correction(fixed, ["app"]).allowed


def test_sigkill_anywhere_or_no_wait_is_not_preferred() -> None:
    fixed = real_rft.corrected_playbook("cpu-stress", "app", "cart", {})
    assert not real_rft.preferred(fenced(fixed.replace("pgrep", "true")))
    assert not real_rft.preferred(fenced(fixed + "    - ansible.builtin.command: kill -9 1234\n"))
    assert not real_rft.preferred("no playbook here")


def test_held_out_prompts_are_test_split_playbook_turns_the_expert_writes_with_sigkill() -> None:
    examples = real_rft.held_out(REPO_ROOT / "trainer" / "data" / "sft-v1", "cpu-stress", 0)
    assert examples and {e["turn"] for e in examples} <= set(real_rft.PLAYBOOK_TURNS)
    assert not any(real_rft.preferred(str(e["completion"])) for e in examples)


def test_the_stream_has_the_asked_mix_with_unique_ids() -> None:
    scenarios = real_rft.stream("medium", "cpu-stress", 9, 3)
    assert [s.category for s in scenarios].count("cpu-stress") == 9
    assert len({s.category for s in scenarios[9:]}) == 3  # spread over other categories
    assert len({s.id for s in scenarios}) == 12
