"""ThinkRemed: the daemon's remediator — probe → plan → guard → check → snapshot → apply →
verify → reflect, up to `max_attempts` times, and undo when the last attempt fails.

One incident, step by step:
1. **probe** the target host with the category's read-only catalog (`probe.py`);
2. **plan**: the planner gets the report, the probe output, the target's facts and the evidence
   of earlier attempts; a model may ask for more catalog probes (`PROBE: name`) once per
   attempt before it writes a playbook;
3. **guard** (`guard.py`) decides whether the playbook may run, and at which risk; a refused
   playbook becomes evidence for the next plan and is never run;
4. high risk: the incident waits in `awaiting_approval` for a person (`approvals.py`);
   medium risk: `--check --diff` first (`check.py`), the diff goes into the outcome;
5. **snapshot** the files and services the playbook touches (`snapshot.py`);
6. move the journal to `executing` (the crash-safety rule: before any host is touched), then
   **apply** with ansible-runner, one span per task per host (`execute.py`);
7. move to `verifying`, **verify** with category checks and the health probe held for a
   stabilisation window (`verify.py`);
8. failed: **reflect** — the failed tasks and what the verifier saw go into the next prompt;
   after the last attempt, **undo** from the snapshot, and say what was restored.

Shadow mode runs steps 1 to 4 (the check run always) and applies nothing: outcome `shadow`.
Without an inventory (only possible in shadow mode) there is no host to reach: the loop plans
and guards only, with no probes and no check run.

The planner is a setting (`remediation.planner`, `remed_daemon.planner`): the model on Triton,
the oracle's expert playbooks, or a fixed playbook (`static`); each plan meets the guard alike.

Deviations from MicroRemed's ThinkRemed, on purpose: probes come from an allowlist instead of a
free shell; a guard, a check run, approvals and undo sit between the model and the host; up to
`max_attempts` (default 3) instead of one retry. The journal's state machine has no way back from
`verifying` to `executing`, so attempts after the first apply stay in `verifying` (which is just
as crash-safe: a restart escalates it and never re-runs), and a later plan that needs approval
ends the incident as `escalated` (after undo) instead of waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from remed_daemon.agents.approvals import ApprovalBook, Decision
from remed_daemon.agents.check import check_run
from remed_daemon.agents.execute import PlaybookRun, RunnerSettings, run_playbook
from remed_daemon.agents.probe import CATALOG, Prober, ProbeResult
from remed_daemon.agents.redact import scrub
from remed_daemon.agents.snapshot import Snapshot, touched_by_host
from remed_daemon.agents.ssh import HostAccess
from remed_daemon.agents.topology import ServiceFacts, Topology, facts_for
from remed_daemon.agents.verify import HostVerifier, Verifier
from remed_daemon.config import Config
from remed_daemon.errors import PlannerUnavailable
from remed_daemon.guard import GuardUsageError, GuardVerdict, Violation, check_playbook
from remed_daemon.journal import Incident, State
from remed_daemon.outcomes.document import prompt_record
from remed_daemon.planner import PlanDraft, Planner, PlanRequest, configured_planners
from remed_daemon.remediation import (
    Attempt,
    RemediationContext,
    RemediationResult,
    report_id_of,
    target_of,
)

log = structlog.get_logger("remed.agents")

MAX_REFLECTION_CHARS = 4000
PLANNER_LABEL = "remed_planner"


@dataclass(frozen=True)
class AgentSettings:
    runner: RunnerSettings
    state_dir: Path
    max_attempts: int = 3
    shadow: bool = False
    # False when there is no inventory to reach hosts with (shadow mode without one): the loop
    # then plans and guards only, with no probes and no check run.
    reach_hosts: bool = True
    probe_rounds: int = 1
    approval_timeout_s: float = 3600.0
    planner_from_label: bool = False
    check_timeout_s: float = 120.0
    snapshot_timeout_s: float = 30.0
    snapshot_max_file_bytes: int = 8 * 1_048_576


# -- the guard --------------------------------------------------------------------------------

GuardFn = Callable[[str, Sequence[str]], GuardVerdict]


def default_guard(playbook: str, hosts: Sequence[str]) -> GuardVerdict:
    """`remed_daemon.guard.check_playbook`. Host names come from the report (untrusted): a name
    the guard cannot use is a refusal of the plan, not an exception in the loop."""
    try:
        return check_playbook(playbook, list(hosts))
    except GuardUsageError as exc:
        refusal = Violation("hosts.invalid", "playbook", str(exc)[:300])
        return GuardVerdict(allowed=False, risk="high", needs_approval=False, violations=(refusal,))


def verdict_doc(verdict: GuardVerdict) -> dict[str, Any]:
    """The outcome's `attempt.guard` object (schema limits on each field)."""
    return {
        "allowed": verdict.allowed,
        "risk": verdict.risk,
        "needs_approval": verdict.needs_approval,
        "violations": [
            {"rule": v.rule[:128], "task": v.task[:512], "detail": v.detail[:2000]}
            for v in verdict.violations[:200]
        ],
    }


