"""What an SRE reads off the daemon: libraries' stdlib logging comes out as the daemon's JSON
lines, and every line inside a span (ours or a library's) carries `trace_id` and `span_id`;
/metrics has remed_build_info, process metrics, guard verdicts by risk, approvals waiting and
their age, open breakers, the kill switch and planner latency (from the `plan` spans); the
Grafana dashboard loads and asks only for metrics the daemon exports."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from pathlib import Path

import pytest
import structlog
from prometheus_client import generate_latest

from remed_daemon.agents.approvals import ApprovalBook
from remed_daemon.config import TelemetryConfig
from remed_daemon.journal import State
from remed_daemon.remediation import Attempt, RemediationResult
from remed_daemon.telemetry import Metrics, configure_logging, make_tracer

pytestmark = pytest.mark.unit
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "remed-dashboard.json"


def test_library_logs_are_json_lines_with_the_trace() -> None:
    stream = io.StringIO()
    configure_logging(TelemetryConfig(log_format="json"), stream=stream)
    tracer, provider = make_tracer(TelemetryConfig())
    try:
        with tracer.start_as_current_span("remediate") as span:
            structlog.get_logger("remed").info("planning", incident_id="i1")
            logging.getLogger("asyncssh").warning("lost %s: password=hunter2 rejected", "app")
            logging.getLogger("asyncssh").info("per-connection chatter")  # held back
        ctx = span.get_span_context()
    finally:
        structlog.reset_defaults()
        root = logging.getLogger()
        for h in [h for h in root.handlers if getattr(h, "_remed", False)]:
            root.removeHandler(h)
        provider.shutdown()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [
        "planning", "lost app: password=*** rejected"
    ]  # fmt: skip
    for line in lines:
        assert line["trace_id"] == f"{ctx.trace_id:032x}"
        assert line["span_id"] == f"{ctx.span_id:016x}"
        assert "timestamp" in line and "level" in line
    assert lines[1]["logger"] == "asyncssh" and lines[1]["level"] == "warning"


def scrape(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def value(text: str, sample: str) -> float:
    m = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    assert m, f"{sample} not in /metrics"
    return float(m.group(1))


def test_metrics_an_sre_expects() -> None:
    metrics = Metrics.create()
    tracer, provider = make_tracer(TelemetryConfig(), metrics)
    with tracer.start_as_current_span("plan", attributes={"remed.planner": "oracle"}):
        pass
    provider.shutdown()
    guard_low = {"allowed": True, "risk": "low", "needs_approval": False, "violations": []}
    guard_high = {"allowed": True, "risk": "high", "needs_approval": True, "violations": []}
    refused = {"allowed": False, "risk": "high", "needs_approval": False, "violations": []}
    metrics.observe_result(RemediationResult(
        State.RECOVERED, attempts=(Attempt("p", refused), Attempt("p", guard_low)),
        prompt_tokens=300, completion_tokens=80,
    ))  # fmt: skip
    metrics.observe_result(RemediationResult(State.REJECTED, attempts=(Attempt("p", guard_high),)))
    metrics.breaker_open("cart@app", 600)
    metrics.breaker_open("redis@db", -1)  # already closed again
    text = scrape(metrics)
    assert re.search(r'^remed_build_info\{python="[\d.]+",version="[^"]+"\} 1\.0$', text, re.M)
    assert value(text, "process_resident_memory_bytes") > 0
    assert value(text, "process_open_fds") > 0
    assert value(text, 'remed_guard_verdicts_total{risk="high",verdict="refused"}') == 1
    assert value(text, 'remed_guard_verdicts_total{risk="low",verdict="allowed"}') == 1
    assert value(text, 'remed_guard_verdicts_total{risk="high",verdict="needs_approval"}') == 1
    assert value(text, 'remed_planner_duration_seconds_count{planner="oracle"}') == 1
    assert value(text, 'remed_planner_tokens_sum{kind="completion"}') == 80
    assert value(text, "remed_breakers_open") == 1


def test_approval_gauges_read_the_book() -> None:
    async def main() -> tuple[str, str]:
        now = [1000.0]
        book = ApprovalBook(clock=lambda: now[0])
        metrics = Metrics.create()
        metrics.watch_approvals(book.pending, timeout_s=600)
        idle = scrape(metrics)
        waiting = asyncio.create_task(
            book.wait("i1", "- hosts: db\n", target="redis@db", risk="high", timeout_s=600)
        )
        await asyncio.sleep(0)
        now[0] += 120
        busy = scrape(metrics)
        book.decide("i1", False, "alice")
        await waiting
        return idle, busy

    idle, busy = asyncio.run(main())
    assert value(idle, "remed_approvals_waiting") == 0
    assert value(busy, "remed_approvals_waiting") == 1
    assert value(busy, "remed_approvals_oldest_wait_seconds") == 120


def test_grafana_dashboard_asks_only_for_exported_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["panels"]
    exported = {m.name for m in Metrics.create().registry.collect()}
    exported |= {f"{n}_total" for n in exported} | {f"{n}_bucket" for n in exported}
    for panel in dash["panels"]:
        for target in panel["targets"]:
            names = set(re.findall(r"\b((?:remed|process)_[a-z_]+)", target["expr"]))
            assert names and names <= exported, (panel["title"], names - exported)
