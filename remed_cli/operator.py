"""Operator commands against a running daemon: `remed incidents`, `remed show ID`, `remed tail`
and `remed approvals`. They speak the daemon's read-only API (`remed_daemon/operator_api.py`)
and its approval endpoint over HTTP(S), authenticated with the read API's own read-only token
(`http.operator_token`, else the approvers' `agents.approval_token`; `remed approvals` always
uses the latter), found like `remed approve` finds them: from `--config` (the daemon's TOML, or
an observer's copy with the token and `http.tls_server_cafile`), else
`$REMED_CONFIG`, else `/etc/remed/remed.toml` when it exists.

Exit status: 0 done; 1 the daemon refused, has no such incident, or cannot be reached; 2 a
usage or config error (no token, a bad config). `--json` prints the daemon's own documents.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from remed_daemon.config import Config

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

REQUEST_TIMEOUT_S = 10.0
DEFAULT_CONFIG = Path("/etc/remed/remed.toml")
TERMINAL = {"recovered", "failed", "rejected", "escalated", "shadow", "cancelled", "expired"}


class CommandError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Client:
    """The daemon's base URL, the operator token and the TLS context to reach it with."""

    url: str
    token: str
    tls: ssl.SSLContext | None
    explain: Callable[[Exception], str]

    def get(self, path: str, **query: str) -> dict[str, Any]:
        """GET `path` as JSON; CommandError(1) with the daemon's message unless 200."""
        q = urllib.parse.urlencode({k: v for k, v in query.items() if v})
        req = urllib.request.Request(
            f"{self.url.rstrip('/')}{path}" + (f"?{q}" if q else ""),
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S, context=self.tls) as r:
                doc: dict[str, Any] = json.loads(r.read() or b"{}")
                return doc
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read() or b"{}").get("error", exc.reason)
            except ValueError:
                answer = exc.reason
            raise CommandError(1, f"{exc.code}: {answer}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise CommandError(1, self.explain(exc)) from None


def _config_path(args: argparse.Namespace) -> Path | None:
    if args.config:
        return Path(args.config)
    if os.environ.get("REMED_CONFIG"):
        return Path(os.environ["REMED_CONFIG"])
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def client(args: argparse.Namespace, *, approvals: bool = False) -> Client:
    """The `Client` for `args` (--config, --url, --cafile, --certfile, --keyfile), with the
    read-only `http.operator_token` where set, else the approval token (always that one for
    the approval endpoint, `approvals`)."""
    from remed_cli.daemon import _client_tls, _daemon_url, _unreachable
    from remed_daemon import config as config_mod
    from remed_daemon.errors import ConfigError

    try:
        cfg: Config = config_mod.load(_config_path(args))
    except ConfigError as exc:
        raise CommandError(2, str(exc)) from None
    # the read API takes its own read-only token; the approval list only the approvers'
    readonly = cfg.http.operator_token.reveal() if not approvals else ""
    token = readonly or cfg.agents.approval_token.reveal()
    if not token:
        raise CommandError(
            2,
            "no operator token: set http.operator_token (read-only) or agents.approval_token "
            "in --config (or REMED_HTTP_OPERATOR_TOKEN_FILE / REMED_AGENTS_APPROVAL_TOKEN_FILE)"
            if not approvals
            else "no approval token: set agents.approval_token in --config (or "
            "REMED_AGENTS_APPROVAL_TOKEN_FILE); the approval list is the approvers'",
        )
    url = args.url
    if not url:
        port = cfg.http.port
        if not port:  # http.port = 0: the daemon wrote the port it got into the state dir
            try:
                port = int((cfg.state_dir / "http.port").read_text())
            except (OSError, ValueError):
                raise CommandError(
                    1, f"http.port = 0 and no {cfg.state_dir}/http.port: is the daemon running? "
                    "pass --url",
                ) from None  # fmt: skip
        url = _daemon_url(cfg, port)
    try:
        tls = _client_tls(args, cfg) if url.startswith("https://") else None
    except ValueError as exc:
        raise CommandError(2, str(exc)) from None
    return Client(url, token, tls, lambda exc: _unreachable(exc, url, args, cfg))


# -- formatting -------------------------------------------------------------------------------


def _when(iso: str | None) -> str:
    """An ISO timestamp as local HH:MM:SS.mmm (the date when it is not today)."""
    if not iso:
        return "-"
    at = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    fmt = (
        "%H:%M:%S.%f" if at.date() == datetime.now().astimezone().date() else "%Y-%m-%d %H:%M:%S.%f"
    )
    return at.strftime(fmt)[:-3]


def _age(iso: str | None) -> str:
    if not iso:
        return "-"
    s = time.time() - datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.1f}h" if s < 172800 else f"{s / 86400:.0f}d"


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]  # fmt: skip
    return "\n".join(lines)


