"""Kafka intake: `remed.diagnoses` → journal → scheduler.

Commit rule (a decision, and why): an offset is committed once every report up to it is
**durably journaled and owned by this instance** (or sent to the DLT), not when its outcome is
produced. From that point the journal is the record: the incident's remediation, its crash
recovery and its outcome (through the outbox) no longer depend on Kafka. Waiting for the outcome
instead would (a) hold offsets for the minutes a remediation takes, so every rebalance would hand
a running remediation's report to another instance, which would run it again; (b) stall a
partition behind its slowest target. The residual window: a crash after the journal write and
before the commit (at most one poll batch); redelivery to *this* instance is absorbed by the
idempotency key, redelivery to another instance with its own journal could run it again — keep
`kafka.commit_interval_s` small, and a shared journal is the follow-up that closes it.

- `enable_auto_commit=False`; commits after each processed batch (at most every
  `commit_interval_s`) and in the rebalance listener before partitions are given away.
- Invalid messages (not JSON, schema errors, bad target) go to `remed.diagnoses.DLT` with
  headers `remed-original-topic`, `-partition`, `-offset`, `remed-error`; then the consumer moves
  on. A message whose DLT write fails is retried, never skipped.
- Backpressure: when the scheduler holds `queue_max_items` incidents the consumer `pause()`s its
  partitions (it keeps polling, so heartbeats and the group stay healthy) and `resume()`s below
  half. Remediations never run in the poll loop.
- Idempotency key: the report's `report_id`, else its `fingerprint` + `starts_at`, else
  `kafka:<topic>:<partition>:<offset>`.
- Stale reports: a report older than `kafka.max_report_age_s` when it is read (by its own
  `observed_at`, else the record's Kafka timestamp) is journaled already finished as `expired`
  (`Journal.admit_finished`) and its outcome goes out through the outbox; it never reaches the
  scheduler, a planner or a playbook. `starts_at` is not the report's age: an alert that has
  been firing for hours is still news when its report is fresh. A `resolved` report still
  cancels, however old: cancelling runs nothing.
- Transport security (TLS, SASL) comes from `kafka_security.kafka_client_options`, the same
  for the consumer and the DLT producer; `start()` first checks the credentials, so a refused
  password raises `KafkaAuthError` instead of looking like a broker outage.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from opentelemetry import trace

from remed_daemon.config import KafkaConfig
from remed_daemon.errors import IntakeRejected
from remed_daemon.journal import Incident, Journal, NewIncident, State
from remed_daemon.kafka_security import check_credentials, kafka_client_options
from remed_daemon.outcomes.document import builder
from remed_daemon.remediation import target_of
from remed_daemon.schemas import iter_errors
from remed_daemon.telemetry import (
    Metrics,
    context_from_traceparent,
    current_traceparent,
    traceparent_from_headers,
)

log = structlog.get_logger("remed.kafka")

MAX_ERROR_HEADER_CHARS = 1000
# One poll: short enough that pause/resume and shutdown react quickly; a batch is committed
# as a whole, so it also bounds what a crash can make a redelivery repeat.
POLL_TIMEOUT_MS = 500
POLL_MAX_RECORDS = 200


def parse_report(value: bytes | None) -> dict[str, Any]:
    """A `remed.diagnoses` value as a checked report, or IntakeRejected saying why."""
    if value is None:
        raise IntakeRejected("empty message (tombstone)")
    try:
        doc = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntakeRejected(f"value is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise IntakeRejected(f"value must be a JSON object, got {type(doc).__name__}")
    errors = iter_errors("diagnosis-report", doc)
    if errors:
        raise IntakeRejected("schema diagnosis-report: " + "; ".join(errors[:5]))
    target_of(doc)
    return doc


def report_age_s(
    report: dict[str, Any], record_timestamp_ms: int | None, now: float
) -> tuple[float, str] | None:
    """(age in seconds, what it was measured from) of a report read at `now` (epoch s).

    The report's own `observed_at` when it has a usable one (when the producer diagnosed the
    problem), else the Kafka record's timestamp (when it was produced, or appended by the
    broker); None when neither is known. A clock ahead of ours gives a negative age.
    """
    observed = report.get("observed_at")
    if isinstance(observed, str):
        try:
            at = datetime.fromisoformat(observed.replace("z", "Z"))
        except ValueError:
            at = None
        if at is not None:
            if at.tzinfo is None:
                at = at.replace(tzinfo=UTC)
            return now - at.timestamp(), f"observed_at {observed}"
    if record_timestamp_ms is not None and record_timestamp_ms >= 0:
        at_s = record_timestamp_ms / 1000
        iso = datetime.fromtimestamp(at_s, UTC).isoformat(timespec="seconds")
        return now - at_s, f"Kafka record timestamp {iso.replace('+00:00', 'Z')}"
    return None


def expiry_reason(
    report: dict[str, Any], record_timestamp_ms: int | None, now: float, max_age_s: float
) -> str | None:
    """Why this report is too old to remediate (the outcome's reason), or None if it is not."""
    age = report_age_s(report, record_timestamp_ms, now)
    if age is None or age[0] <= max_age_s:
        return None
    return (
        f"report is {age[0]:.0f} s old ({age[1]}), more than kafka.max_report_age_s = "
        f"{max_age_s:g} s: not remediated"
    )


def idempotency_key(report: dict[str, Any], fallback: str) -> str:
    """`report_id`; else fingerprint + starts_at (the same key the webhook uses, so an alert
    reaching remed both ways is one incident); else `fallback` (the message's position)."""
    rid = report.get("report_id")
    if isinstance(rid, str) and rid:
        return f"report:{rid}"
    fp, starts = report.get("fingerprint"), report.get("starts_at")
    if isinstance(fp, str) and isinstance(starts, str):
        return f"am:{fp}:{starts}"
    return fallback


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, intake: KafkaIntake) -> None:
        self.intake = intake

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.intake.commit(only=set(revoked))
        for tp in revoked:
            self.intake._positions.pop(tp, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("partitions assigned", partitions=sorted(tp.partition for tp in assigned))


class KafkaIntake:
    """The consumer. `run()` until cancelled; `stop()` commits and closes (idempotent)."""

    def __init__(
        self,
        cfg: KafkaConfig,
        journal: Journal,
        metrics: Metrics,
        tracer: trace.Tracer,
        submit: Callable[[Incident], None],
        depth: Callable[[], int],
        cancel: Callable[[Incident], None],
        on_terminal: Callable[[Incident], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.journal = journal
        self.metrics = metrics
        self.tracer = tracer
        self.submit = submit
        self.depth = depth
        self.cancel = cancel
        # an incident the intake itself finished (expired): its outcome is in the outbox
        self.on_terminal = on_terminal or (lambda _incident: None)
        self.consumer: AIOKafkaConsumer | None = None
        self._dlt: AIOKafkaProducer | None = None
        # Next offset to commit per partition: everything below it is journaled or in the DLT.
        self._positions: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        self.paused = False
        self.progress_at = time.monotonic()

    async def start(self) -> None:
        """Connect; KafkaAuthError if the broker refuses the TLS/SASL credentials."""
        await check_credentials(self.cfg)
        security = kafka_client_options(self.cfg)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.cfg.bootstrap,
            group_id=self.cfg.group_id,
            group_instance_id=self.cfg.group_instance_id or None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.cfg.session_timeout_ms,
            heartbeat_interval_ms=self.cfg.heartbeat_interval_ms,
            max_poll_interval_ms=self.cfg.max_poll_interval_ms,
            request_timeout_ms=self.cfg.request_timeout_ms,
            isolation_level="read_committed",
            **security,
        )
        self.consumer.subscribe([self.cfg.diagnoses_topic], listener=_Rebalance(self))
        self._dlt = AIOKafkaProducer(
            bootstrap_servers=self.cfg.bootstrap,
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=self.cfg.request_timeout_ms,
            **security,
        )
        await self.consumer.start()
        await self._dlt.start()

    async def stop(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            try:
                await self._commit_with(consumer, None)
            except KafkaError as exc:
                log.warning("final commit failed; the journal absorbs redelivery", error=str(exc))
            await consumer.stop()
        dlt, self._dlt = self._dlt, None
        if dlt is not None:
            await dlt.stop()

    async def run(self) -> None:
        assert self.consumer is not None, "call start() first"
        consumer = self.consumer
        while True:
            self.progress_at = time.monotonic()
            self._backpressure(consumer)
            batch = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=POLL_MAX_RECORDS)
            for tp, messages in batch.items():
                for msg in messages:
                    await self._handle(tp, msg)
                    self._positions[tp] = msg.offset + 1
            if batch or time.monotonic() - self._last_commit >= self.cfg.commit_interval_s:
                try:
                    await self.commit()
                except KafkaError as exc:
                    log.warning("commit failed; retrying next batch", error=str(exc))

    def _backpressure(self, consumer: AIOKafkaConsumer) -> None:
        depth = self.depth()
        if self.paused:
            # idempotent; also covers partitions assigned by a rebalance while paused
            consumer.pause(*consumer.assignment())
        if not self.paused and depth >= self.cfg.queue_max_items:
            consumer.pause(*consumer.assignment())
            self.paused = True
            self.metrics.kafka_paused.set(1)
            log.info("consumer paused", depth=depth)
        elif self.paused and depth < self.cfg.queue_max_items // 2:
            consumer.resume(*consumer.assignment())
            self.paused = False
            self.metrics.kafka_paused.set(0)
            log.info("consumer resumed", depth=depth)

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        if self.consumer is not None:
            await self._commit_with(self.consumer, only)

    async def _commit_with(
        self, consumer: AIOKafkaConsumer, only: set[TopicPartition] | None
    ) -> None:
        offsets = {
            tp: pos
            for tp, pos in self._positions.items()
            if (only is None or tp in only) and self._committed.get(tp) != pos
        }
        if offsets:
            await consumer.commit(offsets)
            self._committed.update(offsets)
        self._last_commit = time.monotonic()

    async def _handle(self, tp: TopicPartition, msg: Any) -> None:
        t0 = time.monotonic()
        parent = context_from_traceparent(traceparent_from_headers(msg.headers))
        with self.tracer.start_as_current_span(
            "intake kafka",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={  # OpenTelemetry messaging semantic conventions
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": tp.topic,
                "messaging.destination.partition.id": str(tp.partition),
                "messaging.consumer.group.name": self.cfg.group_id,
                "messaging.kafka.partition": tp.partition,
                "messaging.kafka.offset": msg.offset,
            },
        ):
            try:
                report = parse_report(msg.value)
            except IntakeRejected as exc:
                await self._to_dlt(tp, msg, str(exc))
                self.metrics.intake.labels("kafka", "invalid").inc()
                return
            service, host = target_of(report)
            idem = idempotency_key(report, f"kafka:{tp.topic}:{tp.partition}:{msg.offset}")
            if report.get("status") == "resolved":
                done = await self.journal.cancel_pending(
                    idem, "alert resolved before remediation started", builder(None)
                )
                self.metrics.intake.labels("kafka", "cancelled" if done else "duplicate").inc()
                if done is not None:
                    self.cancel(done)
                return
            new = NewIncident(
                idem_key=idem,
                source="kafka",
                target=f"{service}@{host}",
                report=report,
                traceparent=current_traceparent(),
                kafka_partition=tp.partition,
                kafka_offset=msg.offset,
            )
            stale = expiry_reason(report, msg.timestamp, time.time(), self.cfg.max_report_age_s)
            if stale is not None:
                adm = await self.journal.admit_finished(new, State.EXPIRED, stale, builder(None))
            else:
                adm = await self.journal.admit(new)
        self.metrics.ack_seconds.labels("kafka").observe(time.monotonic() - t0)
        if adm.created and stale is not None:
            self.metrics.intake.labels("kafka", "expired").inc()
            # the canonical line of an incident that never reached a planner
            log.warning(
                "remediation",
                incident_id=adm.incident.id,
                status="expired",
                target=adm.incident.target,
                reason=stale,
            )
            self.on_terminal(adm.incident)
        elif adm.created:
            self.metrics.intake.labels("kafka", "accepted").inc()
            self.submit(adm.incident)
        else:
            self.metrics.intake.labels("kafka", "duplicate").inc()
            self.metrics.dedup_hits.labels("kafka").inc()
            log.info("duplicate report", incident_id=adm.incident.id, state=adm.incident.state)

    async def _to_dlt(self, tp: TopicPartition, msg: Any, error: str) -> None:
        assert self._dlt is not None
        headers = [
            *[(k, v) for k, v in (msg.headers or ()) if not k.startswith("remed-")],
            ("remed-original-topic", tp.topic.encode()),
            ("remed-original-partition", str(tp.partition).encode()),
            ("remed-original-offset", str(msg.offset).encode()),
            ("remed-error", error[:MAX_ERROR_HEADER_CHARS].encode()),
        ]
        backoff = self.cfg.outbox_retry_initial_s
        while True:
            try:
                await self._dlt.send_and_wait(
                    self.cfg.dlt_topic, value=msg.value, key=msg.key, headers=headers
                )
                break
            except KafkaError as exc:
                log.warning("DLT write failed; retrying", error=str(exc), retry_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.cfg.outbox_retry_max_s)
        log.warning(
            "invalid report sent to DLT", partition=tp.partition, offset=msg.offset, error=error
        )
