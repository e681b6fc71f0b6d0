"""`remed guard check`: exit codes and the JSON contract (ARCHITECTURE.md, commands)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remed_cli import main

pytestmark = pytest.mark.unit

LOW = """- name: restart
  hosts: app
  become: true
  tasks:
    - name: restart cart
      ansible.builtin.command: supervisorctl restart cart
"""
MEDIUM = LOW.replace(
    "ansible.builtin.command: supervisorctl restart cart",
    "ansible.builtin.command: truncate -s 0 /var/log/shop/cart.log",
)
HIGH = LOW.replace(
    "ansible.builtin.command: supervisorctl restart cart",
    "ansible.builtin.apt: {name: nginx, state: latest}",
)
REJECTED = LOW.replace("supervisorctl restart cart", "rm -rf /")


def run(tmp_path: Path, text: str, *args: str) -> int:
    path = tmp_path / "p.yml"
    path.write_text(text)
    return main(["guard", "check", str(path), *args])


@pytest.mark.parametrize(
    ("text", "code", "risk", "approval"),
    [(LOW, 0, "low", False), (MEDIUM, 0, "medium", False), (HIGH, 3, "high", True),
     (REJECTED, 1, "high", False)],
)  # fmt: skip
def test_exit_codes_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, code: int, risk: str,
    approval: bool,
) -> None:  # fmt: skip
    assert run(tmp_path, text, "--hosts", "app,db", "--json") == code
    doc = json.loads(capsys.readouterr().out)
    assert doc["allowed"] is (code != 1)
    assert doc["risk"] == risk and doc["needs_approval"] is approval
    for v in doc["violations"]:
        assert set(v) == {"rule", "task", "detail"} and all(isinstance(x, str) for x in v.values())
    assert bool(doc["violations"]) is (code == 1)


def test_human_output_explains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, REJECTED, "--hosts", "app") == 1
    out = capsys.readouterr().out
    assert "rejected" in out and "destructive.system_path" in out and "restart cart" in out


def test_hosts_outside_the_incident(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, LOW, "--hosts", "web", "--json") == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["violations"][0]["rule"] == "hosts.not_incident"


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["guard", "check", str(tmp_path / "missing.yml"), "--hosts", "app"]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert run(tmp_path, LOW, "--hosts", ",") == 2
    assert run(tmp_path, LOW, "--hosts", "app;id") == 2
    with pytest.raises(SystemExit) as exc:
        main(["guard", "check", str(tmp_path / "p.yml")])  # --hosts is required
    assert exc.value.code == 2


def test_not_utf8_is_rejected_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    path.write_bytes(b"- hosts: app\n  tasks: [\xff\xfe]\n")
    assert main(["guard", "check", str(path), "--hosts", "app"]) == 1
