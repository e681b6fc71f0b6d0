"""The inventory as ansible-core reads it: groups' vars stay with their groups, YAML,
host_vars/ and group_vars/, per-host connection variables, errors that name the file, the
cache, and a user's ansible.cfg that changes nothing. Real ansible-core, no fakes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from remed_daemon.agents.inventory import (
    HostConnection,
    InventoryError,
    UnknownHost,
    load_inventory,
    load_inventory_async,
    user_known_hosts_file,
)
from remed_daemon.agents.ssh import HostAccess, HostMisconfigured, endpoint_for

pytestmark = pytest.mark.unit

TWO_GROUPS = """\
[web]
web1 ansible_host=10.0.0.11
web2 ansible_host=10.0.0.12 ansible_port=2222 ansible_user=alice

[db]
db1 ansible_host=10.0.0.21

[loose]
solo

[web:vars]
ansible_user=webops
ansible_ssh_common_args='-o StrictHostKeyChecking=yes -o UserKnownHostsFile=/keys/web_known'

[db:vars]
ansible_user=dbops
ansible_ssh_private_key_file=/keys/db_ed25519
ansible_port=2200
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_ini_groups_keep_their_own_vars(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path / "hosts.ini", TWO_GROUPS))
    assert sorted(inv) == ["db1", "solo", "web1", "web2"]
    web1, web2, db1, solo = inv["web1"], inv["web2"], inv["db1"], inv["solo"]
    assert (web1.address, web1.port, web1.user, web1.key_file) == (
        "10.0.0.11", None, "webops", None,
    )  # fmt: skip
    assert web1.known_hosts() == "/keys/web_known"
    # the host's own variables beat its group's
    assert (web2.address, web2.port, web2.user) == ("10.0.0.12", 2222, "alice")
    # db's vars are db's alone: the old parser merged every [*:vars] into one dict
    assert (db1.address, db1.port, db1.user, db1.key_file) == (
        "10.0.0.21", 2200, "dbops", "/keys/db_ed25519",
    )  # fmt: skip
    assert db1.known_hosts() is None and db1.ssh_common_args == ""
    assert solo == HostConnection(name="solo", address="solo")


def test_yaml_inventory_with_children_and_templated_address(tmp_path: Path) -> None:
    path = write(
        tmp_path / "inventory.yml",
        """\
all:
  vars:
    ansible_user: ops
  children:
    shop:
      vars:
        ansible_port: 2022
      children:
        front:
          hosts:
            web:
              ansible_host: "{{ inventory_hostname }}.lab.internal"
        back:
          vars:
            ansible_user: backops
          hosts:
            app:
              ansible_host: 192.0.2.7
              ansible_port: "2201"
            db:
              ansible_ssh_host: 192.0.2.8
              ansible_host: 192.0.2.99
              ansible_connection: local
""",
    )
    inv = load_inventory(path)
    assert inv["web"] == HostConnection(
        name="web", address="web.lab.internal", port=2022, user="ops"
    )
    assert (inv["app"].address, inv["app"].port, inv["app"].user) == ("192.0.2.7", 2201, "backops")
    # ansible_ssh_host beats ansible_host, as in ansible-core's ssh plugin
    assert inv["db"].address == "192.0.2.8"
    assert inv["db"].connection == "local" and not inv["db"].over_ssh


def test_host_vars_and_group_vars_beside_the_inventory(tmp_path: Path) -> None:
    path = write(tmp_path / "inv" / "hosts", "[app]\napp1\napp2 ansible_host=10.1.0.2\n")
    write(tmp_path / "inv" / "group_vars" / "app.yml", "ansible_user: appops\nansible_port: 22\n")
    write(
        tmp_path / "inv" / "group_vars" / "all" / "ssh.yml", "ansible_ssh_private_key_file: ~/k\n"
    )
    write(
        tmp_path / "inv" / "host_vars" / "app1.yml", "ansible_host: 10.1.0.1\nansible_port: 2201\n"
    )
    inv = load_inventory(path)
    app1, app2 = inv["app1"], inv["app2"]
    assert (app1.address, app1.port, app1.user) == ("10.1.0.1", 2201, "appops")
    assert (app2.address, app2.port, app2.user) == ("10.1.0.2", 22, "appops")
    assert app1.key_file == os.path.expanduser("~/k") == app2.key_file
    # an inventory directory reads its files and its own host_vars/
    write(tmp_path / "dir" / "10-hosts.ini", "[db]\ndb1\n")
    write(tmp_path / "dir" / "20-more.yml", "all:\n  hosts:\n    cache1:\n      ansible_port: 7\n")
    write(tmp_path / "dir" / "host_vars" / "db1.yml", "ansible_host: 10.2.0.1\n")
    both = load_inventory(tmp_path / "dir")
    assert both["db1"].address == "10.2.0.1" and both["cache1"].port == 7


