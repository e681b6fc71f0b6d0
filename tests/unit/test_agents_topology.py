"""The daemon's topology (remed_daemon/agents/topology.py) and the lab wording it replaces: the
service manager and the deploy directory come from the topology file, never from code, and with
no file the daemon knows only the report's service and host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaos.lab import topology as lab
from remed_daemon.agents.probe import CATALOG
from remed_daemon.agents.topology import ServiceFacts, facts_for, from_mapping, load

pytestmark = pytest.mark.unit


def fleet(**cart: object) -> dict[str, ServiceFacts]:
    return from_mapping({
        "hosts": {"app": "10.0.0.2", "db": "10.0.0.3"},
        "services": {"cart": {"host": "app", "port": 8082, "depends_on": ["redis"], **cart},
                     "redis": {"host": "db", "port": 6379, "manager": "systemd",
                               "program": "redis-server"}},
    })  # fmt: skip


def probe(name: str, facts: ServiceFacts) -> str:
    return CATALOG[name][1](facts)


def test_without_a_topology_file_the_daemon_knows_only_the_report() -> None:
    """No fallback to the chaos lab: a real `nginx` alert must not get the lab's paths or its
    10.231.77.x addresses."""
    assert load("") == {}
    nginx = facts_for(load(""), "nginx", "web-1", "192.0.2.7")
    assert (nginx.host, nginx.address, nginx.program) == ("web-1", "192.0.2.7", "nginx")
    known = (nginx.config, nginx.log, nginx.data, nginx.deploy, nginx.manager, nginx.port)
    assert known == ("", "", "", "", "", None) and nginx.depends_on == ()
    assert nginx.incident_hosts == ["web-1"]
    text = nginx.describe() + "".join(probe(n, nginx) for n in CATALOG)
    assert "/srv/shop" not in text and "10.231.77" not in text and "shop" not in text
    assert nginx.describe() == "nginx runs on host web-1 (192.0.2.7); depends on none."


def test_the_service_manager_comes_from_the_topology() -> None:
    supervised = fleet(manager="supervisord")["cart"]
    assert "under supervisord as program cart (sudo supervisorctl restart cart)" in (
        supervised.describe()
    )
    assert probe("service_status", supervised) == "sudo -n supervisorctl status cart 2>&1"
    assert "systemctl" not in probe("all_services", supervised)

    redis = fleet()["redis"]
    assert "under systemd as unit redis-server (sudo systemctl restart redis-server)" in (
        redis.describe()
    )
    assert "supervisor" not in redis.describe()
    status = probe("service_status", redis)
    assert status.startswith("systemctl status --no-pager redis-server") and "supervisor" not in (
        status
    )
    assert "supervisor" not in probe("all_services", redis)

    unknown = fleet()["cart"]  # no manager: say nothing about one, ask both when probing
    assert "supervisor" not in unknown.describe() and "systemd" not in unknown.describe()
    assert "supervisorctl" in probe("service_status", unknown)
    assert "systemctl" in probe("service_status", unknown)


def test_an_unknown_service_manager_is_refused_naming_the_service() -> None:
    with pytest.raises(ValueError, match=r"service 'cart': manager 'upstart' is not one of"):
        fleet(manager="upstart")


def test_the_release_probe_reads_the_deploy_directory_of_the_topology() -> None:
    deployed = fleet(deploy="/opt/cart/")["cart"]
    command = probe("release", deployed)
    assert "/opt/cart/releases" in command and "/opt/cart/current" in command
    assert probe("release", fleet()["cart"]) == (
        "echo 'no deploy directory known for this service'"
    )


def test_the_labs_topology_file_gives_the_daemon_what_the_lab_knows(tmp_path: Path) -> None:
    """The lab hands its shop over as any user would: a file for agents.topology_file. The
    daemon's facts from it are the lab's own paragraph (with dependency addresses), and the
    incident hosts include the dependencies' (a cart outage from Redis is fixed on db)."""
    path = lab.write_topology_file(tmp_path / "shop.json")
    assert json.loads(path.read_text()) == lab.topology_document()
    facts = load(str(path))
    assert set(facts) == set(lab.SERVICES)
    for name, svc in lab.SERVICES.items():
        f = facts[name]
        assert (f.host, f.address, f.port, f.config, f.log, f.data, f.health, f.manager) == (
            svc.host, svc.address, svc.port, svc.config, svc.log, svc.data, svc.health,
            "supervisord",
        )  # fmt: skip
        # The lab's paragraph names dependencies without addresses; the rest is the same.
        assert f.describe().split("; depends on")[0] == lab.facts(name).split("; depends on")[0]
        assert f.deploy == (lab.deploy_dir(name) if name in lab.SHOP_APPS else "")
    assert facts["cart"].incident_hosts == ["app", "db"]
    assert probe("release", facts["cart"]).count("/srv/shop/cart") == 3
    assert facts == lab.daemon_topology()
