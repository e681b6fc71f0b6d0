"""Fault variants (chaos/variants.py): the names a fix must use are drawn from the scenario's
seed, recorded in the fault's parameters, and the expert playbook is written from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from chaos import variants
from chaos.faults import CATALOG, Target, make_fault
from chaos.faults.service import CONFIG_ERRORS
from chaos.lab import topology as topo
from chaos.lab.hosts import Lab
from chaos.playbooks import oracle_playbook
from chaos.scenario import Scenario, diagnosis, style_of
from remed_daemon.guard import check_playbook

pytestmark = pytest.mark.unit

LAB = Lab(run_dir=Path("/nonexistent"), repo=Path("."))
# The fixed names of the lab without variants: none may be in a playbook written for a variant.
FIXED_NAMES = ("stress-ng", "chaos_loss", "chaos_delay", "debug_dump", "report_batch",
               "legacy_admin", "delay_proxy", "-debug.log", "1.5.0-rc1")  # fmt: skip


def _targets() -> list[tuple[str, str]]:
    return [(c, s) for c, cls in CATALOG.items() for s in cls.services]


def _fault(category: str, service: str, seed: str | None):  # type: ignore[no-untyped-def]
    return make_fault(category, Target(topo.service(service).host, service), {}, LAB, seed=seed)


@pytest.mark.parametrize("category, service", _targets())
def test_a_seed_draws_the_same_names_every_time_and_no_seed_keeps_todays(
    category: str, service: str
) -> None:
    fixed = _fault(category, service, None).params()
    assert _fault(category, service, "s1").params() == _fault(category, service, "s1").params()
    drawn = [_fault(category, service, f"seed-{i}").params() for i in range(12)]
    single_config = category == "config-error" and len(CONFIG_ERRORS[service]) == 1
    if single_config or category in (
        "service-down", "dependency-down", "wrong-permissions", "tls-cert"
    ):  # fmt: skip
        assert all(d == fixed for d in drawn)  # nothing a fix names is drawn there
    else:
        assert any(d != fixed for d in drawn), f"{category}: the seed changes nothing"


@pytest.mark.parametrize("category, service", _targets())
def test_the_expert_playbook_for_a_variant_names_what_was_drawn_and_passes_the_guard(
    category: str, service: str
) -> None:
    host = topo.service(service).host
    play_host = "db" if category == "dependency-down" else host
    for i in range(4):
        fault = _fault(category, service, f"case-{i}")
        params = fault.params()
        text = oracle_playbook(category, play_host, service, params)
        assert len(yaml.safe_load(text)) == 1
        names = {k: v for k, v in params.items() if k in ("hog", "table", "dumper", "client")}
        for value in names.values():
            assert str(value) in text, (category, value)
        if params != _fault(category, service, None).params():
            leaked = [n for n in FIXED_NAMES if n in text]
            assert not leaked, (category, leaked, text)
        verdict = check_playbook(text, [play_host])
        assert verdict.allowed, (category, params, [v.detail for v in verdict.violations])


def test_the_fixed_names_without_params_are_todays() -> None:
    text = oracle_playbook("cpu-stress", "app", "cart", {})
    assert "pkill -KILL -f stress-ng" in text
    assert "nft delete table inet chaos_loss" in oracle_playbook("network-loss", "app", "cart")
    assert "debug_dump.sh" in oracle_playbook("log-flood", "app", "cart", {})
    assert "/var/log/shop/cart-debug.log" in oracle_playbook("log-flood", "app", "cart", {})


def test_scenarios_choose_variants_by_seed_field_or_bench_default() -> None:
    base = {"id": "x1", "category": "cpu-stress", "target": {"host": "app", "service": "cart"}}
    plain = Scenario.parse(base)
    assert plain.variant_seed() is None and plain.variant_seed(True) == "x1"
    seeded = Scenario.parse({**base, "seed": 42})
    assert seeded.variant_seed() == "42" and seeded.as_dict()["seed"] == "42"
    off = Scenario.parse({**base, "seed": "s", "variants": False})
    assert off.variant_seed(True) is None
    on = Scenario.parse({**base, "variants": True})
    assert on.variant_seed() == "x1"
    with pytest.raises(ValueError, match="variants must be"):
        Scenario.parse({**base, "variants": "yes"})


def test_explicit_params_win_over_the_draw() -> None:
    fault = make_fault("bad-deploy", Target("app", "cart"), {"version": "9.9.9"}, LAB, seed="s")
    assert fault.params()["version"] == "9.9.9"
    with pytest.raises(ValueError):
        make_fault("bad-deploy", Target("app", "cart"), {"version": topo.SHOP_VERSION}, LAB)
    with pytest.raises(ValueError, match="not a variant helper path"):
        make_fault("cpu-stress", Target("app", "cart"), {"hog": "/usr/bin/sshd"}, LAB)


def test_the_report_describes_the_drawn_config_key_without_naming_fixes() -> None:
    s = Scenario.parse({"id": "c", "category": "config-error",
                        "target": {"host": "app", "service": "cart"}, "seed": "k"})  # fmt: skip
    fault = make_fault(s.category, s.target, s.fault, LAB, seed=s.variant_seed())
    what = CONFIG_ERRORS["cart"][fault.params()["variant"]].what
    report = diagnosis(s, ("evidence line",), params=fault.params())
    if style_of(s) != "terse":
        assert what in report["report"]


def test_helper_paths_stay_in_each_hosts_own_directories() -> None:
    for i in range(200):
        r = variants.rng(str(i), "c", "s")
        for path in (variants.program_path(r), variants.script_path(r, ".py")):
            root = variants.helper_root(path)
            assert root.split("/")[1] in ("var", "srv", "run", "tmp")
            assert not root.startswith(("/srv/shop", "/run/remed-chaos"))
            assert path.startswith(root)
