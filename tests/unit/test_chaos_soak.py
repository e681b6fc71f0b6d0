"""The soak's drift verdict and its loop, without the lab (the lab runs are `remed bench`)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from chaos.soak import _row, drift_problems, soak
from remed_cli.lab import duration

pytestmark = pytest.mark.unit

HOSTS = {
    "web": {"processes": 11, "nft_tables": 0, "used_kb:/var/log": 1500, "not_running": 0},
    "db": {"processes": 16, "nft_tables": 0, "used_kb:/var/log": 1000, "not_running": 0},
}


def summary(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "success_rate": 1.0, "confirmation_rate": 1.0, "cases": 4, "mean_reset_s": 1.2,
        "errors": 0, "cleanup_errors": 0,
        "drift": {
            "start": {"steady": True, "e2e": {"p50_ms": 70.0}, "hosts": copy.deepcopy(HOSTS)},
            "end": {"steady": True, "e2e": {"p50_ms": 75.0}, "hosts": copy.deepcopy(HOSTS)},
        },
    }  # fmt: skip
    base.update(changes)
    return base


class FakeRemediator:
    name = "oracle"


def test_identical_runs_show_no_drift(tmp_path: Path) -> None:
    def run_bench(_scenarios: Any, _remediator: Any, run_dir: Path) -> dict[str, Any]:
        run_dir.mkdir(parents=True)
        return summary()

    remediator: Any = FakeRemediator()
    # duration 0 still runs once: a started soak always reports at least one run.
    report = soak(
        [],
        remediator,
        tmp_path,
        duration_s=0,
        run_bench=run_bench,
        progress=lambda _line: None,
    )
    assert report["problems"] == []
    saved = json.loads((tmp_path / "soak.json").read_text())
    assert saved["runs"][0]["run"] == "run-001"
    assert (tmp_path / "soak.png").stat().st_size > 0
    assert "no drift" in (tmp_path / "soak.md").read_text()


def test_leaked_processes_rules_and_full_disks_are_drift() -> None:
    first = summary()
    last = summary()
    last["drift"]["end"]["hosts"]["web"]["processes"] = 30
    last["drift"]["end"]["hosts"]["db"]["nft_tables"] = 1
    last["drift"]["end"]["hosts"]["db"]["used_kb:/var/log"] = 1000 + 64 * 1024
    rows = [_row(s, Path(f"run-00{i}"), elapsed_s=i * 600.0) for i, s in enumerate((first, last))]
    problems = drift_problems(rows)
    assert any("web: processes 11 → 30" in p for p in problems)
    assert any("db: nft_tables 0 → 1" in p for p in problems)
    assert any("/var/log grew" in p for p in problems)


def test_slower_shop_lower_success_and_unsteady_runs_are_drift() -> None:
    last = summary(success_rate=0.8, mean_reset_s=5.0)
    last["drift"]["end"]["e2e"]["p50_ms"] = 400.0
    last["drift"]["end"]["steady"] = False
    rows = [
        _row(summary(), Path("run-001"), elapsed_s=600),
        _row(last, Path("run-002"), elapsed_s=1200),
    ]
    problems = " | ".join(drift_problems(rows))
    for expected in ("success fell", "e2e p50", "mean reset", "run-002: shop not steady"):
        assert expected in problems


@pytest.mark.parametrize(
    ("text", "seconds"), [("1h", 3600), ("45m", 2700), ("90s", 90), ("900", 900)]
)
def test_duration_parsing(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-5m", "0", "tenminutes"])
def test_bad_durations_are_refused(text: str) -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        duration(text)
