"""Operator feedback on a finished remediation: a `feedback` document on `remed.feedback`.

Two ways in, one behaviour: `remed feedback ID --verdict ...` (remed_cli/feedback.py) and the
daemon's endpoint

    POST /feedback/{incident_id}   {"verdict": "good"|"bad"|"unsafe", "corrected_playbook": "...",
                                    "comment": "...", "author": "alice", "feedback_id": "..."}

authenticated with a token of its own (`http.feedback_token`, never the webhook's or the
approval endpoint's). Feedback is untrusted input for the trainer, so:

- a `corrected_playbook` is judged by the guard against the incident's hosts (the target's and
  its dependencies', as the remediation saw them) *before* it is published; a refused one is
  answered with the guard's violations (HTTP 422, exit status 1) and never leaves;
- the document is validated against `schemas/feedback.schema.json` before it is sent;
- the trainer judges the playbook again against the outcome it joins (this check is for the
  operator's benefit; the trainer's is the one training relies on).

Messages are keyed by incident id (the CLI cannot know the target), sent with `acks=all` and an
idempotent producer; `feedback_id` (a fresh one unless the sender gives one) makes a retried
send count once.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from remed_daemon.config import Config, KafkaConfig, Secret
from remed_daemon.errors import RemedError
from remed_daemon.guard import GuardUsageError, GuardVerdict, check_playbook
from remed_daemon.journal import Incident, Journal
from remed_daemon.kafka_security import kafka_client_options
from remed_daemon.schemas import validate

log = structlog.get_logger("remed.feedback")

Verdict = Literal["good", "bad", "unsafe"]
VERDICTS: Final[tuple[str, ...]] = ("good", "bad", "unsafe")
# A corrected playbook is at most 64 KiB (the schema); the rest of a body is small.
MAX_BODY_BYTES: Final = 96 * 1024


class FeedbackRefused(RemedError):
    """The corrected playbook is refused by the guard; `verdict` holds the violations."""

    def __init__(self, verdict: GuardVerdict) -> None:
        rules = ", ".join(sorted({v.rule for v in verdict.violations})) or "refused"
        super().__init__(
            f"the corrected playbook is refused by the guard ({rules}); nothing was sent: fix "
            "what the violations name (`remed guard check FILE --hosts ...` shows them)"
        )
        self.verdict = verdict


class FeedbackUnsent(RemedError):
    """Kafka did not acknowledge the feedback in time; nothing is known to have arrived."""

    retriable = True


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def feedback_doc(
    incident_id: str,
    verdict: str,
    *,
    corrected_playbook: str | None = None,
    comment: str | None = None,
    author: str | None = None,
    feedback_id: str | None = None,
    created_at: str | None = None,
) -> dict[str, Any]:
    """A schema-valid `feedback` document; raises `SchemaError` naming the field at fault."""
    doc: dict[str, Any] = {
        "schema_version": 1,
        "feedback_id": feedback_id or f"fb-{uuid.uuid4().hex}",
        "incident_id": incident_id,
        "verdict": verdict,
        "created_at": created_at or now_rfc3339(),
    }
    if corrected_playbook is not None:
        doc["corrected_playbook"] = corrected_playbook
    if comment:
        doc["comment"] = comment
    if author:
        doc["author"] = author
    validate("feedback", doc)
    return doc


def judge_correction(playbook: str, hosts: Sequence[str]) -> GuardVerdict:
    """The guard's verdict on a corrected playbook; raises `FeedbackRefused` unless allowed
    (allowed with approval is allowed: a person wrote it, and the daemon would still ask)."""
    try:
        verdict = check_playbook(playbook, list(hosts))
    except GuardUsageError as exc:
        from remed_daemon.guard import Violation

        refusal = Violation("hosts.invalid", "playbook", str(exc)[:300])
        verdict = GuardVerdict(allowed=False, risk="high", needs_approval=False,
                               violations=(refusal,))  # fmt: skip
    if not verdict.allowed:
        raise FeedbackRefused(verdict)
    return verdict


def incident_hosts(cfg: Config, target: str) -> list[str]:
    """The hosts a remediation of `target` (`service@host`) may touch: the target's host and
    its dependencies' in `agents.topology_file` (what ThinkRemed gives the guard)."""
    from remed_daemon.agents import topology as topology_mod

    service, _, host = target.rpartition("@")
    topo = topology_mod.load(cfg.agents.topology_file)
    return topology_mod.facts_for(topo, service, host, "").incident_hosts


@dataclass
class SendReceipt:
    topic: str
    partition: int
    offset: int


class FeedbackPublisher:
    """Sends feedback documents to `kafka.feedback_topic`. Started on first use; `stop()` is
    idempotent."""

    def __init__(self, cfg: KafkaConfig) -> None:
        self.cfg = cfg
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _ensure(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.cfg.bootstrap,
                    acks="all",
                    enable_idempotence=True,
                    request_timeout_ms=self.cfg.request_timeout_ms,
                    **kafka_client_options(self.cfg),
                )
                try:
                    async with asyncio.timeout(self.cfg.request_timeout_ms / 1000):
                        await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def publish(self, doc: dict[str, Any]) -> SendReceipt:
        """Send `doc` and wait for the broker's ack; `FeedbackUnsent` when it does not come."""
        try:
            async with asyncio.timeout(2 * self.cfg.request_timeout_ms / 1000):
                producer = await self._ensure()
                meta = await producer.send_and_wait(
                    self.cfg.feedback_topic,
                    value=json.dumps(doc, sort_keys=True).encode(),
                    key=str(doc["incident_id"]).encode(),
                    headers=[
                        ("content-type", b"application/json"),
                        ("remed-incident-id", str(doc["incident_id"]).encode()),
                    ],
                )
        except (TimeoutError, KafkaError, OSError) as exc:
            await self.stop()  # a wedged producer: start a fresh one next time
            raise FeedbackUnsent(
                f"Kafka at {self.cfg.bootstrap} did not acknowledge the feedback "
                f"({type(exc).__name__}: {exc}); send it again (its feedback_id "
                f"{doc.get('feedback_id')} makes a repeat count once)"
            ) from None
        return SendReceipt(meta.topic, meta.partition, meta.offset)

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()
            except Exception as exc:  # closing a broken producer must not mask the cause
                log.debug("feedback producer stop failed", error=str(exc))


