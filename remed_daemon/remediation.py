"""What a remediator is and what it reports: the protocol the scheduler drives, the context it
hands over, and the result types an outcome is built from.

The scheduler, the intakes and the engine (`remed_daemon.agents.loop.ThinkRemed`) import this
module; it imports none of them. The one rule a remediator must keep: call
`await ctx.enter(State.EXECUTING)` *before* anything can change a host (the journal write is what
makes a crash never run a playbook twice), and `await ctx.enter(State.VERIFYING)` before
verifying.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from opentelemetry import trace

from remed_daemon.errors import IntakeRejected
from remed_daemon.journal import Incident, Journal, State

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


@dataclass
class RemediationContext:
    """What a remediator gets besides the incident: the journal hook, cancellation, tracing."""

    journal: Journal
    incident: Incident
    tracer: trace.Tracer
    run_dir: Path
    # Thread-safe: ansible-runner's cancel_callback polls it from its worker thread.
    cancel: threading.Event = field(default_factory=threading.Event)

    async def enter(self, state: State, reason: str = "") -> None:
        """Durably move the incident on; raises IllegalTransition if it was cancelled."""
        self.incident = await self.journal.transition(self.incident.id, state, reason)


@dataclass(frozen=True)
class TaskResult:
    """One task on one host, from ansible-runner's event stream (schema: attempt.tasks[])."""

    host: str
    task: str
    module: str = ""
    changed: bool = False
    failed: bool = False
    unreachable: bool = False
    rc: int | None = None
    duration_ms: float = 0.0
    skipped: bool = False
    msg: str = ""  # the module's message on failure, redacted


@dataclass(frozen=True)
class Attempt:
    """One plan → guard → (check) → apply → verify round (schema: outcome `$defs.attempt`)."""

    playbook: str
    # The guard's verdict on `playbook` ({"allowed", "risk", "needs_approval", "violations"}).
    guard: Mapping[str, Any]
    tasks: Sequence[TaskResult] = ()
    # {"passed": bool, "checks": [{"name", "passed", "detail"}]}; None when nothing was applied.
    verification: Mapping[str, Any] | None = None
    check_diff: str = ""
    reflection: str = ""
    # {"decision": "approved"|"rejected"|"expired", "by", "at"} when a person had to decide
    approval: Mapping[str, Any] | None = None
    # What the planner was given for this attempt, enough to rebuild its prompt exactly
    # (`outcomes.document.prompt_record`; schema: attempt.prompt); None without a planner call.
    prompt: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RemediationResult:
    """What a remediator reports back; becomes the outcome's body."""

    status: State
    reason: str = ""
    attempts: Sequence[Attempt] = ()
    planner: str = ""
    model_name: str = ""
    model_version: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error_type: str = ""
    error: str = ""
    # {"performed", "restored": [{"host", "kind", "name"}], "errors"} when an undo was needed
    undo: Mapping[str, Any] | None = None


class Remediator(Protocol):
    async def remediate(self, incident: Incident, ctx: RemediationContext) -> RemediationResult: ...


def target_of(report: Mapping[str, Any]) -> tuple[str, str]:
    """(service, host) of a report, checked to be plain names (they go into a playbook)."""
    target = report.get("target")
    if not isinstance(target, Mapping):
        raise IntakeRejected("report has no 'target' object with 'service' and 'host'")
    service, host = target.get("service"), target.get("host")
    for name, value in (("service", service), ("host", host)):
        if not isinstance(value, str) or not _NAME.match(value):
            raise IntakeRejected(
                f"target.{name} must be a name of letters, digits and _.:- "
                f"(at most 128 characters), got {value!r}"
            )
    return str(service), str(host)


def report_id_of(incident: Incident) -> str:
    """The report's own id, or one derived from the incident's idempotency key."""
    rid = incident.report.get("report_id")
    if isinstance(rid, str) and rid:
        return rid
    return "key-" + hashlib.sha256(incident.idem_key.encode()).hexdigest()[:32]
