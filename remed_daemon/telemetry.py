"""Logs, traces and metrics.

- Logs: structlog, JSON lines when stdout is not a TTY (systemd's journal), console on a TTY.
  `bind_incident()` puts the incident id in a contextvar, so every line a task logs carries it.
- Traces: OpenTelemetry; one trace per incident. The intake span starts it (or continues the
  producer's W3C `traceparent`); its context is journaled with the incident, so planning,
  execution and the outcome — possibly after a restart — are children of the same trace.
- Metrics: prometheus-client on a registry of our own (tests can create several daemons).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from remed_daemon.agents.redact import redact
from remed_daemon.config import TelemetryConfig

_PROPAGATOR = TraceContextTextMapPropagator()
log = structlog.get_logger("remed")


def configure_logging(cfg: TelemetryConfig, *, stream: Any = None) -> None:
    stream = stream or sys.stdout
    json_out = cfg.log_format == "json" or (cfg.log_format == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_out else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[cfg.log_level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def redact_event(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> Mapping[str, Any]:
    """Mask secrets (tokens, passwords, keys) in every string a log line carries, however it
    got there: playbook output, probe results, exception text, alert annotations."""
    return {key: _redact_value(value) for key, value in event.items()}


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact(value)
    if depth > 4:
        return value
    if isinstance(value, dict):
        return {k: _redact_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v, depth + 1) for v in value]
    return value


def set_log_level(level: str) -> None:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        )
    )


@contextmanager
def bind_incident(incident_id: str, **extra: Any) -> Iterator[None]:
    """Every log line inside carries `incident_id` (contextvars: per task, not global)."""
    with structlog.contextvars.bound_contextvars(incident_id=incident_id, **extra):
        yield


def make_tracer(cfg: TelemetryConfig) -> tuple[trace.Tracer, TracerProvider]:
    provider = TracerProvider(resource=Resource.create({"service.name": cfg.service_name}))
    if cfg.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(cfg.otlp_endpoint)))
    if cfg.spans_file:
        provider.add_span_processor(BatchSpanProcessor(JsonLinesSpanExporter(cfg.spans_file)))
    return provider.get_tracer("remed_daemon"), provider


class JsonLinesSpanExporter(SpanExporter):
    """One JSON object per finished span, appended to a file: traces on an ops host that has
    no collector, readable with `jq` (select by `trace_id` or `attributes["remed.incident_id"]`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(_span_doc(span), default=str) + "\n" for span in spans]
        try:
            with self._lock, open(self.path, "a", encoding="utf-8") as out:
                out.writelines(lines)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing stays open: each export opens, appends and closes the file."""


def _span_doc(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "trace_id": f"{ctx.trace_id:032x}" if ctx else "",
        "span_id": f"{ctx.span_id:016x}" if ctx else "",
        "parent_id": f"{parent.span_id:016x}" if parent else "",
        "name": span.name,
        "start_unix_ns": span.start_time,
        "duration_ms": round(((span.end_time or 0) - (span.start_time or 0)) / 1e6, 3),
        "status": span.status.status_code.name,
        "attributes": {k: _redact_value(v) for k, v in (span.attributes or {}).items()},
    }


def context_from_traceparent(traceparent: str) -> Context | None:
    if not traceparent:
        return None
    return _PROPAGATOR.extract({"traceparent": traceparent})


def current_traceparent() -> str:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent", "")


def traceparent_from_headers(headers: Sequence[tuple[str, bytes]] | None) -> str:
    for key, value in headers or ():
        if key.lower() == "traceparent" and value:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
            # Only a well-formed W3C header is continued; anything else starts a new trace.
            parts = text.split("-")
            if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
                return text
    return ""


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    intake: Counter
    dedup_hits: Counter
    queue_depth: Gauge
    remediations: Counter
    remediation_seconds: Histogram
    ack_seconds: Histogram
    llm_tokens: Counter
    outbox_unsent: Gauge
    kafka_paused: Gauge
    executions_started: Counter

    @classmethod
    def create(cls) -> Metrics:
        r = CollectorRegistry()
        return cls(
            registry=r,
            intake=Counter(
                "remed_intake_total", "Reports received", ["source", "result"], registry=r
            ),
            dedup_hits=Counter(
                "remed_dedup_hits_total", "Duplicate reports/alerts", ["source"], registry=r
            ),
            queue_depth=Gauge(
                "remed_queue_depth", "Incidents admitted and not finished", registry=r
            ),
            remediations=Counter(
                "remed_remediations_total", "Finished incidents", ["status"], registry=r
            ),
            remediation_seconds=Histogram(
                "remed_remediation_duration_seconds",
                "Planning start to terminal state",
                ["status"],
                buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800),
                registry=r,
            ),
            ack_seconds=Histogram(
                "remed_intake_ack_seconds",
                "Request received to durable journal",
                ["source"],
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
                registry=r,
            ),
            llm_tokens=Counter(
                "remed_llm_tokens_total", "Planner tokens", ["kind"], registry=r
            ),
            outbox_unsent=Gauge(
                "remed_outbox_unsent", "Outcomes waiting for Kafka", registry=r
            ),
            kafka_paused=Gauge(
                "remed_kafka_paused", "1 while the consumer is paused", registry=r
            ),
            executions_started=Counter(
                "remed_executions_started_total",
                "Remediations that entered planning",
                registry=r,
            ),
        )
