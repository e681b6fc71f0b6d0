"""The planner client (`remed_daemon.planner.TritonPlanner`) against the real `remed_planner`
(tritonclient's asyncio client): tokens and the version that answered are recorded; a dead
endpoint is a retriable `PlannerUnavailable`, retried with backoff, and then the circuit breaker
answers at once."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from remed_daemon.errors import PlannerUnavailable
from remed_daemon.planner import PlanRequest, TritonPlanner, TritonSettings

pytestmark = pytest.mark.integration

REQUEST = PlanRequest(
    report={
        "target": {"service": "cart", "host": "app"},
        "category": "service-down",
        "summary": "cart is down",
    },
    service="cart", host="app", category="service-down",
    facts="cart runs on host app under supervisord as program cart; port 8082.",
    probes=["[service_status on app, exit 3]\ncart STOPPED"],
)  # fmt: skip


async def test_triton_planner_records_tokens_and_model_version(triton: Any) -> None:
    planner = TritonPlanner(TritonSettings(url=triton.status()["http"], max_tokens=24))
    draft = await planner.plan(REQUEST)
    assert draft.planner == "triton" and draft.model_name == "remed_planner"
    assert draft.model_version and draft.model_version != "unknown"
    assert draft.prompt_tokens > 0 and 0 < draft.completion_tokens <= 24
    assert draft.completion and draft.prompt == REQUEST.prompt()
    assert planner.breaker.failures == 0


async def test_unreachable_triton_retries_then_breaker_opens() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    planner = TritonPlanner(TritonSettings(
        url=f"127.0.0.1:{port}", timeout_s=2, retries=2, backoff_initial_s=0.05,
        breaker_failures=3, breaker_open_s=60,
    ))  # fmt: skip
    with pytest.raises(PlannerUnavailable, match=r"did not plan|failed") as err:
        await planner.plan(REQUEST)
    assert err.value.retriable  # the scheduler plans the incident again later
    assert planner.breaker.failures == 3 and planner.breaker.opened_at is not None
    t0 = time.monotonic()
    with pytest.raises(PlannerUnavailable, match="circuit open"):
        await planner.plan(REQUEST)
    assert time.monotonic() - t0 < 0.5
