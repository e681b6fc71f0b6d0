"""An in-process daemon (HTTP off) on private Kafka topics, for integration tests that need the
real broker but not each other's messages."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from remed_daemon.app import Daemon
from remed_daemon.config import load
from remed_stack.kafka import create_private_topics


@asynccontextmanager
async def daemon_on_private_topics(
    bootstrap: str, state_dir: Path, tag: str
) -> AsyncIterator[tuple[Daemon, dict[str, str]]]:
    """(daemon, its `[kafka]` topic names); the daemon stops when the block ends."""
    topics = await create_private_topics(bootstrap, tag)
    env = {
        "REMED_STATE_DIR": str(state_dir),
        "REMED_HTTP_ENABLED": "false",
        "REMED_KAFKA_BOOTSTRAP": bootstrap,
        "REMED_KAFKA_GROUP_ID": f"g-{uuid.uuid4().hex[:8]}",
        **{f"REMED_KAFKA_{k.upper()}": v for k, v in topics.items()},
    }
    daemon = Daemon(load(None, env))
    task = asyncio.create_task(daemon.run())
    try:
        yield daemon, topics
    finally:
        daemon.request_stop()
        async with asyncio.timeout(60):
            await task
