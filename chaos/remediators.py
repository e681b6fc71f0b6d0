"""The remediators `remed bench` compares, and ansible-runner execution of their playbooks.

- oracle: the expert playbook for the category (chaos/playbooks.py).
- rules: the naive floor (restart the alerting service).
- runbook: the per-category runbook table of an Event-Driven Ansible team
  (`chaos.playbooks.runbook_playbook`: alert labels and topology only, no probing).
- model: one plan from Triton's `remed_planner` through the daemon's own planner client
  (`remed_daemon.planner.TritonPlanner`: timeouts, retries, breaker, playbook extraction),
  with the daemon's prompt and topology facts for the target. One shot: no probes and no second
  attempt (`--remediator daemon` measures the daemon's whole loop).
- daemon: the report published on Kafka `remed.diagnoses`; the daemon's outcome awaited on
  `remed.outcomes` (the daemon runs the playbook itself).

The first three hand their playbook to `apply_guarded`, which does what the daemon does before a
plan may touch a host (`remed_daemon.guard.check_playbook` for the incident's hosts):
refused → nothing runs and the case fails with the guard's violations; high risk → a person
would have to approve it; medium → `--check --diff` first (the daemon's check run), and a check
run that fails stops the plan. The case file keeps the verdict (`remediation.guard`).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from chaos.faults import Fault
from chaos.lab.hosts import Lab
from chaos.playbooks import oracle_playbook, rules_playbook, runbook_playbook
from chaos.scenario import Scenario

if TYPE_CHECKING:
    from remed_daemon.agents.check import CheckRun
    from remed_daemon.agents.topology import ServiceFacts, Topology
    from remed_daemon.guard import GuardVerdict
    from remed_daemon.planner import Planner, PlanRequest

PLAYBOOK_TIMEOUT_S = 60
CHECK_TIMEOUT_S = 120.0  # the daemon's agents.check_timeout_s default
MODEL_TIMEOUT_S = 120.0
MODEL_MAX_TOKENS = 384
DAEMON_TIMEOUT_S = 180.0
OUTCOMES_TOPIC = "remed.outcomes"
DIAGNOSES_TOPIC = "remed.diagnoses"
LAB_SSH_USER = "remedops"
# Remediation.status of a plan that did not run (the bench counts the case as not recovered)
REJECTED, NEEDS_APPROVAL, CHECK_FAILED, NO_PLAYBOOK = (
    "rejected", "needs_approval", "check_failed", "no_playbook"
)  # fmt: skip
NOT_APPLIED = frozenset({REJECTED, NEEDS_APPROVAL, CHECK_FAILED, NO_PLAYBOOK})


@dataclass
class Remediation:
    """What a remediator did for one case (goes into the case journal)."""

    playbooks: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    completions: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "completion": 0})
    attempts: int = 0
    status: str = ""  # ansible-runner status, one of NOT_APPLIED, or the daemon's outcome status
    error: str | None = None
    outcome: dict[str, Any] | None = None
    # The guard's verdict on the (last) plan: `remed guard check --json`'s object
    guard: dict[str, Any] | None = None
    # The `--check --diff` run of a medium-risk plan: {"ok", "status", "diff", "failed"}
    check: dict[str, Any] | None = None
    # A high-risk plan the bench ran in a person's place (reference remediators only)
    approved_by: str = ""
    model_version: str = ""

    @property
    def applied(self) -> bool:
        """False when the plan was refused, needed a person, failed its check or was absent."""
        return self.status not in NOT_APPLIED


class Remediator(Protocol):
    name: str

    def remediate(self, scenario: Scenario, report: dict[str, Any], fault: Fault) -> Remediation:
        ...


def run_playbook(lab: Lab, playbook: str, result: Remediation) -> None:
    """Run one playbook against the lab inventory (host keys checked); events into `result`."""
    import ansible_runner

    venv_bin = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_CONTROL_PATH_DIR": str(lab.chaos_dir / "cp"),
        "ANSIBLE_LOCAL_TEMP": str(lab.chaos_dir / "ansible-tmp"),
    }
    data_dir = Path(tempfile.mkdtemp(prefix="bench-", dir=lab.chaos_dir))
    (data_dir / "project").mkdir()
    (data_dir / "project" / "fix.yml").write_text(playbook)

    def on_event(event: dict[str, Any]) -> bool:
        data = event.get("event_data", {})
        kind = event.get("event", "")
        if kind.startswith("runner_on_") and kind != "runner_on_start":
            res = data.get("res", {}) or {}
            result.events.append({
                "event": kind, "host": data.get("host"), "task": data.get("task"),
                "module": data.get("resolved_action") or data.get("task_action"),
                "changed": bool(res.get("changed")), "failed": kind == "runner_on_failed",
                "rc": res.get("rc"), "duration_s": data.get("duration"),
                "msg": str(res.get("msg") or res.get("stderr") or "")[:500],
            })  # fmt: skip
        return True

    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = env["PATH"]  # ansible-runner looks up ansible-playbook on our PATH
    try:
        runner = ansible_runner.run(
            private_data_dir=str(data_dir), playbook="fix.yml", inventory=str(lab.inventory),
            envvars=env, quiet=True, event_handler=on_event, timeout=PLAYBOOK_TIMEOUT_S,
        )  # fmt: skip
        result.status = str(runner.status)
        if runner.status != "successful":
            result.error = f"ansible-runner {runner.status} (rc {runner.rc})"
            if not result.events:
                result.error += ": " + runner.stdout.read()[-800:]
    finally:
        os.environ["PATH"] = old_path
        shutil.rmtree(data_dir, ignore_errors=True)


def _play_host(scenario: Scenario) -> str:
    """Where the fix runs: the target's host, or for dependency-down its store's."""
    if scenario.category == "dependency-down":
        from chaos.lab import topology as topo

        store = topo.store_of(scenario.target.service)
        if store is not None:
            return store.host
    return scenario.target.host


def target_facts(scenario: Scenario, topology: Topology | None = None) -> ServiceFacts:
    """The target's facts as the daemon sees them (its topology; the lab's by default): the
    planner prompt's facts, and the incident's hosts the guard allows plays on."""
    from chaos.lab.topology import HOST_ADDRESSES, daemon_topology
    from remed_daemon.agents import topology as topo

    t = scenario.target
    known = daemon_topology() if topology is None else topology
    return topo.facts_for(known, t.service, t.host, HOST_ADDRESSES.get(t.host, t.host))


def _guard_note(verdict: GuardVerdict) -> str:
    parts = [f"{v.rule} ({v.task}): {v.detail}" for v in verdict.violations[:10]]
    return "the guard refused the plan, nothing ran: " + "; ".join(parts)


def _check_run(lab: Lab, playbook: str, hosts: list[str], extravars: dict[str, str]) -> CheckRun:
    """The daemon's `--check --diff` run (remed_daemon.agents.check), on the lab."""
    from opentelemetry import trace

    from remed_daemon.agents.check import check_run
    from remed_daemon.agents.execute import RunnerSettings

    settings = RunnerSettings(
        inventory=str(lab.inventory), ssh_private_key=str(lab.key), ssh_user=LAB_SSH_USER,
        known_hosts=str(lab.known_hosts), timeout_s=CHECK_TIMEOUT_S,
    )  # fmt: skip
    run_dir = Path(tempfile.mkdtemp(prefix="check-", dir=lab.chaos_dir))
    try:
        return asyncio.run(check_run(
            settings, playbook, run_dir=run_dir, hosts=hosts, extravars=extravars,
            tracer=trace.get_tracer("remed.bench"), cancel=threading.Event(),
        ))  # fmt: skip
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def apply_guarded(
    lab: Lab, playbook: str, facts: ServiceFacts, result: Remediation, *,
    approve_high_risk: str = "",
) -> None:  # fmt: skip
    """Judge `playbook` with the daemon's guard for the incident's hosts and run it only where
    the daemon would run it on its own. `approve_high_risk` names who stands in for the person
    a high-risk plan waits for (the reference remediators: the expert approves their own plan);
    empty, a high-risk plan is not run and the case is not auto-remediated."""
    from remed_daemon.guard import check_playbook

    hosts = facts.incident_hosts
    verdict = check_playbook(playbook, hosts)
    result.guard = verdict.to_json()
    if not verdict.allowed:
        result.status = REJECTED
        result.error = _guard_note(verdict)[:2000]
        return
    high = verdict.needs_approval or verdict.risk == "high"
    if high and not approve_high_risk:
        why = "; ".join(f"{r.rule} ({r.task}): {r.detail}" for r in verdict.reasons[:10])
        result.status = NEEDS_APPROVAL
        result.error = f"high-risk plan needs a person's approval; not run: {why}"[:2000]
        return
    if high or verdict.check_first:
        extravars = {"remed_host": facts.host, "remed_service": facts.name}
        check = _check_run(lab, playbook, hosts, extravars)
        failed = [t for t in check.tasks if t.failed or t.unreachable]
        result.check = {
            "ok": check.ok, "status": check.status, "diff": check.diff[:20_000],
            "failed": [{"host": t.host, "task": t.task, "msg": t.msg} for t in failed],
        }  # fmt: skip
        if not check.ok:
            result.status = CHECK_FAILED
            result.error = check.evidence()[:2000]
            return
    if high:
        result.approved_by = approve_high_risk
    run_playbook(lab, playbook, result)


