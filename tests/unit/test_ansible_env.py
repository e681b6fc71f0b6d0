"""Playbook runs are hermetic: a user's ansible.cfg (HOME, the working directory, ANSIBLE_CONFIG)
and inherited ANSIBLE_* variables change neither the environment remed gives ansible-runner nor
the settings ansible-playbook runs with. Real ansible-runner and ansible-playbook (on
localhost, connection local), no fakes."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest
from opentelemetry import trace

from remed_daemon.agents import ansible_env
from remed_daemon.agents.execute import RunnerSettings, run_playbook

pytestmark = pytest.mark.unit

EVIL_CFG = (
    "[defaults]\nremote_user = evil\njinja2_extensions = jinja2.ext.do\n"
    "stdout_callback = json\n[ssh_connection]\nssh_args = -o StrictHostKeyChecking=no\n"
)
EVIL_ENV = {
    "ANSIBLE_REMOTE_USER": "evil-env",
    "ANSIBLE_JINJA2_EXTENSIONS": "jinja2.ext.loopcontrols",
    "ANSIBLE_STDOUT_CALLBACK": "json",
    "ANSIBLE_CALLBACK_PLUGINS": "/evil/callbacks",
    "ANSIBLE_FILTER_PLUGINS": "/evil/filters",
    "ORIGINAL_STDOUT_CALLBACK": "json",
}
# A task that fails with the settings ansible-playbook resolved, so they come back in its msg.
SHOW_SETTINGS = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: show settings
      ansible.builtin.fail:
        msg: >-
          user={{ lookup('ansible.builtin.config', 'DEFAULT_REMOTE_USER') }}
          ext={{ lookup('ansible.builtin.config', 'DEFAULT_JINJA2_EXTENSIONS') }}
          cfg={{ ansible_config_file }}
"""


@pytest.fixture
def hostile_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME, the working directory and ANSIBLE_CONFIG all hold an ansible.cfg that sets
    `remote_user = evil`, and the environment has ANSIBLE_* settings of its own."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (home / ".ansible.cfg").write_text(EVIL_CFG)
    (work / "ansible.cfg").write_text(EVIL_CFG)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("ANSIBLE_CONFIG", str(home / ".ansible.cfg"))
    monkeypatch.delenv("ANSIBLE_COLLECTIONS_PATH", raising=False)
    monkeypatch.delenv("ANSIBLE_COLLECTIONS_PATHS", raising=False)
    for k, v in EVIL_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(work)
    return home


async def test_runner_env_and_playbook_settings_ignore_the_users_ansible(
    tmp_path: Path, hostile_home: Path
) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )
    run_dir = tmp_path / "run"
    run = await run_playbook(
        RunnerSettings(inventory=str(inventory), known_hosts="/lab/known_hosts"),
        SHOW_SETTINGS,
        run_dir=run_dir,
        hosts=["localhost"],
        extravars={},
        tracer=trace.get_tracer("test"),
        cancel=threading.Event(),
    )
    # What ansible-runner was given: ansible-runner records the child's environment.
    (command,) = run_dir.glob("artifacts/*/command")
    env = json.loads(command.read_text())["env"]
    private = run_dir / "ansible"
    assert env["ANSIBLE_CONFIG"] == str(private / "ansible.cfg")
    assert env["ANSIBLE_HOME"] == str(private / "home")
    assert env["ANSIBLE_LOCAL_TEMP"] == str(private / "tmp")
    assert "remote_user" not in (private / "ansible.cfg").read_text()
    assert env["ANSIBLE_STDOUT_CALLBACK"] == "awx_display"  # ansible-runner's own, alone
    assert "/evil" not in env["ANSIBLE_CALLBACK_PLUGINS"]
    assert env["ANSIBLE_SSH_ARGS"] == (
        "-o StrictHostKeyChecking=yes -o UserKnownHostsFile=/lab/known_hosts"
    )
    assert env["ANSIBLE_COLLECTIONS_PATH"].startswith(str(hostile_home / ".ansible"))
    for name in EVIL_ENV:
        assert "evil" not in env.get(name, "") and env.get(name) != "json", name
    assert not any("evil" in v for v in env.values() if isinstance(v, str))

    # What ansible-playbook then ran with: its defaults, not the user's file.
    (task,) = run.tasks
    assert task.failed, task
    assert task.msg == f"user= ext=[] cfg={private / 'ansible.cfg'}"
    assert not (hostile_home / ".ansible").exists()  # nothing written under HOME


def test_environ_keeps_only_the_collections_path(tmp_path: Path) -> None:
    base = {
        "PATH": "/bin",
        "HOME": "/home/ops",
        "ANSIBLE_REMOTE_USER": "evil",
        "ANSIBLE_COLLECTIONS_PATH": "/opt/collections",
    }
    env = ansible_env.environ(tmp_path / "a", {"ANSIBLE_NOCOLOR": "1"}, base=base)
    assert env["PATH"] == "/bin" and env["ANSIBLE_NOCOLOR"] == "1"
    assert "ANSIBLE_REMOTE_USER" not in env
    assert env["ANSIBLE_COLLECTIONS_PATH"] == "/opt/collections"
    assert env["ANSIBLE_CONFIG"] == str(tmp_path / "a" / "ansible.cfg")
    # Unset: ansible-core's default, under the real ~/.ansible rather than the private home.
    env = ansible_env.environ(tmp_path / "b", base={"HOME": "/home/ops"})
    assert env["ANSIBLE_COLLECTIONS_PATH"] == (
        "/home/ops/.ansible/collections:/usr/share/ansible/collections"
    )
