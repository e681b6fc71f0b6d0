"""`remed config check FILE`: the config as `remed serve` loads it, and the Ansible inventory it
names read by ansible-core (remed_daemon/agents/inventory.py): a broken inventory, a host whose
variables do not resolve, an empty one, and topology hosts missing from it are each reported
naming the key, with exit 1. Real ansible-core, no fakes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import remed_cli as cli

pytestmark = pytest.mark.unit


def config(tmp_path: Path, inventory: Path | None, extra: str = "") -> Path:
    path = tmp_path / "remed.toml"
    path.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[kafka]\nenabled = false\n'
        '[http]\nbearer_token = "t"\n[remediation]\n'
        + (f'inventory = "{inventory}"\n' if inventory else "")
        + extra
    )
    return path


def check(capsys: pytest.CaptureFixture[str], cfg: Path) -> tuple[int, dict[str, Any], str]:
    code = cli.main(["config", "check", str(cfg), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is (code == 0)
    code_text = cli.main(["config", "check", str(cfg)])
    out, err = capsys.readouterr()
    assert code_text == code
    return code, doc, out + err


def test_a_good_config_and_inventory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text("[web]\nweb1 ansible_host=10.0.0.11\n[db]\ndb1 ansible_host=10.0.0.21\n")
    code, doc, text = check(capsys, config(tmp_path, inv))
    assert code == 0, text
    assert doc["inventory"] == {
        "path": str(inv), "hosts": {"db1": "10.0.0.21", "web1": "10.0.0.11"}
    }  # fmt: skip
    assert f"{tmp_path / 'remed.toml'}: ok (inventory: 2 hosts)" in text


def test_an_unparseable_inventory_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text("[web\nweb1 ansible_host=10.0.0.11\n")
    code, doc, text = check(capsys, config(tmp_path, inv))
    assert code == 1
    (error,) = doc["errors"]
    assert error.startswith("remediation.inventory: ansible-core could not parse")
    assert str(inv) in error and f"error: {error}" in text


def test_a_missing_inventory_and_a_host_that_does_not_resolve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc, _ = check(capsys, config(tmp_path, tmp_path / "absent.ini"))
    assert code == 1 and "does not exist" in doc["errors"][0]

    inv = tmp_path / "hosts.yml"
    inv.write_text(
        "all:\n  hosts:\n    ok1: {ansible_host: 10.0.0.1}\n"
        "    bad1: {ansible_host: '{{ undefined_thing }}'}\n"
    )
    code, doc, _ = check(capsys, config(tmp_path, inv))
    assert code == 1
    (error,) = doc["errors"]
    assert error.startswith("remediation.inventory: host 'bad1' does not resolve")
    assert "undefined_thing" in error and doc["inventory"]["hosts"] == {"ok1": "10.0.0.1"}


def test_an_empty_inventory_and_topology_hosts_outside_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text("# nobody yet\n[web]\n")
    code, doc, _ = check(capsys, config(tmp_path, inv))
    assert code == 1 and "has no hosts" in doc["errors"][0]

    inv.write_text("web ansible_host=10.0.0.11\n")
    topo = tmp_path / "topology.yaml"
    topo.write_text(
        "hosts: {web: 10.0.0.11, db: 10.0.0.13}\n"
        "services:\n  nginx: {host: web, port: 80}\n  postgres: {host: db, port: 5432}\n"
    )
    cfg = config(tmp_path, inv, f'[agents]\ntopology_file = "{topo}"\n')
    code, doc, _ = check(capsys, cfg)
    assert code == 1
    assert doc["errors"] == [
        f"agents.topology_file: host 'db' (services: postgres) is not in the inventory {inv}; "
        "add it there, or fix the topology"
    ]


def test_a_bad_config_and_no_inventory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[http]\nbearer_token = 't'\nprot = 1\n")
    code, doc, _ = check(capsys, bad)
    assert code == 1 and "did you mean 'port'" in doc["errors"][0]

    code, doc, text = check(capsys, config(tmp_path, None))
    assert code == 0 and "remediation.inventory is not set" in text
