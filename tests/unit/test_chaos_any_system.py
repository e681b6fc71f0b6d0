"""Any system from its file (issue 15): provisioning, the fault catalog, the playbooks and the
suites read the system file, for the shop, the bundled booking system and one written here."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from chaos import suites
from chaos.faults import CATALOG, Target, make_fault
from chaos.faults.service import CONFIG_ERRORS
from chaos.lab import manager, provision
from chaos.lab import topology as topo
from chaos.lab.hosts import Lab
from chaos.playbooks import oracle_playbook, runbook_playbook
from chaos.scenario import load_suite
from chaos.system import DEFAULT_SYSTEM, SYSTEMS_DIR, host_dirs, load, own_dir

pytestmark = pytest.mark.unit

LAB = Lab(run_dir=Path("/nonexistent"), repo=Path("."))
BOOKING = SYSTEMS_DIR / "booking.yaml"
# A system no bundled file has: its own names, ports and paths, supervisord, no TLS.
WIKI = """\
name: wiki
hosts:
  door: {address: 10.231.77.61}
  pages: {address: 10.231.77.62, tmpfs: {/var/log/wiki: 16m, /var/lib/wiki: 32m}}
  vault: {address: 10.231.77.63}
e2e: {service: frontdoor, path: "/api/render/request?user={user}&item={item}"}
services:
  frontdoor: {kind: nginx, host: door, port: 8888, config: /etc/nginx/conf.d/wiki.conf,
              log: /var/log/nginx/wiki.log, data: /var/lib/nginx, depends_on: [render]}
  render: {kind: http, host: pages, port: 5300, config: /etc/wiki/render.ini,
           log: /var/log/wiki/render.log, data: /var/lib/wiki/render, deploy: /opt/wiki/render,
           depends_on: [pagestore, search]}
  search: {kind: http, host: pages, port: 5200, config: /etc/wiki/search.ini,
           log: /var/log/wiki/search.log, data: /var/lib/wiki/search, depends_on: [kv]}
  pagestore: {kind: postgresql, host: vault, port: 5433, version: "15",
              database: {name: wiki, user: wikiapp, password: wk-pw},
              config: /etc/postgresql/15/wiki/postgresql.conf,
              log: /var/log/postgresql/wiki.log, data: /var/lib/postgresql/15/wiki}
  kv: {kind: memcached, host: vault, port: 11411, config: /etc/memcached/kv.conf,
       log: /var/log/memcached/kv.log, data: /var/lib/memcached/kv}
"""


@pytest.fixture(params=["shop", "booking", "wiki"])
def system(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each system active in turn; the shop again afterwards."""
    path = {"shop": DEFAULT_SYSTEM, "booking": BOOKING}.get(request.param)
    if path is None:
        path = tmp_path / "wiki.yaml"
        path.write_text(WIKI)
    topo.use(path)
    try:
        yield request.param
    finally:
        topo.use(DEFAULT_SYSTEM)


def test_the_booking_system_is_a_different_system() -> None:
    shop, booking = load(DEFAULT_SYSTEM), load(BOOKING)
    assert len(booking.services) >= 8 and len(booking.hosts) == 4
    assert not set(shop.services) & set(booking.services)
    assert not set(shop.hosts) & set(booking.hosts)
    shop_ports = {s.port for s in shop.services.values()}
    assert not shop_ports & {s.port for s in booking.services.values()}
    assert {s.kind for s in booking.services.values()} >= {"memcached", "postgresql", "nginx"}
    assert all(s.manager == "systemd" for s in booking.services.values())
    # gateway → orders → reservations → ledger and fares
    chain = ["gateway", "orders", "reservations"]
    for a, b in itertools.pairwise(chain):
        assert b in booking.services[a].depends_on
    assert {"ledger", "fares"} <= set(booking.services["reservations"].depends_on)


def test_a_host_gets_its_own_copy_of_every_directory_its_services_use() -> None:
    booking = load(BOOKING)
    assert own_dir("/etc/booking/orders.conf") == "/etc/booking"
    assert own_dir("/etc/ssl/booking/gateway.crt") == "/etc/ssl/booking"
    assert own_dir("/var/lib/postgresql/15/ledger") == "/var/lib/postgresql"
    assert set(host_dirs(booking, "front")) >= {"/etc/booking", "/opt/booking", "/var/log/booking"}
    assert "/etc/ssl/booking" in host_dirs(booking, "edge")


