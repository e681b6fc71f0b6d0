"""Journal: idempotent admission, the state machine, outbox atomicity, crash recovery."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from remed_daemon.errors import IllegalTransition
from remed_daemon.journal import Journal, NewIncident, State
from remed_daemon.outcomes.document import builder
from remed_daemon.remediation import Attempt, RemediationResult, TaskResult
from remed_daemon.schemas import iter_errors

pytestmark = pytest.mark.unit


def report(n: int = 1, host: str = "app") -> dict[str, object]:
    return {
        "schema_version": 1,
        "report_id": f"r-{n}",
        "source": "kafka",
        "target": {"service": "cart", "host": host},
        "severity": "critical",
        "summary": "cart is down",
    }


def new(n: int = 1, source: str = "kafka") -> NewIncident:
    return NewIncident(idem_key=f"report:r-{n}", source=source, target="cart@app", report=report(n))


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    async with Journal(tmp_path / "j.sqlite3") as j:
        yield j


async def test_admission_is_idempotent(journal: Journal) -> None:
    first = await journal.admit(new(1))
    again = await journal.admit(new(1))
    assert first.created and not again.created
    assert again.incident.id == first.incident.id
    batch = await journal.admit_many([new(2), new(2), new(3)])
    assert [a.created for a in batch] == [True, False, True]
    assert await journal.open_count() == 3


async def test_full_path_writes_one_schema_valid_outcome(journal: Journal) -> None:
    inc = (await journal.admit(new(1))).incident
    for state in (State.PLANNING, State.EXECUTING, State.VERIFYING):
        inc = await journal.transition(inc.id, state)
    result = RemediationResult(
        status=State.RECOVERED,
        attempts=[
            Attempt(
                playbook="- hosts: app\n  tasks: []\n",
                guard={"allowed": True, "risk": "low", "needs_approval": False, "violations": []},
                tasks=[TaskResult(host="app", task="restart", changed=True)],
                verification={"passed": True, "checks": [{"name": "x", "passed": True}]},
            )
        ],
        planner="static",
    )
    done = await journal.finish(inc.id, State.RECOVERED, "verified", builder(result))
    assert done.state is State.RECOVERED and done.finished_at is not None
    rows = await journal.unsent()
    assert len(rows) == 1
    doc = json.loads(rows[0].value)
    assert iter_errors("outcome", doc) == []
    assert doc["status"] == "recovered" and doc["report_id"] == "r-1"
    assert rows[0].key == "cart@app"
    path = [t[1] for t in await journal.transitions(inc.id)]
    assert path == ["received", "planning", "executing", "verifying", "recovered"]


async def test_illegal_transitions_are_refused(journal: Journal) -> None:
    inc = (await journal.admit(new(1))).incident
    with pytest.raises(IllegalTransition):
        await journal.transition(inc.id, State.EXECUTING)  # must plan first
    with pytest.raises(IllegalTransition):
        await journal.transition(inc.id, State.SHADOW)  # terminal needs finish()
    await journal.finish(inc.id, State.CANCELLED, "resolved", builder())
    with pytest.raises(IllegalTransition):
        await journal.transition(inc.id, State.PLANNING)  # terminal is final
    with pytest.raises(IllegalTransition):
        await journal.finish(inc.id, State.FAILED, "x", builder())
    assert len(await journal.unsent()) == 1  # exactly one outcome per incident


async def test_cancel_only_before_execution(journal: Journal) -> None:
    a = (await journal.admit(new(1))).incident
    b = (await journal.admit(new(2))).incident
    await journal.transition(b.id, State.PLANNING)
    await journal.transition(b.id, State.EXECUTING)
    assert await journal.cancel_pending("report:r-1", "resolved", builder()) is not None
    assert await journal.cancel_pending("report:r-2", "resolved", builder()) is None
    assert await journal.cancel_pending("report:r-1", "again", builder()) is None
    assert (await journal.get(a.id)).state is State.CANCELLED  # type: ignore[union-attr]
    assert (await journal.get(b.id)).state is State.EXECUTING  # type: ignore[union-attr]


async def test_recovery_never_reruns_execution(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    async with Journal(path) as j:
        ids = {}
        for n, states in {
            1: [State.PLANNING, State.EXECUTING],
            2: [State.PLANNING, State.EXECUTING, State.VERIFYING],
            3: [State.PLANNING],
            4: [],
            5: [State.PLANNING, State.AWAITING_APPROVAL],
        }.items():
            inc = (await j.admit(new(n, source="alertmanager"))).incident
            for s in states:
                await j.transition(inc.id, s)
            ids[n] = inc.id
    # "crash": a new Journal on the same file
    async with Journal(path) as j:
        rec = await j.recover(builder())
        assert sorted(rec.escalated) == sorted([ids[1], ids[2]])
        assert rec.replanned == [ids[3], ids[5]]
        assert {i.id for i in rec.resumed} == {ids[3], ids[4], ids[5]}
        waiting = await j.get(ids[5])
        assert waiting is not None and waiting.state is State.RECEIVED
        assert "approval request is raised again" in waiting.reason
        for n in (1, 2):
            inc = await j.get(ids[n])
            assert inc is not None and inc.state is State.ESCALATED
            assert "not run again" in inc.reason
        docs = [json.loads(r.value) for r in await j.unsent()]
        assert {d["incident_id"] for d in docs} == {ids[1], ids[2]}
        assert all(iter_errors("outcome", d) == [] for d in docs)
        # a second recovery finds nothing more to escalate
        assert (await j.recover(builder())).escalated == []


async def test_outbox_is_ordered_and_marked(journal: Journal) -> None:
    for n in range(5):
        inc = (await journal.admit(new(n))).incident
        await journal.finish(inc.id, State.CANCELLED, "x", builder())
    rows = await journal.unsent(3)
    assert [r.seq for r in rows] == sorted(r.seq for r in rows)
    await journal.mark_sent(r.seq for r in rows)
    assert await journal.unsent_count() == 2
    rest = await journal.unsent()
    assert rest[0].seq > rows[-1].seq


async def test_purge_keeps_undelivered_and_recent(journal: Journal) -> None:
    ids = []
    for n in range(3):
        inc = (await journal.admit(new(n))).incident
        await journal.finish(inc.id, State.CANCELLED, "x", builder())
        ids.append(inc.id)
    open_one = (await journal.admit(new(9))).incident
    rows = await journal.unsent()
    await journal.mark_sent([rows[0].seq, rows[1].seq])
    assert await journal.purge(finished_before=0.0) == 0  # nothing that old
    assert await journal.purge(finished_before=1e12) == 2  # delivered + finished only
    assert await journal.get(ids[0]) is None and await journal.get(ids[2]) is not None
    assert await journal.get(open_one.id) is not None
    assert (await journal.admit(new(0))).created  # its key is free again
