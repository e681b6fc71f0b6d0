"""The Kafka intake's value parser: anything a producer can send either becomes a checked
report or is rejected with a reason (which goes into the DLT's `remed-error` header)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remed_daemon.errors import IntakeRejected
from remed_daemon.schemas import iter_errors
from remed_daemon.sources.kafka import idempotency_key, parse_report

pytestmark = pytest.mark.unit

GOOD: dict[str, Any] = {
    "schema_version": 1,
    "report_id": "r-1",
    "source": "kafka",
    "target": {"service": "cart", "host": "app"},
    "severity": "critical",
    "summary": "cart down",
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def mutated(draw: Any) -> bytes:
    doc = json.loads(json.dumps(GOOD))
    key = draw(st.sampled_from([*GOOD, "target.service", "target.host", "extra"]))
    value = draw(json_values)
    if key.startswith("target."):
        doc["target"][key.split(".")[1]] = value
    else:
        doc[key] = value
    return json.dumps(doc).encode()


def test_good_report_parses() -> None:
    doc = parse_report(json.dumps(GOOD).encode())
    assert doc["target"] == {"service": "cart", "host": "app"}
    assert idempotency_key(doc, "fallback") == "report:r-1"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (None, "tombstone"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({**GOOD, "target": {"service": "a b", "host": "app"}}).encode(), "target"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "summary"}).encode(), "summary"),
    ],
)
def test_rejections_say_why(value: bytes | None, fragment: str) -> None:
    with pytest.raises(IntakeRejected) as err:
        parse_report(value)
    assert fragment in str(err.value)


def test_fingerprint_key_matches_the_webhook() -> None:
    doc = {**GOOD, "fingerprint": "abc", "starts_at": "2026-01-01T00:00:00Z"}
    del doc["report_id"]
    assert idempotency_key(doc, "x") == "am:abc:2026-01-01T00:00:00Z"


@settings(max_examples=400, deadline=None)
@given(
    value=st.binary(max_size=300) | mutated() | json_values.map(lambda v: json.dumps(v).encode())
)
def test_parser_accepts_only_schema_valid_reports(value: bytes) -> None:
    try:
        doc = parse_report(value)
    except IntakeRejected as exc:
        assert str(exc)
        return
    assert iter_errors("diagnosis-report", doc) == []
