"""`remed bench --remediator model` wiring on the real Triton server: the bench asks for its plan
with the daemon's own planner client (`remed_daemon.planner.TritonPlanner`) and the daemon's
prompt (report + the target's topology facts), gets a completion, token counts and the serving
model version back, and keeps exactly the playbook the daemon's extraction finds. Whether the
model's playbook fixes anything is what the benchmark measures, not this test; that its plan
goes through the guard before anything runs is tests/integration/test_chaos_bench.py's."""

from __future__ import annotations

from typing import Any

import pytest

from chaos.lab.hosts import Lab
from chaos.remediators import ModelRemediator
from chaos.scenario import diagnosis, load_suite
from remed_daemon.planner import TritonPlanner, extract_playbook

pytestmark = pytest.mark.integration


async def test_model_remediator_plans_with_the_daemons_client(triton: Any) -> None:
    scenario = next(s for s in load_suite("all") if s.category == "service-down")
    remediator = ModelRemediator(Lab.from_paths(), triton.http_url, max_tokens=32)
    assert isinstance(remediator.planner, TritonPlanner)
    request = remediator.request(scenario, diagnosis(scenario))
    prompt = request.prompt()
    assert prompt == ModelRemediator.prompt(scenario, diagnosis(scenario))
    assert "Target host: app" in prompt and "supervisorctl" in prompt
    assert request.category == scenario.category
    draft = await remediator.planner.plan(request)
    assert isinstance(draft.completion, str) and draft.completion
    assert draft.prompt == prompt and draft.model_version not in ("", "unknown")
    assert draft.prompt_tokens > 50 and 0 < draft.completion_tokens <= 32
    assert draft.playbook == extract_playbook(draft.completion)
