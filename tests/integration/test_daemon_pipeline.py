"""The plain pipeline's AnsibleRemediator with real ansible-runner (worker thread): one span per
task per host under the incident's trace, per-task results in a schema-valid outcome, the
journal moved to executing before anything ran, and cancel_callback stopping a long run.

The playbook runs over SSH on the real lab host `app`, with the lab's inventory and strict host
key checking, exactly as the daemon runs it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from remed_daemon import outcomes
from remed_daemon.config import RemediationConfig, TelemetryConfig
from remed_daemon.journal import Journal, NewIncident, State
from remed_daemon.pipeline import AnsibleRemediator, RemediationContext, StaticPlanner
from remed_daemon.telemetry import make_tracer

pytestmark = pytest.mark.integration

PLAYBOOK = """\
- hosts: "{{ remed_host }}"
  gather_facts: false
  tasks:
    - name: write a marker
      ansible.builtin.copy:
        dest: "MARKER"
        content: "{{ remed_incident_id }}"
    - name: wait
      ansible.builtin.command: sleep SLEEP
      changed_when: false
"""


async def marker_on_host(lab: Any, marker: str) -> str | None:
    status = lab.status()
    app = next(h for h in status["hosts"] if h["name"] == "app")
    async with asyncssh.connect(
        app["address"],
        username=status["ssh_user"],
        client_keys=[status["ssh_key"]],
        known_hosts=status["known_hosts"],
        connect_timeout=10,
    ) as conn:
        result = await conn.run(f"cat {marker}", timeout=15)
    return str(result.stdout) if result.exit_status == 0 else None


async def run(
    tmp_path: Path, lab: Any, sleep_s: int, cancel_after_s: float | None
) -> tuple[Any, ...]:
    marker = f"/tmp/remed-pipeline-{uuid.uuid4().hex}"
    playbook = tmp_path / "pb.yml"
    playbook.write_text(PLAYBOOK.replace("MARKER", marker).replace("SLEEP", str(sleep_s)))
    cfg = RemediationConfig(
        mode="ansible",
        static_playbook=str(playbook),
        inventory=lab.status()["inventory"],
        playbook_timeout_s=60,
    )
    spans = InMemorySpanExporter()
    tracer, provider = make_tracer(TelemetryConfig())
    provider.add_span_processor(SimpleSpanProcessor(spans))
    async with Journal(tmp_path / "j.sqlite3") as journal:
        inc = (
            await journal.admit(
                NewIncident(
                    "k",
                    "kafka",
                    "cart@app",
                    {
                        "schema_version": 1,
                        "report_id": "r1",
                        "source": "kafka",
                        "target": {"service": "cart", "host": "app"},
                        "severity": "critical",
                        "summary": "down",
                    },
                )
            )
        ).incident
        inc = await journal.transition(inc.id, State.PLANNING)
        ctx = RemediationContext(journal, inc, tracer, tmp_path / "run")
        remediator = AnsibleRemediator(cfg, StaticPlanner(cfg))
        with tracer.start_as_current_span("remediate") as root:
            task = asyncio.create_task(remediator.remediate(inc, ctx))
            if cancel_after_s is not None:
                await asyncio.sleep(cancel_after_s)
                task.cancel()
            t0 = time.monotonic()
            result = await asyncio.gather(task, return_exceptions=True)
            elapsed = time.monotonic() - t0
        trace_id = root.get_span_context().trace_id
        state = (await journal.get(inc.id)).state  # type: ignore[union-attr]
        doc = None
        if not isinstance(result[0], BaseException):
            await journal.finish(inc.id, result[0].status, "", outcomes.builder(result[0]))
            doc = json.loads((await journal.unsent())[0].value)
    return result[0], spans, trace_id, state, doc, marker, elapsed


async def test_task_spans_and_outcome(tmp_path: Path, lab: Any) -> None:
    result, spans, trace_id, state, doc, marker, _ = await run(tmp_path, lab, 0, None)
    assert result.status is State.RECOVERED, result
    assert state is State.VERIFYING
    assert await marker_on_host(lab, marker) is not None
    task_spans = [s for s in spans.get_finished_spans() if s.name.startswith("task ")]
    assert {s.attributes["remed.task"] for s in task_spans} == {"write a marker", "wait"}
    assert all(s.context.trace_id == trace_id for s in task_spans)
    assert all(s.attributes["remed.host"] == "app" for s in task_spans)
    assert outcomes.validate("outcome", doc) == []
    [attempt] = doc["attempts"]
    assert [t["task"] for t in attempt["tasks"]] == ["write a marker", "wait"]
    assert attempt["tasks"][0]["changed"] is True
    assert attempt["verification"]["passed"] is True


async def test_cancel_stops_a_long_run(tmp_path: Path, lab: Any) -> None:
    result, _, _, state, _, _, elapsed = await run(tmp_path, lab, 60, cancel_after_s=4.0)
    assert isinstance(result, asyncio.CancelledError)
    assert state is State.EXECUTING  # the scheduler escalates it; it is never re-run
    assert elapsed < 20, "cancel_callback should stop ansible well before the 60 s sleep"
