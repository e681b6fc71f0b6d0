"""kill -9 at random points of a real `remed serve` (real Kafka, real ansible-runner applying a
real playbook): nothing is lost, nothing is executed twice.

The playbook appends the report id to a ledger file (one line per execution), so "executed
twice" is counted from what actually ran, not from what the daemon says. Hosts are reached with
`ansible_connection=local` — the point here is the journal and the commit protocol, not SSH.
Kafka static membership lets each restart take its partitions back at once.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from remed_stack.kafka import create_private_topics
from remed_stack.procs import free_port

pytestmark = pytest.mark.e2e

KILLS = 20
REPORTS = 30
TARGETS = 15
WEBHOOK_ALERTS = 6
TOKEN = "kill-token"

PLAYBOOK = """\
- hosts: "{{ remed_host }}"
  gather_facts: false
  tasks:
    - name: record this execution in the ledger
      ansible.builtin.shell: "echo {{ remed_report_id }} {{ remed_incident_id }} >> LEDGER"
"""


async def produce_reports(bootstrap: str, topic: str, run: str) -> list[str]:
    ids = []
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for n in range(REPORTS):
            service = f"svc{n % TARGETS}"
            rid = f"{run}-{n}"
            doc = {
                "schema_version": 1,
                "report_id": rid,
                "source": "kafka",
                "target": {"service": service, "host": "app"},
                "severity": "critical",
                "summary": f"{service} down",
            }
            await producer.send_and_wait(
                topic, json.dumps(doc).encode(), key=f"{service}@app".encode()
            )
            ids.append(rid)
    finally:
        await producer.stop()
    return ids


async def read_all(bootstrap: str, topic: str, want: int, timeout_s: float) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                out.extend(msgs)
            if len({json.loads(m.value)["report_id"] for m in out}) >= want:
                break
    finally:
        await consumer.stop()
    return out


def notify_forever(port: int, run: str, acked: set[str], stop: threading.Event) -> None:
    """POST WEBHOOK_ALERTS distinct alerts round and round; remember the report ids of 202s."""
    n = 0
    while not stop.is_set():
        i = n % WEBHOOK_ALERTS
        n += 1
        fp, starts = f"{run}w{i}", "2026-11-24T10:00:00Z"
        body = {
            "version": "4",
            "groupKey": "g",
            "status": "firing",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"service": f"web{i}", "instance": "app:80"},
                    "annotations": {"summary": "web down"},
                    "startsAt": starts,
                    "fingerprint": fp,
                }
            ],
        }
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/webhook/alertmanager",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status == 202:
                    key = f"am:{fp}:{starts}"
                    acked.add("am-" + hashlib.sha256(key.encode()).hexdigest()[:32])
        except OSError:
            pass  # the daemon is down or restarting: Alertmanager would retry too
        time.sleep(0.1)


def states(db: Path) -> collections.Counter[str]:
    if not db.exists():
        return collections.Counter()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return collections.Counter(r[0] for r in conn.execute("SELECT state FROM incidents"))


def test_kill9_loses_nothing_and_runs_nothing_twice(tmp_path: Path, kafka: Any) -> None:
    topics = asyncio.run(create_private_topics(kafka.bootstrap, "k"))
    port = free_port()
    state = tmp_path / "state"
    ledger = tmp_path / "ledger.txt"
    playbook = tmp_path / "record.yml"
    playbook.write_text(PLAYBOOK.replace("LEDGER", str(ledger)))
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        f"app ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )
    cfg = tmp_path / "remed.toml"
    cfg.write_text(
        f'state_dir = "{state}"\n'
        f'[http]\nport = {port}\nbearer_token = "{TOKEN}"\n'
        f'[kafka]\nbootstrap = "{kafka.bootstrap}"\n'
        f'group_id = "kill-{uuid.uuid4().hex[:8]}"\ngroup_instance_id = "kill-test"\n'
        "session_timeout_ms = 6000\nheartbeat_interval_ms = 1000\ncommit_interval_s = 0.2\n"
        + "".join(f'{k} = "{v}"\n' for k, v in topics.items())
        + "[scheduler]\nmax_concurrency = 2\nper_target_budget_per_hour = 100\n"
        f'[remediation]\nmode = "ansible"\nstatic_playbook = "{playbook}"\n'
        f'inventory = "{inventory}"\nplaybook_timeout_s = 60\n'
        '[telemetry]\nlog_format = "json"\n'
    )
    run = uuid.uuid4().hex[:6]
    ids = asyncio.run(produce_reports(kafka.bootstrap, topics["diagnoses_topic"], run))
    # Meanwhile an "Alertmanager" keeps notifying through every crash; a 202 is a promise.
    acked: set[str] = set()
    stop = threading.Event()
    poster = threading.Thread(target=notify_forever, args=(port, run, acked, stop), daemon=True)
    poster.start()
    rng = random.Random(int(os.environ.get("REMED_KILL_SEED", "0")) or None)
    log = open(tmp_path / "remed.log", "ab")
    argv = [sys.executable, "-m", "remed_daemon", "serve", "--config", str(cfg)]
    at_kill: list[dict[str, int]] = []
    for _ in range(KILLS):
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        time.sleep(rng.uniform(1.5, 7.0))  # start-up ~1 s, a run ~3 s: kills land in every phase
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        at_kill.append(dict(states(state / "journal.sqlite3")))
    stop.set()
    poster.join()
    ids += sorted(acked)
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        outs = asyncio.run(read_all(kafka.bootstrap, topics["outcomes_topic"], len(ids), 150))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()

    by_report: dict[str, set[str]] = collections.defaultdict(set)
    statuses: collections.Counter[str] = collections.Counter()
    for m in outs:
        doc = json.loads(m.value)
        if doc["incident_id"] not in by_report[doc["report_id"]]:
            statuses[doc["status"]] += 1
        by_report[doc["report_id"]].add(doc["incident_id"])
    executed = (
        collections.Counter(line.split()[0] for line in ledger.read_text().splitlines())
        if ledger.exists()
        else collections.Counter()
    )
    lost = [r for r in ids if r not in by_report]
    twice = {r: c for r, c in executed.items() if c > 1}
    split = {r: i for r, i in by_report.items() if len(i) > 1}
    phases = collections.Counter(s for snap in at_kill for s, n in snap.items() if n)
    print(
        json.dumps(
            {
                "kills": KILLS,
                "reports": REPORTS,
                "webhook_alerts_acknowledged": len(acked),
                "lost": len(lost),
                "executed_twice": len(twice),
                "executions": sum(executed.values()),
                "outcomes": dict(statuses),
                "states_present_at_kills": dict(phases),
            }
        )
    )
    assert acked, "the webhook acknowledged something between kills"
    assert lost == []
    assert twice == {}
    assert split == {}  # one report, one incident, one outcome
    assert statuses["recovered"] >= 1
