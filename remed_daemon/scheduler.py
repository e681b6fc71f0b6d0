"""Which incident runs when: bounded concurrency, one remediation per target, budgets, breaker.

- At most `max_concurrency` remediations run at once.
- One per target (service@host). A report for a busy target waits; if another report for the
  same target is already waiting, the older waiting one is cancelled as superseded (coalescing:
  the newest diagnosis is the one worth acting on), so a target never queues more than one.
- A target that started `per_target_budget_per_hour` remediations in the last hour gets
  `escalated` instead (counted from the journal, so a restart does not reset it).
- After `breaker_failures` consecutive failed remediations of a target, further incidents of it
  are `escalated` until `breaker_open_s` has passed since the last failure (then one is tried).
- The kill switch (config or the kill-switch file) stops all automation at once: running
  remediations are cancelled (ansible-runner's cancel_callback) and everything is escalated.

Every terminal transition goes through `Journal.finish`, which writes the outcome to the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from opentelemetry import trace

from remed_daemon.config import RemediationConfig, SchedulerConfig
from remed_daemon.errors import IllegalTransition, PlannerUnavailable
from remed_daemon.journal import Incident, Journal, State
from remed_daemon.outcomes.document import builder
from remed_daemon.remediation import RemediationContext, RemediationResult, Remediator
from remed_daemon.telemetry import Metrics, bind_incident, context_from_traceparent

log = structlog.get_logger("remed.scheduler")
# How often the kill-switch file is looked at even when nothing else happens.
KILL_SWITCH_POLL_S = 1.0


@dataclass
class _Running:
    incident: Incident
    task: asyncio.Task[None]
    ctx: RemediationContext | None = None


@dataclass
class Scheduler:
    cfg: SchedulerConfig
    remediation: RemediationConfig
    journal: Journal
    remediator: Remediator
    metrics: Metrics
    tracer: trace.Tracer
    state_dir: Path
    kill_switch_path: Path
    on_terminal: Callable[[Incident], None] = field(default=lambda inc: None)
    _pending: dict[str, Incident] = field(default_factory=dict)
    _running: dict[str, _Running] = field(default_factory=dict)
    _retries: dict[str, int] = field(default_factory=dict)
    _timers: set[asyncio.Task[None]] = field(default_factory=set)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _accepting: bool = True
    _cancel_reason: str = ""
    progress_at: float = field(default_factory=time.monotonic)

    # -- public -------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Incidents this scheduler holds (waiting, running or waiting for a retry)."""
        return len(self._pending) + len(self._running) + len(self._timers)

    def killed(self) -> bool:
        return self.cfg.kill_switch or self.kill_switch_path.exists()

    def submit(self, incident: Incident) -> None:
        """Queue a journaled incident (state `received`). Never blocks."""
        waiting = self._pending.get(incident.target)
        if waiting is not None and waiting.id != incident.id:
            # Keep the newest report; a planner retry of an older one must not displace it.
            older, newer = sorted((waiting, incident), key=lambda i: i.created_at)
            self._spawn(self._supersede(older, newer))
            incident = newer
        self._pending[incident.target] = incident
        self._update_depth()
        self._wake.set()

    def cancel(self, incident_id: str) -> None:
        """Drop a waiting incident from the queue (the journal already cancelled it)."""
        for target, inc in list(self._pending.items()):
            if inc.id == incident_id:
                del self._pending[target]
        self._update_depth()

    def reload(self, cfg: SchedulerConfig) -> None:
        self.cfg = cfg
        self._wake.set()

    async def run(self) -> None:
        """Dispatch loop; runs until cancelled. Also watches the kill switch."""
        while True:
            self.progress_at = time.monotonic()
            if self.killed():
                await self._kill()
            elif self._accepting:
                self._dispatch()
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives
            # as the event is set, and this loop would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KILL_SWITCH_POLL_S):
                    await self._wake.wait()

    async def drain(self, budget_s: float, reason: str) -> None:
        """Stop starting work; give running remediations `budget_s`, then cancel them."""
        self._accepting = False
        for t in list(self._timers):
            t.cancel()
        tasks = [r.task for r in self._running.values()]
        if tasks:
            log.info("draining", running=len(tasks), budget_s=budget_s)
            _, still = await asyncio.wait(tasks, timeout=budget_s)
            if still:
                self._cancel_reason = reason
                self._cancel_running()
                await asyncio.wait(still)

    def _cancel_running(self) -> None:
        for r in list(self._running.values()):
            if r.ctx is not None:
                r.ctx.cancel.set()  # ansible-runner's cancel_callback sees it
            # Once only: a second cancel would interrupt the task's own escalation write.
            if r.task.cancelling() == 0:
                r.task.cancel()

    # -- internals ----------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    def _update_depth(self) -> None:
        self.metrics.queue_depth.set(self.depth)

    def _dispatch(self) -> None:
        for target in list(self._pending):
            if len(self._running) >= self.cfg.max_concurrency:
                return
            if target in self._running:
                continue
            inc = self._pending.pop(target)
            task = asyncio.create_task(self._remediate(inc), name=f"remediate-{inc.id}")
            self._running[target] = _Running(inc, task)
            task.add_done_callback(functools.partial(self._done, target))
        self._update_depth()

    def _done(self, target: str, _task: object = None) -> None:
        self._running.pop(target, None)
        self.progress_at = time.monotonic()
        self._update_depth()
        self._wake.set()

    async def _kill(self) -> None:
        self._cancel_reason = "kill switch engaged: all automation stopped"
        self._cancel_running()
        waiting = list(self._pending.values())
        self._pending.clear()
        for inc in waiting:
            await self._finish(inc, State.ESCALATED, self._cancel_reason, None)

    async def _supersede(self, older: Incident, newer: Incident) -> None:
        await self._finish(
            older, State.CANCELLED, f"superseded by newer report {newer.id} for the same target",
            None,
        )

    async def _finish(
        self, inc: Incident, status: State, reason: str, result: RemediationResult | None
    ) -> Incident | None:
        try:
            done = await self.journal.finish(inc.id, status, reason, builder(result))
        except IllegalTransition as exc:
            # Someone else finished it first (a `resolved` alert cancelled it): theirs stands.
            log.info("incident already finished elsewhere", incident_id=inc.id, detail=str(exc))
            return None
        self.metrics.remediations.labels(status.value).inc()
        self.metrics.observe_result(result)  # guard verdicts by risk, tokens
        if done.started_at is not None and done.finished_at is not None:
            self.metrics.remediation_seconds.labels(status.value).observe(
                done.finished_at - done.started_at
            )
        self.on_terminal(done)
        return done

    async def _gate(self, inc: Incident) -> str:
        """Why `inc` must not run now ('' when it may)."""
        if self.killed():
            return "kill switch engaged: all automation stopped"
        started = await self.journal.started_since(inc.target, time.time() - 3600.0)
        if started >= self.cfg.per_target_budget_per_hour:
            return (
                f"budget exhausted: {started} remediations of {inc.target} in the last hour "
                f"(scheduler.per_target_budget_per_hour = {self.cfg.per_target_budget_per_hour})"
            )
        k = self.cfg.breaker_failures
        recent = await self.journal.recent_endings(inc.target, k)
        if len(recent) == k and all(s is State.FAILED for s, _ in recent):
            since = time.time() - recent[0][1]
            if since < self.cfg.breaker_open_s:
                self.metrics.breaker_open(inc.target, self.cfg.breaker_open_s - since)
                return (
                    f"circuit open: {k} consecutive failed remediations of {inc.target}; "
                    f"retry allowed in {self.cfg.breaker_open_s - since:.0f}s"
                )
        return ""

    async def _remediate(self, inc: Incident) -> None:
        parent = context_from_traceparent(inc.traceparent)
        with (
            bind_incident(inc.id, target=inc.target),
            self.tracer.start_as_current_span(
                "remediate", context=parent, attributes={"remed.incident_id": inc.id}
            ),
        ):
            t0 = time.monotonic()
            why = await self._gate(inc)
            if why:
                await self._finish(inc, State.ESCALATED, why, None)
                log.warning("remediation", status="escalated", reason=why)
                return
            try:
                inc = await self.journal.transition(inc.id, State.PLANNING, "scheduled")
            except IllegalTransition:
                return  # cancelled while waiting
            self.metrics.executions_started.inc()
            run_dir = self.state_dir / "runs" / inc.id
            ctx = RemediationContext(self.journal, inc, self.tracer, run_dir)
            running = self._running.get(inc.target)
            if running is not None:
                running.ctx = ctx
            result: RemediationResult | None = None
            try:
                result = await self.remediator.remediate(inc, ctx)
            except PlannerUnavailable as exc:
                await self._retry_later(ctx.incident, str(exc))
                return
            except IllegalTransition as exc:
                log.info("remediation stopped: incident changed meanwhile", detail=str(exc))
                return
            except asyncio.CancelledError:
                await self._after_cancel(ctx)
                raise
            except Exception as exc:
                log.exception("remediator error")
                result = RemediationResult(
                    status=State.FAILED,
                    reason=f"remediator error: {exc}",
                    error_type=type(exc).__name__,
                    error=str(exc),
                )
            done = await self._finish(ctx.incident, result.status, result.reason, result)
            if result.prompt_tokens or result.completion_tokens:
                self.metrics.llm_tokens.labels("prompt").inc(result.prompt_tokens)
                self.metrics.llm_tokens.labels("completion").inc(result.completion_tokens)
            # The canonical line: one per remediation.
            log.info(
                "remediation",
                status=result.status.value,
                reason=result.reason,
                attempts=len(result.attempts),
                duration_s=round(time.monotonic() - t0, 3),
                recorded=done is not None,
            )

    async def _after_cancel(self, ctx: RemediationContext) -> None:
        """A cancelled remediation: escalate it if a playbook may have started."""
        current = await self.journal.get(ctx.incident.id)
        if current is None or current.state.terminal:
            return
        reason = self._cancel_reason or "cancelled"
        if current.state in (State.EXECUTING, State.VERIFYING):
            await self._finish(
                current, State.ESCALATED, f"{reason} (during {current.state.value})", None
            )
        elif self.killed():
            await self._finish(current, State.ESCALATED, reason, None)
        # planning/received: nothing happened on a host; the next start re-plans it.

    async def _retry_later(self, inc: Incident, why: str) -> None:
        n = self._retries.get(inc.id, 0) + 1
        self._retries[inc.id] = n
        if n >= self.remediation.planner_max_attempts:
            self._retries.pop(inc.id, None)
            await self._finish(
                inc, State.ESCALATED, f"planner unavailable after {n} attempts: {why}", None
            )
            return
        inc = await self.journal.transition(inc.id, State.RECEIVED, f"planner unavailable: {why}")
        delay = min(
            self.remediation.planner_retry_initial_s * 2 ** (n - 1),
            self.remediation.planner_retry_max_s,
        )
        log.warning("planner unavailable; will retry", attempt=n, retry_s=delay, error=why)

        async def later() -> None:
            await asyncio.sleep(delay)
            if self._accepting:
                self.submit(inc)

        self._spawn(later())
