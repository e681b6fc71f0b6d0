"""`remed bench --remediator daemon` wiring on the real broker and the real daemon: the bench's
report validates, travels on the diagnoses topic keyed `service@host`, and the daemon's outcome
for that report comes back. The daemon runs in shadow mode (plans, applies nothing), so this
test never touches the lab."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import daemon_on_private_topics

from chaos.faults import Target, make_fault
from chaos.lab.hosts import Lab
from chaos.remediators import DaemonRemediator
from chaos.scenario import Scenario, diagnosis

pytestmark = pytest.mark.integration


@pytest.fixture
async def daemon_topics(kafka: Any, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    async with daemon_on_private_topics(kafka.bootstrap, tmp_path / "state", "t") as (_, topics):
        yield topics


# Targets whose keys land on different partitions of the outcomes topic: the bench must read
# them all, not only partition 0.
@pytest.mark.parametrize("service", ["cart", "catalog", "checkout"])
async def test_bench_report_reaches_the_daemon_and_its_outcome_comes_back(
    kafka: Any, daemon_topics: dict[str, str], service: str
) -> None:
    scenario = Scenario(f"daemon-wiring-{service}", "service-down", Target("app", service))
    fault = make_fault(scenario.category, scenario.target, {}, Lab.from_paths())
    remediator = DaemonRemediator(
        kafka.bootstrap, timeout_s=60, diagnoses_topic=daemon_topics["diagnoses_topic"],
        outcomes_topic=daemon_topics["outcomes_topic"],
    )  # fmt: skip
    result = await asyncio.to_thread(remediator.remediate, scenario, diagnosis(scenario), fault)
    assert result.error is None, result.error
    assert result.outcome is not None
    assert result.outcome["report_id"].startswith(f"bench-daemon-wiring-{service}-")
    assert result.outcome["target"] == {"service": service, "host": "app"}
    assert result.status == "shadow"
