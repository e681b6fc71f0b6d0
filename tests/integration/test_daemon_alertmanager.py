"""A real Alertmanager (Debian's prometheus-alertmanager) delivers to a real `remed serve` over
its webhook receiver with bearer auth: alert posted to Alertmanager's API v2 → incident in the
daemon's journal → outcome. A receiver configured with the wrong token gets nowhere."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alerting import journal_incidents, post_alert, wait_for

from remed_stack.procs import free_port

pytestmark = pytest.mark.integration
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
TOKEN = "am-integration-token"
ANNOTATIONS = {"summary": "cart returns 503", "description": "probe failed 5/5"}


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture
def remed(tmp_path: Path, kafka: Any) -> Iterator[tuple[int, Path]]:
    state = tmp_path / "state"
    cfg = tmp_path / "remed.toml"
    cfg.write_text(
        f'state_dir = "{state}"\n[http]\nport = 0\nbearer_token = "{TOKEN}"\n'
        f'[kafka]\nbootstrap = "{kafka.bootstrap}"\ngroup_id = "am-{uuid.uuid4().hex[:8]}"\n'
        f'diagnoses_topic = "remed.diagnoses.none-{uuid.uuid4().hex[:6]}"\n'
    )
    # the diagnoses topic does not exist: Kafka intake keeps retrying, the webhook works
    log = open(tmp_path / "remed.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "remed_daemon", "serve", "--config", str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        port_file = state / "http.port"
        wait_for(port_file.exists, 30, "remed serve to listen")
        port = int(port_file.read_text())
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), 30, "readyz")
        yield port, state
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def start_alertmanager(
    tmp_path: Path, remed_port: int, token: str
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = tmp_path / f"am-{port}.yml"
    conf.write_text(
        f"""
route:
  receiver: remed
  group_by: ['alertname', 'instance']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: remed
    webhook_configs:
      - url: http://127.0.0.1:{remed_port}/webhook/alertmanager
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: {token}
"""
    )
    proc = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={conf}",
            f"--storage.path={tmp_path / f'am-data-{port}'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=open(tmp_path / f"am-{port}.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/-/ready"), 30, "alertmanager ready")
    return proc, port


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_alertmanager_delivers_with_bearer_auth(tmp_path: Path, remed: tuple[int, Path]) -> None:
    port, state = remed
    am, am_port = start_alertmanager(tmp_path, port, TOKEN)
    wrong, wrong_port = start_alertmanager(tmp_path, port, "not-the-token")
    try:
        post_alert(
            wrong_port,
            {"alertname": "CartDown", "service": "cart", "instance": "bad:1"},
            ANNOTATIONS,
        )
        post_alert(
            am_port,
            {
                "alertname": "CartDown",
                "service": "cart",
                "instance": "app:9100",
                "severity": "critical",
            },
            ANNOTATIONS,
        )
        rows = wait_for(lambda: journal_incidents(state), 30, "an incident from alertmanager")
        wait_for(
            lambda: journal_incidents(state)[0][2] == "shadow", 30, "the remediation to finish"
        )
        wait_for(
            lambda: metric(port, 'remed_intake_total{result="unauthorized",source="alertmanager"}'),
            30,
            "the wrong-token receiver to be refused",
        )
        rows = journal_incidents(state)
        assert rows == [("alertmanager", "cart@app", "shadow")]
        outbox = sqlite3.connect(f"file:{state / 'journal.sqlite3'}?mode=ro", uri=True)
        [(value,)] = outbox.execute("SELECT value FROM outbox").fetchall()
        doc = json.loads(value)
        assert doc["source"] == "alertmanager" and doc["target"] == {
            "service": "cart",
            "host": "app",
        }
        # Alertmanager's resolved notification reaches the same incident (already finished)
        post_alert(
            am_port,
            {
                "alertname": "CartDown",
                "service": "cart",
                "instance": "app:9100",
                "severity": "critical",
            },
            ANNOTATIONS,
            ends=True,
        )
        wait_for(
            lambda: metric(port, 'remed_dedup_hits_total{source="alertmanager"}') >= 1,
            30,
            "the resolved notification",
        )
        assert len(journal_incidents(state)) == 1
    finally:
        for proc in (am, wrong):
            proc.terminate()
            proc.wait(timeout=30)
