"""Agents' pure parts: approvals, guard verdicts, touched files, reflection, probe commands,
and the loop as the default config builds it (shadow mode, no inventory: plan and guard only)."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

import pytest

from remed_daemon.agents.approvals import ApprovalBook, ApprovalError, plan_digest
from remed_daemon.agents.execute import PlaybookRun
from remed_daemon.agents.loop import default_guard, make_thinkremed, reflect, verdict_doc
from remed_daemon.agents.probe import CATALOG, Prober, ProbeRefused
from remed_daemon.agents.snapshot import touched
from remed_daemon.agents.ssh import HostAccess
from remed_daemon.agents.topology import ServiceFacts, facts_for, from_mapping
from remed_daemon.config import load
from remed_daemon.guard import check_playbook
from remed_daemon.journal import Journal, NewIncident, State
from remed_daemon.remediation import RemediationContext, TaskResult
from remed_daemon.telemetry import make_tracer

pytestmark = pytest.mark.unit


async def test_approval_approve_reject_expire_and_digest_pin() -> None:
    book = ApprovalBook()
    waiting = asyncio.create_task(
        book.wait("i1", "- hosts: app\n", target="cart@app", risk="high", timeout_s=5)
    )
    await asyncio.sleep(0)
    [pending] = book.pending()
    assert pending["plan_sha256"] == plan_digest("- hosts: app\n")
    with pytest.raises(ApprovalError) as mismatch:
        book.decide("i1", True, "alice", plan_sha256="0" * 64)
    assert mismatch.value.status == 409
    with pytest.raises(ApprovalError) as unknown:
        book.decide("nope", True, "alice")
    assert unknown.value.status == 404
    book.decide("i1", True, "alice", plan_sha256=pending["plan_sha256"])
    decision = await waiting
    assert decision.approved and decision.doc()["by"] == "alice"
    assert book.pending() == []

    rejected = asyncio.create_task(book.wait("i2", "x", target="t", risk="high", timeout_s=5))
    await asyncio.sleep(0)
    book.decide("i2", False, "bob")
    assert (await rejected).decision == "rejected"

    expired = await book.wait("i3", "x", target="t", risk="high", timeout_s=0.05)
    assert expired.decision == "expired" and not expired.approved
    assert set(expired.doc()) == {"decision", "at"}


def test_verdict_doc_is_the_outcome_form_of_a_verdict() -> None:
    verdict = check_playbook("- hosts: app\n  tasks:\n    - raw: id\n", ["app"])
    doc = verdict_doc(verdict)
    assert (doc["allowed"], doc["risk"], doc["needs_approval"]) == (False, "high", False)
    assert doc["violations"] == [
        {"rule": v.rule, "task": v.task, "detail": v.detail} for v in verdict.violations
    ]
    assert doc["violations"][0]["rule"] == "shell.raw"


def test_default_guard_refuses_a_host_name_it_cannot_use() -> None:
    # Host names come from the report: a hostile one is a refusal, not a crash of the loop.
    verdict = default_guard("- hosts: app\n  tasks: []\n", ["app; rm -rf /"])
    assert not verdict.allowed and verdict.violations[0].rule == "hosts.invalid"
    assert default_guard(
        "- hosts: app\n  tasks:\n    - command: supervisorctl restart cart\n", ["app"]
    ).allowed


def test_touched_files_and_services() -> None:
    playbook = """
- hosts: app
  tasks:
    - ansible.builtin.lineinfile: {path: /etc/shop/cart.ini, line: x}
    - block:
        - copy: {dest: /srv/a.txt, content: x}
        - template: {src: t.j2, dest: "{{ somewhere }}"}
      rescue:
        - ansible.builtin.file: {path: /var/log/shop/cart.log, state: absent}
    - ansible.builtin.service: {name: nginx, state: restarted}
    - community.general.supervisorctl: {name: cart, state: restarted}
  handlers:
    - systemd: {name: "bad name; rm", state: restarted}
