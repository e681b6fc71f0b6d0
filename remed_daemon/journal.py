"""The durable journal: every incident's state machine, its idempotency record and the outbox.

SQLite in WAL mode with `synchronous=FULL`: a commit that returned is on disk, so the webhook's
202 and the Kafka commit can both rest on it. All SQL runs on one dedicated thread (the event
loop never blocks on fsync); the async methods hand work to it and await the answer.

State machine (ARCHITECTURE.md), plus `cancelled` (a `resolved` alert or a superseding report) and
`expired` (a Kafka report older than `kafka.max_report_age_s`, journaled already finished by
`admit_finished`, so nothing ever plans it):

    (admit) → expired
    received → planning → awaiting_approval → executing → verifying → recovered
                  │               │               │            └────→ failed | escalated
                  └───────────────┴──→ shadow | rejected | failed | escalated | cancelled

A terminal transition writes the outcome into the outbox in the same transaction, so an
incident can never be finished without its outcome, nor its outcome lost.

Crash safety (`recover()` at start-up):
- `executing`/`verifying`: the playbook may have run, partly or wholly. It is never run again:
  the incident becomes `escalated` with the reason "interrupted during …" and its outcome goes
  out, so a person looks at the host.
- `planning`: planning has no side effect on hosts, so the incident goes back to `received`.
- `awaiting_approval`: nothing has been applied yet and the wait died with the old process, so
  it goes back to `received` too; planning again raises the approval request again.
- `received` incidents (from either intake) are resumed: once journaled, an incident is owned
  by this instance (see `sources/kafka.py` for why the Kafka offset is committed then).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from remed_daemon.errors import IllegalTransition, JournalError

T = TypeVar("T")


class State(StrEnum):
    RECEIVED = "received"
    PLANNING = "planning"
    AWAITING_APPROVAL = "awaiting_approval"
    EXECUTING = "executing"
    VERIFYING = "verifying"
    RECOVERED = "recovered"
    FAILED = "failed"
    REJECTED = "rejected"
    ESCALATED = "escalated"
    SHADOW = "shadow"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {
        State.RECOVERED,
        State.FAILED,
        State.REJECTED,
        State.ESCALATED,
        State.SHADOW,
        State.CANCELLED,
        State.EXPIRED,
    }
)
# States in which no playbook has been started: cancelling or re-planning them is harmless.
NOT_STARTED = frozenset({State.RECEIVED, State.PLANNING, State.AWAITING_APPROVAL})

_ENDINGS = {State.FAILED, State.ESCALATED}
TRANSITIONS: Mapping[State, frozenset[State]] = {
    State.RECEIVED: frozenset(
        {
            State.PLANNING,
            State.CANCELLED,
            State.ESCALATED,
            State.REJECTED,
            State.EXPIRED,  # only as admitted (admit_finished): too old to remediate
        }
    ),
    State.PLANNING: frozenset(
        {
            State.RECEIVED,  # planner unavailable: wait and retry
            State.AWAITING_APPROVAL,
            State.EXECUTING,
            State.SHADOW,
            State.REJECTED,
            State.CANCELLED,
            *_ENDINGS,
        }
    ),
    State.AWAITING_APPROVAL: frozenset(
        {
            State.RECEIVED,  # the daemon restarted: plan again and ask again
            State.EXECUTING,
            State.REJECTED,
            State.CANCELLED,
            State.SHADOW,
            *_ENDINGS,
        }
    ),
    State.EXECUTING: frozenset({State.VERIFYING, *_ENDINGS}),
    State.VERIFYING: frozenset({State.RECOVERED, *_ENDINGS}),
}


@dataclass(frozen=True)
class Incident:
    id: str
    idem_key: str
    source: str
    target: str
    state: State
    report: dict[str, Any]
    traceparent: str
    kafka_partition: int | None
    kafka_offset: int | None
    reason: str
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class NewIncident:
    idem_key: str
    source: str
    target: str
    report: Mapping[str, Any]
    traceparent: str = ""
    kafka_partition: int | None = None
    kafka_offset: int | None = None


@dataclass(frozen=True)
class Admission:
    incident: Incident
    created: bool


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    incident_id: str
    key: str
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True)
class Outcome:
    """What a terminal transition puts in the outbox (built by `remed_daemon.outcomes`)."""

    key: str
    value: Mapping[str, Any]
    headers: Sequence[tuple[str, str]] = ()


@dataclass(frozen=True)
class Recovery:
    escalated: list[str]
    replanned: list[str]
    resumed: list[Incident]


OutcomeBuilder = Callable[[Incident, State, str], Outcome]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    idem_key TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    report TEXT NOT NULL,
    traceparent TEXT NOT NULL DEFAULT '',
    kafka_partition INTEGER,
    kafka_offset INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS incidents_state ON incidents(state);
CREATE INDEX IF NOT EXISTS incidents_target ON incidents(target, finished_at);
CREATE TABLE IF NOT EXISTS transitions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_incident ON transitions(incident_id);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL UNIQUE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    headers TEXT NOT NULL,
    created_at REAL NOT NULL,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox(sent_at, seq);
"""

