"""kill -9 at random points of a real `remed serve` (real Kafka, real ansible-runner applying a
real playbook): nothing is lost, nothing is executed twice.

The playbook appends the report id to a ledger file on the lab host `app` (one line per
execution), so "executed twice" is counted from what actually ran, not from what the daemon
says. It is the operator's fixed playbook (`planner = "static"`) run by the daemon's one engine,
so it meets the guard, is snapshotted, applied over SSH and verified like any plan; the targets
are names of a test topology whose program is the host's sshd, so verification passes without
the test touching any service. Kafka static membership lets each restart take its partitions
back at once.
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

import asyncssh
import pytest
from reports import diagnosis, field, produce_reports, read_topic, webhook_body

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
      ansible.builtin.shell: >-
        echo {{ remed_report_id | quote }} {{ remed_incident_id | quote }} >> LEDGER
"""
HOST, HOST_ADDRESS = "app", "10.231.77.12"
# Every target of the test, as the topology the daemon is given: services of the host `app`
# whose supervised program is its sshd (running, never touched by the playbook).
SERVICES = [f"svc{n}" for n in range(TARGETS)] + [f"web{i}" for i in range(WEBHOOK_ALERTS)]
# A target first reported after the last crash: the daemon that survived them still remediates.
# (Whether a run finishes between two kills depends on the machine's speed, so the reports
# sent before them may all end escalated or cancelled on a loaded CI host.)
AFTER_CRASHES = "after-crashes"


def reports(run: str) -> list[dict[str, Any]]:
    return [
        diagnosis(f"{run}-{n}", f"svc{n % TARGETS}", HOST, summary=f"svc{n % TARGETS} down")
        for n in range(REPORTS)
    ]


def notify_forever(port: int, run: str, acked: set[str], stop: threading.Event) -> None:
    """POST WEBHOOK_ALERTS distinct alerts round and round; remember the report ids of 202s."""
    n = 0
    while not stop.is_set():
        i = n % WEBHOOK_ALERTS
        n += 1
        fp, starts = f"{run}w{i}", "2026-11-24T10:00:00Z"
        labels = {"service": f"web{i}", "instance": "app:80"}
        body = webhook_body(fp, labels, summary="web down", starts_at=starts)
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


async def read_ledger(lab: Any, path: str) -> str:
    status = lab.status()
    async with asyncssh.connect(
        HOST_ADDRESS, username=status["ssh_user"], client_keys=[status["ssh_key"]],
        known_hosts=status["known_hosts"], connect_timeout=10,
    ) as conn:  # fmt: skip
        result = await conn.run(f"cat {path} 2>/dev/null; rm -f {path}", timeout=30)
    return str(result.stdout or "")


def states(db: Path) -> collections.Counter[str]:
    if not db.exists():
        return collections.Counter()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return collections.Counter(r[0] for r in conn.execute("SELECT state FROM incidents"))


def test_kill9_loses_nothing_and_runs_nothing_twice(tmp_path: Path, kafka: Any, lab: Any) -> None:
    topics = asyncio.run(create_private_topics(kafka.bootstrap, "k"))
    port = free_port()
    state = tmp_path / "state"
    ledger = f"/tmp/remed-ledger-{uuid.uuid4().hex}"  # on the lab host
    playbook = tmp_path / "record.yml"
    playbook.write_text(PLAYBOOK.replace("LEDGER", ledger))
    topology = tmp_path / "topology.json"
    topology.write_text(json.dumps({
        "hosts": {HOST: HOST_ADDRESS},
        "services": {
            name: {"host": HOST, "program": "sshd"} for name in [*SERVICES, AFTER_CRASHES]
        },
    }))  # fmt: skip
    cfg = tmp_path / "remed.toml"
    cfg.write_text(
        f'state_dir = "{state}"\n'
        f'[http]\nport = {port}\nbearer_token = "{TOKEN}"\n'
        f'[kafka]\nbootstrap = "{kafka.bootstrap}"\n'
        f'group_id = "kill-{uuid.uuid4().hex[:8]}"\ngroup_instance_id = "kill-test"\n'
        "session_timeout_ms = 6000\nheartbeat_interval_ms = 1000\ncommit_interval_s = 0.2\n"
        + "".join(f'{k} = "{v}"\n' for k, v in topics.items())
        + "[scheduler]\nmax_concurrency = 2\nper_target_budget_per_hour = 100\n"
        f'[remediation]\nmode = "ansible"\nplanner = "static"\nstatic_playbook = "{playbook}"\n'
        f'inventory = "{lab.status()["inventory"]}"\nplaybook_timeout_s = 60\n'
        f'[agents]\ntopology_file = "{topology}"\nverify_window_s = 10\nverify_stable_s = 0\n'
        "verify_interval_s = 0.5\n"
        '[telemetry]\nlog_format = "json"\n'
    )
    run = uuid.uuid4().hex[:6]
    docs = reports(run)
    asyncio.run(produce_reports(kafka.bootstrap, topics["diagnoses_topic"], docs))
    ids = [d["report_id"] for d in docs]
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
    last = diagnosis(f"{run}-after", AFTER_CRASHES, HOST, summary=f"{AFTER_CRASHES} down")
    asyncio.run(produce_reports(kafka.bootstrap, topics["diagnoses_topic"], [last]))
    ids.append(last["report_id"])
    try:
        outs = asyncio.run(
            read_topic(kafka.bootstrap, topics["outcomes_topic"], len(ids), 300, field("report_id"))
        )
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
    executed = collections.Counter(
        line.split()[0] for line in asyncio.run(read_ledger(lab, ledger)).splitlines() if line
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
    after = [d for d in (json.loads(m.value) for m in outs)
             if d["report_id"] == last["report_id"]]  # fmt: skip
    assert after and all(d["status"] == "recovered" for d in after), after
