"""Operator feedback reaches `remed.feedback` on the real broker: `remed feedback` (the command,
in a child process) and the daemon's `POST /feedback/{id}` (an in-process daemon with its HTTP
listener), each on a private feedback topic. A corrected playbook the guard refuses is answered
with the violations and never published."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from reports import read_topic, values

from remed_daemon.app import Daemon
from remed_daemon.config import load
from remed_daemon.journal import NewIncident, State
from remed_daemon.outcomes.document import builder
from remed_daemon.schemas import iter_errors

pytestmark = pytest.mark.integration

FEEDBACK_TOKEN = "feedback-token-for-tests"
WEBHOOK_TOKEN = "webhook-token-for-tests"
ALLOWED = """\
- hosts: app
  become: true
  tasks:
    - name: restart cart gently
      ansible.builtin.command: supervisorctl restart cart
"""
REFUSED = """\
- hosts: app
  become: true
  tasks:
    - name: wipe the data
      ansible.builtin.shell: rm -rf /var/lib/postgresql
"""


async def feedback_topic(bootstrap: str) -> str:
    name = f"remed.fb{uuid.uuid4().hex[:10]}.feedback"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)], timeout_ms=15_000)
    finally:
        await admin.close()
    return name


def remed(*args: str, topic: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"REMED_KAFKA_FEEDBACK_TOPIC": topic} if topic else {})}
    return subprocess.run(
        [sys.executable, "-m", "remed_cli", "feedback", *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def test_cli_publishes_schema_valid_feedback(kafka: Any, tmp_path: Path) -> None:
    topic = asyncio.run(feedback_topic(kafka.bootstrap))
    playbook = tmp_path / "fix.yml"
    playbook.write_text(ALLOWED)
    cfg = tmp_path / "remed.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[http]\nenabled = false\n'
        f'[kafka]\nbootstrap = "{kafka.bootstrap}"\nfeedback_topic = "{topic}"\n'
    )
    done = remed("inc-1", "--verdict", "bad", "--playbook", str(playbook), "--hosts", "app",
                 "--comment", "restart, do not kill", "--by", "alice", "--config", str(cfg),
                 "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    # without --config: defaults and REMED_* overrides, --bootstrap
    plain = remed("inc-2", "--verdict", "good", "--bootstrap", kafka.bootstrap, topic=topic)
    assert plain.returncode == 0, plain.stderr
    docs = values(asyncio.run(read_topic(kafka.bootstrap, topic, 2, 20)))
    assert [d["incident_id"] for d in docs] == ["inc-1", "inc-2"]
    assert iter_errors("feedback", docs[1]) == []
    doc = docs[0]
    assert iter_errors("feedback", doc) == []
    assert doc["feedback_id"] == answer["feedback_id"]
    assert (doc["incident_id"], doc["verdict"], doc["author"]) == ("inc-1", "bad", "alice")
    assert doc["corrected_playbook"] == ALLOWED
    assert doc["comment"] == "restart, do not kill"


def test_cli_refuses_a_playbook_the_guard_refuses(kafka: Any, tmp_path: Path) -> None:
    topic = asyncio.run(feedback_topic(kafka.bootstrap))
    playbook = tmp_path / "fix.yml"
    playbook.write_text(REFUSED)
    done = remed("inc-3", "--verdict", "bad", "--playbook", str(playbook), "--hosts", "app",
                 "--bootstrap", kafka.bootstrap, "--json", topic=topic)  # fmt: skip
    assert done.returncode == 1
    answer = json.loads(done.stdout)
    assert answer["sent"] is False
    assert [v["rule"] for v in answer["violations"]] == ["destructive.service_root"]
    # nothing was published (an allowed one afterwards is the only record)
    other = remed("inc-4", "--verdict", "good", "--bootstrap", kafka.bootstrap, topic=topic)
    assert other.returncode == 0, other.stderr
    docs = values(asyncio.run(read_topic(kafka.bootstrap, topic, 2, 5)))
    assert [d["incident_id"] for d in docs] == ["inc-4"]
    # without --hosts and no journal: a usage error that says what to pass
    nohosts = remed("inc-3", "--verdict", "bad", "--playbook", str(playbook),
                    "--bootstrap", kafka.bootstrap, topic=topic)  # fmt: skip
    assert nohosts.returncode == 2 and "--hosts" in nohosts.stderr


async def _endpoint_scenario(bootstrap: str, state: Path) -> tuple[list[Any], str]:
    topic = await feedback_topic(bootstrap)
    env = {
        "REMED_STATE_DIR": str(state),
        "REMED_HTTP_PORT": "0",
        "REMED_HTTP_BEARER_TOKEN": WEBHOOK_TOKEN,
        "REMED_HTTP_FEEDBACK_TOKEN": FEEDBACK_TOKEN,
        "REMED_KAFKA_BOOTSTRAP": bootstrap,
        "REMED_KAFKA_GROUP_ID": f"g-{uuid.uuid4().hex[:8]}",
        "REMED_KAFKA_DIAGNOSES_TOPIC": f"remed.none-{uuid.uuid4().hex[:8]}",
        "REMED_KAFKA_FEEDBACK_TOPIC": topic,
    }
    daemon = Daemon(load(None, env))
    task = asyncio.create_task(daemon.run())
    answers: list[Any] = []
    try:
        async with asyncio.timeout(30):
            while not daemon.ready:  # noqa: ASYNC110 (the daemon offers no readiness event)
                await asyncio.sleep(0.1)
        adm = await daemon.journal.admit_finished(
            NewIncident("k-1", "cli", "cart@app", {"target": {"service": "cart", "host": "app"}}),
            State.EXPIRED, "test", builder(None),
        )  # fmt: skip
        iid = adm.incident.id
        url = f"http://127.0.0.1:{daemon.http_port}/feedback"
        auth = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            cases: list[tuple[str, dict[str, str], dict[str, Any]]] = [
                (iid, {}, {"verdict": "good"}),  # no token
                (iid, {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}, {"verdict": "good"}),
                (iid, auth, {"verdict": "meh"}),  # schema: 400 naming the field
                (iid, auth, {"verdict": "bad", "corrected_playbook": REFUSED}),  # 422
                ("inc-unknown", auth, {"verdict": "bad", "corrected_playbook": ALLOWED}),
                (iid, auth, {"verdict": "good", "author": "bob"}),  # 202
                (
                    iid,
                    auth,
                    {
                        "verdict": "bad",
                        "corrected_playbook": ALLOWED,
                        "author": "carol",
                        "comment": "gentler",
                    },
                ),  # 202
            ]
            for incident, headers, body in cases:
                async with http.post(f"{url}/{incident}", json=body, headers=headers) as resp:
                    answers.append((resp.status, await resp.json()))
    finally:
        daemon.request_stop()
        async with asyncio.timeout(60):
            await task
    return answers, topic


def test_daemon_endpoint_authenticates_guards_and_publishes(kafka: Any, tmp_path: Path) -> None:
    answers, topic = asyncio.run(_endpoint_scenario(kafka.bootstrap, tmp_path / "state"))
    statuses = [status for status, _ in answers]
    assert statuses == [401, 401, 400, 422, 404, 202, 202], answers
    assert "verdict" in answers[2][1]["error"]
    refused = answers[3][1]
    assert [v["rule"] for v in refused["violations"]] == ["destructive.service_root"]
    assert refused["hosts"] == ["app"]
    docs = values(asyncio.run(read_topic(kafka.bootstrap, topic, 2, 20)))
    assert [d["author"] for d in docs] == ["bob", "carol"]
    assert all(iter_errors("feedback", d) == [] for d in docs)
    assert docs[1]["corrected_playbook"] == ALLOWED
    assert {d["feedback_id"] for d in docs} == {a["feedback_id"] for _, a in answers[5:]}
