"""Stale reports on the real broker: a report older than `kafka.max_report_age_s` (by its
`observed_at`, or by the record's timestamp when it has none) comes out of the daemon as an
`expired` outcome on the outcomes topic, through the journal's outbox, and never reaches a
planner; a fresh report next to it is remediated as usual."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from daemon_harness import daemon_on_private_topics
from reports import diagnosis, read_topic, values

from remed_daemon.journal import State
from remed_daemon.schemas import iter_errors

pytestmark = pytest.mark.integration


def report(tag: str, **extra: Any) -> dict[str, Any]:
    return diagnosis(f"exp-{tag}-{uuid.uuid4().hex[:8]}", summary=f"cart is down ({tag})", **extra)


async def test_old_reports_become_expired_outcomes_and_run_nothing(
    kafka: Any, tmp_path: Path
) -> None:
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    old_observed = report("observed", observed_at=two_hours_ago.isoformat().replace("+00:00", "Z"))
    old_record = report("record")  # no time of its own: the record's timestamp says 2 h
    fresh = report("fresh", observed_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"))
    async with daemon_on_private_topics(kafka.bootstrap, tmp_path / "state", "exp") as (
        daemon,
        topics,
    ):
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        await producer.start()
        try:
            for rep, ts in (
                (old_observed, None),
                (old_record, int((time.time() - 7200) * 1000)),
                (fresh, None),
            ):
                await producer.send_and_wait(
                    topics["diagnoses_topic"],
                    value=json.dumps(rep).encode(),
                    key=b"cart@app",
                    timestamp_ms=ts,
                )
        finally:
            await producer.stop()
        outcomes = values(await read_topic(kafka.bootstrap, topics["outcomes_topic"], 3, 60))
        by_id = {d["report_id"]: d for d in outcomes}
        for rep, basis in ((old_observed, "observed_at"), (old_record, "Kafka record timestamp")):
            doc = by_id[rep["report_id"]]
            assert iter_errors("outcome", doc) == []
            assert doc["status"] == "expired" and doc["attempts"] == []
            assert basis in doc["reason"] and "kafka.max_report_age_s = 3600 s" in doc["reason"]
            # journal: admitted and finished at once; it never went to planning
            inc = await daemon.journal.get(doc["incident_id"])
            assert inc is not None and inc.state is State.EXPIRED and inc.started_at is None
            states = [to for _, to, _ in await daemon.journal.transitions(inc.id)]
            assert states == ["received", "expired"]
        assert by_id[fresh["report_id"]]["status"] == "shadow"
        assert daemon.metrics.intake.labels("kafka", "expired")._value.get() == 2
