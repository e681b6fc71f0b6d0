"""Kafka from the stack: the contract topics exist and a report round-trips through aiokafka."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from remed_stack.kafka import TOPICS

pytestmark = pytest.mark.integration


async def test_contract_topics_exist_with_partitions(kafka: Any) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        described = await admin.describe_topics([t.name for t in TOPICS])
    finally:
        await admin.close()
    partitions = {d["topic"]: len(d["partitions"]) for d in described}
    assert set(partitions) == {
        "remed.diagnoses",
        "remed.outcomes",
        "remed.feedback",
        "remed.diagnoses.DLT",
    }
    assert partitions["remed.diagnoses"] > 1


async def test_report_round_trips_with_key_and_traceparent(kafka: Any) -> None:
    report_id = f"it-{uuid.uuid4()}"
    report = {"report_id": report_id, "target": {"service": "cart", "host": "app"}}
    traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"

    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        meta = await producer.send_and_wait(
            "remed.diagnoses",
            json.dumps(report).encode(),
            key=b"cart@app",
            headers=[("traceparent", traceparent.encode())],
        )
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap,
        group_id=f"it-{uuid.uuid4()}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        from aiokafka import TopicPartition

        tp = TopicPartition("remed.diagnoses", meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        batch = await consumer.getmany(tp, timeout_ms=10_000, max_records=1)
        [record] = batch[tp]
    finally:
        await consumer.stop()

    assert json.loads(record.value) == report
    assert record.key == b"cart@app"
    assert dict(record.headers)["traceparent"] == traceparent.encode()


async def test_same_key_lands_in_same_partition(kafka: Any) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        metas = [
            await producer.send_and_wait("remed.diagnoses", b"{}", key=b"checkout@app")
            for _ in range(5)
        ]
    finally:
        await producer.stop()
    assert len({m.partition for m in metas}) == 1
    assert [m.offset for m in metas] == sorted(m.offset for m in metas)
