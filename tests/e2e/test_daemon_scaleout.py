"""Two `remed serve` processes in one consumer group share `remed.diagnoses`'s partitions;
every report is handled exactly once, by one of them, and one target's reports are handled in
the order they were produced (message key = target → one partition → one owner)."""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from reports import diagnosis, field, produce_reports, read_topic, values

from remed_stack.kafka import create_private_topics

pytestmark = pytest.mark.e2e

TARGETS = 20
PER_TARGET = 10


def reports(run: str) -> list[dict[str, Any]]:
    """PER_TARGET reports for each of TARGETS targets, interleaved: the produced order."""
    return [
        diagnosis(f"{run}-t{t}-s{seq}", f"svc{t}", "app", severity="warning",
                  summary=f"report {seq} for svc{t}")
        for seq in range(PER_TARGET)
        for t in range(TARGETS)
    ]  # fmt: skip


async def read_outcomes(bootstrap: str, topic: str, want: int, timeout_s: float) -> list[Any]:
    records = await read_topic(bootstrap, topic, want, timeout_s, field("incident_id"))
    return list({d["incident_id"]: d for d in values(records)}.values())


def assigned(log: Path) -> set[int]:
    parts: set[int] = set()
    if log.exists():
        for line in log.read_text().splitlines():
            if '"partitions assigned"' in line:
                parts = set(json.loads(line)["partitions"])
    return parts


def targets_in(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {r[0] for r in conn.execute("SELECT DISTINCT target FROM incidents")}


def test_two_daemons_share_partitions_and_keep_target_order(tmp_path: Path, kafka: Any) -> None:
    topics = asyncio.run(create_private_topics(kafka.bootstrap, "s"))
    group = f"scale-{uuid.uuid4().hex[:8]}"
    procs, logs, states = [], [], []
    for n in range(2):
        state = tmp_path / f"state{n}"
        cfg = tmp_path / f"remed{n}.toml"
        cfg.write_text(
            f'state_dir = "{state}"\n[http]\nenabled = false\n'
            f'[kafka]\nbootstrap = "{kafka.bootstrap}"\ngroup_id = "{group}"\n'
            "session_timeout_ms = 6000\nheartbeat_interval_ms = 1000\n"
            + "".join(f'{k} = "{v}"\n' for k, v in topics.items())
            + '[scheduler]\nper_target_budget_per_hour = 1000\n[telemetry]\nlog_format = "json"\n'
        )
        log = tmp_path / f"remed{n}.log"
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "remed_daemon", "serve", "--config", str(cfg)],
                stdout=open(log, "wb"),
                stderr=subprocess.STDOUT,
            )
        )
        logs.append(log)
        states.append(state)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            a, b = assigned(logs[0]), assigned(logs[1])
            if a and b and not (a & b) and (a | b) == set(range(6)):
                break
            time.sleep(0.3)
        else:
            raise AssertionError(f"group never split the partitions: {a} / {b}")
        run = uuid.uuid4().hex[:6]
        docs = reports(run)
        asyncio.run(produce_reports(kafka.bootstrap, topics["diagnoses_topic"], docs))
        ids = [d["report_id"] for d in docs]
        outs = asyncio.run(read_outcomes(kafka.bootstrap, topics["outcomes_topic"], len(ids), 90))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)

    by_report = collections.defaultdict(list)
    for doc in outs:
        by_report[doc["report_id"]].append(doc)
    assert sorted(by_report) == sorted(ids), "every report has an outcome"
    assert all(len(v) == 1 for v in by_report.values()), "no report handled twice"
    t0, t1 = targets_in(states[0] / "journal.sqlite3"), targets_in(states[1] / "journal.sqlite3")
    assert t0 and t1, "both instances did work"
    assert not (t0 & t1), "a target is owned by one instance"
    # per target, in produced order: what ran started in order; what was skipped was
    # superseded by a later report, never by an earlier one
    for t in range(TARGETS):
        docs = [by_report[f"{run}-t{t}-s{s}"][0] for s in range(PER_TARGET)]
        ran = [d["timings"]["started_at"] for d in docs if d["status"] == "shadow"]
        assert ran == sorted(ran), f"svc{t}: out of order"
        assert docs[-1]["status"] == "shadow", f"svc{t}: the newest report must run"
        for d in docs:
            assert d["status"] in ("shadow", "cancelled"), d
