"""From one incident's outcome and its feedback to labelled examples (pure functions).

An example is (prompt the planner saw, completion, desirable?). The completion is the playbook
in the answer form the SFT data teaches (a ```yaml fence), so KTO moves the same distribution
serving samples from. Rules, per attempt that has a playbook and a recorded prompt:

| attempt | no feedback | `good` | `bad` / `unsafe` |
|---|---|---|---|
| verified (passed) | desirable, after the grace period | desirable | undesirable |
| applied, verification failed | undesirable | undesirable | undesirable |
| refused by the guard, or rejected by a person | undesirable | undesirable | undesirable |
| shadow (planned, not applied) | none | desirable | undesirable |

A corrected playbook the guard allows for the outcome's hosts is desirable for the executed
attempt's prompt, and the executed playbook undesirable. Only each author's latest feedback
on an incident counts, and a complaint (`bad`, `unsafe`) from anyone outweighs a `good`: more
caution costs the model a positive, never lets a harmful one through.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from remed_daemon.guard import GuardUsageError, check_playbook
from remed_daemon.outcomes.document import prompt_sha256, rebuild_prompt

ANONYMOUS = "(anonymous)"


@dataclass(frozen=True)
class Example:
    id: str
    incident_id: str
    category: str
    prompt: str
    prompt_exact: bool
    completion: str
    label: bool  # desirable
    source: str  # verified | failed | refused | rejected | shadow | feedback:<verdict> | corrected
    author: str  # "" when no person said anything
    provisional: bool = False  # desirable only because nobody complained (yet)


@dataclass(frozen=True)
class Judged:
    """A feedback's corrected playbook as the trainer's guard saw it."""

    accepted: bool
    rules: tuple[str, ...] = ()


def answer(playbook: str) -> str:
    return f"```yaml\n{playbook.rstrip()}\n```"


def outcome_hosts(outcome: Mapping[str, Any]) -> list[str]:
    """The hosts the outcome's remediation could touch (recorded per attempt's prompt), else the
    target's host."""
    for attempt in outcome.get("attempts", []):
        hosts = (attempt.get("prompt") or {}).get("hosts")
        if hosts:
            return [str(h) for h in hosts]
    host = str(outcome.get("target", {}).get("host", ""))
    return [host] if host else []


def judge(playbook: str, hosts: Sequence[str]) -> Judged:
    """The guard again, here: what reaches the topic is untrusted whatever the sender checked."""
    if not hosts:
        return Judged(False, ("hosts.unknown",))
    try:
        verdict = check_playbook(playbook, list(hosts))
    except GuardUsageError:
        return Judged(False, ("hosts.invalid",))
    except Exception:  # a guard bug refuses, as in the daemon
        return Judged(False, ("guard.internal",))
    return Judged(verdict.allowed, tuple(sorted({v.rule for v in verdict.violations})))


def latest_per_author(feedback: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Each author's newest feedback on the incident (by `created_at`, then arrival order)."""
    newest: dict[str, Mapping[str, Any]] = {}
    for fb in feedback:  # in arrival order
        who = str(fb.get("author") or ANONYMOUS)
        if who not in newest or str(fb.get("created_at", "")) >= str(
            newest[who].get("created_at", "")
        ):
            newest[who] = fb
    return list(newest.values())


def _id(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:32]


def derive(
    outcome: Mapping[str, Any],
    feedback: Sequence[Mapping[str, Any]],
    judged: Mapping[str, Judged],
) -> list[Example]:
    """Every example of one incident. `feedback` in arrival order; `judged` by feedback id for
    those with a corrected playbook (refused ones yield nothing)."""
    iid = str(outcome["incident_id"])
    category = str(outcome.get("category") or "unknown")
    latest = latest_per_author(feedback)
    complaints = [f for f in latest if f.get("verdict") in ("bad", "unsafe")]
    praise = [f for f in latest if f.get("verdict") == "good"]
    out: list[Example] = []
    executed: tuple[str, bool, str] | None = None  # (prompt, exact, playbook) of the last run
    for attempt in outcome.get("attempts", []):
        playbook = str(attempt.get("playbook") or "")
        prompt = rebuild_prompt(outcome, attempt)
        if not playbook or prompt is None:
            continue
        exact = prompt_sha256(prompt) == attempt["prompt"]["sha256"]
        guard = attempt.get("guard") or {}
        verification = attempt.get("verification")
        approval = (attempt.get("approval") or {}).get("decision")

        n, text = attempt.get("attempt"), prompt

        def add(label: bool, source: str, author: str = "", provisional: bool = False,
                n: Any = n, text: str = text, exact: bool = exact, playbook: str = playbook,
                ) -> None:  # fmt: skip
            out.append(Example(
                _id(iid, n, label, source, author), iid, category, text,
                exact, answer(playbook), label, source, author, provisional,
            ))  # fmt: skip

        if not guard.get("allowed", False):
            add(False, "refused")
            continue
        if approval in ("rejected", "expired") and verification is None:
            add(False, "rejected", str((attempt.get("approval") or {}).get("by", "")))
            continue
        if verification is None:  # shadow: planned and allowed, not applied
            executed = (prompt, exact, playbook)
            if complaints:
                add(False, f"feedback:{complaints[0]['verdict']}", _author(complaints[0]))
            elif praise:
                add(True, "feedback:good", _author(praise[0]))
            continue
        executed = (prompt, exact, playbook)
        if not verification.get("passed"):
            add(False, "failed")
        elif complaints:
            add(False, f"feedback:{complaints[0]['verdict']}", _author(complaints[0]))
        elif praise:
            add(True, "feedback:good", _author(praise[0]))
        else:
            add(True, "verified", provisional=True)
    refused = Judged(False)
    corrections = [
        f for f in latest
        if f.get("corrected_playbook") and judged.get(str(f.get("feedback_id")), refused).accepted
    ]  # fmt: skip
    if executed is not None:
        prompt, exact, playbook = executed
        for fb in corrections:
            fixed = str(fb["corrected_playbook"])
            if fixed.strip() == playbook.strip():
                continue
            who = _author(fb)
            out.append(Example(_id(iid, "corrected", fb.get("feedback_id")), iid, category,
                               prompt, exact, answer(fixed), True, "corrected", who))  # fmt: skip
            negative = _id(iid, "executed", playbook)
            if not any(e.id == negative for e in out) and not any(
                e.completion == answer(playbook) and not e.label for e in out
            ):
                out.append(Example(negative, iid, category, prompt, exact, answer(playbook),
                                   False, "corrected", who))  # fmt: skip
        if corrections:  # a correction is a complaint about the executed playbook
            out = [e for e in out if not (e.label and e.completion == answer(playbook))]
    return out


def _author(fb: Mapping[str, Any]) -> str:
    return str(fb.get("author") or ANONYMOUS)
