"""The runbook remediator's table (chaos.playbooks.runbook_playbook): alert labels and topology
only, every entry a plan the daemon's guard accepts, and the offenders it knows by name are the
fixed ones (so variants defeat it where a fix must name what was injected)."""

from __future__ import annotations

import pytest
import yaml

from chaos.faults import CATALOG, Target
from chaos.lab import topology as topo
from chaos.playbooks import RUNBOOK_KNOWN_OFFENDERS, rules_playbook, runbook_playbook
from chaos.remediators import make_remediator, target_facts
from chaos.scenario import Scenario
from remed_daemon.guard import check_playbook

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "category, service", [(c, s) for c, cls in CATALOG.items() for s in cls.services]
)
def test_every_runbook_entry_is_allowed_on_the_incidents_hosts(category: str, service: str) -> None:
    host = topo.service(service).host
    text = runbook_playbook(category, host, service)
    plays = yaml.safe_load(text)
    assert plays and all(p["become"] is True for p in plays)
    facts = target_facts(Scenario("x", category, Target(host, service)))
    verdict = check_playbook(text, facts.incident_hosts)
    assert verdict.allowed, [v.detail for v in verdict.violations]


def test_the_runbook_does_more_than_restart_and_knows_only_fixed_names() -> None:
    assert "supervisorctl start redis" in runbook_playbook("dependency-down", "app", "cart")
    assert "hosts: db" in runbook_playbook("dependency-down", "app", "checkout")
    assert "fuser -k -TERM -n tcp 8082" in runbook_playbook("port-conflict", "app", "cart")
    assert "releases/" in runbook_playbook("bad-deploy", "app", "cart")
    for category, key in (("cpu-stress", "hog"), ("network-loss", "table"),
                          ("log-flood", "dumper"), ("connection-exhaustion", "client")):
        text = runbook_playbook(category, "app", "catalog")
        assert RUNBOOK_KNOWN_OFFENDERS[key] in text
        assert text != rules_playbook(category, "app", "catalog")


def test_make_remediator_knows_runbook() -> None:
    from pathlib import Path

    from chaos.lab.hosts import Lab

    assert make_remediator("runbook", Lab(Path("/nonexistent"), Path("."))).name == "runbook"