"""
    files, services = touched(playbook)
    assert files == {"/etc/shop/cart.ini", "/srv/a.txt", "/var/log/shop/cart.log"}
    assert services == {"nginx", "cart"}
    assert touched("not: [yaml") == (set(), set())


def test_reflection_names_failed_tasks_and_checks_and_redacts() -> None:
    run = PlaybookRun("failed", [
        TaskResult("app", "restart", "ansible.builtin.command", failed=True, rc=1,
                   msg="password=hunter2 refused"),
        TaskResult("app", "ok task", "ansible.builtin.copy"),
    ])  # fmt: skip
    verification = {"passed": False, "checks": [
        {"name": "health", "passed": False, "detail": "GET /health → 502"},
        {"name": "service-running", "passed": True, "detail": "RUNNING"},
    ]}  # fmt: skip
    text = reflect(2, run, verification)
    assert "Attempt 2" in text and "'restart'" in text and "rc=1" in text
    assert "health failed: GET /health → 502" in text
    assert "ok task" not in text and "service-running" not in text
    assert "hunter2" not in text


FACTS = ServiceFacts(
    name="cart", host="app", address="10.0.0.2", program="cart", port=8082,
    config="/etc/shop/it's; rm -rf /.ini", log="/var/log/shop/cart.log",
)  # fmt: skip


def test_probe_commands_are_catalog_only_and_quoted() -> None:
    prober = Prober(HostAccess(""))
    with pytest.raises(ProbeRefused, match="allowlist"):
        prober.command("cat /etc/shadow", FACTS)
    command = prober.command("config_show", FACTS)
    assert shlex.quote(FACTS.config) in command
    for name in CATALOG:
        text = prober.command(name, FACTS)
        assert "rm " not in text.replace(shlex.quote(FACTS.config), "")


def test_topology() -> None:
    topo = from_mapping({
        "hosts": {"app": "10.0.0.2", "db": "10.0.0.3"},
        "services": {"cart": {"host": "app", "port": 8082, "health": "http",
                              "depends_on": ["redis"]},
                     "redis": {"host": "db", "port": 6379, "health": "redis"}},
    })  # fmt: skip
    cart = facts_for(topo, "cart", "app", "10.0.0.2")
    assert cart.health_url == "http://10.0.0.2:8082/health"
    assert cart.depends_on[0].address == "10.0.0.3"
    assert "redis@db" in cart.describe()
    assert facts_for(topo, "other", "web", "10.0.0.1").program == "other"
    # the inventory itself: tests/unit/test_inventory.py


async def test_approval_routes_reject_and_refuse_without_token() -> None:
    import json
    import urllib.error
    import urllib.request

    from aiohttp import web

    from remed_daemon.agents.approvals import register_routes
    from remed_daemon.config import Secret

    async def serve(token: str) -> tuple[web.AppRunner, ApprovalBook, str]:
        book = ApprovalBook()
        app = web.Application()
        register_routes(app, book, Secret(token))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner, book, f"http://127.0.0.1:{runner.addresses[0][1]}"

    def post(url: str, token: str) -> tuple[int, dict[str, str]]:
        req = urllib.request.Request(url, data=b'{"by": "carol"}', method="POST",
                                     headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    runner, book, base = await serve("tok")
    try:
        waiting = asyncio.create_task(book.wait("i9", "x", target="t", risk="high", timeout_s=5))
        await asyncio.sleep(0)
        status, body = await asyncio.to_thread(post, f"{base}/approvals/i9/reject", "tok")
        assert (status, body["decision"], body["by"]) == (200, "rejected", "carol")
        assert (await waiting).decision == "rejected"
        status, _ = await asyncio.to_thread(post, f"{base}/approvals/i9/approve", "tok")
        assert status == 404  # decided already
    finally:
        await runner.cleanup()
    runner, book, base = await serve("")
    try:
        status, body = await asyncio.to_thread(post, f"{base}/approvals/i9/approve", "")
        assert status == 503 and "approval_token" in body["error"]
    finally:
        await runner.cleanup()


def test_touched_by_host_follows_each_plays_hosts() -> None:
    from remed_daemon.agents.snapshot import touched_by_host

    playbook = """
- hosts: db
  tasks:
    - community.general.supervisorctl: {name: redis, state: started}
- hosts: app
  tasks:
    - ansible.builtin.lineinfile: {path: /etc/shop/cart.ini, line: x, backup: true}
- hosts: all
  tasks:
    - ansible.builtin.file: {path: /tmp/remed-marker, state: absent}
- hosts: web
  tasks:
    - ansible.builtin.file: {path: /etc/nginx/nginx.conf, mode: "0644"}
"""
    by_host = touched_by_host(playbook, ["app", "db"])
    assert by_host == {
        "db": ({"/tmp/remed-marker"}, {"redis"}),
        "app": ({"/etc/shop/cart.ini", "/tmp/remed-marker"}, set()),
    }


def test_incident_hosts_are_the_service_host_and_its_dependencies() -> None:
    topology = from_mapping(
        {
            "hosts": {"app": "10.0.0.2", "db": "10.0.0.3"},
            "services": {
                "cart": {"host": "app", "port": 8082, "depends_on": ["redis", "postgresql"]},
                "redis": {"host": "db", "port": 6379},
                "postgresql": {"host": "db", "port": 5432},
            },
        }
    )
    assert topology["cart"].incident_hosts == ["app", "db"]
    assert topology["redis"].incident_hosts == ["db"]


async def test_default_config_plans_and_guards_in_shadow_without_touching_a_host(
    tmp_path: Path,
) -> None:
    """The defaults (shadow mode, the static planner, no inventory): the loop plans the restart
    and guards it, and with no inventory to reach hosts with it neither probes nor runs a check:
    outcome `shadow`, nothing entered `executing`."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    cfg = load(None, {"REMED_HTTP_ENABLED": "false", "REMED_STATE_DIR": str(tmp_path)})
    agent = make_thinkremed(cfg)
    spans = InMemorySpanExporter()
    tracer, provider = make_tracer(cfg.telemetry)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    report = {"target": {"service": "web-frontend", "host": "node-7"}, "summary": "down"}
    async with Journal(tmp_path / "j.sqlite3") as journal:
        inc = (await journal.admit(NewIncident("k", "kafka", "web-frontend@node-7", report)))
        incident = await journal.transition(inc.incident.id, State.PLANNING)
        ctx = RemediationContext(journal, incident, tracer, tmp_path / "run")
        result = await agent.remediate(incident, ctx)
        states = [t for _, t, _ in await journal.transitions(incident.id)]
    assert result.status is State.SHADOW, result.reason
    assert result.planner == "static" and "nothing applied" in result.reason
    [attempt] = result.attempts
    assert "hosts: \"node-7\"" in attempt.playbook and attempt.guard["allowed"] is True
    assert not attempt.tasks and not attempt.check_diff
    assert {s.name for s in spans.get_finished_spans()} == {"plan", "guard"}
    assert states == ["received", "planning"]
