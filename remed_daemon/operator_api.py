"""The read-only operator API: what `remed incidents`, `remed show` and `remed tail` ask.

    GET /incidents?status=S[,S2]&limit=N  newest first: id, target, state, reason, category,
                                          summary, attempts, times, trace id
    GET /incidents/{id}                   one incident whole: its report, the timeline of its
                                          journal transitions, the outcome (each attempt's
                                          playbook, guard verdict, check diff, approval, task
                                          results, verification, reflection; undo; model,
                                          tokens), the plan waiting for a person, the trace id
    GET /events?after=SEQ&limit=N         journal transitions of every incident after SEQ,
                                          oldest first, and `last_seq` to ask from next time

Authenticated with a bearer token: the API's own read-only `http.operator_token` (for
dashboards and observers, which must not decide plans) or the approval endpoint's
`agents.approval_token` (whoever may decide a plan may read what the daemon did); never the
webhook's. With neither configured the API answers 503, a wrong token 401. Nothing here
changes state. What
it returns was redacted when it was written (outcomes) and is redacted again on the way out
(alert text in reports can carry anything).
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from remed_daemon.agents.approvals import BOOK, TOKEN
from remed_daemon.agents.redact import redact
from remed_daemon.config import Secret
from remed_daemon.journal import Incident, Journal, State

JOURNAL = web.AppKey("operator_journal", Journal)
OPERATOR_TOKEN = web.AppKey("operator_token", Secret)
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def trace_id_of(traceparent: str) -> str:
    """The W3C trace id (32 hex digits) of a `traceparent`, '' when there is none."""
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else ""


def _redacted(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact(value)
    if depth > 8:
        return value
    if isinstance(value, dict):
        return {k: _redacted(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v, depth + 1) for v in value]
    return value


def summary_doc(inc: Incident, outcome: dict[str, Any] | None = None) -> dict[str, Any]:
    """One line of `GET /incidents`."""
    report = inc.report
    doc: dict[str, Any] = {
        "id": inc.id,
        "target": inc.target,
        "source": inc.source,
        "state": inc.state.value,
        "terminal": inc.state.terminal,
        "reason": inc.reason,
        "category": report.get("category") if isinstance(report.get("category"), str) else "",
        "severity": report.get("severity", ""),
        "summary": str(report.get("summary", ""))[:300],
        "report_id": report.get("report_id", ""),
        "created_at": iso(inc.created_at),
        "updated_at": iso(inc.updated_at),
        "started_at": iso(inc.started_at),
        "finished_at": iso(inc.finished_at),
        "trace_id": trace_id_of(inc.traceparent),
    }
    if outcome is not None:
        doc["attempts"] = len(outcome.get("attempts", []))
        doc["time_to_recover_s"] = outcome.get("timings", {}).get("time_to_recover_s")
        if "model" in outcome:
            doc["model"] = outcome["model"]
        if outcome.get("planner"):
            doc["planner"] = outcome["planner"]
    return _redacted(doc)


def _deny(request: web.Request) -> web.Response | None:
    configured = (request.app.get(OPERATOR_TOKEN), request.app.get(TOKEN))
    tokens = [secret.reveal() for secret in configured if secret and secret.reveal()]
    if not tokens:
        return web.json_response(
            {"error": "the operator API is disabled: set http.operator_token (read-only) or "
             "agents.approval_token (or their REMED_..._FILE) and restart"},
            status=503,
        )  # fmt: skip
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    sent = value.strip().encode()
    # compare against every configured token, so the time taken says nothing about which
    matches = [hmac.compare_digest(sent, t.encode()) for t in tokens]
    if scheme.lower() != "bearer" or not any(matches):
        return web.json_response(
            {"error": "missing or wrong token: send 'Authorization: Bearer "
             "<http.operator_token or agents.approval_token>' (the webhook's token does not "
             "work here)"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="remed-operator"'},
        )  # fmt: skip
    return None


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(
            text='{"error": "limit must be an integer"}', content_type="application/json"
        ) from None
    return max(1, min(value, MAX_LIMIT))


async def list_incidents(request: web.Request) -> web.Response:
    denied = _deny(request)
    if denied is not None:
        return denied
    states = [s for s in request.query.get("status", "").split(",") if s]
    known = {s.value for s in State}
    unknown = [s for s in states if s not in known]
    if unknown:
        return web.json_response(
            {"error": f"status {unknown[0]!r} is not a state; one of {sorted(known)}"},
            status=400,
        )
    journal = request.app[JOURNAL]
    docs = []
    for inc in await journal.list_incidents(states, _limit(request)):
        out = await journal.outcome_of(inc.id) if inc.state.terminal else None
        docs.append(summary_doc(inc, out[0] if out else None))
    return web.json_response({"incidents": docs})


async def show_incident(request: web.Request) -> web.Response:
    denied = _deny(request)
    if denied is not None:
        return denied
    journal = request.app[JOURNAL]
    iid = request.match_info["incident_id"]
    inc = await journal.get(iid)
    if inc is None:
        return web.json_response({"error": f"no incident {iid!r} in the journal"}, status=404)
    out = await journal.outcome_of(iid)
    doc = summary_doc(inc, out[0] if out else None)
    doc["report"] = _redacted(inc.report)
    doc["traceparent"] = inc.traceparent
    doc["timeline"] = [
        {"seq": e["seq"], "from": e["from"], "to": e["to"], "reason": redact(e["reason"]),
         "at": iso(e["at"])}
        for e in await journal.timeline(iid)
    ]  # fmt: skip
    doc["outcome"] = _redacted(out[0]) if out else None
    doc["outcome_sent_at"] = iso(out[1]) if out else None
    book = request.app.get(BOOK)
    waiting = [p for p in (book.pending() if book else []) if p["incident_id"] == iid]
    doc["approval_pending"] = _redacted(waiting[0]) if waiting else None
    return web.json_response(doc)


async def events(request: web.Request) -> web.Response:
    denied = _deny(request)
    if denied is not None:
        return denied
    journal = request.app[JOURNAL]
    raw = request.query.get("after", "")
    if raw in ("", "latest"):
        # where a follower starts: from now on
        return web.json_response({"events": [], "last_seq": await journal.last_event_seq()})
    try:
        after = int(raw)
    except ValueError:
        return web.json_response({"error": "after must be an integer or 'latest'"}, status=400)
    rows = await journal.events_after(after, _limit(request))
    docs = [{**e, "reason": redact(e["reason"]), "at": iso(e["at"])} for e in rows]
    last = rows[-1]["seq"] if rows else after
    return web.json_response({"events": docs, "last_seq": last})


def register_routes(
    app: web.Application, journal: Journal, operator_token: Secret | None = None
) -> None:
    """Add the read-only operator API to the daemon's aiohttp app with its own read-only
    token; the approval endpoint's token and book (`agents/approvals.py`) are read at request
    time."""
    app[JOURNAL] = journal
    if operator_token is not None:
        app[OPERATOR_TOKEN] = operator_token
    app.router.add_get("/incidents", list_incidents)
    app.router.add_get("/incidents/{incident_id}", show_incident)
    app.router.add_get("/events", events)
