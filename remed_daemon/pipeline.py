"""The plain remediation pipeline: plan → execute → verify, behind a small `Remediator` protocol.

The agents issue (ThinkRemed) replaces the body with probe/plan/guard/check/apply/verify/
reflect/undo; the scheduler only needs `Remediator.remediate(incident, ctx)`. The one rule a
remediator must keep: call `await ctx.enter(State.EXECUTING)` *before* anything can change a host
(the journal write is what makes a crash never run a playbook twice), and
`await ctx.enter(State.VERIFYING)` before verifying.

Remediators here:
- `ShadowRemediator`: plans and applies nothing (outcome `shadow`).
- `AnsibleRemediator`: plans, applies the playbook with ansible-runner in a worker thread (so
  ansible-runner's SIGTERM handler never replaces the daemon's, and `cancel_callback` stops it),
  then verifies with a read-only command over asyncssh (host keys verified).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog
from opentelemetry import trace

from remed_daemon.config import RemediationConfig
from remed_daemon.errors import IntakeRejected, PlannerUnavailable
from remed_daemon.journal import Incident, Journal, State
from remed_daemon.outcomes import Attempt, RemediationResult, TaskResult, report_id_of

log = structlog.get_logger("remed.pipeline")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_YAML_BLOCK = re.compile(r"```(?:ya?ml)?\s*\n(.*?)```", re.DOTALL)


@dataclass
class RemediationContext:
    """What a remediator gets besides the incident: the journal hook, cancellation, tracing."""

    journal: Journal
    incident: Incident
    tracer: trace.Tracer
    run_dir: Path
    # Thread-safe: ansible-runner's cancel_callback polls it from its worker thread.
    cancel: threading.Event = field(default_factory=threading.Event)

    async def enter(self, state: State, reason: str = "") -> None:
        """Durably move the incident on; raises IllegalTransition if it was cancelled."""
        self.incident = await self.journal.transition(self.incident.id, state, reason)


class Remediator(Protocol):
    async def remediate(self, incident: Incident, ctx: RemediationContext) -> RemediationResult: ...


@dataclass(frozen=True)
class Plan:
    playbook: str
    planner: str
    model_name: str = ""
    model_version: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def result(self, status: State, reason: str, *attempts: Attempt) -> RemediationResult:
        return RemediationResult(
            status=status,
            reason=reason,
            attempts=attempts or (Attempt(playbook=self.playbook),),
            planner=self.planner,
            model_name=self.model_name,
            model_version=self.model_version,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
        )


class Planner(Protocol):
    async def plan(self, incident: Incident) -> Plan: ...


def target_of(report: Mapping[str, Any]) -> tuple[str, str]:
    """(service, host) of a report, checked to be plain names (they go into a playbook)."""
    target = report.get("target")
    if not isinstance(target, Mapping):
        raise IntakeRejected("report has no 'target' object with 'service' and 'host'")
    service, host = target.get("service"), target.get("host")
    for name, value in (("service", service), ("host", host)):
        if not isinstance(value, str) or not _NAME.match(value):
            raise IntakeRejected(
                f"target.{name} must be a name of letters, digits and _.:- "
                f"(at most 128 characters), got {value!r}"
            )
    return str(service), str(host)


_RESTART = """\
- name: remed restart of {service_q} on {host_q}
  hosts: {host_j}
  become: true
  gather_facts: false
  tasks:
    - name: restart {service_q}
      ansible.builtin.service:
        name: {service_j}
        state: restarted
"""


class StaticPlanner:
    """Returns one fixed playbook (the configured file, or a restart of the target service)."""

    def __init__(self, cfg: RemediationConfig) -> None:
        # A configured playbook is used as is; it reads the target from the extra vars
        # `remed_host`, `remed_service`, `remed_incident_id` and `remed_report_id`.
        self.fixed = Path(cfg.static_playbook).read_text() if cfg.static_playbook else ""

    async def plan(self, incident: Incident) -> Plan:
        service, host = target_of(incident.report)
        if self.fixed:
            return Plan(playbook=self.fixed, planner="static")
        # json.dumps quotes are valid YAML: names cannot break out of their scalar.
        playbook = _RESTART.format(
            service_q=service,
            host_q=host,
            service_j=json.dumps(service),
            host_j=json.dumps(host),
        )
        return Plan(playbook=playbook, planner="static")


class TritonPlanner:
    """Asks Triton's `remed_planner` for a playbook (tritonclient's asyncio HTTP client)."""

    def __init__(self, cfg: RemediationConfig) -> None:
        self.cfg = cfg

    async def plan(self, incident: Incident) -> Plan:
        import numpy as np
        import tritonclient.http.aio as httpclient
        from tritonclient.utils import InferenceServerException

        from remed_daemon.agents.prompt import build_plan_prompt

        prompt = build_plan_prompt(incident.report)
        # tritonclient wants host:port; accept a URL too (what `remed stack status` prints)
        url = self.cfg.triton_url.removeprefix("http://").removeprefix("https://")
        client = httpclient.InferenceServerClient(url, conn_timeout=self.cfg.planner_timeout_s)
        try:
            # the model takes one prompt per request: dims [1], max_batch_size 0
            text = httpclient.InferInput("text_input", [1], "BYTES")
            text.set_data_from_numpy(np.array([prompt.encode()], dtype=object))
            max_tokens = httpclient.InferInput("max_tokens", [1], "INT32")
            max_tokens.set_data_from_numpy(np.array([self.cfg.planner_max_tokens], dtype=np.int32))
            async with asyncio.timeout(self.cfg.planner_timeout_s):
                result = await client.infer(self.cfg.triton_model, [text, max_tokens])
            meta = await client.get_model_metadata(self.cfg.triton_model)
        except (InferenceServerException, OSError, TimeoutError) as exc:
            raise PlannerUnavailable(
                f"Triton at {self.cfg.triton_url} did not plan: {exc}; will retry"
            ) from exc
        finally:
            await client.close()
        out = result.as_numpy("text_output")
        completion = out.reshape(-1)[0] if out is not None else b""
        if isinstance(completion, bytes):
            completion = completion.decode("utf-8", "replace")
        match = _YAML_BLOCK.search(str(completion))
        playbook = match.group(1) if match else str(completion)
        versions = meta.get("versions") or [""]
        return Plan(
            playbook=playbook,
            planner="triton",
            model_name=self.cfg.triton_model,
            model_version=str(versions[-1] or "unknown"),
            prompt_tokens=_int_output(result, "prompt_tokens"),
            completion_tokens=_int_output(result, "completion_tokens"),
        )


def _int_output(result: Any, name: str) -> int:
    arr = result.as_numpy(name)
    return int(arr.reshape(-1)[0]) if arr is not None and arr.size else 0


def make_planner(cfg: RemediationConfig) -> Planner:
    return TritonPlanner(cfg) if cfg.planner == "triton" else StaticPlanner(cfg)


class ShadowRemediator:
    """Plans and applies nothing: the outcome `shadow` carries the playbook it would have run."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner

    async def remediate(self, incident: Incident, ctx: RemediationContext) -> RemediationResult:
        with ctx.tracer.start_as_current_span("plan"):
            plan = await self.planner.plan(incident)
        return plan.result(State.SHADOW, "shadow mode: planned, nothing applied")


