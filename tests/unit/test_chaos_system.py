"""Lab systems from a topology file (chaos/system.py): the bundled shop, and the errors a
broken file gets."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaos.lab import topology as topo
from chaos.system import DEFAULT_SYSTEM, SystemFileError, load, parse

pytestmark = pytest.mark.unit


def _shop() -> dict[str, Any]:
    return dict(yaml.safe_load(DEFAULT_SYSTEM.read_text()))


def test_the_shop_is_its_system_file() -> None:
    system = load(DEFAULT_SYSTEM)
    assert list(system.hosts) == ["web", "app", "db"]
    assert topo.HOST_ADDRESSES == {h.name: h.address for h in system.hosts.values()}
    assert set(topo.SERVICES) == set(system.services)
    assert topo.SHOP_APPS == ("catalog", "cart", "checkout")
    doc = topo.topology_document()
    assert doc["services"]["cart"]["deploy"] == "/srv/shop/cart"
    assert doc["services"]["postgresql"]["health"] == "postgres"
    assert all(s["manager"] == "supervisord" for s in doc["services"].values())
    assert topo.store_of("cart") is topo.SERVICES["redis"]
    assert topo.store_of("checkout") is topo.SERVICES["postgresql"]


@pytest.mark.parametrize(
    "edit, error",
    [
        (lambda d: d["services"]["redis"].update(kind="couchdb"), "unknown kind 'couchdb'"),
        (lambda d: d["services"]["cart"].update(depends_on=["mongo"]),
         "depends on 'mongo', which is not a service"),
        (lambda d: d["services"]["cart"].update(port=8081), "port 8081 on host app is already"),
        (lambda d: d["services"]["nginx"]["tls"].update(port=80), "port 80 on host web"),
        (lambda d: d["hosts"]["db"].update(address="10.9.9.9"), "not a host address in"),
        (lambda d: d["hosts"]["db"].update(address="10.231.77.12"), "is also host app"),
        (lambda d: d["services"]["cart"].update(host="cache"), "host 'cache' is not in"),
        (lambda d: d["services"]["catalog"].update(depends_on=["checkout"]), "dependency cycle"),
        (lambda d: d["services"]["redis"].update(depends_on=["cart"]), "store depends on nothing"),
        (lambda d: d["services"]["nginx"].update(depends_on=["redis"]), "nginx proxies"),
        (lambda d: d["services"]["cart"].update(config="/etc/cart.ini"), "lies straight in /etc"),
        (lambda d: d["services"]["cart"].update(log="/usr/share/cart.log"), "must lie below"),
        (lambda d: d["services"]["cart"].update(data="/etc/ssh/cart"), "the lab host itself"),
        (lambda d: d["services"]["cart"].update(manager="systemd"), "a host has one init"),
        (lambda d: d["services"]["cart"].pop("port"), "missing `port`"),
        (lambda d: d["services"]["cart"].update(config="etc/cart.ini"), "absolute path"),
        (lambda d: d["services"]["cart"].update(colour="red"), "unknown keys ['colour']"),
        (lambda d: d.update(manager="upstart"), "`manager` must be one of"),
        (lambda d: d["services"]["cart"].update(role="search"), "`role` is one of"),
    ],
)  # fmt: skip
def test_a_broken_system_file_gets_an_error_naming_field_and_fix(edit: Any, error: str) -> None:
    data = copy.deepcopy(_shop())
    edit(data)
    with pytest.raises(SystemFileError, match=re.escape(error)):
        parse(data, Path("my-system.yaml"))


def test_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(SystemFileError, match="cannot read system file"):
        load(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("hosts: [\n")
    with pytest.raises(SystemFileError, match="not YAML"):
        load(tmp_path / "bad.yaml")


def test_stack_up_adds_a_systems_hosts_to_the_dev_stacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from remed_stack import lab, procs

    data = _shop()
    data["hosts"] = {"gw": {"address": "10.231.77.21"}, "web": {"address": "10.231.77.11"}}
    for s in data["services"].values():
        s["host"] = "gw" if s["host"] != "web" else "web"
    data["services"] = {"nginx": data["services"]["nginx"] | {"depends_on": []}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv(lab.SYSTEM_ENV, str(tmp_path / "s.yaml"))
    assert [h.name for h in lab.lab_hosts()] == ["web", "app", "db", "gw"]
    data["hosts"]["web"]["address"] = "10.231.77.30"
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(procs.StackError, match=r"host web is 10\.231\.77\.11"):
        lab.lab_hosts()
    monkeypatch.delenv(lab.SYSTEM_ENV)
    assert lab.lab_hosts() == lab.HOSTS


def test_a_systemd_systems_hosts_boot_systemd_with_their_own_directories(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chaos.system import SYSTEMS_DIR
    from remed_stack import lab

    monkeypatch.setenv(lab.SYSTEM_ENV, str(SYSTEMS_DIR / "booking.yaml"))
    hosts = {h.name: h for h in lab.lab_hosts()}
    assert [hosts[n].init for n in ("web", "edge", "front", "backend", "data")] == [
        "supervisord", "systemd", "systemd", "systemd", "systemd"]  # fmt: skip
    front = hosts["front"].bind_paths
    assert {"/etc/booking", "/opt/booking", "/etc/systemd/system", "/etc/hostname"} <= set(front)
    assert "/var/log/booking" not in front  # /var/log is every host's own already
    assert "/etc/ssl/booking" in hosts["edge"].bind_paths
    assert hosts["web"].bind_paths == lab.BIND_PATHS
    # recorded systems keep their hosts after the variable is gone
    monkeypatch.delenv(lab.SYSTEM_ENV)
    recorded = (str(SYSTEMS_DIR / "booking.yaml"), "/nonexistent/gone.yaml")
    assert "edge" in [h.name for h in lab.lab_hosts(recorded)]
