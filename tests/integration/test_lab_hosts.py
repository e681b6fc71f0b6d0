"""The lab hosts feel like hosts: own hostname, processes and files; strict host keys; Ansible.

Uses the real thing (network namespaces, unshare, supervisord, OpenSSH, ansible-runner); needs
root. The lab comes from the session fixture: reused when up, else started and stopped. There is
no skip path: when a component is missing the fixture fails with the reason.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import ansible_runner
import asyncssh
import pytest

from remed_stack.lab import HOSTS, LabHosts

pytestmark = pytest.mark.integration

CONNECT_TIMEOUT_S = 10
COMMAND_TIMEOUT_S = 15
PLAYBOOK_TIMEOUT_S = 180


def _all_ok(lab: LabHosts) -> bool:
    hosts = lab.status()["hosts"]
    return bool(hosts) and all(h["ok"] for h in hosts)


@pytest.fixture(scope="module")
def lab_hosts(lab: LabHosts) -> LabHosts:
    """The session's lab (tests/conftest.py): reused if up, started and stopped otherwise."""
    return lab


async def _connect(lab: LabHosts, address: str, known_hosts: str | None = None) -> Any:
    status = lab.status()
    return await asyncssh.connect(
        address,
        username=status["ssh_user"],
        client_keys=[status["ssh_key"]],
        known_hosts=known_hosts or status["known_hosts"],
        connect_timeout=CONNECT_TIMEOUT_S,
    )


async def _run(lab: LabHosts, address: str, command: str) -> asyncssh.SSHCompletedProcess:
    async with await _connect(lab, address) as conn:
        return await conn.run(command, check=True, timeout=COMMAND_TIMEOUT_S)


def test_status_has_the_contract_fields(lab_hosts: LabHosts) -> None:
    status = lab_hosts.status()
    assert {"hosts", "inventory", "ssh_key", "ssh_user", "known_hosts"} <= set(status)
    # the dev stack's hosts first; a lab system brought up with --system adds its own after
    assert [(h["name"], h["address"]) for h in status["hosts"]][:3] == [
        ("web", "10.231.77.11"),
        ("app", "10.231.77.12"),
        ("db", "10.231.77.13"),
    ]
    assert all(h["ok"] for h in status["hosts"])
    assert status["ssh_user"] == "remedops"
    known = Path(status["known_hosts"]).read_text().splitlines()
    assert sorted(line.split()[0] for line in known) == sorted(
        f"{h['name']},{h['address']}" for h in status["hosts"]
    )
    inventory = Path(status["inventory"]).read_text()
    assert "StrictHostKeyChecking=yes" in inventory
    assert f"UserKnownHostsFile={status['known_hosts']}" in inventory


@pytest.mark.parametrize("host", HOSTS, ids=lambda h: h.name)
async def test_each_host_answers_as_itself_and_sees_only_its_processes(
    lab_hosts: LabHosts, host: Any
) -> None:
    result = await _run(
        lab_hosts,
        host.address,
        "hostname; sudo -n supervisorctl status sshd; echo ---; ps -eo pid=,args=",
    )
    hostname, supervised, rest = str(result.stdout).split("\n", 2)
    assert hostname == host.name
    assert "RUNNING" in supervised
    processes = rest.split("---\n", 1)[1].splitlines()
    init = next(p for p in processes if p.split(None, 1)[0] == "1")
    assert "supervisord" in init, processes
    # Every host's sshd has the same command line; one listener means only this host's is seen.
    listeners = [p for p in processes if "[listener]" in p]
    assert len(listeners) == 1, processes
    assert not [p for p in processes if "supervisord" in p and p.split(None, 1)[0] != "1"]


