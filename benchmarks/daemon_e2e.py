"""End to end through the daemon: `remed bench --remediator daemon` with its own `remed serve`.

Against a running stack (`remed stack up`: Kafka and the lab; Triton too for `--planner triton`)
this starts a daemon on private Kafka topics with the ThinkRemed engine, runs a chaos suite by
publishing each diagnosis and waiting for its outcome, and stops the daemon. With `--approve-as
NAME` it stands in for the on-call person: every high-risk plan waiting in `awaiting_approval`
is approved through the daemon's approval endpoint (its own token), and the approvals are logged
to DIR/approvals.log and recorded in the outcomes. Without it, high-risk plans expire rejected.

Afterwards it reads the daemon's span file and checks, for every incident, that each task the
outcome says was executed has a span under that incident's trace (host, task, module, changed,
failed, rc, duration), and prints one incident's trace as a tree.

    python benchmarks/daemon_e2e.py --suite all --planner oracle --approve-as bench-oncall \
        --out /tmp/daemon-all
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chaos.bench import run as run_bench  # noqa: E402
from chaos.lab.hosts import Lab  # noqa: E402
from chaos.lab.topology import write_topology_file  # noqa: E402
from chaos.playbooks import write_oracle_dir  # noqa: E402
from chaos.remediators import DaemonRemediator  # noqa: E402
from chaos.scenario import load_suite  # noqa: E402
from remed_daemon.agents.approvals import request_decision  # noqa: E402
from remed_stack.kafka import create_private_topics  # noqa: E402
from remed_stack.paths import StackPaths  # noqa: E402
from remed_stack.stack import make_component  # noqa: E402

APPROVAL_TOKEN = "daemon-e2e-approval-token"  # a private daemon on 127.0.0.1, for this run only
READY_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 5.0


def daemon_config(out: Path, bootstrap: str, topics: dict[str, str], planner: str) -> Path:
    paths = StackPaths.from_env()
    lab = paths.run / "lab"
    triton = make_component("triton", paths).status()
    triton_url = str(triton.get("http", "")).removeprefix("http://")
    topic_lines = "\n".join(f'{key} = "{name}"' for key, name in topics.items())
    # The oracle planner reads the lab's expert playbooks from a directory, like any user's.
    write_oracle_dir(out / "oracle")
    text = f"""\
