"""The daemon's HTTP side (aiohttp): Alertmanager webhook, /healthz, /readyz, /metrics.

`POST /webhook/alertmanager` (ARCHITECTURE.md): 401 without valid credentials (bearer token,
or basic auth when configured); 413 above `http.max_body_bytes`; 400 with the exact field at
fault; 503 with `Retry-After` when `http.max_pending_incidents` are open (Alertmanager retries
5xx); otherwise the firing alerts are journaled in one transaction and only then 202 is sent.
A `resolved` alert cancels its incident if no playbook has started.

TLS (optional): with `http.tls_certfile` and `http.tls_keyfile` the one listener, webhook and
approval endpoint alike, speaks only HTTPS (TLS 1.2 or later); with `http.tls_client_cafile`
clients must also present a certificate signed by that CA (mTLS). `server_ssl_context` loads
the files when the daemon starts and names the key at fault; SIGHUP reloads the same files
into the running context, so a renewed certificate needs no restart.
"""

from __future__ import annotations

import base64
import hmac
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from remed_daemon.config import HttpConfig
from remed_daemon.errors import ConfigError, IntakeRejected
from remed_daemon.journal import Incident, Journal, NewIncident
from remed_daemon.outcomes.document import builder
from remed_daemon.sources.alertmanager import map_alerts, parse_payload
from remed_daemon.telemetry import Metrics, current_traceparent

log = structlog.get_logger("remed.http")


@dataclass
class HttpDeps:
    cfg: HttpConfig
    journal: Journal
    metrics: Metrics
    tracer: trace.Tracer
    submit: Callable[[Incident], None]
    cancel: Callable[[Incident], None]
    depth: Callable[[], int]
    ready: Callable[[], bool]


DEPS = web.AppKey("deps", HttpDeps)


def _readable(key: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"http.{key} {path!r} cannot be read ({exc.strerror}): check the path and that the "
            "remed user may read it (systemd: LoadCredential= and $CREDENTIALS_DIRECTORY)"
        ) from None


def _no_passphrase() -> str:
    raise ConfigError(
        "http.tls_keyfile is encrypted: the daemon cannot ask for a passphrase; give it an "
        "unencrypted key (e.g. `openssl pkey -in KEY -out KEY.plain`) readable only by remed"
    )


def load_cert_chain(ctx: ssl.SSLContext, cfg: HttpConfig) -> None:
    """Load `http.tls_certfile`/`tls_keyfile` into `ctx`, or raise ConfigError naming the key."""
    _readable("tls_certfile", cfg.tls_certfile)
    _readable("tls_keyfile", cfg.tls_keyfile)
    try:
        # the certificate alone first, so that a bad one is not blamed on the key
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cfg.tls_certfile)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"http.tls_certfile {cfg.tls_certfile!r} holds no PEM certificate ({exc.reason or exc})"
            ": give the server certificate, then any intermediates, as PEM"
        ) from None
    try:
        ctx.load_cert_chain(cfg.tls_certfile, cfg.tls_keyfile, password=_no_passphrase)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"http.tls_keyfile {cfg.tls_keyfile!r} is not a PEM private key for the certificate "
            f"in http.tls_certfile ({exc.reason or exc}): give the key the certificate was "
            "issued for"
        ) from None


def server_ssl_context(cfg: HttpConfig) -> ssl.SSLContext | None:
    """The listener's TLS context (None = plain HTTP); ConfigError names the key at fault."""
    if not cfg.tls_certfile:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    load_cert_chain(ctx, cfg)
    if cfg.tls_client_cafile:
        _readable("tls_client_cafile", cfg.tls_client_cafile)
        try:
            ctx.load_verify_locations(cafile=cfg.tls_client_cafile)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"http.tls_client_cafile {cfg.tls_client_cafile!r} holds no PEM CA certificate "
                f"({exc.reason or exc}): give the CA that signs the clients' certificates"
            ) from None
        # only this CA: never the system store, which would admit any public certificate
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _authorized(cfg: HttpConfig, header: str) -> bool:
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer" and cfg.bearer_token:
        return hmac.compare_digest(value.strip().encode(), cfg.bearer_token.reveal().encode())
    if scheme == "basic" and cfg.basic_user:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        user, _, password = decoded.partition(":")
        ok_user = hmac.compare_digest(user.encode(), cfg.basic_user.encode())
        ok_pass = hmac.compare_digest(password.encode(), cfg.basic_password.reveal().encode())
        return ok_user and ok_pass
    return False


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