_COLUMNS = (
    "id, idem_key, source, target, state, report, traceparent, kafka_partition, kafka_offset, "
    "reason, created_at, updated_at, started_at, finished_at"
)


def _row(r: Sequence[Any]) -> Incident:
    return Incident(
        id=r[0],
        idem_key=r[1],
        source=r[2],
        target=r[3],
        state=State(r[4]),
        report=json.loads(r[5]),
        traceparent=r[6],
        kafka_partition=r[7],
        kafka_offset=r[8],
        reason=r[9],
        created_at=r[10],
        updated_at=r[11],
        started_at=r[12],
        finished_at=r[13],
    )


class Journal:
    """The incident journal. `open()` once, `close()` idempotent; all methods are async."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._thread_id: int | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        if self._executor is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="remed-journal")
        await self._call(self._open_sync)

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._call(self._close_sync)
        self._executor.shutdown(wait=True)
        self._executor = None

    async def __aenter__(self) -> Journal:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _open_sync(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(_SCHEMA)
        self._conn = conn
        self._thread_id = threading.get_ident()

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise JournalError("journal is not open: call Journal.open() first")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError("journal is closed")
        return self._conn

    def _tx(self) -> _Tx:
        return _Tx(self._db)

    # -- intake -------------------------------------------------------------------------------

    async def admit(self, new: NewIncident) -> Admission:
        """Journal a report unless its idempotency key is known; durable when this returns."""
        return (await self.admit_many([new]))[0]

    async def admit_many(self, news: Sequence[NewIncident]) -> list[Admission]:
        """Several reports in one transaction (one webhook POST carries many alerts)."""
        return await self._call(self._admit_sync, list(news))

    def _admit_sync(self, news: list[NewIncident]) -> list[Admission]:
        now = self._clock()
        with self._tx() as db:
            return [self._admit_one(db, new, now) for new in news]

    def _admit_one(self, db: sqlite3.Connection, new: NewIncident, now: float) -> Admission:
        existing = db.execute(
            f"SELECT {_COLUMNS} FROM incidents WHERE idem_key = ?", (new.idem_key,)
        ).fetchone()
        if existing is not None:
            return Admission(_row(existing), created=False)
        iid = str(uuid.uuid4())
        db.execute(
            f"INSERT INTO incidents ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                iid,
                new.idem_key,
                new.source,
                new.target,
                State.RECEIVED.value,
                json.dumps(dict(new.report), sort_keys=True),
                new.traceparent,
                new.kafka_partition,
                new.kafka_offset,
                "",
                now,
                now,
                None,
                None,
            ),
        )
        db.execute(
            "INSERT INTO transitions (incident_id, from_state, to_state, reason, at) "
            "VALUES (?, NULL, ?, 'admitted', ?)",
            (iid, State.RECEIVED.value, now),
        )
        row = db.execute(f"SELECT {_COLUMNS} FROM incidents WHERE id = ?", (iid,)).fetchone()
        return Admission(_row(row), created=True)

    async def admit_finished(
        self, new: NewIncident, to: State, reason: str, outcome: OutcomeBuilder
    ) -> Admission:
        """Journal a report that is finished on arrival (`expired`) and its outcome, in one
        transaction: no crash can leave it `received` for recovery to plan. A known idempotency
        key returns the existing incident untouched (`created=False`)."""
        if not to.terminal:
            raise IllegalTransition(f"{to} is not terminal; use Journal.admit()")
        return await self._call(self._admit_finished_sync, new, to, reason, outcome)

    def _admit_finished_sync(
        self, new: NewIncident, to: State, reason: str, outcome: OutcomeBuilder
    ) -> Admission:
        now = self._clock()
        with self._tx() as db:
            adm = self._admit_one(db, new, now)
            if not adm.created:
                return adm
            self._move(db, adm.incident, to, reason, now, outcome)
            row = db.execute(
                f"SELECT {_COLUMNS} FROM incidents WHERE id = ?", (adm.incident.id,)
            ).fetchone()
        return Admission(_row(row), created=True)

    async def attach_offset(self, incident_id: str, partition: int, offset: int) -> None:
        """A redelivered Kafka report for a journaled incident: remember its newest offset."""
        await self._call(self._attach_sync, incident_id, partition, offset)

    def _attach_sync(self, incident_id: str, partition: int, offset: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE incidents SET kafka_partition = ?, kafka_offset = ? WHERE id = ?",
                (partition, offset, incident_id),
            )

    # -- state machine ------------------------------------------------------------------------

    async def transition(self, incident_id: str, to: State, reason: str = "") -> Incident:
        """Move a non-terminal incident along the state machine (terminal: use `finish`)."""
        if to.terminal:
            raise IllegalTransition(f"use Journal.finish() to move {incident_id} to {to}")
        return await self._call(self._transition_sync, incident_id, to, reason, None)

    async def finish(
        self, incident_id: str, to: State, reason: str, outcome: OutcomeBuilder
    ) -> Incident:
        """Terminal transition and its outcome in the outbox, in one transaction."""
        if not to.terminal:
            raise IllegalTransition(f"{to} is not terminal; use Journal.transition()")
        return await self._call(self._transition_sync, incident_id, to, reason, outcome)

    def _transition_sync(
        self, incident_id: str, to: State, reason: str, outcome: OutcomeBuilder | None
    ) -> Incident:
        now = self._clock()
        with self._tx() as db:
            inc = self._get_locked(db, incident_id)
            self._move(db, inc, to, reason, now, outcome)
            row = db.execute(
                f"SELECT {_COLUMNS} FROM incidents WHERE id = ?", (incident_id,)
            ).fetchone()
        return _row(row)

    def _get_locked(self, db: sqlite3.Connection, incident_id: str) -> Incident:
        q = f"SELECT {_COLUMNS} FROM incidents WHERE id = ?"
        row = db.execute(q, (incident_id,)).fetchone()
        if row is None:
            raise JournalError(f"no incident {incident_id} in the journal")
        return _row(row)

    def _move(
        self,
        db: sqlite3.Connection,
        inc: Incident,
        to: State,
        reason: str,
        now: float,
        outcome: OutcomeBuilder | None,
    ) -> None:
        if to not in TRANSITIONS.get(inc.state, frozenset()):
            raise IllegalTransition(f"incident {inc.id}: {inc.state} → {to} is not allowed")
        started = now if to is State.PLANNING and inc.started_at is None else inc.started_at
        finished = now if to.terminal else None
        db.execute(
            "UPDATE incidents SET state = ?, reason = ?, updated_at = ?, started_at = ?, "
            "finished_at = ? WHERE id = ?",
            (to.value, reason, now, started, finished, inc.id),
        )
        db.execute(
            "INSERT INTO transitions (incident_id, from_state, to_state, reason, at) "
            "VALUES (?, ?, ?, ?, ?)",
            (inc.id, inc.state.value, to.value, reason, now),
        )
        if to.terminal:
            if outcome is None:
                raise IllegalTransition(f"terminal transition of {inc.id} needs an outcome")
            moved = Incident(**{**inc.__dict__, "state": to, "reason": reason, "finished_at": now})
            built = outcome(moved, to, reason)
            db.execute(
                "INSERT INTO outbox (incident_id, key, value, headers, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    inc.id,
                    built.key,
                    json.dumps(dict(built.value), sort_keys=True),
                    json.dumps([list(h) for h in built.headers]),
                    now,
                ),
            )

    async def cancel_pending(
        self, idem_key: str, reason: str, outcome: OutcomeBuilder
    ) -> Incident | None:
        """Cancel the incident with this key if no playbook has started; None otherwise."""
        return await self._call(self._cancel_sync, idem_key, reason, outcome)

    def _cancel_sync(self, idem_key: str, reason: str, outcome: OutcomeBuilder) -> Incident | None:
        now = self._clock()
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM incidents WHERE idem_key = ?", (idem_key,)
            ).fetchone()
            if row is None:
                return None
            inc = _row(row)
            if inc.state not in NOT_STARTED:
                return None
            self._move(db, inc, State.CANCELLED, reason, now, outcome)
            return _row(
                db.execute(f"SELECT {_COLUMNS} FROM incidents WHERE id = ?", (inc.id,)).fetchone()
            )

    # -- queries ------------------------------------------------------------------------------

    async def get(self, incident_id: str) -> Incident | None:
        return await self._call(self._get_sync, "id", incident_id)

    async def by_idem_key(self, idem_key: str) -> Incident | None:
        return await self._call(self._get_sync, "idem_key", idem_key)

    def _get_sync(self, column: str, value: str) -> Incident | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM incidents WHERE {column} = ?", (value,)
        ).fetchone()
        return _row(row) if row else None

    async def open_count(self) -> int:
        """Incidents not yet in a terminal state (the webhook's saturation measure)."""
        return await self._call(self._open_count_sync)

    def _open_count_sync(self) -> int:
        terminal = tuple(s.value for s in TERMINAL)
        q = f"SELECT COUNT(*) FROM incidents WHERE state NOT IN ({','.join('?' * len(terminal))})"
        return int(self._db.execute(q, terminal).fetchone()[0])

    async def started_since(self, target: str, since: float) -> int:
        """Remediations of `target` that started planning at or after `since` (the budget)."""
        return await self._call(self._started_since_sync, target, since)

    def _started_since_sync(self, target: str, since: float) -> int:
        q = "SELECT COUNT(*) FROM incidents WHERE target = ? AND started_at >= ?"
        return int(self._db.execute(q, (target, since)).fetchone()[0])

    async def recent_endings(self, target: str, limit: int) -> list[tuple[State, float]]:
        """The last `limit` (recovered|failed, finished_at) of `target`, newest first: what the
        circuit breaker counts. Escalations and cancellations are not attempts that failed."""
        return await self._call(self._recent_sync, target, limit)

    def _recent_sync(self, target: str, limit: int) -> list[tuple[State, float]]:
        rows = self._db.execute(
            "SELECT state, finished_at FROM incidents WHERE target = ? AND finished_at IS NOT "
            "NULL AND state IN ('recovered', 'failed') ORDER BY finished_at DESC LIMIT ?",
            (target, limit),
        ).fetchall()
        return [(State(r[0]), float(r[1])) for r in rows]

    async def transitions(self, incident_id: str) -> list[tuple[str | None, str, str]]:
        return await self._call(self._transitions_sync, incident_id)

    def _transitions_sync(self, incident_id: str) -> list[tuple[str | None, str, str]]:
        rows = self._db.execute(
            "SELECT from_state, to_state, reason FROM transitions WHERE incident_id = ? "
            "ORDER BY seq",
            (incident_id,),
        ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    # -- operator reads (the read-only API, remed_daemon/operator_api.py) ---------------------

    async def list_incidents(self, states: Sequence[str] = (), limit: int = 100) -> list[Incident]:
        """Newest first, optionally only in `states`."""
        return await self._call(self._list_sync, list(states), limit)

    def _list_sync(self, states: list[str], limit: int) -> list[Incident]:
        where = f"WHERE state IN ({','.join('?' * len(states))}) " if states else ""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM incidents {where}ORDER BY created_at DESC LIMIT ?",
            (*states, limit),
        ).fetchall()
        return [_row(r) for r in rows]

    async def timeline(self, incident_id: str) -> list[dict[str, Any]]:
        """Every transition of one incident, oldest first: {seq, from, to, reason, at}."""
        return await self._call(self._events_sync, "incident_id = ?", (incident_id,), 10_000)

    async def events_after(self, seq: int, limit: int = 500) -> list[dict[str, Any]]:
        """Transitions of all incidents after `seq`, oldest first, with the incident's
        target: what `remed tail` follows."""
        return await self._call(self._events_sync, "t.seq > ?", (seq,), limit)

    def _events_sync(self, where: str, args: tuple[Any, ...], limit: int) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT t.seq, t.incident_id, i.target, t.from_state, t.to_state, t.reason, t.at "
            f"FROM transitions t LEFT JOIN incidents i ON i.id = t.incident_id WHERE {where} "
            "ORDER BY t.seq LIMIT ?",
            (*args, limit),
        ).fetchall()
        keys = ("seq", "incident_id", "target", "from", "to", "reason", "at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    async def last_event_seq(self) -> int:
        return await self._call(
            lambda: int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM transitions")
                        .fetchone()[0])
        )  # fmt: skip

    async def outcome_of(self, incident_id: str) -> tuple[dict[str, Any], float | None] | None:
        """(outcome document, when Kafka acknowledged it or None) of a finished incident."""
        return await self._call(self._outcome_sync, incident_id)

    def _outcome_sync(self, incident_id: str) -> tuple[dict[str, Any], float | None] | None:
        row = self._db.execute(
            "SELECT value, sent_at FROM outbox WHERE incident_id = ?", (incident_id,)
        ).fetchone()
        return (json.loads(row[0]), row[1]) if row else None

    # -- outbox -------------------------------------------------------------------------------

    async def unsent(self, limit: int = 100) -> list[OutboxRow]:
        """Outcomes not yet acknowledged by Kafka, oldest first."""
        return await self._call(self._unsent_sync, limit)

    def _unsent_sync(self, limit: int) -> list[OutboxRow]:
        rows = self._db.execute(
            "SELECT seq, incident_id, key, value, headers FROM outbox WHERE sent_at IS NULL "
            "ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            OutboxRow(
                seq=r[0],
                incident_id=r[1],
                key=r[2],
                value=r[3].encode(),
                headers=[(k, v.encode()) for k, v in json.loads(r[4])],
            )
            for r in rows
        ]

    async def mark_sent(self, seqs: Iterable[int]) -> None:
        await self._call(self._mark_sent_sync, list(seqs))

    def _mark_sent_sync(self, seqs: list[int]) -> None:
        now = self._clock()
        with self._tx() as db:
            db.executemany("UPDATE outbox SET sent_at = ? WHERE seq = ?", [(now, s) for s in seqs])

    async def unsent_count(self) -> int:
        return await self._call(
            lambda: int(
                self._db.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0]
            )
        )

    async def purge(self, finished_before: float) -> int:
        """Delete terminal incidents finished before `finished_before` whose outcome was sent."""
        return await self._call(self._purge_sync, finished_before)

    def _purge_sync(self, before: float) -> int:
        terminal = tuple(s.value for s in TERMINAL)
        marks = ",".join("?" * len(terminal))
        with self._tx() as db:
            ids = [
                r[0]
                for r in db.execute(
                    f"SELECT i.id FROM incidents i JOIN outbox o ON o.incident_id = i.id "
                    f"WHERE i.state IN ({marks}) AND i.finished_at < ? AND o.sent_at IS NOT NULL",
                    (*terminal, before),
                ).fetchall()
            ]
            for table, column in (
                ("transitions", "incident_id"),
                ("outbox", "incident_id"),
                ("incidents", "id"),
            ):
                db.executemany(f"DELETE FROM {table} WHERE {column} = ?", [(i,) for i in ids])
        return len(ids)

    # -- start-up recovery --------------------------------------------------------------------

    async def recover(self, outcome: OutcomeBuilder) -> Recovery:
        """Make the journal safe to run from after a crash (see the module docstring)."""
        return await self._call(self._recover_sync, outcome)

    def _recover_sync(self, outcome: OutcomeBuilder) -> Recovery:
        now = self._clock()
        escalated: list[str] = []
        replanned: list[str] = []
        with self._tx() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM incidents WHERE state IN (?, ?, ?, ?, ?) "
                "ORDER BY created_at",
                (
                    State.EXECUTING.value,
                    State.VERIFYING.value,
                    State.PLANNING.value,
                    State.AWAITING_APPROVAL.value,
                    State.RECEIVED.value,
                ),
            ).fetchall()
            for r in rows:
                inc = _row(r)
                if inc.state in (State.EXECUTING, State.VERIFYING):
                    reason = (
                        f"interrupted during {inc.state.value}: the daemon stopped while the "
                        "playbook may have been applied; it is not run again, check the host"
                    )
                    self._move(db, inc, State.ESCALATED, reason, now, outcome)
                    escalated.append(inc.id)
                elif inc.state is State.PLANNING:
                    self._move(db, inc, State.RECEIVED, "re-planning after restart", now, None)
                    replanned.append(inc.id)
                elif inc.state is State.AWAITING_APPROVAL:
                    # Nothing was applied before a plan waits for a person (the loop escalates
                    # instead once an attempt has run), and the wait lived in the old process:
                    # plan again, and the approval request is raised again.
                    reason = (
                        "re-planning after restart: the pending approval request is raised again"
                    )
                    self._move(db, inc, State.RECEIVED, reason, now, None)
                    replanned.append(inc.id)
            resumed = [
                _row(r)
                for r in db.execute(
                    f"SELECT {_COLUMNS} FROM incidents WHERE state = ? ORDER BY created_at",
                    (State.RECEIVED.value,),
                ).fetchall()
            ]
        return Recovery(escalated, replanned, resumed)


class _Tx:
    """`BEGIN IMMEDIATE` … `COMMIT`, or `ROLLBACK` on error (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