async def test_a_file_in_tmp_on_web_is_not_on_app(lab_hosts: LabHosts) -> None:
    web, app = HOSTS[0], HOSTS[1]
    probe = f"/tmp/remed-isolation-{uuid.uuid4().hex}"
    await _run(lab_hosts, web.address, f"echo from-web > {probe}")
    async with await _connect(lab_hosts, app.address) as conn:
        seen = await conn.run(f"test -e {probe}", timeout=COMMAND_TIMEOUT_S)
    assert seen.exit_status == 1, "a file written in /tmp on web is visible on app"
    assert str((await _run(lab_hosts, web.address, f"cat {probe}")).stdout) == "from-web\n"
    await _run(lab_hosts, web.address, f"rm -f {probe}")


async def test_an_unknown_host_key_is_rejected(lab_hosts: LabHosts, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    for host in HOSTS:
        with pytest.raises(asyncssh.HostKeyNotVerifiable):
            await _connect(lab_hosts, host.address, known_hosts=str(empty))


def test_ansible_runs_on_every_host_with_become_and_host_key_checking(
    lab_hosts: LabHosts, tmp_path: Path
) -> None:
    probe = f"/tmp/remed-become-{uuid.uuid4().hex}"
    playbook = tmp_path / "project" / "lab.yml"
    playbook.parent.mkdir()
    playbook.write_text(
        f"""
- hosts: lab
  gather_facts: false
  tasks:
    - name: the host says its own name
      ansible.builtin.command: hostname
      register: who
      changed_when: false
    - name: it is the inventory's name
      ansible.builtin.assert:
        that: who.stdout == inventory_hostname
    - name: root can write
      become: true
      ansible.builtin.copy:
        dest: {probe}
        content: "{{{{ who.stdout }}}}\\n"
        owner: root
        mode: "0600"
"""
    )
    result = ansible_runner.run(
        private_data_dir=str(tmp_path),
        playbook=str(playbook),
        inventory=lab_hosts.status()["inventory"],
        envvars={"ANSIBLE_HOST_KEY_CHECKING": "True"},
        quiet=True,
        timeout=PLAYBOOK_TIMEOUT_S,
    )
    assert result.status == "successful", result.stdout.read()
    names = {h.name for h in HOSTS}
    assert set(result.stats["ok"]) == names
    assert set(result.stats["changed"]) == names
    assert not result.stats["failures"] and not result.stats["dark"]
    for host in HOSTS:
        written = lab_hosts.dir / "hosts" / host.name / "root" / probe.lstrip("/")
        assert written.read_text() == f"{host.name}\n"
        assert written.stat().st_uid == 0
        written.unlink()


def test_up_again_is_a_no_op(lab_hosts: LabHosts) -> None:
    pids = sorted(p.read_text() for p in lab_hosts.dir.glob("*.pid"))
    lab_hosts.up()
    assert _all_ok(lab_hosts)
    assert sorted(p.read_text() for p in lab_hosts.dir.glob("*.pid")) == pids


# Restarting the hosts wipes what other tests provisioned on them (the chaos shop), so this runs
# outside `make test`: `pytest -m slow tests/integration/test_lab_hosts.py`.
@pytest.mark.slow
def test_up_twice_then_down_and_up_again(lab_hosts: LabHosts) -> None:
    known_hosts = Path(lab_hosts.status()["known_hosts"]).read_text()
    lab_hosts.up()
    assert _all_ok(lab_hosts)

    lab_hosts.down()
    assert not any(h["ok"] for h in lab_hosts.status()["hosts"])
    netns = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    assert not [line for line in netns.splitlines() if line.startswith("remed-")], netns
    assert not list(lab_hosts.dir.glob("*.pid"))

    lab_hosts.up()
    assert _all_ok(lab_hosts)
    # Host keys survive a restart, so clients' known_hosts stay valid.
    assert Path(lab_hosts.status()["known_hosts"]).read_text() == known_hosts
    for host in HOSTS:
        argv = [
            "ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={lab_hosts.known_hosts}", "-o", "ConnectTimeout=5",
            "-i", str(lab_hosts.key), f"remedops@{host.address}", "hostname",
        ]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=True)
        assert out.stdout.strip() == host.name
