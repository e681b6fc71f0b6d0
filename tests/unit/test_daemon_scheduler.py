"""Scheduler with a fake remediator (same protocol) and the real journal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from remed_daemon.config import RemediationConfig, SchedulerConfig, TelemetryConfig
from remed_daemon.errors import PlannerUnavailable
from remed_daemon.journal import Incident, Journal, NewIncident, State
from remed_daemon.remediation import RemediationContext, RemediationResult
from remed_daemon.scheduler import Scheduler
from remed_daemon.telemetry import Metrics, make_tracer

pytestmark = pytest.mark.unit


class FakeRemediator:
    """Executes nothing; records order and concurrency; can fail or block on demand."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.active = 0
        self.max_active = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.status = State.RECOVERED
        self.unavailable = 0

    async def remediate(self, incident: Incident, ctx: RemediationContext) -> RemediationResult:
        if self.unavailable:
            self.unavailable -= 1
            raise PlannerUnavailable("triton down")
        self.started.append(incident.report["report_id"])
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await ctx.enter(State.EXECUTING)
            await self.gate.wait()
            if self.status is State.RECOVERED:
                await ctx.enter(State.VERIFYING)
            return RemediationResult(status=self.status, reason="fake")
        finally:
            self.active -= 1


def make_scheduler(
    journal: Journal, fake: FakeRemediator, finished: list[Incident], tmp_path: Path
) -> Scheduler:
    tracer, _ = make_tracer(TelemetryConfig())
    return Scheduler(
        cfg=SchedulerConfig(max_concurrency=2, per_target_budget_per_hour=3, breaker_failures=2),
        remediation=RemediationConfig(planner_retry_initial_s=0.01, planner_max_attempts=3),
        journal=journal,
        remediator=fake,
        metrics=Metrics.create(),
        tracer=tracer,
        state_dir=tmp_path,
        kill_switch_path=tmp_path / "KILL",
        on_terminal=finished.append,
    )


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Scheduler, FakeRemediator, list[Incident]]]:
    journal = Journal(tmp_path / "j.sqlite3")
    await journal.open()
    fake = FakeRemediator()
    finished: list[Incident] = []
    sched = make_scheduler(journal, fake, finished, tmp_path)
    task = asyncio.create_task(sched.run())
    yield sched, fake, finished
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await journal.close()


async def submit(sched: Scheduler, n: int, target: str = "cart@app") -> Incident:
    service, host = target.split("@")
    adm = await sched.journal.admit(
        NewIncident(
            idem_key=f"k{n}",
            source="kafka",
            target=target,
            report={"report_id": f"r{n}", "target": {"service": service, "host": host}},
        )
    )
    sched.submit(adm.incident)
    return adm.incident


async def until(cond: object, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not cond():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_bounded_concurrency_and_one_per_target(env: tuple) -> None:
    sched, fake, finished = env
    fake.gate.clear()
    for n, target in enumerate(["a@h1", "b@h1", "c@h1", "a@h1"]):
        await submit(sched, n, target)
    await until(lambda: fake.active == 2)
    await asyncio.sleep(0.05)
    assert fake.max_active == 2
    fake.gate.set()
    await until(lambda: len(finished) == 4)
    # r3 (a@h1 again) never overlapped r0 and ran after it
    assert fake.started.index("r0") < fake.started.index("r3")
    assert fake.max_active == 2


async def test_waiting_report_is_superseded_by_newer_one(env: tuple) -> None:
    sched, fake, finished = env
    fake.gate.clear()
    await submit(sched, 1)
    await until(lambda: fake.active == 1)
    older = await submit(sched, 2)
    await submit(sched, 3)
    fake.gate.set()
    await until(lambda: len(finished) == 3)
    assert fake.started == ["r1", "r3"]
    cancelled = await sched.journal.get(older.id)
    assert cancelled is not None and cancelled.state is State.CANCELLED
    assert "superseded" in cancelled.reason


async def test_budget_then_escalation(env: tuple) -> None:
    sched, _, finished = env
    for n in range(5):
        await submit(sched, n)
        await until(lambda n=n: len(finished) == n + 1)
    states = [i.state for i in finished]
    assert states[:3] == [State.RECOVERED] * 3
    assert states[3:] == [State.ESCALATED] * 2
    assert "budget exhausted" in finished[3].reason


async def test_circuit_breaker_after_consecutive_failures(env: tuple) -> None:
    sched, fake, finished = env
    fake.status = State.FAILED
    for n in range(3):
        await submit(sched, n)
        await until(lambda n=n: len(finished) == n + 1)
    assert [i.state for i in finished] == [State.FAILED, State.FAILED, State.ESCALATED]
    assert "circuit open" in finished[2].reason


async def test_kill_switch_cancels_running_and_escalates(env: tuple, tmp_path: Path) -> None:
    sched, fake, finished = env
    fake.gate.clear()
    await submit(sched, 1, "a@h")
    await until(lambda: fake.active == 1)
    (tmp_path / "KILL").touch()
    await until(lambda: len(finished) == 1)
    assert finished[0].state is State.ESCALATED
    assert "kill switch" in finished[0].reason and "executing" in finished[0].reason
    await submit(sched, 2, "b@h")
    await until(lambda: len(finished) == 2)
    assert finished[1].state is State.ESCALATED
    assert fake.started == ["r1"]


async def test_planner_unavailable_retries_with_backoff(env: tuple) -> None:
    sched, fake, finished = env
    fake.unavailable = 2
    await submit(sched, 1)
    await until(lambda: len(finished) == 1)
    assert finished[0].state is State.RECOVERED
    path = [t[1] for t in await sched.journal.transitions(finished[0].id)]
    assert path.count("planning") == 3 and path.count("received") == 3


async def test_drain_budget_cancels_and_escalates(env: tuple) -> None:
    sched, fake, finished = env
    fake.gate.clear()
    await submit(sched, 1)
    await until(lambda: fake.active == 1)
    await sched.drain(0.05, "shutdown: budget exceeded")
    assert len(finished) == 1 and finished[0].state is State.ESCALATED
    assert "shutdown" in finished[0].reason


async def test_retry_of_older_report_never_displaces_newer(env: tuple) -> None:
    sched, fake, finished = env
    fake.gate.clear()
    await submit(sched, 1)
    await until(lambda: fake.active == 1)
    older = await submit(sched, 2)
    newer = await submit(sched, 3)
    sched.submit(older)  # e.g. a planner retry coming back late
    fake.gate.set()
    await until(lambda: len(finished) == 3)
    assert fake.started == ["r1", "r3"]
    assert (await sched.journal.get(newer.id)).state is State.RECOVERED  # type: ignore[union-attr]


async def test_stop_arriving_with_a_wakeup_still_stops_the_loop(tmp_path: Path) -> None:
    # On 3.11, asyncio.wait_for drops a cancel that lands as the awaited event is set; the
    # dispatch loop then ran forever and a CI run hung in this file's teardown.
    journal = Journal(tmp_path / "j.sqlite3")
    await journal.open()
    try:
        sched = make_scheduler(journal, FakeRemediator(), [], tmp_path)
        task = asyncio.create_task(sched.run())
        await asyncio.sleep(0.05)
        sched.reload(sched.cfg)  # sets the wake event
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=3)
        assert done and task.cancelled()
    finally:
        await journal.close()
