"""Exactly one playbook out of free model text (remed_daemon.planner.extract)."""

from __future__ import annotations

import pytest
import yaml

from remed_daemon.planner.extract import extract_playbook

pytestmark = pytest.mark.unit

PLAY = """\
- name: restart cart
  hosts: app
  become: true
  tasks:
    - name: restart
      ansible.builtin.command: supervisorctl restart cart
"""


@pytest.mark.parametrize(
    "completion",
    [
        f"```yaml\n{PLAY}```",
        f"Here is the fix:\n\n```yml\n{PLAY}```\nThis restarts cart.",
        f"Sure. The service crashed.\n{PLAY}\nThat should do it.",
        f"---\n{PLAY}",
        f"```yaml\nnot: a play list\n```\n```yaml\n{PLAY}```\n```yaml\n- hosts: db\n```",
        f"```\n{PLAY}```",
        f"```yaml\n{PLAY}",  # unterminated fence
    ],
)
def test_extract_one_playbook(completion: str) -> None:
    playbook = extract_playbook(completion)
    assert yaml.safe_load(playbook) == yaml.safe_load(PLAY)


@pytest.mark.parametrize(
    "completion", ["", "I cannot help", "```yaml\nkey: value\n```", "```bash\nrm -rf /\n```"]
)
def test_extract_nothing(completion: str) -> None:
    assert extract_playbook(completion) == ""