def _indent(text: str, prefix: str = "    | ") -> str:
    return "\n".join(prefix + line for line in text.rstrip("\n").splitlines())


def format_incidents(docs: Sequence[Mapping[str, Any]]) -> str:
    if not docs:
        return "no incidents"
    rows = []
    for d in docs:
        ttr = d.get("time_to_recover_s")
        rows.append((
            d["id"][:8], d["target"], d["state"], d.get("category") or "-",
            str(d.get("attempts", "-")), _age(d.get("created_at")),
            f"{ttr:.1f}s" if isinstance(ttr, int | float) else "-",
            (d.get("reason") or d.get("summary") or "")[:60],
        ))  # fmt: skip
    return _table(rows, ("ID", "TARGET", "STATE", "CATEGORY", "ATTEMPTS", "AGE", "TTR", "REASON"))


def _task_line(t: Mapping[str, Any]) -> str:
    if t.get("unreachable"):
        result = "UNREACHABLE"
    elif t.get("failed"):
        result = "FAILED"
    elif t.get("skipped"):
        result = "skipped"
    else:
        result = "changed" if t.get("changed") else "ok"
    rc = f" rc={t['rc']}" if t.get("rc") is not None else ""
    line = f"  {t['host']:<6} {result:<11} {t.get('duration_ms', 0):>7.0f} ms  {t['task']}{rc}"
    return line + (f"\n{' ' * 10}{t['msg'][:300]}" if t.get("msg") else "")


def format_attempt(a: Mapping[str, Any]) -> str:
    g = a.get("guard", {})
    verdict = "allowed" if g.get("allowed") else "REFUSED"
    out = [f"attempt {a['attempt']}: guard {verdict}, risk {g.get('risk', '?')}"
           + (", needs approval" if g.get("needs_approval") else "")]  # fmt: skip
    for v in g.get("violations", [])[:10]:
        out.append(f"  violation {v['rule']} ({v['task']}): {v['detail']}")
    if a.get("approval"):
        ap = a["approval"]
        out.append(f"  approval: {ap.get('decision')}"
                   + (f" by {ap['by']}" if ap.get("by") else "")
                   + (f" at {_when(ap.get('at'))}" if ap.get("at") else ""))  # fmt: skip
    if a.get("playbook"):
        out += ["  playbook:", _indent(a["playbook"])]
    if a.get("check_diff"):
        out += ["  check --diff:", _indent(a["check_diff"][:4000])]
    if a.get("tasks"):
        out.append("  tasks:")
        out += ["  " + _task_line(t) for t in a["tasks"]]
    ver = a.get("verification")
    if ver is not None:
        out.append(f"  verification: {'passed' if ver.get('passed') else 'FAILED'}")
        for c in ver.get("checks", [])[:20]:
            mark = "ok  " if c.get("passed") else "FAIL"
            out.append(f"    {mark} {c.get('name')}: {str(c.get('detail', ''))[:200]}")
    if a.get("reflection"):
        out += ["  reflection:", _indent(a["reflection"], "    ")]
    return "\n".join(out)


