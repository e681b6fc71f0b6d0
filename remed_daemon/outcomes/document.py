"""The outcome document of a finished incident (`remed_daemon/schemas/outcome.schema.json`), and the
`OutcomeBuilder` that puts it into the journal's outbox.

An outcome is written into the outbox in the same transaction as the incident's terminal state
(`Journal.finish`); `remed_daemon.outcomes.producer` sends it to Kafka from there. This module
knows nothing of Kafka, so building an outcome never imports a producer.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import structlog

from remed_daemon.journal import Incident, Outcome, OutcomeBuilder, State
from remed_daemon.remediation import Attempt, RemediationResult, report_id_of
from remed_daemon.schemas import iter_errors

log = structlog.get_logger("remed.outcomes")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _attempt_doc(n: int, a: Attempt) -> dict[str, Any]:
    doc: dict[str, Any] = {"attempt": n, "playbook": a.playbook[:65536], "guard": dict(a.guard)}
    if a.tasks:
        doc["tasks"] = [
            {
                "host": t.host,
                "task": t.task[:512],
                "module": t.module[:256],
                "changed": t.changed,
                "failed": t.failed,
                "unreachable": t.unreachable,
                "rc": t.rc,
                "duration_ms": max(t.duration_ms, 0.0),
                **({"skipped": True} if t.skipped else {}),
                **({"msg": t.msg[:4000]} if t.msg else {}),
            }
            for t in a.tasks[:2000]
        ]
    if a.verification is not None:
        doc["verification"] = dict(a.verification)
    if a.check_diff:
        doc["check_diff"] = a.check_diff[:65536]
    if a.reflection:
        doc["reflection"] = a.reflection[:16000]
    if a.approval is not None:
        doc["approval"] = dict(a.approval)
    return doc


def outcome_doc(
    incident: Incident, status: State, reason: str, result: RemediationResult | None
) -> dict[str, Any]:
    """The `outcome` document (remed_daemon/schemas/outcome.schema.json) of a finished incident."""
    target = incident.report.get("target", {})
    finished = incident.finished_at or time.time()
    begun = incident.started_at if incident.started_at is not None else incident.created_at
    timings: dict[str, Any] = {
        "received_at": _iso(incident.created_at),
        "finished_at": _iso(finished),
        "duration_s": max(finished - begun, 0.0),
        "time_to_recover_s": (
            max(finished - incident.created_at, 0.0) if status is State.RECOVERED else None
        ),
    }
    if incident.started_at is not None:
        timings["started_at"] = _iso(incident.started_at)
    doc: dict[str, Any] = {
        "schema_version": 1,
        "incident_id": incident.id,
        "report_id": report_id_of(incident),
        "source": incident.source,
        "target": {"service": target.get("service", ""), "host": target.get("host", "")},
        "status": status.value,
        "reason": reason[:2000],
        "attempts": [_attempt_doc(i + 1, a) for i, a in enumerate(result.attempts)]
        if result
        else [],
        "tokens": {
            "prompt": result.prompt_tokens if result else 0,
            "completion": result.completion_tokens if result else 0,
        },
        "timings": timings,
    }
    category = incident.report.get("category")
    if isinstance(category, str):
        doc["category"] = category
    if incident.traceparent:
        doc["traceparent"] = incident.traceparent
    if result is not None:
        if result.planner:
            doc["planner"] = result.planner
        if result.model_name and result.model_version:
            doc["model"] = {"name": result.model_name, "version": result.model_version}
        if result.undo is not None:
            doc["undo"] = dict(result.undo)
        if result.error:
            doc["error"] = {"type": result.error_type[:128], "message": result.error[:4000]}
    return doc


def builder(result: RemediationResult | None = None) -> OutcomeBuilder:
    """An `OutcomeBuilder` for `Journal.finish` carrying `result` (None: no remediation ran)."""

    def build(incident: Incident, status: State, reason: str) -> Outcome:
        doc = outcome_doc(incident, status, reason, result)
        errors = iter_errors("outcome", doc)
        if errors:
            # Published anyway: an audit record that breaks the schema beats a lost one; the
            # unit tests keep this path cold.
            log.error("outcome does not match its schema", errors=errors[:5])
        headers = [("remed-incident-id", incident.id), ("content-type", "application/json")]
        if incident.traceparent:
            headers.append(("traceparent", incident.traceparent))
        return Outcome(key=incident.target, value=doc, headers=headers)

    return build
