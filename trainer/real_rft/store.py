"""The trainer's durable store: SQLite (WAL) under its state directory.

Every Kafka message enters in one transaction with what it changes: the message's
(topic, partition, offset) in `seen`, the outcome or feedback row, and the incident's
re-derived examples. The consumer commits an offset only after that transaction, so a crash
between the two redelivers a message `seen` already holds, which changes nothing. Outcomes are
unique by `incident_id` (the daemon delivers at least once), feedback by `feedback_id` (else by
a digest of its content).

Examples not yet claimed by a round are re-derived whenever their incident learns something
new; a round claims its examples in the transaction that creates it, so a crash in a round
finds the same examples claimed by a `running` round at the next start.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.real_rft.examples import Example, Judged, derive, judge, outcome_hosts

SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, offset));
CREATE TABLE IF NOT EXISTS outcomes (
    incident_id TEXT PRIMARY KEY, doc TEXT NOT NULL, category TEXT NOT NULL,
    status TEXT NOT NULL, received_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS feedback (
    feedback_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, incident_id TEXT NOT NULL,
    author TEXT NOT NULL, verdict TEXT NOT NULL, doc TEXT NOT NULL, received_at REAL NOT NULL,
    accepted INTEGER, rules TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS feedback_incident ON feedback (incident_id, seq);
CREATE TABLE IF NOT EXISTS examples (
    id TEXT PRIMARY KEY, incident_id TEXT NOT NULL, category TEXT NOT NULL, prompt TEXT NOT NULL,
    prompt_exact INTEGER NOT NULL, completion TEXT NOT NULL, label INTEGER NOT NULL,
    source TEXT NOT NULL, author TEXT NOT NULL, ready_at REAL NOT NULL, round_id INTEGER);
CREATE INDEX IF NOT EXISTS examples_open ON examples (round_id, ready_at);
CREATE TABLE IF NOT EXISTS rounds (
    id INTEGER PRIMARY KEY, status TEXT NOT NULL, started_at REAL NOT NULL,
    finished_at REAL, examples INTEGER NOT NULL, capped INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 1, version INTEGER, gate TEXT, reason TEXT);
"""


@dataclass(frozen=True)
class Round:
    id: int
    status: str
    examples: list[Example]
    capped: int
    attempts: int


def feedback_key(doc: Mapping[str, Any]) -> str:
    fid = doc.get("feedback_id")
    if isinstance(fid, str) and fid:
        return fid
    canon = json.dumps({k: v for k, v in doc.items()}, sort_keys=True)
    return "sha256:" + hashlib.sha256(canon.encode()).hexdigest()