def test_every_config_error_edits_text_the_documented_config_has(system: str) -> None:
    assert CONFIG_ERRORS, system
    for service, edits in CONFIG_ERRORS.items():
        text = provision.documented_config(service).content
        assert len(edits) <= 2
        for variant, edit in edits.items():
            assert text.count(edit.good) == 1, (system, service, variant)
            assert edit.bad not in text


def test_provisioning_writes_every_service_its_files(system: str) -> None:
    files = provision.desired_files(None)
    assert set(files) == set(topo.HOST_ADDRESSES)
    for svc in topo.SERVICES.values():
        paths = {f.path for f in files[svc.host]}
        assert svc.config in paths
        unit = (f"/etc/systemd/system/{svc.program}.service" if svc.manager == "systemd"
                else f"/etc/supervisor/conf.d/{svc.program}.conf")  # fmt: skip
        assert unit in paths
        if svc.kind == "http":
            assert f"{topo.release_dir(svc.name)}/shop.py" in paths
            ini = provision.shop_ini(svc)
            for dep in topo.stores(svc.name) + topo.upstreams(svc.name):
                assert f"{dep.host}" in ini and str(dep.port) in ini
    # the host scripts know every store's runtime directory
    for host in topo.HOST_ADDRESSES:
        script = provision.host_script(host)
        for svc in topo.on_host(host):
            assert svc.log.rsplit("/", 1)[0] in script


def test_booking_runs_under_systemd_and_the_shop_under_supervisord() -> None:
    topo.use(BOOKING)
    try:
        orders = topo.service("orders")
        assert manager.ctl(orders, "restart") == "systemctl restart booking-orders.service"
        assert manager.state(orders, "activating\n") == "BACKOFF"
        text = oracle_playbook("service-down", "front", "orders", {})
        assert "systemctl start booking-orders.service" in text and "supervisorctl" not in text
        unit = next(f for f in provision.desired_files(None)["edge"]
                    if f.path.endswith("gateway.service"))  # fmt: skip
        assert "ExecReload=/bin/kill -HUP $MAINPID" in unit.content
    finally:
        topo.use(DEFAULT_SYSTEM)
    assert manager.ctl(topo.service("cart"), "restart") == "supervisorctl restart cart"


def test_every_category_that_applies_has_cases_and_playbooks(system: str) -> None:
    table = suites.targets()
    everything = load_suite("all")
    assert {s.category for s in everything} == set(table)
    for scenario in everything:
        t = scenario.target
        make_fault(scenario.category, t, scenario.fault, LAB, seed=scenario.id)
    for category, cls in CATALOG.items():
        for service in cls.services:
            host = topo.service(service).host
            for text in (oracle_playbook(category, host, service, {}),
                         runbook_playbook(category, host, service)):  # fmt: skip
                plays = yaml.safe_load(text)
                assert all(p["hosts"] in topo.HOST_ADDRESSES for p in plays)
    if system == "shop":
        assert len(everything) == 32
    else:
        assert "tls-cert" in table or system == "wiki"
        assert len(load_suite("easy")) == 23 and len(load_suite("hard")) == 80


def test_the_shops_suite_files_are_what_the_generator_writes() -> None:
    for name in ("easy", "medium", "hard", "all"):
        on_disk = yaml.safe_load((suites.SCENARIOS_DIR / f"{name}.yaml").read_text())
        assert on_disk == suites.suite(name), name


def test_the_booking_suite_files_are_what_the_generator_writes() -> None:
    topo.use(BOOKING)
    try:
        directory = suites.suites_dir()
        assert directory == suites.SCENARIOS_DIR / "booking"
        for name in ("easy", "medium", "hard", "all"):
            on_disk = yaml.safe_load((directory / f"{name}.yaml").read_text())
            assert on_disk == suites.suite(name), name
    finally:
        topo.use(DEFAULT_SYSTEM)


def test_a_target_outside_the_active_system_is_refused(system: str) -> None:
    from chaos.faults import FaultError

    with pytest.raises(FaultError):
        make_fault("service-down", Target("nowhere", "nothing"), {}, LAB)
