"""`make demo`: one diagnosis through the real stack.

Brings the stack up, publishes a diagnosis report to `remed.diagnoses` with a real Kafka
producer, consumes it back as the daemon would, asks `remed_planner` on Triton for a playbook
through the daemon's planner client (`remed_daemon.planner.TritonPlanner`) and prints it.
Components the demo started are stopped at the end; ones that were already running (a
developer's `remed stack up`) are left as they were. It grows into the full remediation demo as
the daemon lands.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from remed_daemon.planner import PlanRequest, TritonPlanner, TritonSettings
from remed_daemon.schemas import validate
from remed_stack import stack
from remed_stack.paths import StackPaths

KAFKA_TIMEOUT_MS = 15_000
PLAN_TIMEOUT_S = 120.0
PLAN_MAX_TOKENS = 160


def demo_report() -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "schema_version": 1,
        "report_id": f"demo-{uuid.uuid4()}",
        "source": "cli",
        "received_at": now,
        "observed_at": now,
        "target": {"service": "cart", "host": "app"},
        "category": "service-down",
        "severity": "critical",
        "summary": "cart service is down on host app: connection refused on port 8082",
        "report": (
            "RCA: the cart process exited after an OOM kill and its supervisor did not restart "
            "it. Upstream checkout requests fail with 502. Restarting cart should restore service."
        ),
        "evidence": [
            "curl http://app:8082/health -> connection refused",
            "supervisorctl status cart -> EXITED",
        ],
        "labels": {"alertname": "ServiceDown", "service": "cart"},
    }


async def publish_and_consume(bootstrap: str, report: dict[str, Any]) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    key = f"{report['target']['service']}@{report['target']['host']}".encode()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=KAFKA_TIMEOUT_MS,
    )
    await producer.start()
    try:
        meta = await producer.send_and_wait("remed.diagnoses", json.dumps(report).encode(), key=key)
    finally:
        await producer.stop()
    print(f"published  {report['report_id']} -> remed.diagnoses[{meta.partition}]@{meta.offset}")

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=KAFKA_TIMEOUT_MS
    )
    await consumer.start()
    try:
        tp = TopicPartition("remed.diagnoses", meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        batch = await consumer.getmany(tp, timeout_ms=KAFKA_TIMEOUT_MS, max_records=1)
    finally:
        await consumer.stop()
    if not batch.get(tp):
        raise RuntimeError("the report did not come back from Kafka within the timeout")
    received: dict[str, Any] = json.loads(batch[tp][0].value)
    validate("diagnosis-report", received)
    print(f"consumed   {received['report_id']} (schema-valid)")
    return received


async def run(report_status: dict[str, Any]) -> None:
    received = await publish_and_consume(report_status["kafka"]["bootstrap"], demo_report())
    target = received["target"]
    request = PlanRequest(report=received, service=target["service"], host=target["host"])
    planner = TritonPlanner(
        TritonSettings(
            url=report_status["triton"]["http"], timeout_s=PLAN_TIMEOUT_S,
            max_tokens=PLAN_MAX_TOKENS, retries=0,
        )
    )  # fmt: skip
    started = time.monotonic()
    draft = await planner.plan(request)
    elapsed = time.monotonic() - started
    print(
        f"planned    by {draft.model_name} version {draft.model_version} in {elapsed:.1f} s "
        f"({draft.prompt_tokens} prompt + {draft.completion_tokens} completion tokens)"
    )
    print("-" * 72)
    print(draft.completion.strip())
    print("-" * 72)


def main() -> int:
    paths = StackPaths.from_env()
    before = stack.status(paths)
    already = {
        "kafka": before["kafka"]["ok"],
        "triton": before["triton"]["ok"],
        "lab": bool(before.get("hosts")) and all(h["ok"] for h in before["hosts"]),
    }
    to_start = [name for name in stack.COMPONENT_NAMES if not already[name]]
    print(f"stack      starting {', '.join(to_start) or 'nothing (already up)'}")
    try:
        stack.up(paths, to_start)
        report_status = stack.status(paths)
        print(stack.format_status(report_status))
        asyncio.run(run(report_status))
    finally:
        if to_start:
            stack.down(paths, to_start)
            print(f"stack      stopped {', '.join(to_start)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