class OracleRemediator:
    name = "oracle"

    def __init__(self, lab: Lab, *, approve_high_risk: str = "bench (the expert's own plan)"):
        self.lab = lab
        self.approve_high_risk = approve_high_risk

    def remediate(self, scenario: Scenario, report: dict[str, Any], fault: Fault) -> Remediation:
        result = Remediation(attempts=1)
        playbook = oracle_playbook(
            scenario.category, _play_host(scenario), scenario.target.service, fault.params()
        )
        result.playbooks.append(playbook)
        apply_guarded(self.lab, playbook, target_facts(scenario), result,
                      approve_high_risk=self.approve_high_risk)  # fmt: skip
        return result


class RulesRemediator:
    name = "rules"

    def __init__(self, lab: Lab, *, approve_high_risk: str = "bench (the runbook's own plan)"):
        self.lab = lab
        self.approve_high_risk = approve_high_risk

    def remediate(self, scenario: Scenario, report: dict[str, Any], fault: Fault) -> Remediation:
        result = Remediation(attempts=1)
        playbook = rules_playbook(
            scenario.category, scenario.target.host, scenario.target.service
        )
        result.playbooks.append(playbook)
        apply_guarded(self.lab, playbook, target_facts(scenario), result,
                      approve_high_risk=self.approve_high_risk)  # fmt: skip
        return result


