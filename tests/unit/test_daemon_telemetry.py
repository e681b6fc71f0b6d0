"""Log redaction and the JSON-lines span file."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog

from remed_daemon.config import TelemetryConfig
from remed_daemon.telemetry import configure_logging, make_tracer

pytestmark = pytest.mark.unit


def test_log_lines_never_carry_secrets() -> None:
    stream = io.StringIO()
    configure_logging(TelemetryConfig(log_format="json"), stream=stream)
    try:
        log_with_secrets()
    finally:
        structlog.reset_defaults()
    line = stream.getvalue()
    for secret in ("hunter2", "abcdefghijklmnopqrstuvwxyz012345", "b3BlbnNzaA"):
        assert secret not in line
    assert json.loads(line)["event"] == "task failed"


def log_with_secrets() -> None:
    structlog.get_logger().info(
        "task failed",
        stdout="connecting with password=hunter2 to db",
        headers={"Authorization": "Bearer abcdefghijklmnopqrstuvwxyz012345"},
        lines=[
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA\n-----END OPENSSH PRIVATE KEY-----"
        ],
    )


def test_spans_file_has_one_json_line_per_span(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    tracer, provider = make_tracer(TelemetryConfig(spans_file=str(path)))
    with tracer.start_as_current_span("incident", attributes={"remed.incident_id": "i-1"}):
        with tracer.start_as_current_span("task", attributes={"remed.stdout": "token=s3cr3t"}):
            pass
    provider.shutdown()
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    assert [s["name"] for s in spans] == ["task", "incident"]
    task, incident = spans
    assert task["trace_id"] == incident["trace_id"] and task["parent_id"] == incident["span_id"]
    assert "s3cr3t" not in path.read_text()
