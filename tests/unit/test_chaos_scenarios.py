"""Scenario files, suites and generated diagnosis reports (no lab needed)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from chaos.faults import CATEGORIES, FaultError
from chaos.scenario import Scenario, diagnosis, load_suite, style_of
from remed_daemon.schemas import validate

pytestmark = pytest.mark.unit

SEVEN = {"cpu-stress", "memory-stress", "disk-io", "network-loss", "network-delay",
         "service-down", "config-error"}


def test_suites_mirror_microremed_composition() -> None:
    easy, medium, hard = (load_suite(n) for n in ("easy", "medium", "hard"))
    assert (len(easy), len(medium), len(hard)) == (23, 49, 80)
    assert {s.category for s in easy} == {"cpu-stress", "memory-stress", "network-delay",
                                          "network-loss"}
    assert {s.category for s in medium} == {s.category for s in easy} | {"disk-io",
                                                                          "service-down"}
    assert {s.category for s in hard} == SEVEN
    counts = Counter(s.category for s in hard)
    assert counts["config-error"] > counts["cpu-stress"]
    assert counts["service-down"] > counts["cpu-stress"]


def test_all_suite_covers_every_category_on_several_services() -> None:
    scenarios = load_suite("all")
    assert {s.category for s in scenarios} == set(CATEGORIES)
    assert len(CATEGORIES) >= 12
    assert len({s.target.service for s in scenarios}) >= 5


def test_every_generated_report_matches_the_schema_and_styles_vary() -> None:
    scenarios = [s for n in ("easy", "medium", "hard", "all") for s in load_suite(n)]
    for scenario in scenarios:
        report = diagnosis(scenario, ("pid 42 cpu_pct=99.0 stress-ng",))
        validate("diagnosis-report", report)
        assert report["target"] == {"host": scenario.target.host,
                                    "service": scenario.target.service}
    assert {style_of(s) for s in scenarios} == {"terse", "rca", "evidence"}
    texts = {diagnosis(s)["report"] for s in load_suite("hard") if s.category == "config-error"}
    assert len(texts) > 5


def test_blind_reports_carry_no_category_and_still_match_the_schema() -> None:
    for scenario in load_suite("all"):
        report = diagnosis(scenario, ("pid 42 cpu_pct=99.0 stress-ng",), blind=True)
        validate("diagnosis-report", report)
        assert "category" not in report
        assert not report["report"].startswith(f"ALERT {scenario.category}")
        assert diagnosis(scenario)["category"] == scenario.category


def test_a_directory_of_scenario_files_loads_and_an_explicit_report_wins(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(yaml.safe_dump({
        "id": "x1", "category": "service-down", "target": {"host": "app", "service": "cart"},
        "report": "cart is gone",
    }))
    (tmp_path / "two.yml").write_text(yaml.safe_dump([{
        "id": "x2", "category": "config-error", "target": {"host": "db", "service": "redis"},
        "fault": {"variant": "port"},
    }]))
    scenarios = load_suite(str(tmp_path))
    assert [s.id for s in scenarios] == ["x1", "x2"]
    assert diagnosis(scenarios[0])["report"] == "cart is gone"
    assert scenarios[1].fault == {"variant": "port"}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"id": "a", "category": "nope", "target": {"host": "app", "service": "cart"}},
         "unknown category"),
        ({"id": "a", "category": "cpu-stress"}, "lacks"),
        ({"id": "a", "category": "cpu-stress", "target": {"host": "app"}}, "host and service"),
        ({"id": "a", "category": "cpu-stress", "target": {"host": "app", "service": "cart"},
          "extra": 1}, "unknown fields"),
    ],
)
def test_bad_scenarios_say_what_is_wrong(data: dict[str, object], message: str) -> None:
    with pytest.raises(FaultError, match=message):
        Scenario.parse(data)


def test_duplicate_ids_and_missing_suites_are_refused(tmp_path: Path) -> None:
    case = {"id": "d", "category": "cpu-stress", "target": {"host": "app", "service": "cart"}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump([case, case]))
    with pytest.raises(FaultError, match="duplicate"):
        load_suite(str(tmp_path / "s.yaml"))
    with pytest.raises(FaultError, match="no suite"):
        load_suite(str(tmp_path / "missing"))