NO_PLAYBOOK_GUARD = {
    "allowed": False,
    "risk": "high",
    "needs_approval": False,
    "violations": [
        {"rule": "no-playbook", "task": "", "detail": "no playbook in the planner's output"}
    ],
}


# -- reflection -------------------------------------------------------------------------------


def reflect(
    n: int, run: PlaybookRun | None, verification: Mapping[str, Any] | None, note: str = ""
) -> str:
    """What attempt `n` did and what the verifier saw, for the next prompt and the outcome."""
    lines = [f"Attempt {n}:"]
    if note:
        lines.append(note)
    if run is not None:
        lines.append(f"playbook run {run.status}.")
        for t in run.failed_tasks[:10]:
            rc = "" if t.rc is None else f" rc={t.rc}"
            lines.append(f"- task {t.task!r} ({t.module}) failed on {t.host}{rc}: {t.msg}")
    if verification is not None:
        for c in verification.get("checks", [])[:20]:
            if not c.get("passed"):
                lines.append(f"- verifier: {c.get('name')} failed: {c.get('detail', '')}")
        if verification.get("passed"):
            lines.append("- verifier: passed")
    return scrub("\n".join(lines), MAX_REFLECTION_CHARS)


def _guard_note(doc: Mapping[str, Any]) -> str:
    parts = [f"{v['rule']} ({v['task']}): {v['detail']}" for v in doc["violations"][:10]]
    return "the guard refused the playbook, nothing ran: " + "; ".join(parts)


# -- the remediator ---------------------------------------------------------------------------


@dataclass
class _Tally:
    planner: str = ""
    model_name: str = ""
    model_version: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, draft: PlanDraft) -> None:
        self.planner = draft.planner or self.planner
        self.model_name = draft.model_name or self.model_name
        self.model_version = draft.model_version or self.model_version
        self.prompt_tokens += draft.prompt_tokens
        self.completion_tokens += draft.completion_tokens

    def result(
        self,
        status: State,
        reason: str,
        attempts: Sequence[Attempt],
        undo: Mapping[str, Any] | None = None,
        error: BaseException | None = None,
    ) -> RemediationResult:
        return RemediationResult(
            status=status,
            reason=reason,
            attempts=tuple(attempts),
            planner=self.planner,
            model_name=self.model_name,
            model_version=self.model_version,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            undo=undo,
            error_type=type(error).__name__ if error else "",
            error=scrub(str(error), 4000) if error else "",
        )


