"""`make demo`: the whole loop on the real stack, three faults one after another.

The shop runs under load on the lab hosts; blackbox exporter probes it, Prometheus evaluates
the shipped alert rules per fault category (deploy/prometheus/), Alertmanager posts to
`remed serve`'s webhook with its bearer token; remed (ThinkRemed, ansible mode) probes, plans,
guards, checks, applies and verifies; the alert resolves. Three faults: cart stopped
(low risk, runs at once), nginx serving an expired certificate (medium: `--check --diff`
first), checkout with a broken upstream in its config (high: it waits until the on-call person named
by `--approver` approves that exact plan through the approval endpoint). Each incident's
timeline is printed as it happens, from the daemon's journal (its read-only API), its trace
(spans file) and Prometheus/Alertmanager; then a summary table, and where the outcomes
(Kafka topic) and traces are. `--json` prints the same as JSON lines. Any step that fails or
times out fails the demo (exit 1), saying which.

    python -m remed_stack.demo [--planner oracle|triton] [--approver NAME] [--json]

The planner: `triton` is the model Triton serves (remed_planner; `remed model status`),
`oracle` the lab's expert playbooks (no model). The demo holds the lab (`Lab.exclusive`) for
as long as its daemon runs: a daemon behind a live alerting chain fixes whatever breaks there.
Components of the dev stack the demo started are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remed_stack import stack
from remed_stack.paths import StackPaths

DEFAULT_PLANNER = "oracle"  # switch to "triton" once a trained version is served
WEBHOOK_TOKEN = "demo-webhook-token"
OPERATOR_TOKEN = "demo-operator-token"
INCIDENT_TIMEOUT_S = 150.0
ALERT_TIMEOUT_S = 60.0
RESOLVE_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class DemoFault:
    category: str
    host: str
    service: str
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""


FAULTS = (
    DemoFault("service-down", "app", "cart", note="cart stopped"),
    DemoFault("tls-cert", "web", "nginx", note="nginx serves a certificate that expired in 2024"),
    DemoFault(
        "config-error",
        "app",
        "checkout",
        {"variant": "upstream"},
        "checkout's catalog upstream points at a dead port",
    ),
)


class Out:
    """Plain lines (colour only on a TTY), or JSON lines with --json."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        self.tty = sys.stdout.isatty() and not as_json
        self.t0 = time.monotonic()

    def colour(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.tty else text

    def event(self, kind: str, text: str, **doc: Any) -> None:
        at = time.monotonic() - self.t0
        if self.json:
            print(json.dumps({"t_s": round(at, 2), "event": kind, "text": text, **doc}), flush=True)
            return
        colours = {"fail": "31;1", "ok": "32", "alert": "33", "approve": "35;1", "head": "1"}
        print(
            f"{at:7.1f}s  {self.colour(f'{kind:<10}', colours.get(kind, '36'))} {text}", flush=True
        )

    def text(self, line: str) -> None:
        if not self.json:
            print(line, flush=True)


class DemoFailed(RuntimeError):
    pass


def _api(url: str, path: str, token: str, body: dict[str, Any] | None = None) -> Any:
    req = urllib.request.Request(
        f"{url}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method="POST" if body is not None else "GET",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as r:
        return json.loads(r.read())


class Load(threading.Thread):
    """Orders through nginx at a few per second for as long as the demo runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="shop-load")
        self.stop = threading.Event()
        self.requests = 0
        self.ok = 0

    def run(self) -> None:
        from chaos.lab import probes

        while not self.stop.is_set():
            stats = probes.load(rps=4, duration_s=5, concurrency=2)
            self.requests += stats.requests
            self.ok += stats.ok


class Demo:
    def __init__(self, args: argparse.Namespace, out: Out, work: Path) -> None:
        self.args = args
        self.out = out
        self.work = work
        self.seq = 0
        self.span_pos = 0
        self.rows: list[dict[str, Any]] = []

    def spans(self, trace_id: str) -> list[dict[str, Any]]:
        path = self.work / "spans.jsonl"
        if not path.exists():
            return []
        with open(path) as fh:
            fh.seek(self.span_pos)
            lines = fh.readlines()
            self.span_pos = fh.tell()
        docs = [json.loads(line) for line in lines if line.strip()]
        return [d for d in docs if d.get("trace_id") == trace_id]

    def run_fault(self, n: int, f: DemoFault, daemon: Any, chain: Any, lab: Any) -> None:
        from chaos.faults import Target, make_fault

        out = self.out
        target = f"{f.service}@{f.host}"
        out.event(
            "head",
            f"fault {n}/3: {f.category} on {target} ({f.note})",
            fault=f.category,
            target=target,
        )
        fault = make_fault(f.category, Target(f.host, f.service), f.params or None, lab)
        started = time.monotonic()
        fault.inject()
        try:
            row = self.follow(f, target, started, daemon, chain)
        finally:
            fault.cleanup()
        self.rows.append(row)
        if row["outcome"] != "recovered":
            raise DemoFailed(f"{target}: {row['outcome']}: {row.get('reason', '')}")

    def follow(
        self, f: DemoFault, target: str, started: float, daemon: Any, chain: Any
    ) -> dict[str, Any]:
        out, url = self.out, daemon.url
        alert_name = ""
        incident: dict[str, Any] | None = None
        trace_id = ""
        deadline = started + INCIDENT_TIMEOUT_S
        seen_spans: set[str] = set()
        while True:
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"{target}: no outcome within {INCIDENT_TIMEOUT_S:.0f}s "
                    f"(alert {'fired' if alert_name else 'never fired'}); see "
                    f"{self.work}/daemon.log"
                )
            if not alert_name:
                firing = chain.alerts(service=f.service, host=f.host)
                if firing:
                    labels = firing[0]["labels"]
                    alert_name = labels["alertname"]
                    out.event(
                        "alert",
                        f"{alert_name} firing (category {labels.get('category')}, "
                        f"severity {labels.get('severity')})",
                        alert=alert_name,
                    )
                elif time.monotonic() - started > ALERT_TIMEOUT_S:
                    raise DemoFailed(f"{target}: no alert fired within {ALERT_TIMEOUT_S:.0f}s")
            events = _api(url, f"/events?after={self.seq}", OPERATOR_TOKEN)
            self.seq = events["last_seq"]
            for e in events["events"]:
                if e["target"] != target:
                    continue
                if incident is None and e["to"] == "received":
                    incident = _api(url, f"/incidents/{e['incident_id']}", OPERATOR_TOKEN)
                    trace_id = incident["trace_id"]
                    out.event(
                        "webhook",
                        f"accepted: incident {e['incident_id'][:8]} (trace {trace_id})",
                        incident=e["incident_id"],
                    )
                if incident is None or e["incident_id"] != incident["id"]:
                    continue
                out.event(
                    "state",
                    f"{e['from'] or '(admit)'} -> {e['to']}  {e['reason']}",
                    incident=incident["id"],
                    to=e["to"],
                )
                if e["to"] == "awaiting_approval":
                    self.approve(url, incident["id"])
            if trace_id:
                for s in self.spans(trace_id):
                    if s["span_id"] in seen_spans or s["name"] in ("remediate", "approval"):
                        continue
                    seen_spans.add(s["span_id"])
                    out.event(
                        "span",
                        f"{s['name']} ({s['duration_ms']:.0f} ms)",
                        span=s["name"],
                        duration_ms=s["duration_ms"],
                    )
            if incident is not None:
                doc = _api(url, f"/incidents/{incident['id']}", OPERATOR_TOKEN)
                if doc["terminal"]:
                    return self.finish(f, target, doc, chain, alert_name, started)
            time.sleep(0.3)

    def approve(self, url: str, incident_id: str) -> None:
        pending = [
            p
            for p in _api(url, "/approvals", OPERATOR_TOKEN)["pending"]
            if p["incident_id"] == incident_id
        ]
        if not pending:
            return
        p = pending[0]
        self.out.event(
            "approve",
            f"{p['risk']}-risk plan waits for a person; on-call "
            f"{self.args.approver} reviews plan sha256 {p['plan_sha256'][:16]}... and "
            "approves it",
            plan_sha256=p["plan_sha256"],
            by=self.args.approver,
        )
        answer = _api(
            url,
            f"/approvals/{incident_id}/approve",
            OPERATOR_TOKEN,
            {"by": self.args.approver, "plan_sha256": p["plan_sha256"]},
        )
        self.out.event("approve", f"{answer['decision']} by {answer['by']}", decision=answer)

    def finish(
        self,
        f: DemoFault,
        target: str,
        doc: dict[str, Any],
        chain: Any,
        alert: str,
        started: float,
    ) -> dict[str, Any]:
        out = self.out
        outcome = doc.get("outcome") or {}
        model = outcome.get("model")
        tokens = outcome.get("tokens", {})
        for a in outcome.get("attempts", []):
            g = a["guard"]
            out.event(
                "plan",
                f"attempt {a['attempt']}: planner {outcome.get('planner')}"
                + (f" {model['name']} v{model['version']}" if model else "")
                + f", {tokens.get('prompt', 0)}+{tokens.get('completion', 0)} tokens",
                attempt=a["attempt"],
            )
            out.event(
                "guard",
                f"{'allowed' if g['allowed'] else 'REFUSED'}, risk {g['risk']}"
                + (", needs approval" if g.get("needs_approval") else ""),
                guard=g,
            )
            if a.get("check_diff"):
                out.event(
                    "check", f"--check --diff: {len(a['check_diff'].splitlines())} diff line(s)"
                )
            if a.get("approval"):
                ap = a["approval"]
                out.event("approve", f"recorded: {ap['decision']} by {ap.get('by')}")
            for t in a.get("tasks", []):
                res = "FAILED" if t["failed"] else "changed" if t["changed"] else "ok"
                out.event("task", f"{t['host']}: {t['task']} -> {res} ({t['duration_ms']:.0f} ms)")
            v = a.get("verification")
            if v is not None:
                out.event(
                    "verify",
                    "passed"
                    if v["passed"]
                    else "FAILED: "
                    + "; ".join(
                        f"{c['name']}: {c.get('detail', '')}"
                        for c in v["checks"]
                        if not c["passed"]
                    ),
                )
        if outcome.get("undo"):
            out.event("undo", json.dumps(outcome["undo"])[:300])
        kind = "ok" if doc["state"] == "recovered" else "fail"
        ttr = outcome.get("timings", {}).get("time_to_recover_s")
        out.event(kind, f"{doc['state']}: {doc['reason']}", outcome=doc["state"])
        resolved = False
        if doc["state"] == "recovered":
            deadline = time.monotonic() + RESOLVE_TIMEOUT_S
            while time.monotonic() < deadline:
                if not chain.alerts(service=f.service, host=f.host) and not chain.am_alerts(
                    service=f.service, host=f.host
                ):
                    resolved = True
                    out.event("alert", f"{alert} resolved (Prometheus and Alertmanager)")
                    break
                time.sleep(0.5)
            if not resolved:
                raise DemoFailed(
                    f"{target}: recovered, but {alert} did not resolve within "
                    f"{RESOLVE_TIMEOUT_S:.0f}s"
                )
        return {
            "incident": doc["id"],
            "fault": f.category,
            "target": target,
            "alert": alert,
            "attempts": len(outcome.get("attempts", [])),
            "outcome": doc["state"],
            "reason": doc["reason"],
            "time_to_recover_s": ttr,
            "fault_to_resolved_s": round(time.monotonic() - started, 1),
            "approved_by": next(
                (a["approval"].get("by") for a in outcome.get("attempts", []) if a.get("approval")),
                None,
            ),
            "trace_id": doc["trace_id"],
        }

    def summary(self, topics: dict[str, str]) -> None:
        out = self.out
        if out.json:
            print(
                json.dumps(
                    {
                        "event": "summary",
                        "incidents": self.rows,
                        "outcomes_topic": topics["outcomes_topic"],
                        "spans_file": str(self.work / "spans.jsonl"),
                        "journal": str(self.work / "state" / "journal.sqlite3"),
                    }
                )
            )
            return
        out.text("")
        header = ("INCIDENT", "FAULT", "TARGET", "ATTEMPTS", "TTR", "OUTCOME", "APPROVED BY")
        rows = [
            (
                r["incident"][:8],
                r["fault"],
                r["target"],
                str(r["attempts"]),
                f"{r['time_to_recover_s']:.1f}s" if r["time_to_recover_s"] else "-",
                r["outcome"],
                r["approved_by"] or "-",
            )
            for r in self.rows
        ]
        widths = [max(len(x[i]) for x in (header, *rows)) for i in range(len(header))]
        for r in (header, *rows):
            out.text("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        out.text("")
        out.text(f"outcomes  Kafka topic {topics['outcomes_topic']} (one record per incident)")
        out.text(f"traces    {self.work / 'spans.jsonl'} (jq 'select(.trace_id==\"ID\")')")
        out.text(f"journal   {self.work / 'state'}; the daemon's log {self.work / 'daemon.log'}")


def run(args: argparse.Namespace, out: Out, status: dict[str, Any], work: Path) -> int:
    from chaos.lab import provision
    from chaos.lab.hosts import Lab
    from remed_stack.alerting_chain import AlertingChain
    from remed_stack.kafka import create_private_topics
    from remed_stack.lab_daemon import LabDaemon, LabDaemonSettings, write_config

    bootstrap = status["kafka"]["bootstrap"]
    topics = asyncio.run(create_private_topics(bootstrap, "demo"))
    settings = LabDaemonSettings(
        bootstrap,
        topics,
        WEBHOOK_TOKEN,
        OPERATOR_TOKEN,
        planner=args.planner,
        triton_url=str(status["triton"].get("http", "")).removeprefix("http://"),
    )
    config = write_config(work, settings)
    lab = Lab.from_paths()
    demo = Demo(args, out, work)
    # spans reach the file within a fraction of a second, for the live timeline
    os.environ.setdefault("OTEL_BSP_SCHEDULE_DELAY", "200")
    with lab.exclusive("make demo"):
        out.event("setup", "shop to its baseline")
        provision.ensure(lab, bootstrap_db=False)
        with (
            LabDaemon(config, work) as daemon,
            AlertingChain(work / "alerting", daemon.port, WEBHOOK_TOKEN) as chain,
        ):
            out.event(
                "setup",
                f"remed serve {daemon.url} (planner {args.planner}, ansible "
                f"mode); Prometheus {chain.prometheus_url}; Alertmanager "
                f"{chain.alertmanager_url}",
            )
            deadline = time.monotonic() + 30
            while not all(chain.probe_ok(s) for s in ("cart", "nginx", "checkout")):
                if time.monotonic() > deadline:
                    raise DemoFailed("Prometheus does not see the shop healthy after 30 s")
                time.sleep(0.5)
            load = Load()
            load.start()
            out.event("setup", "shop healthy and under load (orders through nginx)")
            try:
                for n, f in enumerate(FAULTS, 1):
                    demo.run_fault(n, f, daemon, chain, lab)
            finally:
                load.stop.set()
    demo.summary(topics)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m remed_stack.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--planner", choices=("oracle", "triton"), default=DEFAULT_PLANNER)
    parser.add_argument(
        "--approver",
        default="oncall-alice",
        help="the on-call person who approves the high-risk plan",
    )
    parser.add_argument("--json", action="store_true", help="JSON lines instead of text")
    args = parser.parse_args(argv)
    out = Out(args.json)
    paths = StackPaths.from_env()
    before = stack.status(paths)
    already = {
        "kafka": before["kafka"]["ok"],
        "triton": before["triton"]["ok"],
        "lab": bool(before.get("hosts")) and all(h["ok"] for h in before["hosts"]),
    }
    to_start = [name for name in stack.COMPONENT_NAMES if not already[name]]
    if args.planner == "oracle" and "triton" in to_start:
        to_start.remove("triton")  # the oracle needs no model
    out.event("setup", f"stack: starting {', '.join(to_start) or 'nothing (already up)'}")
    work = paths.run / "demo" / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        stack.up(paths, to_start)
        code = run(args, out, stack.status(paths), work)
    except DemoFailed as exc:
        out.event("fail", f"DEMO FAILED: {exc}")
        code = 1
    finally:
        if to_start:
            stack.down(paths, to_start)
    out.event(
        "ok" if code == 0 else "fail",
        f"demo {'done' if code == 0 else 'FAILED'} in {time.monotonic() - t0:.0f} s; "
        f"everything it wrote is in {work}",
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