async def webhook(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    t0 = time.monotonic()
    if not _authorized(deps.cfg, request.headers.get("Authorization", "")):
        deps.metrics.intake.labels("alertmanager", "unauthorized").inc()
        return _error(
            401,
            "missing or wrong credentials: send 'Authorization: Bearer <http.bearer_token>'",
            **{"WWW-Authenticate": 'Bearer realm="remed"'},
        )
    if request.content_length is not None and request.content_length > deps.cfg.max_body_bytes:
        deps.metrics.intake.labels("alertmanager", "too_large").inc()
        return _error(413, f"body larger than http.max_body_bytes = {deps.cfg.max_body_bytes}")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        deps.metrics.intake.labels("alertmanager", "too_large").inc()
        return _error(413, f"body larger than http.max_body_bytes = {deps.cfg.max_body_bytes}")
    try:
        doc = parse_payload(body)
    except IntakeRejected as exc:
        deps.metrics.intake.labels("alertmanager", "invalid").inc()
        return _error(400, str(exc))
    received = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    mapped = map_alerts(doc, deps.cfg.service_labels, deps.cfg.host_labels, received)
    firing = [m for m in mapped if m.status == "firing" and not m.unroutable]
    if firing and deps.depth() >= deps.cfg.max_pending_incidents:
        deps.metrics.intake.labels("alertmanager", "saturated").inc()
        return _error(
            503, "saturated: too many open incidents; retry later", **{"Retry-After": "5"}
        )

    news: list[NewIncident] = []
    for m in firing:
        # One trace per incident: the intake span is its root (Alertmanager sends no context).
        with deps.tracer.start_as_current_span(
            "intake alertmanager",
            context=trace.set_span_in_context(trace.INVALID_SPAN),
            kind=trace.SpanKind.SERVER,
            attributes={
                "remed.fingerprint": m.fingerprint,
                "remed.target": m.target,
                # OpenTelemetry HTTP server semantic conventions
                "http.request.method": request.method,
                "url.path": request.path,
                "server.address": request.url.host or "",
                "server.port": request.url.port or 0,
            },
        ):
            tp = current_traceparent()
        news.append(
            NewIncident(
                idem_key=m.idem_key,
                source="alertmanager",
                target=m.target,
                report=m.report,
                traceparent=tp,
            )
        )
    admissions = await deps.journal.admit_many(news) if news else []
    accepted = duplicates = cancelled = 0
    for adm in admissions:
        if adm.created:
            accepted += 1
            deps.submit(adm.incident)
        else:
            duplicates += 1
    for m in mapped:
        if m.status != "resolved":
            continue
        done = await deps.journal.cancel_pending(
            m.idem_key, "alert resolved before remediation started", builder(None)
        )
        if done is not None:
            cancelled += 1
            deps.cancel(done)
        else:
            duplicates += 1
    unroutable = [m.unroutable for m in mapped if m.unroutable]
    deps.metrics.intake.labels("alertmanager", "accepted").inc(accepted)
    deps.metrics.intake.labels("alertmanager", "duplicate").inc(duplicates)
    deps.metrics.intake.labels("alertmanager", "cancelled").inc(cancelled)
    deps.metrics.intake.labels("alertmanager", "unroutable").inc(len(unroutable))
    deps.metrics.dedup_hits.labels("alertmanager").inc(duplicates)
    deps.metrics.ack_seconds.labels("alertmanager").observe(time.monotonic() - t0)
    if unroutable:
        log.warning("alerts without a target", count=len(unroutable), first=unroutable[0])
    return web.json_response(
        {
            "accepted": accepted,
            "duplicates": duplicates,
            "cancelled": cancelled,
            "unroutable": unroutable[:10],
        },
        status=202,
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    ok = request.app[DEPS].ready()
    return web.json_response({"ready": ok}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    data: Any = generate_latest(request.app[DEPS].metrics.registry)
    resp = web.Response(body=data)
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


def build_app(deps: HttpDeps) -> web.Application:
    # client_max_size makes aiohttp refuse larger bodies with 413 even without Content-Length.
    app = web.Application(client_max_size=deps.cfg.max_body_bytes)
    app[DEPS] = deps
    app.router.add_post("/webhook/alertmanager", webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    # the read-only operator API (remed incidents|show|tail), the approval token's
    from remed_daemon import operator_api

    operator_api.register_routes(app, deps.journal, deps.cfg.operator_token)
    return app
