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

import aiohttp
import pytest
from reports import diagnosis, key_of, produce, read_topic, values, webhook_body

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


async def publish(bootstrap: str, rid: str) -> None:
    report = diagnosis(rid, summary="cart down")
    await produce(bootstrap, "remed.diagnoses", [(key_of(report), json.dumps(report).encode(), [])])


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
        await publish(bootstrap, "before")
        first = values(await read_topic(bootstrap, "remed.outcomes", 1, 30))
        assert [d["report_id"] for d in first] == ["before"]

        await asyncio.to_thread(private_kafka.down)
        run = uuid.uuid4().hex[:6]
        async with aiohttp.ClientSession() as http:
            for n in range(3):  # incidents of one target finish while the broker is away
                labels = {"service": "web", "instance": "web:80"}
                body = webhook_body(f"{run}{n}", labels)
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
        await publish(bootstrap, "after")
        docs = values(await read_topic(bootstrap, "remed.outcomes", 5, 60))
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