def test_errors_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.ini", TWO_GROUPS)
    inv = load_inventory(path)
    with pytest.raises(UnknownHost, match=f"'web3' is not in the Ansible inventory {path}"):
        inv["web3"]
    assert inv.get("web3") is None and "web3" not in inv
    broken = write(tmp_path / "broken.ini", "[web\nweb1 ansible_host=10.0.0.1\n")
    with pytest.raises(InventoryError, match=f"could not parse the Ansible inventory {broken}"):
        load_inventory(broken)
    with pytest.raises(InventoryError, match="does not exist"):
        load_inventory(tmp_path / "missing.ini")
    # one host whose variables cannot be resolved fails alone, saying why
    bad_var = write(tmp_path / "vars.ini", "[g]\nok1\nbad1 ansible_host='{{ no_such_variable }}'\n")
    inv = load_inventory(bad_var)
    assert inv["ok1"].address == "ok1"
    with pytest.raises(InventoryError, match=r"cannot resolve host 'bad1'.*no_such_variable"):
        inv["bad1"]


def test_cached_until_a_file_changes(tmp_path: Path) -> None:
    path = write(tmp_path / "hosts.ini", "[g]\nh1 ansible_host=10.0.0.1\n")
    first = load_inventory(path)
    assert load_inventory(path) is first
    write(tmp_path / "host_vars" / "h1.yml", "ansible_host: 10.0.0.100\n")
    second = load_inventory(path)
    assert second is not first and second["h1"].address == "10.0.0.100"
    assert load_inventory(path, max_age_s=0) is not second


def test_user_ansible_cfg_and_env_change_nothing_and_home_stays_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    evil = "[defaults]\nremote_user = evil\nremote_port = 9\n[inventory]\nenable_plugins = yaml\n"
    write(home / ".ansible.cfg", evil)
    write(work / "ansible.cfg", evil)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("ANSIBLE_REMOTE_USER", "evil-too")
    monkeypatch.setenv("ANSIBLE_INVENTORY_ENABLED", "yaml")
    monkeypatch.chdir(work)
    inv = load_inventory(write(tmp_path / "hosts.ini", "[g]\nh1 ansible_host=10.0.0.1\n"))
    assert inv["h1"] == HostConnection(name="h1", address="10.0.0.1")
    assert not (home / ".ansible").exists()


def test_known_hosts_from_ssh_arguments() -> None:
    assert user_known_hosts_file("-o StrictHostKeyChecking=yes -oUserKnownHostsFile=~/kh") == (
        os.path.expanduser("~/kh")
    )
    assert user_known_hosts_file("-o 'userknownhostsfile /a /b'") == "/a"
    assert user_known_hosts_file("-o ControlMaster=auto") is None
    assert user_known_hosts_file("-o 'unbalanced") is None


def test_endpoint_precedence_is_ansibles() -> None:
    common = "-o UserKnownHostsFile=/inv/known"
    silent = HostConnection(name="h", address="10.0.0.1")
    ep = endpoint_for(silent, user="cfg", key="/cfg/key", known_hosts="/cfg/known")
    assert (ep.user, ep.key, ep.known_hosts, ep.port) == ("cfg", "/cfg/key", "/cfg/known", None)
    # inventory variables beat --user/--private-key (the lowest precedence in Ansible)
    said = HostConnection(
        name="h", address="10.0.0.1", port=2222, user="inv", key_file="/inv/key",
        ssh_common_args=common,
    )  # fmt: skip
    ep = endpoint_for(said, user="cfg", key="/cfg/key", known_hosts="/cfg/known")
    assert (ep.user, ep.key, ep.port) == ("inv", "/inv/key", 2222)
    # the config's known_hosts rides in ANSIBLE_SSH_ARGS, before the common args
    assert ep.known_hosts == "/cfg/known"
    assert endpoint_for(said).known_hosts == "/inv/known"
    # ansible_ssh_args replaces ANSIBLE_SSH_ARGS, and with it the config's file
    own = HostConnection(name="h", address="a", ssh_args="-o UserKnownHostsFile=/own")
    assert endpoint_for(own, known_hosts="/cfg/known").known_hosts == "/own"
    assert endpoint_for(silent).known_hosts == str(Path.home() / ".ssh" / "known_hosts")


async def test_host_access_resolves_without_blocking_the_loop(tmp_path: Path) -> None:
    path = write(
        tmp_path / "hosts.ini",
        TWO_GROUPS + "\n[local]\nctl ansible_connection=local\n",
    )
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    inv = await load_inventory_async(path)
    stop.set()
    await task
    assert ticks >= 3, "the event loop stalled while the inventory was read"
    assert inv["db1"].port == 2200

    hosts = HostAccess(str(path), user="cfg", known_hosts="/cfg/known")
    ep = await hosts.endpoint("db1")
    assert (ep.address, ep.port, ep.user, ep.key) == (
        "10.0.0.21",
        2200,
        "dbops",
        "/keys/db_ed25519",
    )
    assert await hosts.address("web2") == "10.0.0.12"
    with pytest.raises(UnknownHost, match=str(path)):
        await hosts.endpoint("nope")
    with pytest.raises(InventoryError, match="ansible_connection=local"):
        await hosts.endpoint("ctl")
    # a host the inventory cannot give is not worth retrying, and no connection is tried
    with pytest.raises(HostMisconfigured, match="nope") as caught:
        await hosts.run("nope", "true", timeout_s=5)
    assert caught.value.retriable is False
    # without an inventory (tests, ad-hoc use) the name is the address
    assert await HostAccess("").address("10.9.9.9") == "10.9.9.9"
