"""The outcome document of a finished incident (`remed_daemon/schemas/outcome.schema.json`), and the
`OutcomeBuilder` that puts it into the journal's outbox.

An outcome is written into the outbox in the same transaction as the incident's terminal state
(`Journal.finish`); `remed_daemon.outcomes.producer` sends it to Kafka from there. This module
knows nothing of Kafka, so building an outcome never imports a producer.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from remed_daemon.agents import prompt as prompt_mod
from remed_daemon.agents.redact import redact
from remed_daemon.journal import Incident, Outcome, OutcomeBuilder, State
from remed_daemon.remediation import Attempt, RemediationResult, report_id_of
from remed_daemon.schemas import iter_errors

if TYPE_CHECKING:
    from remed_daemon.planner.base import PlanRequest

log = structlog.get_logger("remed.outcomes")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


# -- what the planner saw ----------------------------------------------------------------------
# Real-RFT trains on (prompt, playbook) pairs, so an outcome carries what rebuilds each attempt's
# prompt exactly: per attempt `prompt` (its sha256 and the inputs that vary per attempt: facts,
# probe output, earlier attempts' evidence, probe names; plus the incident's hosts, which the
# trainer's guard judges a corrected playbook against), and once per outcome `planner_input`
# (the report's summary, diagnosis and evidence as the prompt clips them). The fields hold what
# `agents/prompt.build_plan_prompt` puts in the prompt, clipped alike (clipping twice changes
# nothing) and redacted; a redaction that changed something makes the rebuilt prompt differ
# from `sha256`, which tells the trainer it is not the exact one.


def prompt_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prompt_record(request: PlanRequest | None, hosts: Sequence[str]) -> dict[str, Any] | None:
    """The outcome's `attempt.prompt` for the planner call whose answer the attempt ran."""
    if request is None:
        return None
    clip = prompt_mod._clip
    limit = prompt_mod.MAX_EVIDENCE_LINES
    return {
        "sha256": prompt_sha256(request.prompt()),
        "facts": redact(clip(request.facts, prompt_mod.MAX_FACTS_CHARS)) if request.facts else "",
        "probes": [redact(clip(p, 1000)) for p in list(request.probes)[:limit]],
        "previous": [
            redact(clip(e, prompt_mod.MAX_ATTEMPT_EVIDENCE_CHARS)) for e in request.previous
        ][:20],
        "probe_names": [str(n)[:64] for n in request.probe_names][:64],
        "hosts": [str(h)[:253] for h in hosts][:20],
    }


def planner_input(report: Mapping[str, Any]) -> dict[str, Any]:
    """The outcome's `planner_input`: the report's text as the prompt shows it."""
    clip = prompt_mod._clip
    doc: dict[str, Any] = {"summary": redact(clip(str(report.get("summary", ""))))}
    if report.get("report"):
        doc["report"] = redact(clip(str(report["report"])))
    evidence = list(report.get("evidence", []))[: prompt_mod.MAX_EVIDENCE_LINES]
    if evidence:
        doc["evidence"] = [redact(clip(str(item), 500)) for item in evidence]
    return doc


def rebuild_prompt(outcome: Mapping[str, Any], attempt: Mapping[str, Any]) -> str | None:
    """The prompt attempt `attempt` of `outcome` was planned from, rebuilt from the outcome
    alone (None when it carries no `prompt`); compare `prompt_sha256()` of it with
    `attempt["prompt"]["sha256"]` to know whether it is the exact one."""
    rec, text = attempt.get("prompt"), outcome.get("planner_input")
    if not isinstance(rec, Mapping) or not isinstance(text, Mapping):
        return None
    report: dict[str, Any] = {"target": dict(outcome.get("target", {})), **text}
    if outcome.get("category"):
        report["category"] = outcome["category"]
    return prompt_mod.build_plan_prompt(
        report,
        list(rec.get("probes", [])),
        facts=str(rec.get("facts", "")),
        previous=list(rec.get("previous", [])),
        probe_names=list(rec.get("probe_names", [])),
    )


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
    if a.prompt is not None:
        doc["prompt"] = dict(a.prompt)
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
        if any(a.prompt is not None for a in result.attempts):
            doc["planner_input"] = planner_input(incident.report)
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
