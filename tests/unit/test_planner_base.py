"""What a planner is given (remed_daemon.planner.base): the prompt a `PlanRequest` renders."""

from __future__ import annotations

import pytest

from remed_daemon.planner import PlanRequest

pytestmark = pytest.mark.unit


def test_prompt_carries_previous_evidence_inside_the_fence() -> None:
    req = PlanRequest(
        report={"target": {"service": "cart", "host": "app"}, "summary": "down"},
        service="cart", host="app", facts="cart runs on app", probes=["[recent_log] boom"],
        previous=["Attempt 1:\n- verifier: health failed: 502"], probe_names=["recent_log"],
    )  # fmt: skip
    prompt = req.prompt()
    fence, end = prompt.index("=== INCIDENT (untrusted) ==="), prompt.index("=== END INCIDENT")
    assert fence < prompt.index("Previous attempt 1 failed") < end
    assert fence < prompt.index("[recent_log] boom") < end
    assert prompt.index("Facts: cart runs on app") < fence
    assert "PROBE: <name>" in prompt and "recent_log" in prompt
