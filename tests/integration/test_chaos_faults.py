"""Every fault category on the real lab: inject → confirm (check fails) → cleanup (check passes,
shop steady). No mocks: SSH with host keys checked, supervisord, nftables, stress-ng."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from chaos.faults import CATEGORIES, Target, make_fault, resources
from chaos.lab import probes, provision
from chaos.lab import topology as topo
from chaos.lab.hosts import HostCommandError, Lab

pytestmark = pytest.mark.integration

# One representative target per category, spread over the three hosts.
TARGETS = {
    "cpu-stress": ("redis", {}),
    "memory-stress": ("checkout", {}),
    "disk-io": ("catalog", {}),
    "network-loss": ("nginx", {}),
    "network-delay": ("catalog", {}),
    "service-down": ("postgresql", {}),
    "config-error": ("cart", {"variant": "redis-port"}),
    "dependency-down": ("checkout", {}),
    "port-conflict": ("cart", {}),
    "log-flood": ("checkout", {}),
    "wrong-permissions": ("catalog", {}),
    "bad-deploy": ("cart", {}),
    "tls-cert": ("nginx", {}),
    "connection-exhaustion": ("catalog", {}),
}


@pytest.fixture(scope="module")
def shop(lab: Any) -> Iterator[Lab]:
    chaos_lab = Lab.from_paths()
    with chaos_lab.exclusive("tests/integration/test_chaos_faults.py"):
        provision.ensure(chaos_lab)
        yield chaos_lab
        provision.ensure(chaos_lab, bootstrap_db=False)


def test_every_category_has_a_target_here() -> None:
    assert set(TARGETS) == set(CATEGORIES)


def test_provision_is_idempotent_and_the_shop_is_steady(shop: Lab) -> None:
    report = provision.ensure(shop, bootstrap_db=False)
    assert report.changed_files == [] and report.restarted == []
    state = probes.steady_state()
    assert state.ok, state.detail
    assert all(h.ok for h in state.health)
    stats = probes.load(rps=20, duration_s=2)
    assert stats.requests == 40 and stats.success_rate == 1.0


@pytest.mark.parametrize("category", sorted(TARGETS))
def test_inject_confirm_cleanup(shop: Lab, category: str) -> None:
    service, params = TARGETS[category]
    fault = make_fault(category, Target(topo.service(service).host, service), params, shop)
    assert fault.check().ok, "the category check must pass before injection"
    try:
        fault.inject()
        confirmed = fault.confirm()
        assert confirmed.ok, f"injection not confirmed: {confirmed.detail}"
        assert not fault.check().ok, "the fault must stay active until cleanup"
    finally:
        fault.cleanup()
    recovered = fault.verify()
    assert recovered.ok, f"cleanup did not restore the lab: {recovered.detail}"


def test_a_hog_that_does_not_start_says_why(shop: Lab) -> None:
    service, params = TARGETS["disk-io"]
    fault = make_fault("disk-io", Target(topo.service(service).host, service), params, shop)
    broken = resources._spawn("hdd", "1 --no-such-option")
    why = r"(?s)stress-ng --hdd is not running.*no-such-option"
    with pytest.raises(HostCommandError, match=why):
        fault.sh(broken)
