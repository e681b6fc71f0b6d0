"""The fixed-playbook planner (`remediation.planner = "static"`): the operator's playbook
(`remediation.static_playbook`), or a restart of the target service when none is configured.

It plans like any planner and its playbook meets the guard like any plan. `{{ remed_host }}` and
`{{ remed_service }}` in the file are replaced by the target's names (plain names, checked)
before the guard sees it, so a play written for "the incident's host" targets that host
literally; the other `remed_*` values (`remed_incident_id`, `remed_report_id`) stay extra vars
of the run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from remed_daemon.planner.base import PlanDraft, PlanRequest

PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

_RESTART = """\
- name: remed restart of {service_q} on {host_q}
  hosts: {host_j}
  become: true
  gather_facts: false
  tasks:
    - name: restart {service_q}
      ansible.builtin.service:
        name: {service_j}
        state: restarted
"""


def plain_names(request: PlanRequest) -> bool:
    """Whether the target's service and host may be written into a playbook's text."""
    return bool(PLAIN_NAME.match(request.service) and PLAIN_NAME.match(request.host))


def fill_target(text: str, request: PlanRequest) -> str:
    """`text` with `{{ remed_host }}` and `{{ remed_service }}` replaced by the target's names
    (check `plain_names(request)` first)."""
    for var, value in (("remed_host", request.host), ("remed_service", request.service)):
        # plain names: no backslash or group reference for re.sub to interpret
        text = re.sub(r"\{\{\s*" + var + r"\s*\}\}", value, text)
    return text


def restart_playbook(service: str, host: str) -> str:
    # json.dumps quotes are valid YAML: names cannot break out of their scalar.
    return _RESTART.format(
        service_q=service, host_q=host, service_j=json.dumps(service), host_j=json.dumps(host)
    )


class StaticPlanner:
    name = "static"

    def __init__(self, playbook_file: str = "") -> None:
        self.fixed = Path(playbook_file).read_text() if playbook_file else ""

    async def plan(self, request: PlanRequest) -> PlanDraft:
        if not self.fixed:
            text = restart_playbook(request.service, request.host)
            return PlanDraft(playbook=text, planner=self.name, completion=text)
        if not plain_names(request):
            why = f"target {request.service}@{request.host} is not a plain name to write in"
            return PlanDraft(playbook="", planner=self.name, completion=why)
        text = fill_target(self.fixed, request)
        return PlanDraft(playbook=text, planner=self.name, completion=text)
