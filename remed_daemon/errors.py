"""One error hierarchy for the daemon; retry policy is data (`retriable`), not string matching."""

from __future__ import annotations


class RemedError(Exception):
    """Base of every error the daemon raises on purpose. The message says what to do."""

    retriable: bool = False


class ConfigError(RemedError, ValueError):
    """The configuration is invalid; the message names the key, the value's origin and a fix."""


class JournalError(RemedError):
    """The journal refused an operation (an illegal state transition, a corrupt database)."""


class IllegalTransition(JournalError):
    """An incident was asked to move between states the state machine does not connect."""


class IntakeRejected(RemedError, ValueError):
    """A report or alert is malformed; it goes to the DLT (Kafka) or gets a 400 (webhook)."""


class Saturated(RemedError):
    """Too much work is pending; the caller should retry later (webhook 503, Kafka pause)."""

    retriable = True


class PlannerUnavailable(RemedError):
    """The planner (Triton) did not answer; the incident waits and is retried with backoff."""

    retriable = True


class ExecutionError(RemedError):
    """A playbook run could not be started or was interrupted."""
