"""The Triton client's own logic (remed_daemon.planner.triton), with the model's answer given:
the breaker, retries, the answering version, extraction, and the client the config builds.
Against the real server: tests/integration/test_planner_triton.py."""

from __future__ import annotations

import pytest

from remed_daemon.config import load
from remed_daemon.errors import PlannerUnavailable
from remed_daemon.planner import PlanRequest, TritonPlanner, TritonSettings, configured_planners
from remed_daemon.planner.triton import CircuitBreaker, Completion

pytestmark = pytest.mark.unit

PLAY = "- hosts: app\n  tasks:\n    - ansible.builtin.command: supervisorctl start cart\n"
REQUEST = PlanRequest(report={"target": {"service": "cart", "host": "app"}}, service="cart",
                      host="app")  # fmt: skip


class Answering(TritonPlanner):
    """The client with Triton's answers scripted: a Completion, or PlannerUnavailable."""

    def __init__(self, settings: TritonSettings, answers: list[Completion | None]) -> None:
        super().__init__(settings)
        self.answers = answers
        self.calls = 0

    async def _infer(self, prompt: str) -> Completion:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if answer is None:
            raise PlannerUnavailable("Triton at test did not plan: refused; will retry")
        return answer


def test_circuit_breaker_opens_and_half_opens() -> None:
    now = [0.0]
    cb = CircuitBreaker(failures_to_open=2, open_s=10.0, clock=lambda: now[0])
    cb.failure()
    cb.check()
    cb.failure()
    with pytest.raises(PlannerUnavailable):
        cb.check()
    now[0] = 11.0
    cb.check()  # half-open: one call may try
    cb.success()
    assert cb.failures == 0


async def test_the_version_that_answered_and_the_extracted_playbook() -> None:
    text = f"Restart it.\n```yaml\n{PLAY}```\nPROBE: recent_log"
    planner = Answering(TritonSettings(backoff_initial_s=0.01),
                        [None, Completion(text, "7", 120, 30)])  # fmt: skip
    draft = await planner.plan(REQUEST)
    assert planner.calls == 2  # one retry after the refusal
    assert draft.model_version == "7" and draft.model_name == "remed_planner"
    assert (draft.prompt_tokens, draft.completion_tokens) == (120, 30)
    assert draft.playbook == PLAY and draft.completion == text
    assert draft.prompt == REQUEST.prompt() and draft.probe_requests == ("recent_log",)
    assert planner.breaker.failures == 0


async def test_retries_run_out_then_the_breaker_answers_at_once() -> None:
    settings = TritonSettings(retries=1, backoff_initial_s=0.01, breaker_failures=2)
    planner = Answering(settings, [None])
    with pytest.raises(PlannerUnavailable, match="will retry"):
        await planner.plan(REQUEST)
    assert planner.calls == 2 and planner.breaker.opened_at is not None
    with pytest.raises(PlannerUnavailable, match="circuit open"):
        await planner.plan(REQUEST)
    assert planner.calls == 2


def test_the_config_builds_every_planner_with_its_settings() -> None:
    cfg = load(None, {
        "REMED_HTTP_ENABLED": "false", "REMED_REMEDIATION_TRITON_URL": "http://10.0.0.9:8000",
        "REMED_REMEDIATION_PLANNER_TIMEOUT_S": "7", "REMED_AGENTS_PLANNER_RETRIES": "4",
    })  # fmt: skip
    planners = configured_planners(cfg)
    assert sorted(planners) == ["oracle", "static", "triton"]
    triton = planners["triton"]
    assert isinstance(triton, TritonPlanner)
    assert (triton.s.url, triton.s.timeout_s, triton.s.retries) == ("http://10.0.0.9:8000", 7, 4)