class RunbookRemediator:
    """The per-category runbook: what the alert's labels and the topology say, nothing read
    from the hosts. Its plays may target the stores the service depends on (as the daemon's
    incident hosts allow)."""

    name = "runbook"

    def __init__(self, lab: Lab, *, approve_high_risk: str = "bench (the runbook's own plan)"):
        self.lab = lab
        self.approve_high_risk = approve_high_risk

    def remediate(self, scenario: Scenario, report: dict[str, Any], fault: Fault) -> Remediation:
        result = Remediation(attempts=1)
        target = report.get("target") or {}
        category = str(report.get("category") or scenario.category)
        playbook = runbook_playbook(
            category, str(target.get("host") or scenario.target.host),
            str(target.get("service") or scenario.target.service),
        )  # fmt: skip
        result.playbooks.append(playbook)
        apply_guarded(self.lab, playbook, target_facts(scenario), result,
                      approve_high_risk=self.approve_high_risk)  # fmt: skip
        return result


class ModelRemediator:
    """One plan from `remed_planner` through the daemon's `TritonPlanner`, guarded and run as
    the daemon would: a plan the guard refuses fails the case with its violations, and a
    high-risk plan is not auto-remediated (nobody approves for the model)."""

    name = "model"

    def __init__(
        self, lab: Lab, triton_http: str, *, max_tokens: int = MODEL_MAX_TOKENS,
        timeout_s: float = MODEL_TIMEOUT_S, planner: Planner | None = None,
    ) -> None:  # fmt: skip
        """`planner`: another of the daemon's planners in Triton's place (tests use the
        daemon's file-backed OraclePlanner to stand in for a model that writes a given plan)."""
        from chaos.lab.topology import daemon_topology
        from remed_daemon.planner import TritonPlanner, TritonSettings

        self.lab = lab
        self.planner: Planner = planner or TritonPlanner(
            TritonSettings(url=triton_http, timeout_s=timeout_s, max_tokens=max_tokens)
        )
        self.topology = daemon_topology()

    @staticmethod
    def request(
        scenario: Scenario, report: dict[str, Any], topology: Topology | None = None
    ) -> PlanRequest:
        """The daemon's first plan request for this report, without probe output."""
        from remed_daemon.planner import PlanRequest

        facts = target_facts(scenario, topology)
        return PlanRequest(
            report=report, service=facts.name, host=facts.host,
            category=str(report.get("category") or ""), facts=facts.describe(),
        )  # fmt: skip

    @staticmethod
    def prompt(scenario: Scenario, report: dict[str, Any]) -> str:
        return ModelRemediator.request(scenario, report).prompt()

    def remediate(self, scenario: Scenario, report: dict[str, Any], fault: Fault) -> Remediation:
        from remed_daemon.errors import PlannerUnavailable

        result = Remediation(attempts=1)
        request = self.request(scenario, report, self.topology)
        result.prompts.append(request.prompt())
        try:
            draft = asyncio.run(self.planner.plan(request))
        except PlannerUnavailable as exc:
            result.error = f"triton: {exc}"[:500]
            return result
        result.completions.append(draft.completion)
        result.tokens = {"prompt": draft.prompt_tokens, "completion": draft.completion_tokens}
        result.model_version = draft.model_version
        if not draft.playbook:
            result.status = NO_PLAYBOOK
            result.error = "no playbook could be extracted from the planner's answer"
            return result
        result.playbooks.append(draft.playbook)
        apply_guarded(self.lab, draft.playbook, target_facts(scenario, self.topology), result)
        return result


