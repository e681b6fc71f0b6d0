"""Outcome records and the producer that drains the journal's outbox to `remed.outcomes`.

An outcome is written into the outbox in the same transaction as the incident's terminal state
(`Journal.finish`). `OutcomeProducer` sends unsent rows oldest first with an idempotent producer
(`acks=all`), marks them sent only after the broker acknowledged them, and while Kafka is away
it backs off and tries again: the outcomes wait in the journal and go out later, in order.
Delivery is at least once (a crash between the broker's ack and `mark_sent` repeats a record);
consumers deduplicate on `incident_id`. The producer uses the configured transport security
(`kafka_security.kafka_client_options`); credentials the broker refuses raise `KafkaAuthError`
out of `run()` (the daemon stops on it) instead of being retried like an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from opentelemetry import trace

from remed_daemon.config import KafkaConfig
from remed_daemon.journal import Incident, Journal, Outcome, OutcomeBuilder, State
from remed_daemon.kafka_security import KafkaAuthError, check_credentials, kafka_client_options
from remed_daemon.telemetry import Metrics, context_from_traceparent

log = structlog.get_logger("remed.outcomes")


@dataclass(frozen=True)
class TaskResult:
    """One task on one host, from ansible-runner's event stream (schema: attempt.tasks[])."""

    host: str
    task: str
    module: str = ""
    changed: bool = False
    failed: bool = False
    unreachable: bool = False
    rc: int | None = None
    duration_ms: float = 0.0
    skipped: bool = False
    msg: str = ""  # the module's message on failure, redacted


# What an attempt records when no guard looked at the playbook: the plain pipeline only ever
# applies the operator's static playbook (config refuses model output without the agents' guard).
STATIC_GUARD: Mapping[str, Any] = {
    "allowed": True,
    "risk": "low",
    "needs_approval": False,
    "violations": [],
}


@dataclass(frozen=True)
class Attempt:
    """One plan → (guard) → apply → verify round (schema: outcome `$defs.attempt`)."""

    playbook: str
    guard: Mapping[str, Any] = field(default_factory=lambda: dict(STATIC_GUARD))
    tasks: Sequence[TaskResult] = ()
    # {"passed": bool, "checks": [{"name", "passed", "detail"}]}; None when nothing was applied.
    verification: Mapping[str, Any] | None = None
    check_diff: str = ""
    reflection: str = ""
    # {"decision": "approved"|"rejected"|"expired", "by", "at"} when a person had to decide
    approval: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RemediationResult:
    """What a remediator reports back; becomes the outcome's body."""

    status: State
    reason: str = ""
    attempts: Sequence[Attempt] = ()
    planner: str = ""
    model_name: str = ""
    model_version: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error_type: str = ""
    error: str = ""
    # {"performed", "restored": [{"host", "kind", "name"}], "errors"} when an undo was needed
    undo: Mapping[str, Any] | None = None


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def validate(kind: str, doc: Mapping[str, Any]) -> list[str]:
    """Errors of `doc` against `schemas/<kind>.schema.json` (via remed_daemon.schemas)."""
    from remed_daemon import schemas

    return schemas.iter_errors(kind, dict(doc))  # type: ignore[arg-type]


def report_id_of(incident: Incident) -> str:
    rid = incident.report.get("report_id")
    if isinstance(rid, str) and rid:
        return rid
    return "key-" + hashlib.sha256(incident.idem_key.encode()).hexdigest()[:32]


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
    """The `outcome` document (schemas/outcome.schema.json) of a finished incident."""
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
        errors = validate("outcome", doc)
        if errors:
            # Published anyway: an audit record that breaks the schema beats a lost one; the
            # unit tests keep this path cold.
            log.error("outcome does not match its schema", errors=errors[:5])
        headers = [("remed-incident-id", incident.id), ("content-type", "application/json")]
        if incident.traceparent:
            headers.append(("traceparent", incident.traceparent))
        return Outcome(key=incident.target, value=doc, headers=headers)

    return build


class OutcomeProducer:
    """Drains the outbox to Kafka. `start()` once; `run()` until cancelled; `stop()` flushes."""

    def __init__(
        self,
        cfg: KafkaConfig,
        journal: Journal,
        metrics: Metrics,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.cfg = cfg
        self.tracer = tracer or trace.get_tracer("remed_daemon")
        self.journal = journal
        self.metrics = metrics
        self._wake = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self.sent = 0

    def notify(self) -> None:
        """A new outcome is in the outbox."""
        self._wake.set()

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            await check_credentials(self.cfg)
            producer = AIOKafkaProducer(
                bootstrap_servers=self.cfg.bootstrap,
                acks="all",
                enable_idempotence=True,
                linger_ms=self.cfg.producer_linger_ms,
                request_timeout_ms=self.cfg.request_timeout_ms,
                **kafka_client_options(self.cfg),
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def drain_once(self, batch: int = 200) -> int:
        """Send every unsent outcome, oldest first; returns how many went out."""
        total = 0
        while True:
            rows = await self.journal.unsent(batch)
            if not rows:
                break
            producer = await self._ensure_producer()
            futures = []
            for row in rows:
                # the last span of the incident's trace: its outcome leaving for Kafka
                tp = next((v.decode() for k, v in row.headers if k == "traceparent"), "")
                with self.tracer.start_as_current_span(
                    "outcome",
                    context=context_from_traceparent(tp),
                    attributes={"remed.incident_id": row.incident_id},
                ):
                    futures.append(
                        await producer.send(
                            self.cfg.outcomes_topic,
                            value=row.value,
                            key=row.key.encode(),
                            headers=row.headers,
                        )
                    )
            await asyncio.gather(*futures)
            await self.journal.mark_sent(r.seq for r in rows)
            total += len(rows)
            self.sent += len(rows)
        self.metrics.outbox_unsent.set(await self.journal.unsent_count())
        return total

    async def run(self) -> None:
        backoff = self.cfg.outbox_retry_initial_s
        while True:
            try:
                await self.drain_once()
                backoff = self.cfg.outbox_retry_initial_s
            except (KafkaError, OSError) as exc:
                # The producer may be wedged after a long outage: start a fresh one next time.
                log.warning("outcome delivery failed; retrying", error=str(exc), retry_s=backoff)
                await self._close_producer()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.cfg.outbox_retry_max_s)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cfg.outbox_retry_max_s):
                    await self._wake.wait()

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()
            except Exception as exc:  # stopping a broken producer must not mask the cause
                log.debug("producer stop failed", error=str(exc))

    async def stop(self, flush_timeout_s: float) -> None:
        """Try once more to send what is waiting (bounded), then close. Idempotent."""
        try:
            async with asyncio.timeout(flush_timeout_s):
                await self.drain_once()
        except (TimeoutError, KafkaError, OSError, KafkaAuthError) as exc:
            log.warning("outcomes left in the outbox for the next start", error=str(exc))
        await self._close_producer()
