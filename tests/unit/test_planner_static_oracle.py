"""The planners that read playbooks from files (remed_daemon.planner.static and .oracle): the
target's names are filled in before the guard sees the plan, and only plain names are."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from remed_daemon.guard import check_playbook
from remed_daemon.planner import OraclePlanner, PlanRequest, StaticPlanner

pytestmark = pytest.mark.unit


def request(service: str = "cart", host: str = "app", category: str = "") -> PlanRequest:
    return PlanRequest(report={}, service=service, host=host, category=category)


async def test_oracle_planner_from_a_directory(tmp_path: Path) -> None:
    (tmp_path / "service-down").mkdir()
    (tmp_path / "service-down" / "cart.yml").write_text(
        "- hosts: '{{ remed_host }}'\n  tasks:\n"
        "    - command: supervisorctl start {{remed_service}}\n"
    )
    planner = OraclePlanner(str(tmp_path))
    draft = await planner.plan(request(category="service-down"))
    assert "hosts: 'app'" in draft.playbook and "start cart" in draft.playbook
    assert draft.planner == "oracle"
    other = await planner.plan(request(category="cpu-stress"))
    assert other.playbook == "" and "no expert playbook" in other.completion


async def test_oracle_without_a_directory_plans_nothing_and_says_what_to_set() -> None:
    draft = await OraclePlanner("").plan(request(category="service-down"))
    assert draft.playbook == "" and "agents.oracle_playbook_dir" in draft.completion


async def test_static_default_restarts_the_target_and_the_guard_allows_it() -> None:
    draft = await StaticPlanner().plan(request())
    assert draft.planner == "static"
    [play] = yaml.safe_load(draft.playbook)
    assert play["hosts"] == "app"
    assert play["tasks"][0]["ansible.builtin.service"] == {"name": "cart", "state": "restarted"}
    verdict = check_playbook(draft.playbook, ["app"])
    assert verdict.allowed and not verdict.needs_approval, verdict.violations


async def test_static_file_gets_the_target_filled_in(tmp_path: Path) -> None:
    pb = tmp_path / "fix.yml"
    pb.write_text(
        '- hosts: "{{ remed_host }}"\n  gather_facts: false\n  tasks:\n'
        "    - name: note {{ remed_service }}\n      ansible.builtin.copy:\n"
        '        dest: /tmp/remed-note\n        content: "{{ remed_incident_id }}"\n'
    )
    draft = await StaticPlanner(str(pb)).plan(request())
    [play] = yaml.safe_load(draft.playbook)
    assert play["hosts"] == "app" and play["tasks"][0]["name"] == "note cart"
    # the run's other extra vars stay templates, for ansible to fill in
    assert "{{ remed_incident_id }}" in draft.playbook
    assert check_playbook(draft.playbook, ["app"]).allowed
    # a templated host pattern is what the guard refuses: the planner is what prevents it
    assert not check_playbook(pb.read_text(), ["app"]).allowed


@pytest.mark.parametrize("planner", ["static", "oracle"])
async def test_names_that_are_not_plain_are_never_written_into_a_playbook(
    tmp_path: Path, planner: str
) -> None:
    (tmp_path / "a:b.yml").write_text("- hosts: '{{ remed_host }}'\n  tasks: []\n")
    pb = tmp_path / "fix.yml"
    pb.write_text("- hosts: '{{ remed_host }}'\n  tasks: []\n")
    p = StaticPlanner(str(pb)) if planner == "static" else OraclePlanner(str(tmp_path))
    draft = await p.plan(request(service="a:b", host="app"))
    assert draft.playbook == ""
