"""Reports into the daemon and records out of Kafka, for the integration and end-to-end tests.

One copy of what those tests all do: build a diagnosis report or an Alertmanager webhook body,
publish reports (keyed by target, `acks=all`), and read a topic from its beginning with no
consumer group until enough has arrived or the time is up, so each test says only what it sends
and what it waits for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

Headers = Sequence[tuple[str, bytes]]


def diagnosis(
    report_id: str,
    service: str = "cart",
    host: str = "app",
    *,
    severity: str = "critical",
    summary: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """A small schema-valid `diagnosis-report` for `service@host`."""
    return {
        "schema_version": 1,
        "report_id": report_id,
        "source": "kafka",
        "target": {"service": service, "host": host},
        "severity": severity,
        "summary": summary or f"{service} is down",
        **extra,
    }


def webhook_body(
    fingerprint: str,
    labels: dict[str, str],
    *,
    summary: str = "down",
    starts_at: str = "2026-11-24T10:00:00Z",
) -> dict[str, Any]:
    """An Alertmanager webhook payload (v4) with one firing alert."""
    alert = {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": summary},
        "startsAt": starts_at,
        "fingerprint": fingerprint,
    }
    return {"version": "4", "groupKey": "g", "status": "firing", "alerts": [alert]}


def key_of(report: dict[str, Any]) -> bytes:
    """The message key of a report: its target, `service@host`."""
    return f"{report['target']['service']}@{report['target']['host']}".encode()


async def produce(
    bootstrap: str, topic: str, items: Iterable[tuple[bytes, bytes, Headers]]
) -> None:
    """Send (key, value, headers) records one by one, each acknowledged by the broker."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, headers in items:
            await producer.send_and_wait(topic, value=value, key=key, headers=list(headers))
    finally:
        await producer.stop()


async def produce_reports(bootstrap: str, topic: str, reports: Iterable[dict[str, Any]]) -> None:
    """Publish reports keyed by target, in order (one target's stay ordered in its partition),
    batched, and flushed before returning."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for report in reports:
            await producer.send(topic, json.dumps(report).encode(), key=key_of(report))
        await producer.flush()
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str,
    topic: str,
    want: int,
    timeout_s: float,
    distinct: Callable[[ConsumerRecord[Any, Any]], Hashable] | None = None,
) -> list[ConsumerRecord[Any, Any]]:
    """Every record of `topic` from its start, until `want` have arrived (counted by
    `distinct(record)` when given: redeliveries of one thing count once) or `timeout_s` passed;
    what arrived by then is returned, so the caller's assertions say what was missing."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[ConsumerRecord[Any, Any]] = []
    seen: set[Hashable] = set()
    try:
        deadline = time.monotonic() + timeout_s
        while (len(seen) if distinct else len(out)) < want and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(records)
                if distinct:
                    seen.update(distinct(r) for r in records)
    finally:
        await consumer.stop()
    return out


def values(records: Iterable[ConsumerRecord[Any, Any]]) -> list[dict[str, Any]]:
    """The records' JSON values."""
    return [json.loads(r.value) for r in records]


def field(name: str) -> Callable[[ConsumerRecord[Any, Any]], Hashable]:
    """`distinct=field("report_id")`: count records by a field of their JSON value."""
    return lambda record: json.loads(record.value)[name]
