"""The operator's fixed playbook (`remediation.planner = "static"`) through the daemon's one
engine, ThinkRemed as `make_thinkremed` builds it from the config, with real ansible-runner
(worker thread): the playbook meets the guard like any plan, one span per task per host under
the incident's trace, per-task results in a schema-valid outcome, the journal moved to executing
before anything ran, and cancel_callback stopping a long run.

The playbook runs over SSH on the real lab host `app` (its `{{ remed_host }}` filled in by the
planner), with the lab's inventory and strict host key checking, exactly as the daemon runs it;
the target is the lab's `cart`, so verification checks the real service."""

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

from remed_daemon.agents.loop import make_thinkremed
from remed_daemon.config import load
from remed_daemon.journal import Journal, NewIncident, State
from remed_daemon.outcomes.document import builder
from remed_daemon.remediation import RemediationContext
from remed_daemon.schemas import iter_errors
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
    marker = f"/tmp/remed-static-{uuid.uuid4().hex}"
    playbook = tmp_path / "pb.yml"
    playbook.write_text(PLAYBOOK.replace("MARKER", marker).replace("SLEEP", str(sleep_s)))
    config = tmp_path / "remed.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[http]\nenabled = false\n'
        f'[remediation]\nmode = "ansible"\nplanner = "static"\nstatic_playbook = "{playbook}"\n'
        f'inventory = "{lab.status()["inventory"]}"\nplaybook_timeout_s = 60\n'
        "[agents]\nmax_attempts = 1\nverify_window_s = 10\nverify_stable_s = 0.5\n"
        "verify_interval_s = 0.5\n"
    )
    cfg = load(config, {})
    spans = InMemorySpanExporter()
    tracer, provider = make_tracer(cfg.telemetry)
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
        remediator = make_thinkremed(cfg)
        with tracer.start_as_current_span("remediate") as root:
            task = asyncio.create_task(remediator.remediate(inc, ctx))
            if cancel_after_s is not None:
                # cancel once the playbook is running (after probes, guard and snapshot)
                deadline = time.monotonic() + 60
                while (await journal.get(inc.id)).state is not State.EXECUTING:  # type: ignore[union-attr]
                    assert time.monotonic() < deadline and not task.done(), "never executed"
                    await asyncio.sleep(0.1)
                await asyncio.sleep(cancel_after_s)
                task.cancel()
            t0 = time.monotonic()
            result = await asyncio.gather(task, return_exceptions=True)
            elapsed = time.monotonic() - t0
        trace_id = root.get_span_context().trace_id
        state = (await journal.get(inc.id)).state  # type: ignore[union-attr]
        doc = None
        if not isinstance(result[0], BaseException):
            await journal.finish(inc.id, result[0].status, "", builder(result[0]))
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
    assert iter_errors("outcome", doc) == []
    assert doc["planner"] == "static"
    [attempt] = doc["attempts"]
    assert attempt["guard"]["allowed"] is True  # the operator's playbook met the guard too
    assert 'hosts: "app"' in attempt["playbook"]
    assert [t["task"] for t in attempt["tasks"]] == ["write a marker", "wait"]
    assert attempt["tasks"][0]["changed"] is True
    assert attempt["verification"]["passed"] is True


async def test_cancel_stops_a_long_run(tmp_path: Path, lab: Any) -> None:
    result, _, _, state, _, _, elapsed = await run(tmp_path, lab, 60, cancel_after_s=2.0)
    assert isinstance(result, asyncio.CancelledError)
    assert state is State.EXECUTING  # the scheduler escalates it; it is never re-run
    assert elapsed < 20, "cancel_callback should stop ansible well before the 60 s sleep"
