"""Stale Kafka reports: the age decision, and an expired report's path (journal → outbox, never
the scheduler)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from opentelemetry import trace

from remed_daemon.config import KafkaConfig
from remed_daemon.errors import IllegalTransition
from remed_daemon.journal import Incident, Journal, NewIncident, State
from remed_daemon.outcomes.document import builder
from remed_daemon.schemas import iter_errors
from remed_daemon.sources.kafka import KafkaIntake, expiry_reason, report_age_s
from remed_daemon.telemetry import Metrics

pytestmark = pytest.mark.unit

NOW = datetime(2026, 6, 3, 12, 0, 0, tzinfo=UTC).timestamp()


def report(**extra: Any) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "report_id": "r-1",
        "source": "kafka",
        "target": {"service": "cart", "host": "app"},
        "severity": "critical",
        "summary": "cart is down",
        **extra,
    }


# --- the age decision -----------------------------------------------------------------------


def test_observed_at_is_the_age_when_present() -> None:
    age = report_age_s(report(observed_at="2026-06-03T10:00:00Z"), int(NOW * 1000), NOW)
    assert age is not None and age[0] == pytest.approx(7200.0)
    assert "observed_at" in age[1]


def test_offsets_and_naive_times() -> None:
    # 13:30+02:00 is 11:30Z: half an hour old
    age = report_age_s(report(observed_at="2026-06-03T13:30:00+02:00"), None, NOW)
    assert age is not None and age[0] == pytest.approx(1800.0)
    naive = report_age_s(report(observed_at="2026-06-03T11:00:00"), None, NOW)  # read as UTC
    assert naive is not None and naive[0] == pytest.approx(3600.0)


def test_record_timestamp_when_the_report_has_no_time_of_its_own() -> None:
    age = report_age_s(report(), int((NOW - 90) * 1000), NOW)
    assert age is not None and age[0] == pytest.approx(90.0)
    assert "Kafka record timestamp 2026-06-03T11:58:30Z" == age[1]


def test_unparseable_observed_at_falls_back_to_the_record() -> None:
    age = report_age_s(report(observed_at="yesterday"), int((NOW - 5) * 1000), NOW)
    assert age is not None and age[0] == pytest.approx(5.0) and "record" in age[1]


def test_no_time_at_all_is_not_expired() -> None:
    assert report_age_s(report(), None, NOW) is None
    assert report_age_s(report(), -1, NOW) is None  # Kafka's "no timestamp"
    assert expiry_reason(report(), None, NOW, 3600.0) is None


def test_starts_at_is_not_the_age() -> None:
    # an alert firing since yesterday, reported just now, is news
    rep = report(fingerprint="abc", starts_at="2026-06-02T12:00:00Z")
    assert expiry_reason(rep, int(NOW * 1000), NOW, 3600.0) is None


def test_the_limit_itself_is_not_expired_one_second_more_is() -> None:
    at_limit = report(observed_at="2026-06-03T11:00:00Z")
    assert expiry_reason(at_limit, None, NOW, 3600.0) is None
    over = report(observed_at="2026-06-03T10:59:59Z")
    reason = expiry_reason(over, None, NOW, 3600.0)
    assert reason is not None
    assert "3601 s old" in reason and "kafka.max_report_age_s = 3600 s" in reason


def test_a_producer_clock_ahead_of_ours_is_not_expired() -> None:
    ahead = report(observed_at="2026-06-03T12:05:00Z")
    assert expiry_reason(ahead, None, NOW, 60.0) is None


def test_max_report_age_must_be_positive() -> None:
    from remed_daemon.errors import ConfigError

    with pytest.raises(ConfigError, match="max_report_age_s"):
        KafkaConfig(max_report_age_s=0)
    assert KafkaConfig().max_report_age_s == 3600.0


# --- journal: admitted already finished -----------------------------------------------------


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    async with Journal(tmp_path / "j.sqlite3") as j:
        yield j


def new(key: str = "report:r-1") -> NewIncident:
    return NewIncident(idem_key=key, source="kafka", target="cart@app", report=report())


async def test_admit_finished_journals_the_outcome_in_one_step(journal: Journal) -> None:
    adm = await journal.admit_finished(new(), State.EXPIRED, "too old", builder(None))
    assert adm.created and adm.incident.state is State.EXPIRED
    assert adm.incident.started_at is None  # nothing ever planned it
    assert await journal.open_count() == 0
    assert await journal.transitions(adm.incident.id) == [
        (None, "received", "admitted"),
        ("received", "expired", "too old"),
    ]
    [row] = await journal.unsent()
    doc = json.loads(row.value)
    assert doc["status"] == "expired" and doc["reason"] == "too old" and doc["attempts"] == []
    assert iter_errors("outcome", doc) == []
    # a crash now leaves nothing to resume
    recovery = await journal.recover(builder(None))
    assert recovery.resumed == [] and recovery.replanned == []


async def test_admit_finished_is_idempotent(journal: Journal) -> None:
    first = await journal.admit(new())
    again = await journal.admit_finished(new(), State.EXPIRED, "x", builder(None))
    assert not again.created and again.incident.id == first.incident.id
    assert again.incident.state is State.RECEIVED  # the known incident is left as it was
    assert await journal.unsent() == []


async def test_admit_finished_wants_a_terminal_state(journal: Journal) -> None:
    with pytest.raises(IllegalTransition):
        await journal.admit_finished(new(), State.PLANNING, "x", builder(None))


async def test_expired_is_terminal_and_leads_nowhere(journal: Journal) -> None:
    adm = await journal.admit_finished(new(), State.EXPIRED, "old", builder(None))
    assert State.EXPIRED.terminal
    with pytest.raises(IllegalTransition):
        await journal.transition(adm.incident.id, State.PLANNING)


# --- the intake: an expired report reaches no scheduler ------------------------------------


@dataclass
class Msg:
    value: bytes
    key: bytes
    offset: int
    timestamp: int
    headers: tuple[tuple[str, bytes], ...] = ()


class Recorder:
    def __init__(self) -> None:
        self.submitted: list[Incident] = []
        self.finished: list[Incident] = []


def intake(journal: Journal, rec: Recorder, max_age_s: float = 3600.0) -> KafkaIntake:
    return KafkaIntake(
        KafkaConfig(max_report_age_s=max_age_s),
        journal,
        Metrics.create(),
        trace.get_tracer("test"),
        submit=rec.submitted.append,
        depth=lambda: 0,
        cancel=lambda _inc: None,
        on_terminal=rec.finished.append,
    )


async def test_old_report_becomes_expired_outcome_and_is_never_submitted(journal: Journal) -> None:
    rec = Recorder()
    k = intake(journal, rec)
    tp = TopicPartition("remed.diagnoses", 0)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    old = report(report_id="old-1", observed_at="2020-01-01T00:00:00Z")
    old_record = report(report_id="old-2")  # no observed_at: the record's timestamp counts
    fresh = report(report_id="fresh-1")
    await k._handle(tp, Msg(json.dumps(old).encode(), b"cart@app", 0, now_ms))
    await k._handle(tp, Msg(json.dumps(old_record).encode(), b"cart@app", 1, now_ms - 7_200_000))
    await k._handle(tp, Msg(json.dumps(fresh).encode(), b"cart@app", 2, now_ms))
    assert [i.report["report_id"] for i in rec.submitted] == ["fresh-1"]
    assert [i.report["report_id"] for i in rec.finished] == ["old-1", "old-2"]
    docs = [json.loads(r.value) for r in await journal.unsent()]
    assert [(d["report_id"], d["status"]) for d in docs] == [
        ("old-1", "expired"),
        ("old-2", "expired"),
    ]
    assert "observed_at 2020-01-01T00:00:00Z" in docs[0]["reason"]
    assert "Kafka record timestamp" in docs[1]["reason"]
    assert k.metrics.intake.labels("kafka", "expired")._value.get() == 2
    # redelivered: a duplicate, not a second outcome
    await k._handle(tp, Msg(json.dumps(old).encode(), b"cart@app", 0, now_ms))
    assert len(await journal.unsent()) == 2 and len(rec.finished) == 2


async def test_an_old_resolved_report_still_cancels(journal: Journal) -> None:
    rec = Recorder()
    k = intake(journal, rec)
    tp = TopicPartition("remed.diagnoses", 0)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    firing = {k: v for k, v in report().items() if k != "report_id"}
    firing.update(fingerprint="f1", starts_at="2026-01-01T00:00:00Z")
    await k._handle(tp, Msg(json.dumps(firing).encode(), b"cart@app", 0, now_ms))
    resolved = {**firing, "status": "resolved", "observed_at": "2020-01-01T00:00:00Z"}
    await k._handle(tp, Msg(json.dumps(resolved).encode(), b"cart@app", 1, now_ms))
    inc = await journal.by_idem_key("am:f1:2026-01-01T00:00:00Z")
    assert inc is not None and inc.state is State.CANCELLED