class DaemonRemediator:
    """Publish the report to Kafka; wait for the daemon's outcome for the same report_id."""

    name = "daemon"

    def __init__(
        self, bootstrap: str, planner: str | None = None, timeout_s: float = DAEMON_TIMEOUT_S,
        *, diagnoses_topic: str = DIAGNOSES_TOPIC, outcomes_topic: str = OUTCOMES_TOPIC,
    ) -> None:  # fmt: skip
        self.bootstrap = bootstrap
        self.planner = planner
        self.timeout_s = timeout_s
        self.diagnoses_topic = diagnoses_topic
        self.outcomes_topic = outcomes_topic

    async def _roundtrip(self, report: dict[str, Any]) -> dict[str, Any] | None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        from remed_daemon.schemas import validate

        validate("diagnosis-report", report)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        await producer.start()
        try:
            # Assign every partition and seek to the end before publishing, so the outcome for
            # this report cannot be missed and no older outcome is read.
            partitions = await producer.partitions_for(self.outcomes_topic)
            topic_partitions = [TopicPartition(self.outcomes_topic, p) for p in partitions]
            consumer.assign(topic_partitions)
            await consumer.seek_to_end(*topic_partitions)
            key = f"{report['target']['service']}@{report['target']['host']}"
            # The bench starts the trace, as an upstream detector would: the daemon's spans for
            # this incident, and its outcome, carry this trace id.
            traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
            await producer.send_and_wait(
                self.diagnoses_topic, json.dumps(report).encode(), key=key.encode(),
                headers=[("traceparent", traceparent.encode())],
            )  # fmt: skip
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        try:
                            outcome = json.loads(record.value or b"{}")
                        except ValueError:
                            continue
                        if outcome.get("report_id") == report["report_id"]:
                            return dict(outcome)
            return None
        finally:
            await producer.stop()
            await consumer.stop()

    def remediate(self, scenario: Scenario, report: dict[str, Any], fault: Fault) -> Remediation:
        result = Remediation()
        report = dict(report, report_id=f"{report['report_id']}-{uuid.uuid4().hex[:8]}")
        if self.planner:
            report["labels"] = {"remed_planner": self.planner}
        try:
            outcome = asyncio.run(self._roundtrip(report))
        except Exception as exc:
            result.error = f"kafka: {type(exc).__name__}: {exc}"[:500]
            return result
        if outcome is None:
            result.error = (
                f"no outcome on remed.outcomes within {self.timeout_s}s: is `remed serve` "
                "running with remediation.mode = 'ansible' on this broker?"
            )
            return result
        result.outcome = outcome
        result.status = str(outcome.get("status", ""))
        attempts = outcome.get("attempts", [])
        result.attempts = len(attempts)
        for attempt in attempts:
            if attempt.get("playbook"):
                result.playbooks.append(str(attempt["playbook"]))
            if isinstance(attempt.get("guard"), dict):
                result.guard = dict(attempt["guard"])
            tokens = attempt.get("tokens") or {}
            result.tokens["prompt"] += int(tokens.get("prompt", 0) or 0)
            result.tokens["completion"] += int(tokens.get("completion", 0) or 0)
        return result


def make_remediator(
    name: str, lab: Lab, planner: str | None = None, timeout_s: float = DAEMON_TIMEOUT_S
) -> Remediator:
    from remed_stack.paths import StackPaths
    from remed_stack.stack import make_component

    if name == "oracle":
        return OracleRemediator(lab)
    if name == "rules":
        return RulesRemediator(lab)
    if name == "runbook":
        return RunbookRemediator(lab)
    paths = StackPaths.from_env()
    if name == "model":
        status = make_component("triton", paths).status()
        if not status.get("ok"):
            raise RuntimeError("Triton is not up: run `remed stack up --only triton`")
        return ModelRemediator(lab, str(status["http"]))
    if name == "daemon":
        status = make_component("kafka", paths).status()
        if not status.get("ok"):
            raise RuntimeError("Kafka is not up: run `remed stack up --only kafka`")
        return DaemonRemediator(str(status["bootstrap"]), planner, timeout_s)
    raise ValueError(f"unknown remediator {name!r}: oracle, rules, runbook, model or daemon")