def format_show(d: Mapping[str, Any]) -> str:
    out = [
        f"incident {d['id']}",
        f"  target    {d['target']} (source {d['source']}, category {d.get('category') or '-'}, "
        f"severity {d.get('severity') or '-'})",
        f"  state     {d['state']}" + (f": {d['reason']}" if d.get("reason") else ""),
        f"  summary   {d.get('summary', '')}",
        f"  trace     {d.get('trace_id') or '-'}",
        f"  received  {_when(d.get('created_at'))}   finished {_when(d.get('finished_at'))}",
    ]
    report = d.get("report", {})
    if report.get("report") and report.get("report") != d.get("summary"):
        out += ["report", _indent(str(report["report"])[:2000], "  ")]
    for line in report.get("evidence", [])[:10]:
        out.append(f"  evidence: {line}")
    out.append("timeline")
    for e in d.get("timeline", []):
        out.append(
            f"  {_when(e['at'])}  {e['from'] or '(admit)':>17} -> {e['to']:<17} {e['reason']}"
        )
    outcome = d.get("outcome")
    if outcome:
        for a in outcome.get("attempts", []):
            out.append(format_attempt(a))
        undo = outcome.get("undo")
        if undo:
            restored = ", ".join(
                f"{r['kind']} {r['name']}@{r['host']}" for r in undo.get("restored", [])
            )
            out.append(f"undo: {'performed' if undo.get('performed') else 'not performed'}"
                       + (f"; restored {restored}" if restored else "")
                       + (f"; errors: {undo['errors']}" if undo.get("errors") else ""))  # fmt: skip
        model = outcome.get("model")
        tokens = outcome.get("tokens", {})
        out.append(
            f"planner {outcome.get('planner') or '-'}"
            + (f", model {model['name']} version {model['version']}" if model else "")
            + f", tokens {tokens.get('prompt', 0)} prompt"
            + f" + {tokens.get('completion', 0)} completion"
        )
        ttr = outcome.get("timings", {}).get("time_to_recover_s")
        if ttr is not None:
            out.append(f"time to recover {ttr:.1f} s")
        sent = d.get("outcome_sent_at")
        out.append(
            f"outcome on Kafka {'since ' + _when(sent) if sent else 'not yet (in the outbox)'}"
        )
    pending = d.get("approval_pending")
    if pending:
        out += [
            f"WAITING FOR APPROVAL: risk {pending['risk']}, expires in "
            f"{pending['expires_in_s']:.0f} s",
            f"  plan_sha256 {pending['plan_sha256']}",
            f"  remed approve {d['id']} --plan-sha256 {pending['plan_sha256']}",
        ]
    return "\n".join(out)


def format_event(e: Mapping[str, Any]) -> str:
    line = f"{_when(e['at'])}  {e['incident_id'][:8]}  {e.get('target') or '-':<16} "
    line += f"{e['from'] or '(admit)'} -> {e['to']}"
    return line + (f"  {e['reason']}" if e.get("reason") else "")


def format_approvals(pending: Sequence[Mapping[str, Any]], playbooks: bool) -> str:
    if not pending:
        return "nothing waiting for approval"
    rows = [(p["incident_id"], p["target"], p["risk"], f"{p['expires_in_s']:.0f}s",
             p["plan_sha256"]) for p in pending]  # fmt: skip
    out = [_table(rows, ("INCIDENT", "TARGET", "RISK", "EXPIRES", "PLAN_SHA256"))]
    if playbooks:
        for p in pending:
            out += [f"\n{p['incident_id']} ({p['target']}) playbook:", _indent(p["playbook"])]
            if p.get("check_diff"):
                out += ["  check --diff:", _indent(p["check_diff"][:4000])]
            out.append(f"  remed approve {p['incident_id']} --plan-sha256 {p['plan_sha256']}")
    return "\n".join(out)


# -- commands ---------------------------------------------------------------------------------


