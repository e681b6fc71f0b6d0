"""An outcome carries what rebuilds each attempt's prompt exactly (Real-RFT trains on the prompt
the planner saw): `attempt.prompt` plus `planner_input`, optional fields that older outcomes
lack and stay valid without."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remed_daemon.journal import Incident, State
from remed_daemon.outcomes.document import (
    outcome_doc,
    prompt_record,
    prompt_sha256,
    rebuild_prompt,
)
from remed_daemon.planner.base import PlanRequest
from remed_daemon.remediation import Attempt, RemediationResult
from remed_daemon.schemas import iter_errors

pytestmark = pytest.mark.unit
EXAMPLES = Path(__file__).resolve().parents[2] / "remed_daemon" / "schemas" / "examples"

REPORT = {
    "schema_version": 1,
    "report_id": "r-1",
    "source": "kafka",
    "target": {"service": "cart", "host": "app"},
    "severity": "critical",
    "category": "process-killed",
    "summary": "cart is down " + "x" * 2500,  # clipped by the prompt, and in the outcome alike
    "report": "supervisord says cart exited",
    "evidence": ["exit status 137", {"k": "v"}],
}


def _incident(report: dict[str, object]) -> Incident:
    return Incident("inc-1", "k", "kafka", "cart@app", State.RECOVERED, dict(report), "", None,
                    None, "", 1.0, 2.0, 1.5, 3.0)  # fmt: skip


def _requests() -> list[PlanRequest]:
    base = dict(report=REPORT, service="cart", host="app", category="process-killed",
                facts="cart runs on host app (10.0.0.2)", probe_names=["ps", "logs"])  # fmt: skip
    return [
        PlanRequest(**base, probes=["[ps on app, exit 0]\nnothing"], attempt=1),  # type: ignore[arg-type]
        PlanRequest(
            **base,
            probes=["[ps on app, exit 0]\nnothing"],  # type: ignore[arg-type]
            previous=["Attempt 1:\n- verifier: http-health failed: 503"],
            attempt=2,
        ),
    ]


def test_each_attempt_prompt_rebuilds_exactly_from_the_outcome() -> None:
    requests = _requests()
    attempts = [
        Attempt(
            playbook="- hosts: app\n  tasks: []\n",
            guard={"allowed": True, "risk": "low", "needs_approval": False, "violations": []},
            prompt=prompt_record(r, ["app"]),
            verification={"passed": i == 1, "checks": []},
        )
        for i, r in enumerate(requests)
    ]
    result = RemediationResult(status=State.RECOVERED, attempts=attempts, planner="triton")
    doc = outcome_doc(_incident(REPORT), State.RECOVERED, "ok", result)
    assert iter_errors("outcome", json.loads(json.dumps(doc))) == []
    for request, attempt in zip(requests, doc["attempts"], strict=True):
        rebuilt = rebuild_prompt(doc, attempt)
        assert rebuilt == request.prompt()
        assert prompt_sha256(rebuilt) == attempt["prompt"]["sha256"]
        assert attempt["prompt"]["hosts"] == ["app"]


def test_redacted_input_is_flagged_by_the_digest() -> None:
    report = {**REPORT, "summary": "db password=hunter2 rejected"}
    request = PlanRequest(report=report, service="cart", host="app")
    attempt = Attempt(
        playbook="",
        guard={"allowed": False, "risk": "high", "needs_approval": False, "violations": []},
        prompt=prompt_record(request, ["app"]),
    )
    result = RemediationResult(status=State.FAILED, attempts=[attempt])
    doc = outcome_doc(_incident(report), State.FAILED, "no", result)
    assert "hunter2" not in json.dumps(doc)
    rebuilt = rebuild_prompt(doc, doc["attempts"][0])
    assert rebuilt is not None and prompt_sha256(rebuilt) != doc["attempts"][0]["prompt"]["sha256"]


def test_outcomes_without_prompt_stay_valid_and_rebuild_nothing() -> None:
    old = json.loads((EXAMPLES / "outcome.recovered.json").read_text())
    assert iter_errors("outcome", old) == []
    assert rebuild_prompt(old, old["attempts"][0]) is None
    doc = outcome_doc(_incident(REPORT), State.CANCELLED, "resolved", None)
    assert "planner_input" not in doc and iter_errors("outcome", doc) == []
