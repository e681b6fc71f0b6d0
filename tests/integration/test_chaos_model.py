"""`remed bench --remediator model` wiring on the real Triton server: the bench's prompt (the
agents' prompt builder with the target's facts) goes to `remed_planner` through tritonclient's
async HTTP client and comes back with a completion and token counts. Whether the model's
playbook fixes anything is what the benchmark measures, not this test."""

from __future__ import annotations

from typing import Any

import pytest

from chaos.lab.hosts import Lab
from chaos.remediators import ModelRemediator
from chaos.scenario import diagnosis, load_suite

pytestmark = pytest.mark.integration


async def test_model_remediator_gets_a_completion_and_tokens(triton: Any) -> None:
    scenario = next(s for s in load_suite("all") if s.category == "service-down")
    remediator = ModelRemediator(Lab.from_paths(), triton.http_url)
    prompt = remediator.prompt(scenario, diagnosis(scenario))
    assert "Target host: app" in prompt and "supervisorctl" in prompt
    completion, prompt_tokens, completion_tokens = await remediator.generate(prompt, max_tokens=32)
    assert isinstance(completion, str) and completion
    assert prompt_tokens > 50 and 0 < completion_tokens <= 32
