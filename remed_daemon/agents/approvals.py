"""Human approval of high-risk plans.

A plan the guard marks as needing approval puts its incident into `awaiting_approval` and
waits here until a person approves or rejects it, or until it expires (`approval_timeout_s`;
expiry is a rejection). People decide through the daemon's HTTP endpoint

    GET  /approvals                       what is waiting (incident, target, risk, playbook, its
                                          --check --diff output, plan digest)
    POST /approvals/{incident_id}/approve {"by": "alice", "plan_sha256": "…"}  (both optional)
    POST /approvals/{incident_id}/reject  {"by": "alice"}

or `remed approve|reject ID`, authenticated with a token of its own
(`agents.approval_token`, never the webhook's). Nothing the model writes or an alert says can
reach this path: the decision comes only from an authenticated HTTP request, keyed by the
incident id, and an optional `plan_sha256` pins the approval to the exact playbook the person
read (a mismatch is refused with 409).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from remed_daemon.config import Secret

MAX_BY_CHARS = 128


def plan_digest(playbook: str) -> str:
    return hashlib.sha256(playbook.encode()).hexdigest()


@dataclass(frozen=True)
class Decision:
    decision: str  # approved | rejected | expired
    by: str = ""
    at: float = 0.0

    @property
    def approved(self) -> bool:
        return self.decision == "approved"

    def doc(self) -> dict[str, Any]:
        """The outcome's `attempt.approval` object."""
        doc: dict[str, Any] = {"decision": self.decision}
        if self.by:
            doc["by"] = self.by[:MAX_BY_CHARS]
        if self.at:
            doc["at"] = datetime.fromtimestamp(self.at, UTC).isoformat().replace("+00:00", "Z")
        return doc


@dataclass
class _Pending:
    future: asyncio.Future[Decision]
    plan_sha256: str
    target: str
    risk: str
    expires_at: float
    playbook: str = field(repr=False, default="")
    check_diff: str = field(repr=False, default="")


class ApprovalError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ApprovalBook:
    """Plans waiting for a person, keyed by incident id."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._pending: dict[str, _Pending] = {}

    def pending(self) -> list[dict[str, Any]]:
        return [
            {
                "incident_id": iid,
                "target": p.target,
                "risk": p.risk,
                "plan_sha256": p.plan_sha256,
                "expires_in_s": max(p.expires_at - self._clock(), 0.0),
                "playbook": p.playbook,
                "check_diff": p.check_diff,
            }
            for iid, p in self._pending.items()
        ]

    async def wait(
        self,
        incident_id: str,
        playbook: str,
        *,
        target: str,
        risk: str,
        timeout_s: float,
        check_diff: str = "",
    ) -> Decision:
        loop = asyncio.get_running_loop()
        pending = _Pending(
            loop.create_future(), plan_digest(playbook), target, risk,
            self._clock() + timeout_s, playbook, check_diff,
        )  # fmt: skip
        self._pending[incident_id] = pending
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(pending.future)
        except TimeoutError:
            return Decision("expired", at=self._clock())
        finally:
            self._pending.pop(incident_id, None)

    def decide(
        self, incident_id: str, approve: bool, by: str, plan_sha256: str = ""
    ) -> Decision:
        pending = self._pending.get(incident_id)
        if pending is None or pending.future.done():
            raise ApprovalError(404, f"incident {incident_id!r} is not waiting for approval")
        if plan_sha256 and not hmac.compare_digest(plan_sha256, pending.plan_sha256):
            raise ApprovalError(
                409,
                "plan_sha256 does not match the plan waiting for approval: it changed since "
                "you read it; GET /approvals and review it again",
            )
        decision = Decision("approved" if approve else "rejected", by[:MAX_BY_CHARS], self._clock())
        pending.future.set_result(decision)
        return decision


BOOK = web.AppKey("approvals", ApprovalBook)
TOKEN = web.AppKey("approval_token", Secret)


def _authorized(request: web.Request) -> bool:
    token = request.app[TOKEN]
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.reveal().encode()
    )


def _deny(request: web.Request) -> web.Response | None:
    if not request.app[TOKEN]:
        return web.json_response(
            {"error": "approvals are disabled: set agents.approval_token (or "
             "REMED_AGENTS_APPROVAL_TOKEN_FILE) and restart"},
            status=503,
        )  # fmt: skip
    if not _authorized(request):
        return web.json_response(
            {"error": "missing or wrong approval token: send 'Authorization: Bearer "
             "<agents.approval_token>' (the webhook's token does not work here)"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="remed-approvals"'},
        )  # fmt: skip
    return None


async def list_pending(request: web.Request) -> web.Response:
    denied = _deny(request)
    if denied is not None:
        return denied
    return web.json_response({"pending": request.app[BOOK].pending()})


async def _decide(request: web.Request, approve: bool) -> web.Response:
    denied = _deny(request)
    if denied is not None:
        return denied
    body: dict[str, Any] = {}
    if request.can_read_body:
        try:
            raw = await request.content.read(4096)
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
    by = str(body.get("by") or "approval-endpoint")
    sha = str(body.get("plan_sha256") or "")
    try:
        decision = request.app[BOOK].decide(request.match_info["incident_id"], approve, by, sha)
    except ApprovalError as exc:
        return web.json_response({"error": str(exc)}, status=exc.status)
    return web.json_response(decision.doc())


async def approve(request: web.Request) -> web.Response:
    return await _decide(request, True)


async def reject(request: web.Request) -> web.Response:
    return await _decide(request, False)


def register_routes(app: web.Application, book: ApprovalBook, token: Secret) -> None:
    """Add the approval endpoint to the daemon's aiohttp app."""
    app[BOOK] = book
    app[TOKEN] = token
    app.router.add_get("/approvals", list_pending)
    app.router.add_post("/approvals/{incident_id}/approve", approve)
    app.router.add_post("/approvals/{incident_id}/reject", reject)


def request_decision(
    base_url: str,
    token: str,
    incident_id: str,
    approve: bool,
    by: str,
    plan_sha256: str = "",
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, Any]]:
    """Client side of `remed approve|reject`: (HTTP status, JSON answer). `ssl_context`
    verifies an https:// daemon (its CA, the host name, a client certificate for mTLS)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    action = "approve" if approve else "reject"
    url = f"{base_url.rstrip('/')}/approvals/{urllib.parse.quote(incident_id, safe='')}/{action}"
    data = json.dumps({"by": by, **({"plan_sha256": plan_sha256} if plan_sha256 else {})})
    req = urllib.request.Request(
        url,
        data=data.encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10, context=ssl_context) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {"error": exc.reason}