class Store:
    """Synchronous; the service calls it from a worker thread (`asyncio.to_thread`)."""

    def __init__(self, path: Path, *, feedback_grace_s: float) -> None:
        self.path = path
        self.grace_s = feedback_grace_s
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an offset is committed after this
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- ingest -------------------------------------------------------------------------------

    def _first_time(self, db: sqlite3.Connection, topic: str, partition: int, offset: int) -> bool:
        cur = db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?, ?)", (topic, partition, offset))
        return cur.rowcount == 1

    def mark_seen(self, where: tuple[str, int, int]) -> None:
        """A message that can never be used (invalid): remembered so it is skipped once."""
        with self._tx() as db:
            self._first_time(db, *where)

    def add_outcome(
        self, doc: Mapping[str, Any], where: tuple[str, int, int], now: float | None = None
    ) -> bool:
        """Store an outcome (once per incident) and derive its examples; True when new."""
        now = time.time() if now is None else now
        with self._tx() as db:
            if not self._first_time(db, *where):
                return False
            cur = db.execute(
                "INSERT OR IGNORE INTO outcomes VALUES (?, ?, ?, ?, ?)",
                (doc["incident_id"], json.dumps(doc), str(doc.get("category") or "unknown"),
                 doc["status"], now),
            )  # fmt: skip
            if cur.rowcount == 0:
                return False
            self._rederive(db, str(doc["incident_id"]))
            return True

    def add_feedback(
        self, doc: Mapping[str, Any], where: tuple[str, int, int], now: float | None = None
    ) -> bool:
        """Store a feedback (once per `feedback_id`) and re-derive its incident; True when new."""
        now = time.time() if now is None else now
        with self._tx() as db:
            if not self._first_time(db, *where):
                return False
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM feedback").fetchone()[0]
            cur = db.execute(
                "INSERT OR IGNORE INTO feedback (feedback_id, seq, incident_id, author, verdict, "
                "doc, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (feedback_key(doc), seq, doc["incident_id"], str(doc.get("author") or ""),
                 doc["verdict"], json.dumps(doc), now),
            )  # fmt: skip
            if cur.rowcount == 0:
                return False
            self._rederive(db, str(doc["incident_id"]))
            return True

    def _rederive(self, db: sqlite3.Connection, iid: str) -> None:
        row = db.execute(
            "SELECT doc, received_at FROM outcomes WHERE incident_id = ?", (iid,)
        ).fetchone()
        if row is None:
            return  # feedback before its outcome: derived when the outcome arrives
        outcome, received_at = json.loads(row[0]), float(row[1])
        rows = db.execute(
            "SELECT feedback_id, doc, accepted, rules FROM feedback WHERE incident_id = ? "
            "ORDER BY seq",
            (iid,),
        ).fetchall()
        feedback, judged = [], {}
        hosts = outcome_hosts(outcome)
        for fid, text, accepted, rules in rows:
            fb = json.loads(text) | {"feedback_id": fid}
            feedback.append(fb)
            if not fb.get("corrected_playbook"):
                continue
            if accepted is None:  # judged once, against the outcome's own hosts
                verdict = judge(str(fb["corrected_playbook"]), hosts)
                db.execute(
                    "UPDATE feedback SET accepted = ?, rules = ? WHERE feedback_id = ?",
                    (int(verdict.accepted), ",".join(verdict.rules), fid),
                )
                judged[fid] = verdict
            else:
                judged[fid] = Judged(bool(accepted), tuple(r for r in rules.split(",") if r))
        db.execute("DELETE FROM examples WHERE incident_id = ? AND round_id IS NULL", (iid,))
        for ex in derive(outcome, feedback, judged):
            ready = received_at + self.grace_s if ex.provisional else received_at
            db.execute(
                "INSERT OR IGNORE INTO examples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (ex.id, ex.incident_id, ex.category, ex.prompt, int(ex.prompt_exact),
                 ex.completion, int(ex.label), ex.source, ex.author, ready),
            )  # fmt: skip

    # -- rounds -------------------------------------------------------------------------------

    def ready(self, now: float) -> tuple[int, float | None]:
        """(examples ready for a round, when the oldest became ready)."""
        count, oldest = self._db_read(
            "SELECT COUNT(*), MIN(ready_at) FROM examples WHERE round_id IS NULL AND ready_at <= ?",
            (now,),
        )[0]
        return int(count), oldest

    def _db_read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def claim_round(self, now: float, cap_per_author_category: int) -> Round | None:
        """A new `running` round with every ready example, at most `cap` per (author, category)
        for examples a person's feedback made; the rest wait for a later round."""
        with self._tx() as db:
            rows = db.execute(
                f"SELECT {_EX} FROM examples WHERE round_id IS NULL AND ready_at <= ? "
                "ORDER BY ready_at, id",
                (now,),
            ).fetchall()
            per: Counter[tuple[str, str]] = Counter()
            chosen, capped = [], 0
            for r in rows:
                ex = _example(r)
                if ex.author:
                    per[(ex.author, ex.category)] += 1
                    if per[(ex.author, ex.category)] > cap_per_author_category:
                        capped += 1
                        continue
                chosen.append(ex)
            if not chosen:
                return None
            cur = db.execute(
                "INSERT INTO rounds (status, started_at, examples, capped) VALUES "
                "('running', ?, ?, ?)",
                (now, len(chosen), capped),
            )
            rid = int(cur.lastrowid or 0)
            db.executemany(
                "UPDATE examples SET round_id = ? WHERE id = ?", [(rid, e.id) for e in chosen]
            )
            return Round(rid, "running", chosen, capped, 1)

    def running_round(self) -> Round | None:
        """The round a crash or a stop interrupted, with its examples; counted as one more
        attempt."""
        with self._tx() as db:
            row = db.execute(
                "SELECT id, capped, attempts FROM rounds WHERE status = 'running' ORDER BY id"
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE rounds SET attempts = attempts + 1 WHERE id = ?", (row[0],))
            rows = db.execute(
                f"SELECT {_EX} FROM examples WHERE round_id = ? ORDER BY ready_at, id", (row[0],)
            ).fetchall()
        return Round(int(row[0]), "running", [_example(r) for r in rows], int(row[1]),
                     int(row[2]) + 1)  # fmt: skip

    def finish_round(
        self,
        rid: int,
        status: str,
        reason: str,
        gate: Mapping[str, Any] | None = None,
        version: int | None = None,
        now: float | None = None,
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE rounds SET status = ?, reason = ?, gate = ?, version = ?, "
                "finished_at = ? WHERE id = ?",
                (status, reason[:4000], json.dumps(gate or {}), version,
                 time.time() if now is None else now, rid),
            )  # fmt: skip

    def rounds(self) -> list[dict[str, Any]]:
        cols = ("id", "status", "started_at", "finished_at", "examples", "capped", "attempts",
                "version", "gate", "reason")  # fmt: skip
        rows = self._db_read(f"SELECT {', '.join(cols)} FROM rounds ORDER BY id")
        out = []
        for r in rows:
            doc = dict(zip(cols, r, strict=True))
            doc["gate"] = json.loads(doc["gate"] or "{}")
            out.append(doc)
        return out

    # -- what an operator sees ----------------------------------------------------------------

    def counts(self) -> dict[str, Any]:
        """Per category: feedback per verdict and per author, refused corrections, examples by
        label; totals of messages stored."""
        cats: dict[str, Any] = defaultdict(lambda: {
            "verdicts": Counter(), "authors": Counter(), "corrections_refused": 0,
            "corrections_accepted": 0, "desirable": 0, "undesirable": 0, "outcomes": 0,
        })  # fmt: skip
        for cat, n in self._db_read("SELECT category, COUNT(*) FROM outcomes GROUP BY 1"):
            cats[cat]["outcomes"] = n
        for author, verdict, accepted, doc, cat in self._db_read(
            "SELECT f.author, f.verdict, f.accepted, f.doc, COALESCE(o.category, '(no outcome)') "
            "FROM feedback f LEFT JOIN outcomes o USING (incident_id)"
        ):
            c = cats[cat]
            c["verdicts"][verdict] += 1
            c["authors"][author or "(anonymous)"] += 1
            if "corrected_playbook" in json.loads(doc):
                key = {1: "corrections_accepted", 0: "corrections_refused"}.get(accepted)
                if key:
                    c[key] += 1
        for cat, label, n in self._db_read(
            "SELECT category, label, COUNT(*) FROM examples GROUP BY 1, 2"
        ):
            cats[cat]["desirable" if label else "undesirable"] += n
        total = self._db_read(
            "SELECT (SELECT COUNT(*) FROM outcomes), (SELECT COUNT(*) FROM feedback), "
            "(SELECT COUNT(*) FROM seen)"
        )[0]
        return {
            "outcomes": total[0],
            "feedback": total[1],
            "messages": total[2],
            "categories": {
                k: {**v, "verdicts": dict(v["verdicts"]), "authors": dict(v["authors"])}
                for k, v in sorted(cats.items())
            },
        }

    def feedback_rows(self) -> list[dict[str, Any]]:
        rows = self._db_read(
            "SELECT feedback_id, incident_id, author, verdict, accepted, rules FROM feedback "
            "ORDER BY seq"
        )
        keys = ("feedback_id", "incident_id", "author", "verdict", "accepted", "rules")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def examples(self, round_id: int | None = None) -> list[Example]:
        if round_id is None:
            return [_example(r) for r in self._db_read(f"SELECT {_EX} FROM examples ORDER BY id")]
        rows = self._db_read(f"SELECT {_EX} FROM examples WHERE round_id = ?", (round_id,))
        return [_example(r) for r in rows]


_EX = "id, incident_id, category, prompt, prompt_exact, completion, label, source, author"


def _example(r: Sequence[Any]) -> Example:
    return Example(str(r[0]), str(r[1]), str(r[2]), str(r[3]), bool(r[4]), str(r[5]),
                   bool(r[6]), str(r[7]), str(r[8]))  # fmt: skip