class AnsibleRemediator:
    """Plan, apply with ansible-runner (worker thread, cancellable), verify over SSH."""

    def __init__(self, cfg: RemediationConfig, planner: Planner) -> None:
        self.cfg = cfg
        self.planner = planner

    async def remediate(self, incident: Incident, ctx: RemediationContext) -> RemediationResult:
        service, host = target_of(incident.report)
        with ctx.tracer.start_as_current_span("plan"):
            plan = await self.planner.plan(incident)
        await ctx.enter(State.EXECUTING, "applying playbook")
        with ctx.tracer.start_as_current_span("execute", attributes={"remed.host": host}):
            status, tasks = await self._apply(plan.playbook, service, host, ctx)
        if status == "canceled":
            raise asyncio.CancelledError("playbook run cancelled")
        if status != "successful":
            failed = Attempt(playbook=plan.playbook, tasks=tasks)
            return plan.result(State.FAILED, f"playbook run {status}", failed)
        await ctx.enter(State.VERIFYING, "playbook applied")
        with ctx.tracer.start_as_current_span("verify"):
            verification = await self._verify(host)
        passed = bool(verification["passed"])
        return plan.result(
            State.RECOVERED if passed else State.FAILED,
            "verified" if passed else "verification failed",
            Attempt(playbook=plan.playbook, tasks=tasks, verification=verification),
        )

    async def _apply(
        self, playbook: str, service: str, host: str, ctx: RemediationContext
    ) -> tuple[str, list[TaskResult]]:
        from remed_daemon.agents.execute import RunnerSettings, run_playbook

        settings = RunnerSettings(
            inventory=self.cfg.inventory,
            ssh_private_key=self.cfg.ssh_private_key,
            ssh_user=self.cfg.ssh_user,
            known_hosts=self.cfg.known_hosts,
            timeout_s=self.cfg.playbook_timeout_s,
        )
        run = await run_playbook(
            settings,
            playbook,
            run_dir=ctx.run_dir,
            hosts=[host],
            extravars={
                "remed_incident_id": ctx.incident.id,
                "remed_report_id": report_id_of(ctx.incident),
                "remed_host": host,
                "remed_service": service,
            },
            tracer=ctx.tracer,
            cancel=ctx.cancel,
        )
        return run.status, run.tasks

    async def _verify(self, host: str) -> dict[str, Any]:
        """{"passed", "checks"} as the outcome schema wants it."""
        if not self.cfg.verify_command:
            check = {
                "name": "playbook-succeeded",
                "passed": True,
                "detail": "no remediation.verify_command configured",
            }
            return {"passed": True, "checks": [check]}
        from remed_daemon.agents.ssh import HostAccess, HostUnreachable

        # The host's address, port, user, key and known_hosts as its playbook sees them
        # (ansible-core reads the inventory; see remed_daemon/agents/inventory.py).
        hosts = HostAccess(
            self.cfg.inventory,
            user=self.cfg.ssh_user,
            key=self.cfg.ssh_private_key,
            known_hosts=self.cfg.known_hosts,
            connect_timeout_s=self.cfg.verify_timeout_s,
        )
        try:
            async with hosts:
                res = await hosts.run(
                    host, self.cfg.verify_command, timeout_s=self.cfg.verify_timeout_s
                )
        except HostUnreachable as exc:
            check = {"name": "verify-command", "passed": False, "detail": str(exc)[:4000]}
            return {"passed": False, "checks": [check]}
        passed = res.exit_status == 0
        detail = f"exit {res.exit_status}: {res.text[-2000:]}"
        return {
            "passed": passed,
            "checks": [{"name": "verify-command", "passed": passed, "detail": detail}],
        }


def _ansible_path() -> str:
    from remed_daemon.agents.execute import ansible_path

    return ansible_path()


def make_remediator(cfg: RemediationConfig) -> Remediator:
    planner = make_planner(cfg)
    if cfg.mode == "ansible":
        return AnsibleRemediator(cfg, planner)
    return ShadowRemediator(planner)
