"""The wire schemas (`remed_daemon/schemas/*.schema.json`), their examples, and the loader."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from remed_daemon import schemas
from remed_daemon.schemas import KINDS, MAX_REPORTED_ERRORS, Kind, SchemaError

pytestmark = pytest.mark.unit

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "remed_daemon" / "schemas"
EXAMPLES = sorted((SCHEMA_DIR / "examples").glob("*.json"))
INVALID = sorted((SCHEMA_DIR / "examples" / "invalid").glob("*.json"))

# Each invalid example and the field its error must name (the start of the message).
INVALID_FIELD = {
    "diagnosis-report.alertmanager-unknown-status.json": "status",
    "diagnosis-report.alertmanager-without-fingerprint.json": "fingerprint",
    "diagnosis-report.future-schema-version.json": "schema_version",
    "diagnosis-report.host-looks-like-an-option.json": "target.host",
    "diagnosis-report.host-with-shell-metacharacters.json": "target.host",
    "diagnosis-report.host-with-trailing-newline.json": "target.host",
    "diagnosis-report.malformed-traceparent.json": "trace.traceparent",
    "diagnosis-report.no-idempotency-key.json": "report_id",
    "diagnosis-report.observed-at-not-rfc3339.json": "observed_at",
    "diagnosis-report.service-with-space.json": "target.service",
    "diagnosis-report.summary-too-long.json": "summary",
    "diagnosis-report.too-much-evidence.json": "evidence",
    "diagnosis-report.unknown-source.json": "source",
    "diagnosis-report.unknown-top-level-field.json": "run",
    "feedback.author-with-control-characters.json": "author",
    "feedback.created-at-impossible-date.json": "created_at",
    "feedback.missing-incident-id.json": "incident_id",
    "feedback.unknown-verdict.json": "verdict",
    "outcome.guard-risk-unknown.json": "attempts[0].guard.risk",
    "outcome.missing-finished-at.json": "timings.finished_at",
    "outcome.negative-tokens.json": "tokens.prompt",
    "outcome.recovered-without-passed-verification.json": "attempts",
    "outcome.task-changed-not-boolean.json": "attempts[0].tasks[0].changed",
    "outcome.unknown-status.json": "status",
}

# $defs that every schema holding them must define identically.
SHARED_DEFS = ("identifier", "hostname", "service", "target", "traceparent")


def kind_of(path: Path) -> Kind:
    kind = path.name.split(".", 1)[0]
    assert kind in KINDS, f"{path.name}: name must start with one of {KINDS}"
    return cast(Kind, kind)


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def example(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = load(SCHEMA_DIR / "examples" / name)
    return doc


# --- the schema files ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_valid_draft_2020_12_with_id(kind: Kind) -> None:
    schema = load(SCHEMA_DIR / f"{kind}.schema.json")
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://remed.dev/schemas/{kind}.schema.json"
    assert schema["title"] and schema["description"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["schema_version"]["const"] == 1


def _properties(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            yield f"{where}.{name}", sub
        for key, sub in node.items():
            yield from _properties(sub, f"{where}/{key}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            yield from _properties(sub, f"{where}[{i}]")


@pytest.mark.parametrize("kind", KINDS)
def test_every_property_is_described(kind: Kind) -> None:
    schema = load(SCHEMA_DIR / f"{kind}.schema.json")
    defs = schema.get("$defs", {})
    missing = []
    for where, prop in _properties(schema):
        ref = prop.get("$ref", "")
        described = "description" in prop or "description" in defs.get(ref.split("/")[-1], {})
        if not described and "/allOf" not in where:  # allOf only restates conditions
            missing.append(where)
    assert not missing, f"properties without a description: {missing}"


@pytest.mark.parametrize("kind", KINDS)
def test_every_free_string_is_length_limited(kind: Kind) -> None:
    """Alert text is untrusted input: no string may be unbounded."""
    schema = load(SCHEMA_DIR / f"{kind}.schema.json")
    unbounded = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "string" and "maxLength" not in node:
                unbounded.append(where)
            for key, sub in node.items():
                walk(sub, f"{where}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{where}[{i}]")

    walk(schema, "")
    assert not unbounded, f"strings without maxLength: {unbounded}"


def test_shared_defs_are_identical_across_schemas() -> None:
    loaded = {kind: load(SCHEMA_DIR / f"{kind}.schema.json") for kind in KINDS}
    for name in SHARED_DEFS:
        versions = {
            json.dumps(s["$defs"][name], sort_keys=True)
            for s in loaded.values()
            if name in s.get("$defs", {})
        }
        assert len(versions) == 1, f"$defs.{name} differs between the schemas"


# --- examples -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid(path: Path) -> None:
    schemas.validate(kind_of(path), load(path))


def test_examples_cover_every_kind_and_outcome_status() -> None:
    for kind in KINDS:
        assert sum(kind_of(p) == kind for p in EXAMPLES) >= 3, f"too few {kind} examples"
    statuses = {load(p)["status"] for p in EXAMPLES if kind_of(p) == "outcome"}
    outcome_schema = schemas.load_schema("outcome")
    assert statuses == set(outcome_schema["properties"]["status"]["enum"])
    sources = {load(p)["source"] for p in EXAMPLES if kind_of(p) == "diagnosis-report"}
    assert {"kafka", "alertmanager"} <= sources
    verdicts = {load(p)["verdict"] for p in EXAMPLES if kind_of(p) == "feedback"}
    assert verdicts == {"good", "bad", "unsafe"}


def test_every_invalid_example_has_an_expected_field() -> None:
    assert {p.name for p in INVALID} == set(INVALID_FIELD)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_example_is_rejected_naming_the_field(path: Path) -> None:
    with pytest.raises(SchemaError) as caught:
        schemas.validate(kind_of(path), load(path))
    field = INVALID_FIELD[path.name]
    # The field is the path of an error, or named by a document-level rule (the key choice).
    assert any(
        line.startswith(f"{field}:") or (line.startswith("(document):") and field in line)
        for line in caught.value.errors
    ), caught.value.errors
    assert str(caught.value).startswith(f"invalid {kind_of(path)}: ")
    assert field in str(caught.value)


# --- remed_daemon.schemas behaviour ----------------------------------------------------------


def test_iter_errors_is_empty_for_valid_and_sorted_for_invalid() -> None:
    assert schemas.iter_errors("feedback", example("feedback.good.json")) == []
    errors = schemas.iter_errors("feedback", {"verdict": "meh", "extra": 1})
    assert errors == sorted(errors)
    assert "incident_id: is required" in errors
    assert "extra: is not allowed (unknown field)" in errors
    assert "verdict: 'meh' is not one of ['good', 'bad', 'unsafe']" in errors


def test_schema_error_lists_at_most_the_first_errors() -> None:
    report = example("diagnosis-report.kafka-rca.json")
    report["evidence"] = [1] * 30  # 30 type errors
    with pytest.raises(SchemaError) as caught:
        schemas.validate("diagnosis-report", report)
    assert len(caught.value.errors) == 30
    assert str(caught.value).count("is not of type 'string'") == MAX_REPORTED_ERRORS
    assert str(caught.value).endswith("; ... and 20 more")
    assert caught.value.errors[0] == "evidence[0]: 1 is not of type 'string'"
    assert isinstance(caught.value, ValueError)


def test_messages_never_echo_a_huge_untrusted_value() -> None:
    report = example("diagnosis-report.bench-minimal.json")
    report["target"]["host"] = "evil host " * 10_000
    report["labels"] = {"k" * 5_000: "v"}
    errors = schemas.iter_errors("diagnosis-report", report)
    assert errors and all(len(line) < 400 for line in errors)
    assert any(line.startswith("target.host: must have at most 253 characters") for line in errors)
    assert any(line.startswith("labels: key 'kkk") for line in errors)


def test_idempotency_key_may_be_fingerprint_and_starts_at() -> None:
    resolved = example("diagnosis-report.alertmanager-resolved.json")
    assert "report_id" not in resolved
    schemas.validate("diagnosis-report", resolved)
    del resolved["starts_at"]
    errors = schemas.iter_errors("diagnosis-report", resolved)
    assert "(document): needs report_id, or fingerprint and starts_at" in errors


@pytest.mark.parametrize("version", [True, 1.5, "1", 0, 2])
def test_schema_version_must_be_the_integer_1(version: object) -> None:
    report = example("diagnosis-report.bench-minimal.json")
    report["schema_version"] = version
    errors = schemas.iter_errors("diagnosis-report", report)
    assert errors and all(line.startswith("schema_version:") for line in errors)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2025-06-03T14:01:58Z", True),
        ("2025-06-03t14:01:58z", True),
        ("2025-06-03T14:01:58.123456789+02:00", True),
        ("2016-12-31T23:59:60Z", True),  # leap second
        ("2025-06-03T14:01:58", False),  # no offset
        ("2025-06-03 14:01:58Z", False),
        ("2025-02-30T10:00:00Z", False),
        ("2025-06-03T25:00:00Z", False),
        ("2025-06-03", False),
        ("2025-06-03T14:01:58Z\n", False),
        ("٢٠٢٥-06-03T14:01:58Z", False),  # non-ASCII digits
    ],
)
def test_date_time_is_checked_as_rfc3339(value: str, ok: bool) -> None:
    feedback = example("feedback.good.json") | {"created_at": value}
    errors = schemas.iter_errors("feedback", feedback)
    assert errors == ([] if ok else [f"created_at: {value!r} is not a 'date-time'"])


def test_recovered_needs_a_passed_verification() -> None:
    outcome = example("outcome.recovered.json")
    outcome["attempts"] = []
    errors = schemas.iter_errors("outcome", outcome)
    assert any(line.startswith("attempts: must have at least 1 items") for line in errors)


def test_unknown_kind_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown schema kind 'report'"):
        schemas.validate("report", {})  # type: ignore[arg-type]


def test_schema_dir_can_be_overridden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for kind in KINDS:
        shutil.copy(SCHEMA_DIR / f"{kind}.schema.json", tmp_path)
    schema = load(tmp_path / "feedback.schema.json")
    schema["properties"]["comment"]["maxLength"] = 5
    (tmp_path / "feedback.schema.json").write_text(json.dumps(schema))
    monkeypatch.setenv(schemas.SCHEMA_DIR_ENV, str(tmp_path))
    assert schemas.schema_dir() == tmp_path
    feedback = example("feedback.unsafe.json")
    errors = schemas.iter_errors("feedback", feedback)
    assert errors == [f"comment: must have at most 5 characters, has {len(feedback['comment'])}"]


def test_missing_schema_dir_says_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(schemas.SCHEMA_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=schemas.SCHEMA_DIR_ENV):
        schemas.validate("outcome", {})


# --- property-based: untrusted input never crashes validation -------------------------------

# Property names of all three schemas, so that generated documents reach past the top level.
_KNOWN_KEYS = sorted(
    {
        where.rsplit(".", 1)[-1]
        for kind in KINDS
        for where, _ in _properties(load(SCHEMA_DIR / f"{kind}.schema.json"))
    }
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(_KNOWN_KEYS) | st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
json_objects = st.dictionaries(
    st.sampled_from(_KNOWN_KEYS) | st.text(max_size=20), json_values, max_size=12
)


def _validate_or_schema_error(kind: Kind, document: object) -> None:
    try:
        schemas.validate(kind, document)
    except SchemaError as exc:
        assert exc.errors and all(": " in line for line in exc.errors)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), document=json_objects | json_values)
def test_arbitrary_json_never_crashes_validation(kind: Kind, document: object) -> None:
    _validate_or_schema_error(kind, document)


@settings(max_examples=300, deadline=None)
@given(
    path=st.sampled_from(EXAMPLES),
    keys=st.lists(st.sampled_from(_KNOWN_KEYS) | st.integers(0, 3), min_size=1, max_size=4),
    value=json_values,
)
def test_mutated_examples_never_crash_validation(
    path: Path, keys: list[str | int], value: object
) -> None:
    document = copy.deepcopy(load(path))
    node: Any = document
    for key in keys[:-1]:  # walk as deep as the document goes, then overwrite one spot
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
    if isinstance(node, dict):
        node[str(keys[-1])] = value
    elif isinstance(node, list) and node:
        node[0] = value
    _validate_or_schema_error(kind_of(path), document)


@settings(max_examples=100, deadline=None)
@given(summary=st.text(min_size=1001, max_size=3000))
def test_over_long_summary_is_rejected(summary: str) -> None:
    report = example("diagnosis-report.kafka-rca.json") | {"summary": summary}
    with pytest.raises(SchemaError) as caught:
        schemas.validate("diagnosis-report", report)
    assert caught.value.errors == [
        f"summary: must have at most 1000 characters, has {len(summary)}"
    ]


@settings(max_examples=100, deadline=None)
@given(summary=st.text(min_size=1, max_size=1000))
def test_any_summary_within_the_limit_is_accepted(summary: str) -> None:
    report = example("diagnosis-report.kafka-rca.json") | {"summary": summary}
    schemas.validate("diagnosis-report", report)