state_dir = "{out / "state"}"
[kafka]
bootstrap = "{bootstrap}"
group_id = "remed-daemon-e2e-{os.getpid()}"
{topic_lines}
[http]
port = 0
bearer_token = "daemon-e2e-webhook-token"
[scheduler]
max_concurrency = 1
per_target_budget_per_hour = 1000
breaker_failures = 1000
[remediation]
mode = "ansible"
planner = "{planner}"
triton_url = "{triton_url or "127.0.0.1:8000"}"
inventory = "{lab / "inventory.ini"}"
ssh_private_key = "{lab / "ssh" / "id_ed25519"}"
ssh_user = "remedops"
known_hosts = "{lab / "known_hosts"}"
playbook_timeout_s = 120
[agents]
approval_token = "{APPROVAL_TOKEN}"
oracle_playbook_dir = "{out / "oracle"}"
topology_file = "{write_topology_file(out / "topology.json")}"
approval_timeout_s = 150
planner_from_label = true
verify_window_s = 20
verify_stable_s = 2
[telemetry]
log_format = "json"
spans_file = "{out / "spans.jsonl"}"
"""
    path = out / "remed.toml"
    path.write_text(text)
    return path


def start_daemon(config: Path, out: Path) -> tuple[subprocess.Popen[bytes], str]:
    log = (out / "daemon.log").open("wb")
    port_file = out / "state" / "http.port"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "remed_cli", "serve", "--config", str(config)],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"remed serve exited with {proc.returncode}: see {out}/daemon.log")
        if port_file.exists() and port_file.read_text().strip():
            url = f"http://127.0.0.1:{port_file.read_text().strip()}"
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=HTTP_TIMEOUT_S) as resp:
                    if resp.status == 200:
                        return proc, url
            except OSError:
                pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"remed serve not ready within {READY_TIMEOUT_S}s: see {out}/daemon.log")


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class OnCall(threading.Thread):
    """Approves every pending plan it sees, as the named person, and logs each approval."""

    def __init__(self, url: str, who: str, log: Path) -> None:
        super().__init__(daemon=True, name="on-call")
        self.url, self.who, self.log = url, who, log
        self.stopping = threading.Event()
        self.approved = 0

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            try:
                req = urllib.request.Request(
                    f"{self.url}/approvals", headers={"Authorization": f"Bearer {APPROVAL_TOKEN}"}
                )
                with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
                    pending = json.loads(resp.read()).get("pending", [])
            except (OSError, ValueError):
                continue
            for item in pending:
                status, body = request_decision(
                    self.url, APPROVAL_TOKEN, item["incident_id"], True, self.who,
                    item.get("plan_sha256", ""),
                )  # fmt: skip
                self.approved += status == 200
                with self.log.open("a") as f:
                    f.write(f"{time.strftime('%H:%M:%S')} {item['incident_id']} {item.get('risk')} "
                            f"{status} {json.dumps(body)[:200]}\n")  # fmt: skip


def check_traces(out: Path) -> dict[str, Any]:
    """Every executed task of every outcome has its span, with host and task, in its trace."""
    spans = [json.loads(line) for line in (out / "spans.jsonl").read_text().splitlines()]
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_trace.setdefault(span["trace_id"], []).append(span)
    incidents = missing = executed = 0
    best: tuple[int, str, str] = (-1, "", "")
    for case in sorted((out / "bench" / "cases").glob("*.json")):
        outcome = (json.loads(case.read_text()).get("remediation") or {}).get("outcome") or {}
        trace_id = str(outcome.get("trace_id") or _trace_of(outcome))
        if not trace_id:
            continue
        incidents += 1
        task_spans = {
            (s["attributes"].get("remed.host"), s["attributes"].get("remed.task"))
            for s in by_trace.get(trace_id, [])
            if s["name"].startswith(("task ", "check task "))
        }
        for attempt in outcome.get("attempts", []):
            for task in attempt.get("tasks", []):
                executed += 1
                missing += (task.get("host"), task.get("task")) not in task_spans
        hosts = {h for h, _ in task_spans}
        score = len(task_spans) + 100 * len(hosts)
        if score > best[0]:
            best = (score, trace_id, case.stem)
    return {
        "incidents": incidents, "executed_tasks": executed, "tasks_without_span": missing,
        "example_trace": best[1], "example_case": best[2], "by_trace": by_trace,
    }  # fmt: skip


def _trace_of(outcome: dict[str, Any]) -> str:
    parts = str(outcome.get("traceparent", "")).split("-")
    return parts[1] if len(parts) == 4 else ""


def print_tree(spans: list[dict[str, Any]]) -> None:
    children: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        children.setdefault(span["parent_id"], []).append(span)
    ids = {s["span_id"] for s in spans}

    def show(span: dict[str, Any], depth: int) -> None:
        a = span["attributes"]
        detail = " ".join(
            f"{k.removeprefix('remed.')}={a[k]}"
            for k in ("remed.host", "remed.task", "remed.module", "remed.changed",
                      "remed.failed", "remed.rc", "remed.attempt")
            if k in a
        )  # fmt: skip
        print(f"{'  ' * depth}{span['name']} [{span['duration_ms']:.0f} ms] {detail}")
        for child in sorted(children.get(span["span_id"], []), key=lambda s: s["start_unix_ns"]):
            show(child, depth + 1)

    for root in sorted(
        (s for s in spans if s["parent_id"] not in ids), key=lambda s: s["start_unix_ns"]
    ):
        show(root, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="all")
    parser.add_argument("--planner", default="oracle", choices=("oracle", "triton", "static"))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--approve-as", default="", help="approve high-risk plans as this person")
    parser.add_argument("--category", help="only these categories (comma-separated)")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--timeout-s", type=float, default=240.0)
    parser.add_argument("--variants", action="store_true", help="as remed bench --variants")
    parser.add_argument("--blind", action="store_true", help="as remed bench --blind")
    args = parser.parse_args(argv)

    paths = StackPaths.from_env()
    kafka = make_component("kafka", paths).status()
    if not kafka.get("ok"):
        print("daemon_e2e: Kafka is not up: run `remed stack up`", file=sys.stderr)
        return 2
    lab = Lab.from_paths()
    if not lab.inventory.exists():
        print("daemon_e2e: lab hosts are not up: run `remed stack up`", file=sys.stderr)
        return 2
    scenarios = load_suite(args.suite)
    if args.category:
        scenarios = [s for s in scenarios if s.category in args.category.split(",")]
    scenarios = scenarios[: args.limit] if args.limit else scenarios

    out: Path = args.out.resolve()
    (out / "state").mkdir(parents=True, exist_ok=True)
    bootstrap = str(kafka["bootstrap"])
    topics = asyncio.run(create_private_topics(bootstrap, "e2e"))
    proc, url = start_daemon(daemon_config(out, bootstrap, topics, args.planner), out)
    oncall = OnCall(url, args.approve_as, out / "approvals.log") if args.approve_as else None
    if oncall:
        oncall.start()
    try:
        remediator = DaemonRemediator(
            bootstrap, args.planner, args.timeout_s,
            diagnoses_topic=topics["diagnoses_topic"], outcomes_topic=topics["outcomes_topic"],
        )  # fmt: skip
        summary = run_bench(
            scenarios, remediator, out / "bench", suite=args.suite, lab=lab,
            variants=args.variants, blind=args.blind,
        )  # fmt: skip
    finally:
        if oncall:
            oncall.stopping.set()
        stop_daemon(proc)
    print((out / "bench" / "summary.md").read_text())
    traces = check_traces(out)
    if traces["example_trace"]:
        print(f"trace of {traces['example_case']} ({traces['example_trace']}):")
        print_tree(traces["by_trace"][traces["example_trace"]])
    result = {
        "suite": args.suite, "planner": args.planner, "variants": args.variants,
        "blind": args.blind, "success_rate": summary["success_rate"],
        "recovered": summary["recovered"], "injected": summary["injected"],
        "approvals": oncall.approved if oncall else 0, "incidents_traced": traces["incidents"],
        "executed_tasks": traces["executed_tasks"],
        "tasks_without_span": traces["tasks_without_span"],
    }  # fmt: skip
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
