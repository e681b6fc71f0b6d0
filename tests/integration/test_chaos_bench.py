"""`remed bench` on the real lab: the oracle fixes every category; the static runbook does not
fix what a restart cannot (config errors, dependency faults) but does restart a dead service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chaos.bench import run
from chaos.faults import CATEGORIES, Target
from chaos.lab.hosts import Lab
from chaos.remediators import OracleRemediator, RulesRemediator
from chaos.scenario import Scenario, load_suite

pytestmark = pytest.mark.integration


def _one_per_category() -> list[Scenario]:
    seen: dict[str, Scenario] = {}
    for scenario in load_suite("all"):
        seen.setdefault(scenario.category, scenario)
    return list(seen.values())


def test_oracle_fixes_every_category(lab: Any, tmp_path: Path) -> None:
    scenarios = _one_per_category()
    assert {s.category for s in scenarios} == set(CATEGORIES)
    out = tmp_path / "oracle"
    summary = run(scenarios, OracleRemediator(Lab.from_paths()), out, suite="all",
                  progress=False)
    failed = {c: v for c, v in summary["by_category"].items() if v["success_rate"] != 1.0}
    assert not failed, failed
    assert summary["injected"] == summary["cases"] == len(scenarios)
    assert summary["success_rate"] == 1.0
    assert (out / "summary.md").exists() and (out / "success_by_category.png").stat().st_size
    journal = json.loads((out / "cases" / f"{scenarios[0].id}.json").read_text())
    for key in ("scenario", "injection", "confirmation", "report", "remediation",
                "verification", "timings", "tokens"):
        assert key in journal
    assert journal["remediation"]["playbooks"] and journal["remediation"]["events"]
    assert journal["timings"]["ttr_s"] > 0


def test_rules_runbook_fails_where_a_restart_cannot_help(lab: Any, tmp_path: Path) -> None:
    scenarios = [
        Scenario("rules-config", "config-error", Target("app", "catalog"),
                 {"variant": "credential"}),
        Scenario("rules-dependency", "dependency-down", Target("app", "cart")),
        Scenario("rules-down", "service-down", Target("app", "checkout")),
    ]
    summary = run(scenarios, RulesRemediator(Lab.from_paths()), tmp_path / "rules", suite="t",
                  progress=False)
    by = summary["by_category"]
    assert by["config-error"]["success_rate"] == 0.0
    assert by["dependency-down"]["success_rate"] == 0.0
    assert by["service-down"]["success_rate"] == 1.0
