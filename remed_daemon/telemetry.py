"""Logs, traces and metrics.

- Logs: structlog, JSON lines when stdout is not a TTY (systemd's journal), console on a TTY.
  `bind_incident()` puts the incident id in a contextvar, so every line a task logs carries it,
  and every line logged inside a span carries its `trace_id` and `span_id`. The libraries'
  stdlib logging (aiokafka, asyncssh, ansible-runner, aiohttp) goes through the same
  processors and renderer, so the journal holds one format.
- Traces: OpenTelemetry; one trace per incident. The intake span starts it (or continues the
  producer's W3C `traceparent`); its context is journaled with the incident, so planning,
  execution and the outcome — possibly after a restart — are children of the same trace.
- Metrics: prometheus-client on a registry of our own (tests can create several daemons):
  the process's own (`process_*`, `python_info`), `remed_build_info`, and the loop's, some
  derived from its spans (`MetricsSpanProcessor`: planner latency) and outcomes
  (`Metrics.observe_result`: guard verdicts by risk). Span attributes follow the OpenTelemetry
  semantic conventions where one exists (messaging.*, server.*, http.*); remed's own are
  `remed.*`. The alerts on these are deploy/prometheus/rules/remed.yml.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from remed_daemon.agents.redact import redact
from remed_daemon.config import TelemetryConfig

_PROPAGATOR = TraceContextTextMapPropagator()
log = structlog.get_logger("remed")


# Libraries whose INFO lines are per connection or per request: WARNING and up unless the
# daemon runs at debug.
CHATTY_LOGGERS = ("asyncssh", "aiokafka", "aiohttp.access", "kafka")


def add_trace_context(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """`trace_id` and `span_id` of the current span (W3C hex), when there is one."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event.setdefault("trace_id", f"{ctx.trace_id:032x}")
        event.setdefault("span_id", f"{ctx.span_id:016x}")
    return event


def configure_logging(cfg: TelemetryConfig, *, stream: Any = None) -> None:
    stream = stream or sys.stdout
    json_out = cfg.log_format == "json" or (cfg.log_format == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_out else structlog.dev.ConsoleRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_context,
    ]
    # stdlib logging (the libraries) through the same processors, into the same stream
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_event,
                renderer,
            ],
        )
    )
    level = logging.getLevelNamesMapping()[cfg.log_level.upper()]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_remed", False)]:
        root.removeHandler(old)
    handler._remed = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    structlog.configure(
        processors=[
            *shared,
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


def make_tracer(
    cfg: TelemetryConfig, metrics: Metrics | None = None
) -> tuple[trace.Tracer, TracerProvider]:
    provider = TracerProvider(
        resource=Resource.create({"service.name": cfg.service_name, "service.version": version()})
    )
    if metrics is not None:
        provider.add_span_processor(MetricsSpanProcessor(metrics))
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
    build_info: Gauge
    guard_verdicts: Counter
    approvals_waiting: Gauge
    approvals_oldest_wait: Gauge
    breakers_open: Gauge
    kill_switch: Gauge
    planner_seconds: Histogram
    planner_tokens: Histogram
    # target -> until when its circuit breaker was last seen open (scheduler's gate)
    open_breakers: dict[str, float] = field(default_factory=dict)

    @classmethod
    def create(cls) -> Metrics:
        r = CollectorRegistry()
        # the process's CPU, memory, open fds and start time, and the Python it runs on
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        m = cls(
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
            build_info=Gauge(
                "remed_build_info", "remed's version (always 1)", ["version", "python"],
                registry=r,
            ),
            guard_verdicts=Counter(
                "remed_guard_verdicts_total",
                "Plans judged by the guard, by verdict and risk tier",
                ["verdict", "risk"],
                registry=r,
            ),
            approvals_waiting=Gauge(
                "remed_approvals_waiting", "High-risk plans waiting for a person", registry=r
            ),
            approvals_oldest_wait=Gauge(
                "remed_approvals_oldest_wait_seconds",
                "How long the longest-waiting high-risk plan has waited (0: none)",
                registry=r,
            ),
            breakers_open=Gauge(
                "remed_breakers_open",
                "Targets whose circuit breaker is open (no automation for them)",
                registry=r,
            ),
            kill_switch=Gauge(
                "remed_kill_switch", "1 while the kill switch stops all automation", registry=r
            ),
            planner_seconds=Histogram(
                "remed_planner_duration_seconds",
                "One planner call (prompt to playbook)",
                ["planner"],
                buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160),
                registry=r,
            ),
            planner_tokens=Histogram(
                "remed_planner_tokens",
                "Tokens per remediation, by kind",
                ["kind"],
                buckets=(0, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384),
                registry=r,
            ),
        )  # fmt: skip
        m.build_info.labels(version(), platform.python_version()).set(1)
        m.breakers_open.set_function(m._count_open_breakers)
        return m

    def _count_open_breakers(self) -> float:
        now = time.time()
        for target in [t for t, until in self.open_breakers.items() if until <= now]:
            self.open_breakers.pop(target, None)
        return float(len(self.open_breakers))

    def breaker_open(self, target: str, for_s: float) -> None:
        """The scheduler found `target`'s breaker open for another `for_s` seconds."""
        self.open_breakers[target] = time.time() + max(for_s, 0.0)

    def watch_approvals(
        self, pending: Callable[[], list[dict[str, Any]]], timeout_s: float
    ) -> None:
        """Read the approval book's waiting plans at each scrape; a plan has waited
        `timeout_s` (agents.approval_timeout_s) less what it has left."""
        self.approvals_waiting.set_function(lambda: float(len(pending())))

        def oldest() -> float:
            waits = [timeout_s - float(p.get("expires_in_s", timeout_s)) for p in pending()]
            return max(waits, default=0.0)

        self.approvals_oldest_wait.set_function(oldest)

    def observe_result(self, result: Any) -> None:
        """What a finished remediation says about the guard and the planner: one verdict per
        attempt's plan; its tokens."""
        if result is None:
            return
        for attempt in getattr(result, "attempts", ()):
            guard = attempt.guard or {}
            verdict = "allowed" if guard.get("allowed") else "refused"
            high = guard.get("needs_approval") or guard.get("risk") == "high"
            if guard.get("allowed") and high:
                verdict = "needs_approval"
            self.guard_verdicts.labels(verdict, str(guard.get("risk", "unknown"))).inc()
        if getattr(result, "prompt_tokens", 0) or getattr(result, "completion_tokens", 0):
            self.planner_tokens.labels("prompt").observe(result.prompt_tokens)
            self.planner_tokens.labels("completion").observe(result.completion_tokens)


class MetricsSpanProcessor(SpanProcessor):
    """Metrics from the loop's spans, so the loop needs no metrics of its own: each finished
    `plan` span is one planner call (`remed.planner` names which)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def on_end(self, span: ReadableSpan) -> None:
        if span.name == "plan" and span.end_time and span.start_time:
            planner = str((span.attributes or {}).get("remed.planner", "unknown"))
            self.metrics.planner_seconds.labels(planner).observe(
                (span.end_time - span.start_time) / 1e9
            )


def version() -> str:
    """The installed distribution's version (the wheel's, or the editable checkout's)."""
    from importlib import metadata

    try:
        return metadata.version("remed")
    except metadata.PackageNotFoundError:
        return "unknown"
