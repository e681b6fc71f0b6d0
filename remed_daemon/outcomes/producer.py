"""The producer that drains the journal's outbox to `remed.outcomes`.

`OutcomeProducer` sends unsent rows oldest first with an idempotent producer (`acks=all`), marks
them sent only after the broker acknowledged them, and while Kafka is away it backs off and
tries again: the outcomes wait in the journal and go out later, in order. Delivery is at least
once (a crash between the broker's ack and `mark_sent` repeats a record); consumers deduplicate
on `incident_id`. The producer uses the configured transport security
(`kafka_security.kafka_client_options`); credentials the broker refuses raise `KafkaAuthError`
out of `run()` (the daemon stops on it) instead of being retried like an outage.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from opentelemetry import trace

from remed_daemon.config import KafkaConfig
from remed_daemon.journal import Journal
from remed_daemon.kafka_security import KafkaAuthError, check_credentials, kafka_client_options
from remed_daemon.telemetry import Metrics, context_from_traceparent

log = structlog.get_logger("remed.outcomes")


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
                    kind=trace.SpanKind.PRODUCER,
                    attributes={
                        "remed.incident_id": row.incident_id,
                        "messaging.system": "kafka",
                        "messaging.operation.type": "send",
                        "messaging.destination.name": self.cfg.outcomes_topic,
                        "messaging.kafka.message.key": row.key,
                    },
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
