"""Outcomes and feedback as the daemon and `remed feedback` build them, and a stand-in for the
KTO trainer (the round's plumbing without the minutes of training), for the Real-RFT tests."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from remed_daemon.feedback import feedback_doc
from remed_daemon.journal import Incident, State
from remed_daemon.outcomes.document import outcome_doc, prompt_record
from remed_daemon.planner.base import PlanRequest
from remed_daemon.remediation import Attempt, RemediationResult

ALLOWED = {"allowed": True, "risk": "low", "needs_approval": False, "violations": []}
REFUSED = {
    "allowed": False,
    "risk": "high",
    "needs_approval": False,
    "violations": [{"rule": "destructive.service_root", "task": "x", "detail": "rm"}],
}

KILL = """\
- hosts: app
  become: true
  tasks:
    - name: kill cart
      ansible.builtin.command: pkill -KILL -x cart
"""
GENTLE = """\
- hosts: app
  become: true
  tasks:
    - name: restart cart through its supervisor
      ansible.builtin.command: supervisorctl restart cart
"""
RESTART_DB = """\
- hosts: db
  become: true
  tasks:
    - name: restart the database, whatever the incident
      ansible.builtin.command: supervisorctl restart postgres
"""
WIPE = """\
- hosts: app
  become: true
  tasks:
    - name: wipe the data
      ansible.builtin.shell: rm -rf /var/lib/postgresql
"""


def outcome(
    iid: str,
    playbooks: Sequence[tuple[str, str]],
    *,
    category: str = "process-killed",
    service: str = "cart",
    host: str = "app",
    hosts: Sequence[str] = ("app",),
) -> dict[str, Any]:
    """A schema-valid outcome; `playbooks` is [(playbook, "passed"|"failed"|"refused"|"shadow")]."""
    report = {
        "target": {"service": service, "host": host},
        "category": category,
        "summary": f"{service} is down ({iid})",
    }
    attempts, evidence = [], []
    for text, how in playbooks:
        request = PlanRequest(
            report=report,
            service=service,
            host=host,
            category=category,
            facts=f"{service} runs on {host}",
            previous=list(evidence),
        )
        verification = {"passed": how == "passed", "checks": []}
        attempts.append(
            Attempt(
                playbook=text,
                guard=REFUSED if how == "refused" else ALLOWED,
                verification=None if how in ("refused", "shadow") else verification,
                prompt=prompt_record(request, list(hosts)),
            )
        )
        evidence.append(f"attempt {len(evidence) + 1} did not fix it")
    last = playbooks[-1][1] if playbooks else ""
    status = {"passed": State.RECOVERED, "shadow": State.SHADOW}.get(last, State.FAILED)
    incident = Incident(
        iid,
        f"k-{iid}",
        "kafka",
        f"{service}@{host}",
        status,
        report,
        "",
        None,
        None,
        "",
        1.0,
        2.0,
        1.5,
        3.0,
    )
    result = RemediationResult(
        status=status,
        attempts=attempts,
        planner="triton",
        model_name="remed_planner",
        model_version="1",
    )
    return json.loads(json.dumps(outcome_doc(incident, status, "test", result)))


def feedback(
    iid: str,
    verdict: str,
    author: str = "alice",
    playbook: str | None = None,
    fid: str | None = None,
    at: str | None = None,
) -> dict[str, Any]:
    return feedback_doc(
        iid,
        verdict,
        corrected_playbook=playbook,
        author=author,
        feedback_id=fid or f"fb-{uuid.uuid4().hex[:12]}",
        created_at=at,
    )


def instant_train(
    examples: Sequence[Any], version_dir: Path, out_dir: Path, cfg: Any, cancel: threading.Event
) -> dict[str, Any]:
    """The candidate "learns" its desirable completions: they are written as the adapter, so a
    gate in a test can judge what the candidate would now write."""
    (out_dir / "adapter").mkdir(parents=True, exist_ok=True)
    desirable = [e.completion for e in examples if e.label]
    (out_dir / "adapter" / "learned.json").write_text(json.dumps(desirable))
    return {"method": "test", "examples": len(examples)}


def slow_train(
    examples: Sequence[Any], version_dir: Path, out_dir: Path, cfg: Any, cancel: threading.Event
) -> dict[str, Any]:
    """Like `instant_train`, after `$REAL_RFT_TRAIN_S` seconds (a round a test can kill -9);
    `training.started` in the state dir says it began, and counts how often."""
    marker = Path(cfg.state_dir) / "training.started"
    marker.write_text(str(int(marker.read_text() or 0) + 1 if marker.exists() else 1))
    deadline = time.monotonic() + float(os.environ.get("REAL_RFT_TRAIN_S", "30"))
    while time.monotonic() < deadline and not cancel.is_set():
        time.sleep(0.2)
    return instant_train(examples, version_dir, out_dir, cfg, cancel)
