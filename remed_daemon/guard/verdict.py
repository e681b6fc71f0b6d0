"""What the guard answers: the verdict, its violations, the policy limits, the incident hosts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from remed_daemon.guard.paths import LEVEL_NAMES

Risk = Literal["low", "medium", "high"]
EXIT_ALLOWED, EXIT_REJECTED, EXIT_USAGE, EXIT_APPROVAL = 0, 1, 2, 3


@dataclass(frozen=True)
class Violation:
    """One reason for the verdict: a rule id, the task (name or index) and what was found."""

    rule: str
    task: str
    detail: str


@dataclass(frozen=True)
class GuardPolicy:
    """Limits of the guard. The rules themselves are code, reviewed like code."""

    max_bytes: int = 128 * 1024
    max_depth: int = 40
    max_tasks: int = 300
    max_variants: int = 64

    def __post_init__(self) -> None:
        if min(self.max_bytes, self.max_depth, self.max_tasks, self.max_variants) <= 0:
            raise ValueError("GuardPolicy limits must be positive; use the defaults if unsure")


DEFAULT = GuardPolicy()

# Rejections that say the playbook is malformed (it would not parse or not run as written),
# not that it would do harm. A trainer or a benchmark tells a model that writes broken YAML
# from one that writes destructive plans with these; the guard refuses both alike.
MALFORMED_RULES = frozenset({
    "yaml.invalid", "yaml.duplicate_key", "yaml.too_deep", "yaml.too_large", "playbook.shape",
    "playbook.unknown_key", "playbook.too_many_tasks", "hosts.missing", "task.no_module",
    "task.bad_args", "shell.syntax",
})  # fmt: skip


def refused_as_dangerous(rules: Sequence[str]) -> bool:
    """A rejection with these violation rules refused something harmful: any rule outside
    MALFORMED_RULES (an empty list too: a refusal that names no rule is not known harmless)."""
    return not rules or any(rule not in MALFORMED_RULES for rule in rules)


@dataclass(frozen=True)
class GuardVerdict:
    allowed: bool
    risk: Risk
    needs_approval: bool
    violations: tuple[Violation, ...]  # what makes it rejected (empty when allowed)
    reasons: tuple[Violation, ...] = ()  # what raised the risk above low
    touched_files: frozenset[str] = frozenset()
    touched_services: frozenset[str] = frozenset()

    @property
    def exit_code(self) -> int:
        if not self.allowed:
            return EXIT_REJECTED
        return EXIT_APPROVAL if self.needs_approval else EXIT_ALLOWED

    @property
    def check_first(self) -> bool:
        """Medium risk: run `--check --diff` before applying."""
        return self.allowed and self.risk == "medium"

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "risk": self.risk,
            "needs_approval": self.needs_approval,
            "violations": [v.__dict__ for v in self.violations],
            "reasons": [v.__dict__ for v in self.reasons],
            "touched_files": sorted(self.touched_files),
            "touched_services": sorted(self.touched_services),
        }


class GuardUsageError(ValueError):
    """The caller's mistake (no hosts, a bad host name), not the playbook's."""


HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def parse_hosts(hosts: Sequence[str] | str) -> tuple[str, ...]:
    items = hosts.split(",") if isinstance(hosts, str) else list(hosts)
    out = tuple(h.strip() for h in items if h.strip())
    if not out:
        raise GuardUsageError("no incident hosts given: pass --hosts H1,H2")
    for h in out:
        if not HOST_NAME.match(h):
            raise GuardUsageError(f"{h!r} is not a host name (letters, digits, _ . -)")
    return out




def dedupe(items: tuple[Violation, ...]) -> tuple[Violation, ...]:
    seen: set[Violation] = set()
    out = []
    for v in items:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return tuple(out)


def level_name(level: int) -> str:
    return LEVEL_NAMES[level]


