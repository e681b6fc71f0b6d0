"""The daemon on the real broker: report → outcome (with trace context), invalid → DLT with
headers, duplicates run once, outcomes wait in the journal while Kafka is unreachable.

Each test gets its own topics (same partition counts as the contract topics) so runs never see
each other's messages."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import daemon_on_private_topics
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from reports import diagnosis, produce, read_topic

from remed_daemon.app import Daemon
from remed_daemon.journal import State
from remed_daemon.schemas import iter_errors
from remed_stack.kafka import create_private_topics

pytestmark = pytest.mark.integration


def report(n: int) -> dict[str, Any]:
    return diagnosis(f"it-{uuid.uuid4().hex[:8]}-{n}", summary=f"cart is down ({n})")


class Running:
    def __init__(self, daemon: Daemon, topics: dict[str, str], bootstrap: str) -> None:
        self.daemon = daemon
        self.topics = topics
        self.bootstrap = bootstrap


@pytest.fixture
async def running(kafka: Any, tmp_path: Path) -> AsyncIterator[Running]:
    async with daemon_on_private_topics(kafka.bootstrap, tmp_path / "state", "t") as (
        daemon,
        topics,
    ):
        yield Running(daemon, topics, kafka.bootstrap)


async def test_report_becomes_outcome_with_trace(running: Running) -> None:
    spans = InMemorySpanExporter()
    running.daemon._provider.add_span_processor(SimpleSpanProcessor(spans))
    rep = report(1)
    trace_id = uuid.uuid4().hex
    tp = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    await produce(
        running.bootstrap,
        running.topics["diagnoses_topic"],
        [(b"cart@app", json.dumps(rep).encode(), [("traceparent", tp.encode())])],
    )
    [msg] = await read_topic(running.bootstrap, running.topics["outcomes_topic"], 1, 45)
    doc = json.loads(msg.value)
    assert iter_errors("outcome", doc) == []
    assert doc["report_id"] == rep["report_id"] and doc["status"] == "shadow"
    assert msg.key == b"cart@app"
    headers = dict(msg.headers)
    assert headers["traceparent"].decode().split("-")[1] == trace_id  # same trace, new span
    assert doc["traceparent"].split("-")[1] == trace_id
    # one trace for the incident: intake → remediate → plan → outcome, under the producer's id
    names = {s.name for s in spans.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id}
    assert {"intake kafka", "remediate", "plan", "outcome"} <= names


async def test_invalid_goes_to_dlt_with_headers_and_consumer_moves_on(running: Running) -> None:
    good = report(2)
    items = [
        (b"x@y", b"{not json", []),
        (b"x@y", json.dumps({"schema_version": 1, "summary": "no target"}).encode(), []),
        (b"cart@app", json.dumps(good).encode(), []),
    ]
    await produce(running.bootstrap, running.topics["diagnoses_topic"], items)
    dlt = await read_topic(running.bootstrap, running.topics["dlt_topic"], 2, 45)
    assert len(dlt) == 2
    for msg in dlt:
        h = dict(msg.headers)
        assert h["remed-original-topic"].decode() == running.topics["diagnoses_topic"]
        assert int(h["remed-original-partition"]) >= 0
        assert int(h["remed-original-offset"]) >= 0
        assert h["remed-error"]
    errors = sorted(dict(m.headers)["remed-error"].decode() for m in dlt)
    assert any("not JSON" in e for e in errors)
    assert any("target" in e for e in errors)
    [out] = await read_topic(running.bootstrap, running.topics["outcomes_topic"], 1, 45)
    assert json.loads(out.value)["report_id"] == good["report_id"]


async def test_duplicates_run_once(running: Running) -> None:
    rep = report(3)
    value = json.dumps(rep).encode()
    await produce(
        running.bootstrap,
        running.topics["diagnoses_topic"],
        [(b"cart@app", value, [])] * 4,
    )
    outs = await read_topic(running.bootstrap, running.topics["outcomes_topic"], 1, 20)
    await asyncio.sleep(2.0)  # give any duplicate the time to show up too
    outs = await read_topic(running.bootstrap, running.topics["outcomes_topic"], 99, 3)
    assert len(outs) == 1
    metrics = running.daemon.metrics
    assert metrics.executions_started._value.get() == 1
    assert metrics.dedup_hits.labels("kafka")._value.get() == 3
    inc = await running.daemon.journal.by_idem_key(f"report:{rep['report_id']}")
    assert inc is not None and inc.state is State.SHADOW


async def test_outbox_waits_while_kafka_is_unreachable(tmp_path: Path, kafka: Any) -> None:
    """Outcomes finished while the broker is unreachable go out later, in order."""
    from remed_daemon.config import KafkaConfig
    from remed_daemon.journal import Journal, NewIncident
    from remed_daemon.outcomes.document import builder
    from remed_daemon.outcomes.producer import OutcomeProducer
    from remed_daemon.telemetry import Metrics

    topics = await create_private_topics(kafka.bootstrap, "t")
    async with Journal(tmp_path / "j.sqlite3") as journal:
        ids = []
        for n in range(5):
            rep = report(n)
            inc = (await journal.admit(NewIncident(f"k{n}", "kafka", "cart@app", rep))).incident
            await journal.finish(inc.id, State.CANCELLED, "x", builder())
            ids.append(inc.id)
        dead = OutcomeProducer(
            KafkaConfig(
                bootstrap="127.0.0.1:1",
                request_timeout_ms=2000,
                outcomes_topic=topics["outcomes_topic"],
            ),
            journal,
            Metrics.create(),
        )
        with pytest.raises(Exception):  # noqa: B017 - any client error: nothing is reachable
            async with asyncio.timeout(10):
                await dead.drain_once()
        assert await journal.unsent_count() == 5
        live = OutcomeProducer(
            KafkaConfig(bootstrap=kafka.bootstrap, outcomes_topic=topics["outcomes_topic"]),
            journal,
            Metrics.create(),
        )
        assert await live.drain_once() == 5
        await live.stop(flush_timeout_s=5)
        assert await journal.unsent_count() == 0
    msgs = await read_topic(kafka.bootstrap, topics["outcomes_topic"], 5, 45)
    # one key → one partition → the order they were finished in
    assert [json.loads(m.value)["incident_id"] for m in msgs] == ids
