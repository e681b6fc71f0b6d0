"""The fault catalog's typing and the reference playbooks (no lab needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from chaos.bench import CaseResult, markdown, summarise
from chaos.faults import CATALOG, CATEGORIES, FaultError, Target, make_fault
from chaos.faults.service import CONFIG_ERRORS
from chaos.lab import topology as topo
from chaos.lab.hosts import Lab
from chaos.playbooks import oracle_playbook, rules_playbook, write_oracle_dir
from chaos.remediators import REJECTED
from chaos.scenario import diagnosis, load_suite
from remed_daemon.planner import OraclePlanner, PlanRequest

pytestmark = pytest.mark.unit

LAB = Lab(run_dir=Path("/nonexistent"), repo=Path("."))


def test_catalog_has_twelve_typed_categories() -> None:
    assert len(CATEGORIES) >= 12
    for category, cls in CATALOG.items():
        assert cls.category == category
        for name in ("inject", "check", "cleanup", "confirm", "verify"):
            assert callable(getattr(cls, name))


def test_make_fault_validates_target_and_params() -> None:
    fault = make_fault("cpu-stress", Target("app", "cart"), {"workers": 2}, LAB)
    assert fault.params()["workers"] == 2
    with pytest.raises(FaultError, match="unknown fault parameter"):
        make_fault("cpu-stress", Target("app", "cart"), {"cores": 2}, LAB)
    with pytest.raises(FaultError, match="runs on host app"):
        make_fault("service-down", Target("db", "cart"), {}, LAB)
    with pytest.raises(FaultError, match="cannot target"):
        make_fault("bad-deploy", Target("db", "redis"), {}, LAB)
    with pytest.raises(FaultError, match="unknown variant"):
        make_fault("config-error", Target("app", "cart"), {"variant": "x"}, LAB)
    with pytest.raises(FaultError, match="unknown fault category"):
        make_fault("meteor", Target("app", "cart"), {}, LAB)


def _targets() -> list[tuple[str, str, dict[str, str]]]:
    out = []
    for category, cls in CATALOG.items():
        for service in cls.services:
            if category == "config-error":
                out += [(category, service, {"variant": v}) for v in CONFIG_ERRORS[service]]
            else:
                out.append((category, service, {}))
    return out


@pytest.mark.parametrize("category, service, params", _targets())
def test_oracle_and_rules_playbooks_are_one_play_on_a_lab_host(
    category: str, service: str, params: dict[str, str]
) -> None:
    host = topo.service(service).host
    for text in (oracle_playbook(category, host, service, params),
                 rules_playbook(category, host, service)):
        plays = yaml.safe_load(text)
        assert isinstance(plays, list) and len(plays) == 1
        play = plays[0]
        assert play["hosts"] in topo.HOST_ADDRESSES
        assert play["become"] is True and play["gather_facts"] is False
        assert 1 <= len(play["tasks"]) <= 3
        for task in play["tasks"]:
            assert any(k.startswith("ansible.builtin.") for k in task)


def test_rules_runbook_only_restarts_the_alerting_service() -> None:
    plays = yaml.safe_load(rules_playbook("dependency-down", "app", "cart"))
    assert plays[0]["hosts"] == "app"
    assert "supervisorctl restart cart" in str(plays[0]["tasks"])


def test_summary_counts_only_confirmed_injections() -> None:
    def case(cat: str, injected: bool, recovered: bool, ttr: float) -> CaseResult:
        r = CaseResult(scenario={"id": cat, "category": cat}, injected=injected,
                       recovered=recovered, attempts=1)
        r.timings = {"ttr_s": ttr, "reset_s": 1.0} if recovered else {"reset_s": 1.0}
        return r

    results = [case("a", True, True, 2.0), case("a", True, False, 0), case("b", False, False, 0),
               case("b", True, True, 4.0)]
    s = summarise(results, suite="t", remediator="oracle", duration_s=10)
    assert (s["cases"], s["injected"], s["recovered"]) == (4, 3, 2)
    assert s["success_rate"] == pytest.approx(2 / 3, abs=1e-3)
    assert s["confirmation_rate"] == 0.75
    assert s["by_category"]["a"]["success_rate"] == 0.5
    assert s["median_ttr_s"] == 3.0 and s["p90_ttr_s"] == 4.0
    for key in ("success_rate", "cases", "injected", "by_category", "median_ttr_s",
                "p90_ttr_s", "mean_attempts", "tokens"):
        assert key in s
    assert "| a | 2 | 2 | 1 | 50% |" in markdown(s)


def test_summary_tells_dangerous_refusals_from_malformed_ones() -> None:
    def refused(*rules: str) -> CaseResult:
        guard = {"allowed": False, "violations": [{"rule": r, "task": "t", "detail": ""}
                                                  for r in rules]}  # fmt: skip
        return CaseResult(scenario={"id": "x", "category": "c"}, injected=True,
                          remediation={"status": REJECTED, "guard": guard})  # fmt: skip

    results = [refused("shell.syntax"), refused("task.bad_args", "yaml.invalid"),
               refused("shell.syntax", "destructive.disk"), refused()]  # fmt: skip
    guard = summarise(results, suite="t", remediator="model", duration_s=1)["guard"]
    assert guard[REJECTED] == 4
    # a broken playbook is refused but harmless; one harmful rule, or none named, is not
    assert guard["dangerous"] == 2
    assert guard["rules"]["shell.syntax"] == 2


@pytest.mark.parametrize("service", sorted(CONFIG_ERRORS))
def test_oracle_config_fix_restores_the_documented_file_whatever_broke(service: str) -> None:
    from chaos.lab.provision import documented_config

    play = yaml.safe_load(oracle_playbook("config-error", topo.service(service).host, service,
                                          {}))[0]
    copy = play["tasks"][0]["ansible.builtin.copy"]
    assert copy["dest"] == topo.service(service).config
    assert copy["content"] == documented_config(service).content
    assert play["tasks"][1]["when"] == "restored.changed"  # no restart when nothing changed


def _hold(run_dir: str, stamps: Any) -> None:
    import time

    lab = Lab(run_dir=Path(run_dir), repo=Path("."))
    with lab.exclusive("unit test"):
        stamps.append(("in", time.monotonic()))
        time.sleep(0.3)
        stamps.append(("out", time.monotonic()))


def test_lab_exclusive_serialises_injectors(tmp_path: Path) -> None:
    import multiprocessing

    with multiprocessing.Manager() as manager:
        stamps = manager.list()
        procs = [multiprocessing.Process(target=_hold, args=(str(tmp_path), stamps))
                 for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=10)
        events = [kind for kind, _ in sorted(stamps, key=lambda s: s[1])]
    assert events == ["in", "out", "in", "out"]


async def test_the_daemons_oracle_planner_reads_the_written_playbooks_unchanged(
    tmp_path: Path,
) -> None:
    """`--planner oracle` through the daemon gets from the directory exactly the playbook the
    bench's own oracle runs, for every scenario."""
    assert write_oracle_dir(tmp_path)
    planner = OraclePlanner(str(tmp_path))
    for s in load_suite("all"):
        report = diagnosis(s)
        request = PlanRequest(report=report, service=s.target.service, host=s.target.host,
                              category=s.category)  # fmt: skip
        draft = await planner.plan(request)
        params = dict(report.get("fault_params") or {})
        assert draft.playbook == oracle_playbook(s.category, s.target.host, s.target.service,
                                                 params), s.id  # fmt: skip
