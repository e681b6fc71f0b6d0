"""The lab hosts: strict-host-key SSH to each, host isolation, Ansible with become."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ansible_runner
import asyncssh
import pytest

pytestmark = pytest.mark.integration


async def _connect(lab: Any, address: str, known_hosts: str | None = None) -> Any:
    status = lab.status()
    return await asyncssh.connect(
        address,
        username=status["ssh_user"],
        client_keys=[status["ssh_key"]],
        known_hosts=known_hosts or status["known_hosts"],
        connect_timeout=10,
    )


async def test_every_host_answers_over_ssh_as_itself(lab: Any) -> None:
    hosts = lab.status()["hosts"]
    assert len(hosts) >= 3 and all(h["ok"] for h in hosts)
    for host in hosts:
        async with await _connect(lab, host["address"]) as conn:
            result = await conn.run("hostname; sudo -n supervisorctl status sshd", timeout=15)
        assert result.exit_status == 0, result.stderr
        name, supervised = str(result.stdout).splitlines()[:2]
        assert name == host["name"]
        assert "RUNNING" in supervised


async def test_hosts_have_their_own_processes_and_files(lab: Any) -> None:
    web, app = lab.status()["hosts"][:2]
    async with await _connect(lab, web["address"]) as conn:
        await conn.run("echo from-web > /tmp/isolation-probe", check=True, timeout=15)
        ps = await conn.run("ps -eo comm=", check=True, timeout=15)
    async with await _connect(lab, app["address"]) as conn:
        seen = await conn.run("cat /tmp/isolation-probe", timeout=15)
    assert seen.exit_status != 0, "a file written on web is visible on app"
    commands = str(ps.stdout).split()
    # Only this host's init, its sshd and the session: no other host's processes.
    assert commands.count("supervisord") == 1
    assert "java" not in commands and "tritonserver" not in commands


async def test_unknown_host_key_is_rejected(lab: Any, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await _connect(lab, lab.status()["hosts"][0]["address"], known_hosts=str(empty))


def test_ansible_runs_with_become_and_host_key_checking(lab: Any, tmp_path: Path) -> None:
    playbook = tmp_path / "project" / "check.yml"
    playbook.parent.mkdir()
    playbook.write_text(
        """
- hosts: lab
  gather_facts: false
  tasks:
    - name: who am I
      ansible.builtin.command: hostname
      register: who
      changed_when: false
    - name: root can write
      become: true
      ansible.builtin.copy:
        dest: /var/tmp/remed-ansible-probe
        content: "{{ who.stdout }}\\n"
        mode: "0644"
"""
    )
    result = ansible_runner.run(
        private_data_dir=str(tmp_path),
        playbook=str(playbook),
        inventory=lab.status()["inventory"],
        envvars={"ANSIBLE_HOST_KEY_CHECKING": "True"},
        quiet=True,
        timeout=120,
    )
    assert result.status == "successful", result.stdout.read()
    names = {h["name"] for h in lab.status()["hosts"]}
    assert set(result.stats["ok"]) == names
    assert not result.stats["failures"] and not result.stats["dark"]


def test_status_reports_the_contract_fields(lab: Any) -> None:
    status = lab.status()
    assert {"hosts", "inventory", "ssh_key", "ssh_user", "known_hosts"} <= set(status)
    assert Path(status["known_hosts"]).read_text().count("ssh-ed25519") == len(status["hosts"])
    json.dumps(status)


def test_up_again_is_a_no_op(lab: Any) -> None:
    before = [h["ok"] for h in lab.status()["hosts"]]
    lab.up()
    assert [h["ok"] for h in lab.status()["hosts"]] == before == [True] * len(before)
