"""The operator commands against a real `remed serve` (subprocess, `http.port = 0`, ansible
mode on the lab hosts): an alert on the webhook becomes an incident whose high-risk plan waits
for a person; `remed tail` sees it arrive, `remed incidents` and `remed approvals` list it with
the plan's sha256, `remed show` prints it waiting, `remed reject` decides it as a named person,
and `remed show` then has the whole record: timeline, report, the attempt's playbook, guard
verdict, check diff and approval, the trace id. Nothing is applied: the plan (stop redis) is
rejected, so no lab lock is needed. Wrong or missing tokens and unknown ids exit 1 or 2."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alerting import wait_for
from reports import webhook_body

pytestmark = pytest.mark.integration
HOOK_TOKEN = "hook-operator-cli"
OPERATOR_TOKEN = "operator-cli-token"  # the approvers' token (agents.approval_token)
READONLY_TOKEN = "observer-read-only-token"  # http.operator_token
PLAYBOOK = """\
- name: stop redis for maintenance on {{ remed_host }}
  hosts: "{{ remed_host }}"
  become: true
  gather_facts: false
  tasks:
    - name: stop redis
      ansible.builtin.command: supervisorctl stop redis
"""


def remed(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "remed_daemon", *argv],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def remed_json(*argv: str) -> Any:
    done = remed(*argv, "--json")
    assert done.returncode == 0, done
    return json.loads(done.stdout)


@pytest.fixture
def daemon(tmp_path: Path, lab: Any) -> Iterator[tuple[Path, int]]:
    state = tmp_path / "state"
    playbook = tmp_path / "stop-redis.yml"
    playbook.write_text(PLAYBOOK)
    cfg = tmp_path / "remed.toml"
    cfg.write_text(
        f'state_dir = "{state}"\n[kafka]\nenabled = false\n'
        f'[http]\nport = 0\nbearer_token = "{HOOK_TOKEN}"\n'
        f'operator_token = "{READONLY_TOKEN}"\n'
        f'[remediation]\nmode = "ansible"\nplanner = "static"\nstatic_playbook = "{playbook}"\n'
        f'inventory = "{lab.status()["inventory"]}"\n'
        f'[agents]\napproval_token = "{OPERATOR_TOKEN}"\nmax_attempts = 1\n'
        "approval_timeout_s = 120\n"
    )
    log = open(tmp_path / "remed.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "remed_daemon", "serve", "--config", str(cfg)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: (state / "http.port").exists() or proc.poll() is not None, 60, "listen")
        assert proc.poll() is None, (tmp_path / "remed.log").read_text()
        yield cfg, int((state / "http.port").read_text())
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def post_webhook(port: int, body: dict[str, Any]) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/webhook/alertmanager",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {HOOK_TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return int(r.status)


def test_operator_commands_follow_an_incident_through_approval(
    tmp_path: Path, daemon: tuple[Path, int]
) -> None:
    cfg, port = daemon
    conf = ("--config", str(cfg))
    assert remed_json("incidents", *conf) == {"incidents": []}
    follower = subprocess.Popen(
        [sys.executable, "-m", "remed_daemon", "tail", *conf, "--json", "--max-events", "3",
         "--for-s", "90", "--interval-s", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: follower.poll() is None, 5, "tail to start")
        time.sleep(1.5)  # `tail` starts from the newest event; let it ask once first
        body = webhook_body(
            uuid.uuid4().hex[:16],
            {"alertname": "RedisMaintenance", "service": "redis", "host": "db",
             "severity": "warning"},
            summary="redis on db needs a maintenance stop (token=s3cr3t-in-alert)",
        )  # fmt: skip
        assert post_webhook(port, body) == 202

        def waiting() -> list[dict[str, Any]]:
            return remed_json("incidents", *conf, "--status", "awaiting_approval")["incidents"]

        [inc] = wait_for(waiting, 90, "the plan to wait for approval")
        iid = inc["id"]
        assert inc["target"] == "redis@db" and inc["source"] == "alertmanager"
        assert re.fullmatch(r"[0-9a-f]{32}", inc["trace_id"])
        assert "s3cr3t-in-alert" not in json.dumps(inc), "alert text is redacted on the way out"

        out, err = follower.communicate(timeout=60)
        events = [json.loads(line) for line in out.splitlines()]
        assert [(e["from"], e["to"]) for e in events] == [
            (None, "received"), ("received", "planning"), ("planning", "awaiting_approval")
        ], err  # fmt: skip
        assert {e["incident_id"] for e in events} == {iid}

        filled = PLAYBOOK.replace("{{ remed_host }}", "db")
        sha = hashlib.sha256(filled.encode()).hexdigest()
        [pending] = remed_json("approvals", *conf)["pending"]
        assert pending["incident_id"] == iid and pending["plan_sha256"] == sha
        assert pending["risk"] == "high"
        listed = remed("approvals", *conf, "--playbooks")
        assert listed.returncode == 0 and sha in listed.stdout
        assert "supervisorctl stop redis" in listed.stdout

        shown = remed("show", iid[:8], *conf)
        assert shown.returncode == 0, shown
        assert "WAITING FOR APPROVAL: risk high" in shown.stdout and sha in shown.stdout
        assert "planning -> awaiting_approval" in shown.stdout

        decided = remed("reject", iid, *conf, "--by", "oncall-alice", "--plan-sha256", sha)
        assert decided.returncode == 0, decided
        wait_for(
            lambda: remed_json("incidents", *conf, "--status", "rejected")["incidents"],
            30, "the rejection to finish the incident",
        )  # fmt: skip

        doc = remed_json("show", iid, *conf)
        assert doc["state"] == "rejected" and doc["approval_pending"] is None
        assert [e["to"] for e in doc["timeline"]] == [
            "received", "planning", "awaiting_approval", "rejected"
        ]  # fmt: skip
        assert doc["trace_id"] == doc["traceparent"].split("-")[1]
        assert doc["report"]["target"] == {"service": "redis", "host": "db"}
        [attempt] = doc["outcome"]["attempts"]
        assert attempt["playbook"] == filled
        assert attempt["guard"]["allowed"] and attempt["guard"]["risk"] == "high"
        assert attempt["approval"]["decision"] == "rejected"
        assert attempt["approval"]["by"] == "oncall-alice"
        assert doc["outcome"]["status"] == "rejected"
        assert doc["attempts"] == 1

        text = remed("show", iid, *conf)
        assert text.returncode == 0
        for line in ("timeline", "attempt 1: guard allowed, risk high, needs approval",
                     "approval: rejected by oncall-alice", "supervisorctl stop redis",
                     f"trace     {doc['trace_id']}", "outcome on Kafka not yet"):  # fmt: skip
            assert line in text.stdout, text.stdout

        replay = remed("tail", *conf, "--from-start", "--for-s", "0.5")
        assert replay.returncode == 0
        assert "awaiting_approval -> rejected" in replay.stdout
        assert "high-risk plan rejected by oncall-alice" in replay.stdout

        table = remed("incidents", *conf)
        assert table.returncode == 0
        assert re.search(rf"{iid[:8]}\s+redis@db\s+rejected", table.stdout), table.stdout
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()


def test_operator_commands_refuse_without_the_token(
    tmp_path: Path, daemon: tuple[Path, int]
) -> None:
    cfg, _ = daemon
    full = cfg.read_text()
    # the approvers' token alone (the read-only one is tried below)
    text = full.replace(f'operator_token = "{READONLY_TOKEN}"\n', "")
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(text.replace(OPERATOR_TOKEN, "not-the-operator-token"))
    none = tmp_path / "none.toml"
    none.write_text(text.replace(f'approval_token = "{OPERATOR_TOKEN}"\n', ""))
    webhook = tmp_path / "webhook.toml"  # the webhook's token is not an operator's
    webhook.write_text(text.replace(OPERATOR_TOKEN, HOOK_TOKEN))

    for path in (wrong, webhook):
        done = remed("incidents", "--config", str(path))
        assert done.returncode == 1 and "401: missing or wrong token" in done.stderr, done
    done = remed("incidents", "--config", str(none))
    assert done.returncode == 2 and "no operator token" in done.stderr, done
    # an observer with only the read-only token reads, but the approval list is not theirs
    observer = tmp_path / "observer.toml"
    observer.write_text(full.replace(f'approval_token = "{OPERATOR_TOKEN}"\n', ""))
    done = remed("incidents", "--config", str(observer))
    assert done.returncode == 0, done
    done = remed("approvals", "--config", str(observer))
    assert done.returncode == 2 and "no approval token" in done.stderr, done
    wrong_readonly = tmp_path / "wrong-readonly.toml"
    wrong_readonly.write_text(
        observer.read_text().replace(READONLY_TOKEN, "not-the-read-only-token")
    )
    done = remed("incidents", "--config", str(wrong_readonly))
    assert done.returncode == 1 and "401: missing or wrong token" in done.stderr, done
    done = remed("show", "0" * 36, "--config", str(cfg))
    assert done.returncode == 1 and "404: no incident" in done.stderr, done
    done = remed("incidents", "--config", str(cfg), "--status", "sleeping")
    assert done.returncode == 1 and "400: status 'sleeping' is not a state" in done.stderr
    done = remed("incidents", "--url", "http://127.0.0.1:1", "--config", str(cfg))
    assert done.returncode == 1 and "cannot reach the daemon" in done.stderr, done