class ThinkRemed:
    """The daemon's `Remediator` (see `remed_daemon.remediation.Remediator`)."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        planners: Mapping[str, Planner],
        default_planner: str,
        hosts: HostAccess,
        prober: Prober | None = None,
        verifier: Verifier | None = None,
        topology: Topology | None = None,
        guard: GuardFn = default_guard,
        approvals: ApprovalBook | None = None,
    ) -> None:
        if default_planner not in planners:
            raise ValueError(f"planner {default_planner!r} is not configured: {sorted(planners)}")
        if not settings.reach_hosts and not settings.shadow:
            raise ValueError("a loop that cannot reach hosts can only run in shadow mode")
        self.s = settings
        self.planners = dict(planners)
        self.default_planner = default_planner
        self.hosts = hosts
        self.prober = prober or Prober(hosts)
        self.verifier = verifier or HostVerifier(hosts)
        self.topology = topology or {}
        self.guard = guard
        self.approvals = approvals or ApprovalBook()

    def planner_for(self, report: Mapping[str, Any]) -> Planner:
        """The configured default, or another *configured* planner a report's
        `labels.remed_planner` names (how `remed bench --planner` picks one) when
        `agents.planner_from_label` is on. A label can only choose among planners the operator
        configured, and the guard judges every plan alike."""
        if not self.s.planner_from_label:
            return self.planners[self.default_planner]
        labels = report.get("labels")
        wanted = labels.get(PLANNER_LABEL) if isinstance(labels, Mapping) else None
        if isinstance(wanted, str) and wanted in self.planners:
            return self.planners[wanted]
        return self.planners[self.default_planner]

    async def remediate(self, incident: Incident, ctx: RemediationContext) -> RemediationResult:
        service, host = target_of(incident.report)
        report = incident.report
        category = str(report.get("category") or "")
        facts = facts_for(self.topology, service, host, await self.hosts.address(host))
        planner = self.planner_for(report)
        run = _Run(self, ctx, incident, facts, category, planner)
        return await run.go()


class _Run:
    """One incident's way through the loop (state that lives only as long as it)."""

    def __init__(
        self,
        agent: ThinkRemed,
        ctx: RemediationContext,
        incident: Incident,
        facts: ServiceFacts,
        category: str,
        planner: Planner,
    ) -> None:
        self.a = agent
        self.ctx = ctx
        self.incident = incident
        self.facts = facts
        self.category = category
        self.planner = planner
        self.tally = _Tally(planner=planner.name)
        self.attempts: list[Attempt] = []
        self.evidence: list[str] = []
        self.probes: list[ProbeResult] = []
        self.snapshot = Snapshot(
            agent.hosts,
            agent.s.state_dir / "snapshots" / incident.id,
            timeout_s=agent.s.snapshot_timeout_s,
            max_file_bytes=agent.s.snapshot_max_file_bytes,
        )
        self.applied = False
        self.request: PlanRequest | None = None
        self.extravars = {
            "remed_incident_id": incident.id,
            "remed_report_id": report_id_of(incident),
            "remed_host": facts.host,
            "remed_service": facts.name,
        }

    def span(self, name: str, **attrs: Any) -> Any:
        attributes = {"remed.host": self.facts.host, **{f"remed.{k}": v for k, v in attrs.items()}}
        return self.ctx.tracer.start_as_current_span(name, attributes=attributes)

    @property
    def state(self) -> State:
        return self.ctx.incident.state

    async def go(self) -> RemediationResult:
        if self.a.s.reach_hosts:
            with self.span("probe", category=self.category):
                self.probes = await self.a.prober.for_category(self.category, self.facts)
        try:
            for n in range(1, self.a.s.max_attempts + 1):
                done = await self.attempt(n)
                if done is not None:
                    return done
        except asyncio.CancelledError:
            raise
        except PlannerUnavailable as exc:
            if not self.applied:
                raise  # nothing changed yet: the scheduler retries later
            return await self.give_up(f"planner unavailable after an apply: {exc}", exc)
        except Exception as exc:
            if not self.applied:
                raise
            log.exception("remediation failed after an apply; undoing")
            return await self.give_up(f"remediation error after an apply: {exc}", exc)
        return await self.give_up(
            f"not recovered after {self.a.s.max_attempts} attempt(s)", None
        )

    async def plan(self, n: int) -> PlanDraft:
        probe_names = list(CATALOG)
        asked: set[str] = {p.name for p in self.probes}
        rounds = self.a.s.probe_rounds
        while True:
            request = PlanRequest(
                report=self.incident.report,
                service=self.facts.name,
                host=self.facts.host,
                category=self.category,
                facts=self.facts.describe(),
                probes=[p.as_text() for p in self.probes],
                previous=list(self.evidence),
                probe_names=probe_names,
                attempt=n,
            )
            self.request = request  # the prompt the playbook answers goes into the outcome
            with self.span("plan", attempt=n, planner=self.planner.name):
                draft = await self.planner.plan(request)
            self.tally.add(draft)
            if draft.playbook or not draft.probe_requests or rounds <= 0:
                return draft
            rounds -= 1
            if not self.a.s.reach_hosts:
                return draft
            with self.span("probe", requested=",".join(draft.probe_requests)[:256]):
                extra = await self.a.prober.requested(draft.probe_requests, self.facts, asked)
            asked |= {p.name for p in extra}
            self.probes.extend(extra)

    async def attempt(self, n: int) -> RemediationResult | None:
        last = n == self.a.s.max_attempts
        draft = await self.plan(n)
        playbook = draft.playbook
        prompt = prompt_record(self.request, self.facts.incident_hosts)
        if not playbook:
            note = "no playbook could be extracted from the planner's answer: " + scrub(
                draft.completion, 500
            )
            empty = Attempt(playbook="", guard=dict(NO_PLAYBOOK_GUARD), prompt=prompt)
            self.note(n, empty, note, last)
            return None
        with self.span("guard", attempt=n):
            verdict = self.a.guard(playbook, self.facts.incident_hosts)
        gdoc = verdict_doc(verdict)
        attempt = Attempt(playbook=playbook, guard=gdoc, prompt=prompt)
        if not gdoc["allowed"]:
            log.warning("guard refused a plan", attempt=n, violations=gdoc["violations"][:3])
            self.note(n, attempt, _guard_note(gdoc), last)
            return None
        high = gdoc["needs_approval"] or gdoc["risk"] == "high"
        if self.a.s.shadow:
            why = "shadow mode: planned and guarded (no inventory to probe or check with); "
            if self.a.s.reach_hosts:
                check = await self.check(n, playbook)
                attempt = dataclasses.replace(attempt, check_diff=check.diff, tasks=check.tasks)
                why = "shadow mode: probed, planned, guarded and checked; "
            self.attempts.append(attempt)
            why += "nothing applied"
            if high:
                why += " (the plan would need human approval)"
            return self.tally.result(State.SHADOW, why, self.attempts)
        if high and self.applied:
            self.attempts.append(attempt)
            return await self.give_up(
                f"attempt {n}'s plan needs human approval after an earlier apply failed; "
                "undone and escalated to a person",
                None,
                status=State.ESCALATED,
            )
        if high or gdoc["risk"] == "medium":
            # medium: dry-run before apply; high: also before a person is asked, so the
            # approval request shows the diff and a plan that cannot even dry-run is not shown
            check = await self.check(n, playbook)
            attempt = dataclasses.replace(attempt, check_diff=check.diff)
            if not check.ok:
                attempt = dataclasses.replace(attempt, tasks=check.tasks)
                self.note(n, attempt, check.evidence(), last)
                return None
        if high:
            decision = await self.wait_for_approval(playbook, gdoc["risk"], attempt.check_diff)
            attempt = dataclasses.replace(attempt, approval=decision.doc())
            if not decision.approved:
                self.attempts.append(attempt)
                who = f" by {decision.by}" if decision.by else ""
                return self.tally.result(
                    State.REJECTED, f"high-risk plan {decision.decision}{who}", self.attempts
                )
        return await self.apply(n, attempt, verdict, last)

    async def check(self, n: int, playbook: str) -> Any:
        with self.span("check", attempt=n):
            runner = dataclasses.replace(self.a.s.runner, timeout_s=self.a.s.check_timeout_s)
            return await check_run(
                runner, playbook,
                run_dir=self.ctx.run_dir / f"attempt-{n}" / "check",
                hosts=self.facts.incident_hosts,
                extravars=self.extravars, tracer=self.ctx.tracer, cancel=self.ctx.cancel,
            )  # fmt: skip

    async def wait_for_approval(self, playbook: str, risk: str, diff: str) -> Decision:
        await self.ctx.enter(State.AWAITING_APPROVAL, f"{risk}-risk plan needs a person")
        with self.span("approval"):
            decision = await self.a.approvals.wait(
                self.incident.id, playbook, target=self.incident.target, risk=risk,
                timeout_s=self.a.s.approval_timeout_s, check_diff=diff,
            )  # fmt: skip
        log.info("approval", decision=decision.decision, by=decision.by)
        return decision

    async def apply(
        self, n: int, attempt: Attempt, verdict: Any, last: bool
    ) -> RemediationResult | None:
        # Per host its plays target (the service's own, or a dependency's): what the modules
        # name, what the guard found in commands, and the service itself on its own host.
        by_host = touched_by_host(attempt.playbook, self.facts.incident_hosts)
        guard_files = set(verdict.touched_files)
        guard_services = set(verdict.touched_services)
        by_host.setdefault(self.facts.host, (set(), set()))[1].add(self.facts.program)
        count = sum(len(f) + len(s) for f, s in by_host.values())
        with self.span("snapshot", attempt=n, items=count, hosts=",".join(sorted(by_host))):
            for host, (files, services) in by_host.items():
                await self.snapshot.take(host, files | guard_files, services | guard_services)
        if self.state in (State.PLANNING, State.AWAITING_APPROVAL):
            await self.ctx.enter(State.EXECUTING, f"applying attempt {n}")
        self.applied = True
        with self.span("execute", attempt=n):
            run = await run_playbook(
                self.a.s.runner, attempt.playbook,
                run_dir=self.ctx.run_dir / f"attempt-{n}" / "apply",
                hosts=self.facts.incident_hosts,
                extravars=self.extravars, tracer=self.ctx.tracer, cancel=self.ctx.cancel,
            )  # fmt: skip
        if run.status == "canceled":
            raise asyncio.CancelledError("playbook run cancelled")
        if self.state is State.EXECUTING:
            await self.ctx.enter(State.VERIFYING, f"attempt {n} applied ({run.status})")
        with self.span("verify", attempt=n):
            verification = await self.a.verifier.verify(self.facts, self.category)
        attempt = dataclasses.replace(attempt, tasks=run.tasks, verification=verification)
        if verification.get("passed"):
            self.attempts.append(attempt)
            return self.tally.result(
                State.RECOVERED, f"verified after attempt {n}", self.attempts
            )
        self.note(n, attempt, "", last, run=run, verification=verification)
        return None

    def note(
        self,
        n: int,
        attempt: Attempt,
        note: str,
        last: bool,
        *,
        run: PlaybookRun | None = None,
        verification: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a failed attempt; unless it was the last, its reflection feeds the next."""
        evidence = reflect(n, run, verification, note)
        self.evidence.append(evidence)
        self.attempts.append(attempt if last else dataclasses.replace(attempt, reflection=evidence))

    async def give_up(
        self, reason: str, error: BaseException | None, status: State = State.FAILED
    ) -> RemediationResult:
        if not self.applied:
            refused = any(not a.guard.get("allowed") for a in self.attempts)
            final = State.REJECTED if refused else State.FAILED
            if refused:
                reason = "every plan was refused by the guard or had no playbook; nothing ran"
            return self.tally.result(final, reason, self.attempts, error=error)
        with self.span("undo"):
            undo = await self.snapshot.undo()
        restored = len(undo["restored"])
        reason = f"{reason}; undone ({restored} item(s) restored"
        reason += f", {len(undo['errors'])} error(s))" if undo["errors"] else ")"
        log.warning("undo", restored=undo["restored"], errors=undo["errors"])
        return self.tally.result(status, reason, self.attempts, undo=undo, error=error)


# -- wiring -----------------------------------------------------------------------------------


def make_thinkremed(cfg: Config, approvals: ApprovalBook | None = None) -> ThinkRemed:
    """ThinkRemed from the daemon's `Config` (`[remediation]` and `[agents]`)."""
    from remed_daemon.agents import topology as topology_mod

    r, a = cfg.remediation, cfg.agents
    hosts = HostAccess(
        r.inventory,
        user=r.ssh_user,
        key=r.ssh_private_key,
        known_hosts=r.known_hosts,
        connect_timeout_s=a.ssh_connect_timeout_s,
    )
    settings = AgentSettings(
        runner=RunnerSettings(
            inventory=r.inventory,
            ssh_private_key=r.ssh_private_key,
            ssh_user=r.ssh_user,
            known_hosts=r.known_hosts,
            timeout_s=r.playbook_timeout_s,
        ),
        state_dir=Path(cfg.state_dir),
        max_attempts=a.max_attempts,
        shadow=r.mode == "shadow",
        reach_hosts=bool(r.inventory),
        probe_rounds=a.probe_rounds,
        approval_timeout_s=a.approval_timeout_s,
        planner_from_label=a.planner_from_label,
        check_timeout_s=a.check_timeout_s,
        snapshot_timeout_s=a.snapshot_timeout_s,
        snapshot_max_file_bytes=a.snapshot_max_file_bytes,
    )
    return ThinkRemed(
        settings,
        planners=configured_planners(cfg),
        default_planner=r.planner,
        hosts=hosts,
        prober=Prober(
            hosts, timeout_s=a.probe_timeout_s, max_output_chars=a.probe_output_max_chars
        ),
        verifier=HostVerifier(
            hosts,
            window_s=a.verify_window_s,
            stable_s=a.verify_stable_s,
            interval_s=a.verify_interval_s,
            timeout_s=a.verify_timeout_s,
            verify_command=r.verify_command,
        ),
        topology=topology_mod.load(a.topology_file),
        approvals=approvals,
    )
