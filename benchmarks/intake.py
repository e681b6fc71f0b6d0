"""Alert storm against `remed serve`: intake, dedup, journal and scheduling under load.

Default: 10,000 Alertmanager-style alerts for 200 distinct incidents (each on its own target),
paced over 60 s, each POSTed to `/webhook/alertmanager` with bearer auth the way Alertmanager
does it (one alert per notification, retried on 5xx). The daemon is a real `remed serve`
process started here on a fresh state directory, with the stack's Kafka for outcomes (started
if needed) and shadow execution: intake, dedup, the SQLite journal and the scheduler are the
real ones, playbooks are planned but not applied.

Pass `--url`, `--token` and `--state-dir` to storm a daemon you started yourself instead.

Measured:
- ack_p50_ms / ack_p99_ms: POST sent → 202 received, on the client (same 2-core host).
- lost: incidents acknowledged (202) that are not in the journal, plus alerts never accepted.
- remediations_started: journal transitions into `planning` (a re-plan would count twice).
- duplicates_executed: starts beyond one per incident.

Prints a table, then one JSON line:
{"alerts", "incidents", "remediations_started", "lost", "duplicates_executed", "ack_p50_ms",
 "ack_p99_ms"}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
BENCH_TOPIC = "remed.bench.diagnoses"


@dataclass
class Tally:
    acks_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    retries: int = 0
    failed: int = 0
    accepted_keys: set[str] = field(default_factory=set)


def alert_payload(i: int, run: str) -> dict[str, Any]:
    fp = f"{run}{i:08x}"
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="Storm",incident="{i}"}}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "remed",
        "groupLabels": {"alertname": "Storm"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.bench",
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": "Storm",
                    "service": f"svc{i}",
                    "instance": f"host{i % 20}:9100",
                    "severity": "critical",
                },
                "annotations": {"summary": f"svc{i} error rate high", "description": "storm"},
                "startsAt": "2026-11-24T12:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.bench/graph",
                "fingerprint": fp,
            }
        ],
    }


async def post_one(
    http: aiohttp.ClientSession, url: str, token: str, body: bytes, tally: Tally, key: str
) -> None:
    backoff = 0.05
    for _ in range(20):  # Alertmanager retries 5xx; so do we
        t0 = time.perf_counter()
        try:
            async with http.post(
                url,
                data=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            ) as resp:
                await resp.read()
                status = resp.status
        except aiohttp.ClientError:
            status = 599
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
        if status == 202:
            tally.acks_ms.append((time.perf_counter() - t0) * 1000)
            tally.accepted_keys.add(key)
            return
        if status < 500:
            tally.failed += 1
            return
        tally.retries += 1
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 2.0)
    tally.failed += 1


async def storm(
    url: str, token: str, alerts: int, incidents: int, seconds: float, concurrency: int
) -> Tally:
    run = uuid.uuid4().hex[:8]
    rng = random.Random(7)
    order = list(range(incidents)) + [rng.randrange(incidents) for _ in range(alerts - incidents)]
    rng.shuffle(order)
    bodies = {i: json.dumps(alert_payload(i, run)).encode() for i in range(incidents)}
    tally = Tally()
    sem = asyncio.Semaphore(concurrency)
    interval = seconds / alerts
    start = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        tasks = []

        async def one(n: int, i: int) -> None:
            async with sem:
                await post_one(http, url, token, bodies[i], tally, f"am:{run}{i:08x}")

        for n, i in enumerate(order):
            due = start + n * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n, i)))
        await asyncio.gather(*tasks)
    return tally


def journal_counts(state_dir: Path) -> tuple[int, int, int, dict[str, int]]:
    """(alertmanager incidents, planning transitions, incidents started, states)."""
    with sqlite3.connect(f"file:{state_dir / 'journal.sqlite3'}?mode=ro", uri=True) as db:
        n = db.execute("SELECT COUNT(*) FROM incidents WHERE source='alertmanager'").fetchone()[0]
        starts = db.execute(
            "SELECT COUNT(*) FROM transitions t JOIN incidents i ON i.id = t.incident_id "
            "WHERE i.source='alertmanager' AND t.to_state='planning'"
        ).fetchone()[0]
        started = db.execute(
            "SELECT COUNT(*) FROM incidents WHERE source='alertmanager' AND started_at IS NOT NULL"
        ).fetchone()[0]
        states = dict(
            db.execute(
                "SELECT state, COUNT(*) FROM incidents WHERE source='alertmanager' GROUP BY state"
            ).fetchall()
        )
    return int(n), int(starts), int(started), {str(k): int(v) for k, v in states.items()}


def ensure_kafka() -> str:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from remed_stack.kafka import Kafka
    from remed_stack.paths import StackPaths

    kafka = Kafka(StackPaths.from_env())
    kafka.up()

    async def topic() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            if BENCH_TOPIC not in set(await admin.list_topics()):
                await admin.create_topics([NewTopic(BENCH_TOPIC, 6, 1)])
        finally:
            await admin.close()

    asyncio.run(topic())
    return kafka.bootstrap


def start_daemon(state_dir: Path, token: str) -> subprocess.Popen[bytes]:
    bootstrap = ensure_kafka()
    cfg = state_dir.parent / "remed.toml"
    cfg.write_text(
        f'state_dir = "{state_dir}"\n'
        f'[http]\nport = 0\nbearer_token = "{token}"\n'
        f'[kafka]\nbootstrap = "{bootstrap}"\ngroup_id = "remed-bench-{uuid.uuid4().hex[:6]}"\n'
        f'diagnoses_topic = "{BENCH_TOPIC}"\n'
        '[remediation]\nmode = "shadow"\n[telemetry]\nlog_format = "json"\nlog_level = "warning"\n'
    )
    log = open(state_dir.parent / "remed.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "remed_daemon", "serve", "--config", str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    port_file = state_dir / "http.port"
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"remed serve did not start; see {state_dir.parent / 'remed.log'}")
        time.sleep(0.1)
    return proc


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--alerts", type=int, default=10_000)
    ap.add_argument("--incidents", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=60.0, help="spread the storm over this")
    ap.add_argument("--concurrency", type=int, default=32, help="max requests in flight")
    ap.add_argument("--settle-s", type=float, default=60.0, help="wait for remediations")
    ap.add_argument("--url", help="webhook URL of a running daemon (else one is started)")
    ap.add_argument("--token", help="its bearer token")
    ap.add_argument("--state-dir", type=Path, help="its state directory (to read the journal)")
    args = ap.parse_args()

    proc = None
    if args.url:
        if not (args.token and args.state_dir):
            ap.error("--url needs --token and --state-dir")
        url, token, state_dir = args.url, args.token, args.state_dir
    else:
        token = secrets.token_urlsafe(24)
        state_dir = Path(tempfile.mkdtemp(prefix="remed-bench-")) / "state"
        state_dir.mkdir()
        proc = start_daemon(state_dir, token)
        port = int((state_dir / "http.port").read_text())
        url = f"http://127.0.0.1:{port}/webhook/alertmanager"
    try:
        t0 = time.perf_counter()
        tally = asyncio.run(
            storm(url, token, args.alerts, args.incidents, args.seconds, args.concurrency)
        )
        storm_s = time.perf_counter() - t0
        deadline = time.monotonic() + args.settle_s
        while True:
            n, starts, started, states = journal_counts(state_dir)
            open_ = sum(v for k, v in states.items() if k in ("received", "planning"))
            if (started >= len(tally.accepted_keys) and open_ == 0) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)

    lost = max(len(tally.accepted_keys) - n, 0) + (args.incidents - len(tally.accepted_keys))
    result = {
        "alerts": args.alerts,
        "incidents": n,
        "remediations_started": starts,
        "lost": lost,
        "duplicates_executed": starts - started,
        "ack_p50_ms": round(pct(tally.acks_ms, 0.50), 2),
        "ack_p99_ms": round(pct(tally.acks_ms, 0.99), 2),
    }
    rows = [
        ("alerts posted", args.alerts),
        ("storm duration (s)", round(storm_s, 1)),
        ("HTTP statuses", tally.statuses),
        ("5xx retries", tally.retries),
        ("alerts never accepted", tally.failed),
        ("incidents in journal", n),
        ("incident states", states),
        ("remediations started", starts),
        ("duplicates executed", result["duplicates_executed"]),
        ("lost", lost),
        ("ack p50 (ms)", result["ack_p50_ms"]),
        ("ack p99 (ms)", result["ack_p99_ms"]),
        ("ack max (ms)", round(max(tally.acks_ms, default=float("nan")), 2)),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
