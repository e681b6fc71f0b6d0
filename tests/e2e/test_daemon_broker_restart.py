"""Broker restart under a running daemon, on a private broker (the shared one stays up for
everyone else): outcomes finished while Kafka is down wait in the journal's outbox and go out,
in order, when it is back; the consumer picks up again without a daemon restart."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from remed_daemon.app import Daemon
from remed_daemon.config import load
from remed_stack.kafka import Kafka
from remed_stack.paths import StackPaths

pytestmark = pytest.mark.e2e
TOKEN = "restart-token"


@pytest.fixture
def private_kafka(tmp_path: Path, stack_paths: StackPaths) -> Iterator[Kafka]:
    paths = StackPaths(repo=stack_paths.repo, cache=stack_paths.cache, run=tmp_path / "run")
    broker = Kafka(paths)
    broker.up()
    try:
        yield broker
    finally:
        broker.down()


def report(rid: str) -> bytes:
    return json.dumps(
        {
            "schema_version": 1,
            "report_id": rid,
            "source": "kafka",
            "target": {"service": "cart", "host": "app"},
            "severity": "critical",
            "summary": "cart down",
        }
    ).encode()


async def produce(bootstrap: str, rid: str) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await p.start()
    try:
        await p.send_and_wait("remed.diagnoses", report(rid), key=b"cart@app")
    finally:
        await p.stop()


async def outcomes(bootstrap: str, want: int, timeout_s: float) -> list[dict[str, Any]]:
    c = AIOKafkaConsumer(
        "remed.outcomes",
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await c.start()
    out: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(out) < want and time.monotonic() < deadline:
            for msgs in (await c.getmany(timeout_ms=500)).values():
                out.extend(json.loads(m.value) for m in msgs)
    finally:
        await c.stop()
    return out


async def test_outbox_drains_in_order_after_broker_restart(
    private_kafka: Kafka, tmp_path: Path
) -> None:
    bootstrap = private_kafka.bootstrap
    env = {
        "REMED_STATE_DIR": str(tmp_path / "state"),
        "REMED_KAFKA_BOOTSTRAP": bootstrap,
        "REMED_KAFKA_OUTBOX_RETRY_MAX_S": "2",
        "REMED_KAFKA_REQUEST_TIMEOUT_MS": "3000",
        "REMED_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "REMED_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        "REMED_HTTP_PORT": "0",
        "REMED_HTTP_BEARER_TOKEN": TOKEN,
    }
    daemon = Daemon(load(None, env))
    task = asyncio.create_task(daemon.run())
    try:
        await produce(bootstrap, "before")
        assert [d["report_id"] for d in await outcomes(bootstrap, 1, 30)] == ["before"]

        await asyncio.to_thread(private_kafka.down)
        run = uuid.uuid4().hex[:6]
        async with aiohttp.ClientSession() as http:
            for n in range(3):  # incidents of one target finish while the broker is away
                body = {
                    "version": "4",
                    "groupKey": "g",
                    "status": "firing",
                    "alerts": [
                        {
                            "status": "firing",
                            "labels": {"service": "web", "instance": "web:80"},
                            "annotations": {"summary": "down"},
                            "startsAt": "2026-11-24T10:00:00Z",
                            "fingerprint": f"{run}{n}",
                        }
                    ],
                }
                async with http.post(
                    f"http://127.0.0.1:{daemon.http_port}/webhook/alertmanager",
                    json=body,
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ) as resp:
                    assert resp.status == 202
                await asyncio.sleep(0.3)
        deadline = time.monotonic() + 20
        while await daemon.journal.unsent_count() < 3:
            assert time.monotonic() < deadline, "outcomes should be waiting in the outbox"
            await asyncio.sleep(0.2)

        await asyncio.to_thread(private_kafka.up)
        await produce(bootstrap, "after")
        docs = await outcomes(bootstrap, 5, 60)
        assert len(docs) == 5
        assert {"before", "after"} <= {d["report_id"] for d in docs}
        # one target → one key → one partition: they arrive in the order they finished
        waited = [d["timings"]["finished_at"] for d in docs if d["source"] == "alertmanager"]
        assert len(waited) == 3 and waited == sorted(waited)
        # A record is readable once the broker has it, which can be before the producer's ack
        # reaches the daemon and `mark_sent` runs (or, after the outage, before a send that
        # timed out is retried): the outbox empties shortly after, not at that instant.
        deadline = time.monotonic() + 30
        while await daemon.journal.unsent_count():
            assert time.monotonic() < deadline, "the outbox should drain once delivered"
            await asyncio.sleep(0.2)
    finally:
        daemon.request_stop()
        async with asyncio.timeout(90):
            await task
