"""`remed bench --remediator daemon` wiring on the real broker and the real daemon: the bench's
report validates, travels on the diagnoses topic keyed `service@host`, and the daemon's outcome
for that report comes back. The daemon runs in shadow mode (plans, applies nothing), so this
test never touches the lab."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from chaos.faults import Target, make_fault
from chaos.lab.hosts import Lab
from chaos.remediators import DaemonRemediator
from chaos.scenario import Scenario, diagnosis
from remed_daemon.app import Daemon
from remed_daemon.config import load

pytestmark = pytest.mark.integration


@pytest.fixture
async def daemon_topics(kafka: Any, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    base = f"remed.t{uuid.uuid4().hex[:10]}"
    topics = {
        "diagnoses_topic": f"{base}.diagnoses",
        "outcomes_topic": f"{base}.outcomes",
        "dlt_topic": f"{base}.diagnoses.DLT",
    }
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 3, 1) for t in topics.values()])
    finally:
        await admin.close()
    env = {
        "REMED_STATE_DIR": str(tmp_path / "state"),
        "REMED_HTTP_ENABLED": "false",
        "REMED_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "REMED_KAFKA_GROUP_ID": f"g-{uuid.uuid4().hex[:8]}",
        **{f"REMED_KAFKA_{k.upper()}": v for k, v in topics.items()},
    }
    daemon = Daemon(load(None, env))
    task = asyncio.create_task(daemon.run())
    yield topics
    daemon.request_stop()
    await asyncio.wait_for(task, timeout=60)


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