def _run(
    name: str, body: Callable[[argparse.Namespace], int]
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return body(args)
        except CommandError as exc:
            print(f"remed {name}: {exc}", file=sys.stderr)
            return exc.code
        except KeyboardInterrupt:
            return 130

    return run


def _incidents(args: argparse.Namespace) -> int:
    doc = client(args).get("/incidents", status=args.status or "", limit=str(args.limit))
    print(json.dumps(doc, indent=2) if args.json else format_incidents(doc["incidents"]))
    return 0


def resolve_id(c: Client, wanted: str) -> str:
    """A full incident id from `wanted`, which may be a unique prefix (as `remed incidents`
    prints them)."""
    if len(wanted) >= 36:
        return wanted
    ids = [d["id"] for d in c.get("/incidents", limit="1000")["incidents"]]
    matches = [i for i in ids if i.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CommandError(1, f"404: no incident {wanted!r} in the journal")
    raise CommandError(1, f"{wanted!r} is the start of {len(matches)} incident ids: give more")


def _show(args: argparse.Namespace) -> int:
    c = client(args)
    iid = resolve_id(c, args.incident_id)
    doc = c.get(f"/incidents/{urllib.parse.quote(iid, safe='')}")
    print(json.dumps(doc, indent=2) if args.json else format_show(doc))
    return 0


def _tail(args: argparse.Namespace) -> int:
    c = client(args)
    iid = resolve_id(c, args.incident) if args.incident else ""
    after = "0" if (args.from_start or iid) else "latest"
    seq = int(c.get("/events", after=after)["last_seq"]) if after == "latest" else 0
    deadline = time.monotonic() + args.for_s if args.for_s else None
    shown = 0
    while True:
        doc = c.get("/events", after=str(seq), limit="500")
        for e in doc["events"]:
            if iid and e["incident_id"] != iid:
                continue
            print(json.dumps(e) if args.json else format_event(e), flush=True)
            shown += 1
            if (iid and e["to"] in TERMINAL) or (args.max_events and shown >= args.max_events):
                return 0
        seq = int(doc["last_seq"])
        if deadline is not None and time.monotonic() >= deadline:
            return 0
        if not doc["events"]:
            time.sleep(args.interval_s)


def _approvals(args: argparse.Namespace) -> int:
    doc = client(args, approvals=True).get("/approvals")
    print(
        json.dumps(doc, indent=2) if args.json else format_approvals(doc["pending"], args.playbooks)
    )
    return 0


def _connection() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config", help="the daemon's TOML config (URL, agents.approval_token; "
                   "default $REMED_CONFIG, else /etc/remed/remed.toml)")  # fmt: skip
    p.add_argument("--url", help="the daemon's HTTP base URL (default: from the config)")
    p.add_argument("--cafile", help="PEM CA that signed the daemon's certificate (https)")
    p.add_argument("--certfile", help="client certificate (PEM) for an mTLS daemon")
    p.add_argument("--keyfile", help="the client certificate's key (PEM)")
    return p


def add_operator(sub: Subparsers) -> None:
    conn = _connection()
    inc = sub.add_parser("incidents", parents=[conn], help="list incidents of a running daemon")
    inc.add_argument("--status", help="only these states, comma-separated (e.g. "
                     "awaiting_approval,executing)")  # fmt: skip
    inc.add_argument("--limit", type=int, default=100, help="at most this many (newest first)")
    inc.add_argument("--json", action="store_true", help="the daemon's JSON document")
    inc.set_defaults(func=_run("incidents", _incidents))

    show = sub.add_parser(
        "show",
        parents=[conn],
        help="one incident whole: timeline, report, attempts (playbook, guard, tasks, "
        "verification), undo, trace",
    )
    show.add_argument("incident_id", metavar="ID", help="incident id (or a unique prefix)")
    show.add_argument("--json", action="store_true", help="the daemon's JSON document")
    show.set_defaults(func=_run("show", _show))

    tail = sub.add_parser("tail", parents=[conn], help="follow new incidents and transitions")
    tail.add_argument("--json", action="store_true", help="one JSON object per transition")
    tail.add_argument("--from-start", action="store_true", help="replay the journal first")
    tail.add_argument("--incident", metavar="ID", help="only this incident, until it finishes")
    tail.add_argument("--max-events", type=int, default=0, help="stop after this many")
    tail.add_argument("--for-s", type=float, default=0.0, help="stop after this many seconds")
    tail.add_argument("--interval-s", type=float, default=1.0, help="poll interval")
    tail.set_defaults(func=_run("tail", _tail))

    appr = sub.add_parser("approvals", parents=[conn],
                          help="plans waiting for a person, with each plan's sha256")  # fmt: skip
    appr.add_argument("--json", action="store_true", help="the daemon's JSON document")
    appr.add_argument("--playbooks", action="store_true", help="print each waiting playbook")
    appr.set_defaults(func=_run("approvals", _approvals))
