"""Validation of remed's wire documents against `<kind>.schema.json` (JSON Schema 2020-12).

Three kinds travel on Kafka: `diagnosis-report` (`remed.diagnoses`, and what the webhook
builds), `outcome` (`remed.outcomes`) and `feedback` (`remed.feedback`). The schema files are
the contract. They are package data, beside this module in `remed_daemon/schemas/` (valid and
invalid example documents in `examples/`, in the repository only), so an installed daemon finds
them without the checkout. This module loads them from there (or `$REMED_SCHEMA_DIR`), compiles
one validator per kind on first use, and turns jsonschema's errors into short messages that
name the field:

    target.host: 'x y' does not match '^[A-Za-z0-9]...'

Documents are untrusted (alert text, RCA tool output), so messages never echo a value in full:
each value is clipped, and `validate` reports at most `MAX_REPORTED_ERRORS` problems.

`date-time` is checked here rather than by jsonschema's default checker, which silently
accepts anything unless the optional `rfc3339-validator` package is installed.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, cast, get_args

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from remed_daemon.errors import RemedError

Kind = Literal["diagnosis-report", "outcome", "feedback"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)

SCHEMA_DIR_ENV: Final = "REMED_SCHEMA_DIR"
MAX_REPORTED_ERRORS: Final = 10
_MAX_VALUE_CHARS: Final = 60
_MAX_MESSAGE_CHARS: Final = 300

# RFC 3339 section 5.6 `date-time`; the ranges (month 13, Feb 30) are left to datetime.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


class SchemaError(RemedError, ValueError):
    """A document does not match its schema.

    `errors` holds every problem as `path: message`, sorted; the message shows the first
    `MAX_REPORTED_ERRORS` of them and counts the rest.
    """

    def __init__(self, kind: str, errors: list[str]) -> None:
        shown = errors[:MAX_REPORTED_ERRORS]
        more = len(errors) - len(shown)
        text = "; ".join(shown) + (f"; ... and {more} more" if more else "")
        super().__init__(f"invalid {kind}: {text}")
        self.kind = kind
        self.errors = errors


def _is_rfc3339(instance: object) -> bool:
    if not isinstance(instance, str):
        return True  # format only constrains strings; `type` catches the rest
    match = _RFC3339.fullmatch(instance)
    if match is None:
        return False
    text = instance.upper()
    if match.group(1) == "60":  # a leap second is valid RFC 3339; datetime cannot hold it
        text = text[:17] + "59" + text[19:]
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _format_checker() -> FormatChecker:
    checker = FormatChecker()  # the instance owns a copy of the registry; this stays local
    checker.checks("date-time")(_is_rfc3339)
    return checker


def schema_dir() -> Path:
    """The directory holding `<kind>.schema.json`: `$REMED_SCHEMA_DIR`, else this package's."""
    override = os.environ.get(SCHEMA_DIR_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parent


def _check_kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"unknown schema kind {kind!r}; expected one of {', '.join(KINDS)}")
    return cast(Kind, kind)


@functools.cache
def _load(directory: Path, kind: Kind) -> tuple[dict[str, Any], Draft202012Validator]:
    path = directory / f"{kind}.schema.json"
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FileNotFoundError(
            f"cannot read the {kind} schema at {path}: {exc.strerror or exc}; "
            f"set {SCHEMA_DIR_ENV} to the directory holding remed's *.schema.json files"
        ) from exc
    Draft202012Validator.check_schema(schema)
    return schema, Draft202012Validator(schema, format_checker=_format_checker())


def load_schema(kind: Kind) -> dict[str, Any]:
    """The parsed schema of `kind` (shared; do not modify it)."""
    return _load(schema_dir(), _check_kind(kind))[0]


def iter_errors(kind: Kind, document: object) -> list[str]:
    """Every problem of `document` as `path: message`, sorted; empty when it is valid."""
    validator = _load(schema_dir(), _check_kind(kind))[1]
    return sorted(line for error in validator.iter_errors(document) for line in _describe(error))


def validate(kind: Kind, document: object) -> None:
    """Raise `SchemaError` naming every problem (up to `MAX_REPORTED_ERRORS`) unless valid."""
    errors = iter_errors(kind, document)
    if errors:
        raise SchemaError(kind, errors)


def _path(parts: Iterable[object]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{_clip(part)}]"
    return out or "(document)"


def _clip(value: object) -> str:
    text = repr(value)
    if len(text) <= _MAX_VALUE_CHARS:
        return text
    return text[: _MAX_VALUE_CHARS - 1] + "…"


def _describe(error: ValidationError) -> list[str]:
    path, message = list(error.absolute_path), _message(error)
    if error.validator == "required":
        # Name the missing field in the path: `timings.finished_at: is required`.
        path.append(_missing_property(error))
        message = "is required"
    elif error.validator == "additionalProperties" and error.validator_value is False:
        # One line per unknown field, named in the path: `trace.spanid: is not allowed`.
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        extra = (
            [k for k in error.instance if k not in known]
            if isinstance(error.instance, dict)
            else []
        )
        if extra:
            return [f"{_path([*path, k])}: is not allowed (unknown field)" for k in extra]
    elif "propertyNames" in error.absolute_schema_path:
        # The error sits on the object; say that a key, not the object, is at fault.
        shown = message.startswith(_clip(error.instance))
        message = f"key {message}" if shown else f"key {_clip(error.instance)} {message}"
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[: _MAX_MESSAGE_CHARS - 1] + "…"
    return [f"{_path(path)}: {message}"]


def _message(error: ValidationError) -> str:
    instance, validator, limit = error.instance, str(error.validator), error.validator_value
    if validator in {"maxLength", "minLength", "maxItems", "minItems", "maxProperties"}:
        noun = {"maxLength": "characters", "minLength": "characters", "maxProperties": "keys"}
        bound = "at most" if validator.startswith("max") else "at least"
        size = len(instance) if isinstance(instance, str | list | dict) else "?"
        return f"must have {bound} {limit} {noun.get(validator, 'items')}, has {size}"
    if validator == "anyOf" and all(
        isinstance(branch, dict) and set(branch) == {"required"} for branch in limit
    ):
        # Alternative sets of required fields (the report's idempotency key).
        options = [" and ".join(branch["required"]) for branch in limit]
        return "needs " + ", or ".join(options)
    if validator == "contains" and isinstance(limit, dict) and "description" in limit:
        return str(limit["description"])
    # jsonschema writes the offending value with repr(); echo it clipped, not whole.
    return error.message.replace(repr(instance), _clip(instance), 1)


def _missing_property(error: ValidationError) -> str:
    for name in error.validator_value:
        if error.message.startswith(repr(name)):
            return str(name)
    return "?"