async def send_feedback(cfg: KafkaConfig, doc: dict[str, Any]) -> SendReceipt:
    """One document with a producer of its own (the CLI's way)."""
    publisher = FeedbackPublisher(cfg)
    try:
        return await publisher.publish(doc)
    finally:
        await publisher.stop()


# -- the HTTP endpoint ------------------------------------------------------------------------


@dataclass
class _Endpoint:
    cfg: Config
    journal: Journal
    publisher: FeedbackPublisher


ENDPOINT = web.AppKey("feedback_endpoint", _Endpoint)


def _authorized(token: Secret, header: str) -> bool:
    scheme, _, value = header.partition(" ")
    return (
        bool(token)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(value.strip().encode(), token.reveal().encode())
    )


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def violations_doc(verdict: GuardVerdict) -> list[dict[str, str]]:
    return [{"rule": v.rule, "task": v.task, "detail": v.detail} for v in verdict.violations]


async def _read_json(request: web.Request) -> dict[str, Any] | web.Response:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return _error(413, f"body larger than {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        return _error(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw) if raw.strip() else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return _error(400, 'body must be a JSON object like {"verdict": "good"}')
    return body


async def post_feedback(request: web.Request) -> web.Response:
    ep = request.app[ENDPOINT]
    token = ep.cfg.http.feedback_token
    if not token:
        return _error(503, "the feedback endpoint is off: set http.feedback_token (or "
                      "REMED_HTTP_FEEDBACK_TOKEN_FILE) and restart")  # fmt: skip
    if not _authorized(token, request.headers.get("Authorization", "")):
        return web.json_response(
            {"error": "missing or wrong feedback token: send 'Authorization: Bearer "
             "<http.feedback_token>' (the webhook's and approvals' tokens do not work here)"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="remed-feedback"'},
        )  # fmt: skip
    body = await _read_json(request)
    if isinstance(body, web.Response):
        return body
    incident_id = request.match_info["incident_id"]
    unknown = sorted(set(body) - {"verdict", "corrected_playbook", "comment", "author",
                                  "feedback_id"})  # fmt: skip
    if unknown:
        return _error(400, f"unknown field(s) {', '.join(map(repr, unknown[:5]))}")
    playbook = body.get("corrected_playbook")
    verdict: GuardVerdict | None = None
    if playbook is not None:
        if not isinstance(playbook, str):
            return _error(400, "corrected_playbook: must be a string (the playbook's YAML)")
        incident: Incident | None = await ep.journal.get(incident_id)
        if incident is None:
            return _error(404, f"incident {incident_id!r} is not in this daemon's journal, so "
                          "its hosts are unknown and the corrected playbook cannot be checked; "
                          "use `remed feedback ID --playbook FILE --hosts H1,H2`")  # fmt: skip
        hosts = incident_hosts(ep.cfg, incident.target)
        try:
            # the guard is CPU work (YAML, Jinja parse trees): not on the event loop
            verdict = await asyncio.to_thread(judge_correction, playbook, hosts)
        except FeedbackRefused as exc:
            log.info("feedback refused", incident_id=incident_id,
                     rules=sorted({v.rule for v in exc.verdict.violations}))  # fmt: skip
            return _error(422, str(exc), violations=violations_doc(exc.verdict), hosts=hosts)
    try:
        doc = feedback_doc(
            incident_id,
            str(body.get("verdict", "")),
            corrected_playbook=playbook,
            comment=body.get("comment"),
            author=body.get("author"),
            feedback_id=body.get("feedback_id"),
        )
    except RemedError as exc:  # SchemaError: names the field
        return _error(400, str(exc))
    try:
        receipt = await ep.publisher.publish(doc)
    except FeedbackUnsent as exc:
        return _error(503, str(exc))
    log.info("feedback", incident_id=incident_id, verdict=doc["verdict"],
             author=doc.get("author", ""), corrected=playbook is not None)  # fmt: skip
    answer: dict[str, Any] = {
        "feedback_id": doc["feedback_id"],
        "incident_id": incident_id,
        "verdict": doc["verdict"],
        "topic": receipt.topic,
        "partition": receipt.partition,
        "offset": receipt.offset,
    }
    if verdict is not None:
        answer["guard"] = {"risk": verdict.risk, "needs_approval": verdict.needs_approval}
    return web.json_response(answer, status=202)


def register_routes(app: web.Application, cfg: Config, journal: Journal) -> None:
    """Add `POST /feedback/{incident_id}` to the daemon's aiohttp app; the producer it starts
    on first use closes with the app."""
    ep = _Endpoint(cfg, journal, FeedbackPublisher(cfg.kafka))
    app[ENDPOINT] = ep

    async def close(_app: web.Application) -> None:
        await ep.publisher.stop()

    app.on_cleanup.append(close)
    app.router.add_post("/feedback/{incident_id}", post_feedback)
