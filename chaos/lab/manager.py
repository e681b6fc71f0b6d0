"""What runs a lab service: supervisord or systemd (a system file's `manager`).

Faults, checks, playbooks, provisioning and probes speak to a service's manager only through
these shell lines, so a system whose hosts boot systemd (chaos/README.md, "systemd hosts") gets
`systemctl restart booking-api` where the shop gets `supervisorctl restart catalog`.

A state is reported in supervisord's words (RUNNING, STOPPED, STARTING, BACKOFF, FATAL...):
systemd's `active` is RUNNING, `activating` (a unit waiting to restart) BACKOFF, `failed` FATAL,
`inactive` STOPPED.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chaos.lab.topology import Service

SYSTEMD_STATES = {
    "active": "RUNNING", "reloading": "RUNNING", "activating": "BACKOFF", "failed": "FATAL",
    "inactive": "STOPPED", "deactivating": "STOPPING",
}  # fmt: skip


def unit(svc: Service) -> str:
    """The name the manager knows the service by (supervisord program, systemd unit)."""
    return f"{svc.program}.service" if svc.manager == "systemd" else svc.program


def ctl(svc: Service, action: str) -> str:
    """`supervisorctl <action> <program>` or `systemctl <action> <program>.service`."""
    if svc.manager == "systemd":
        return f"systemctl {action} {unit(svc)}"
    return f"supervisorctl {action} {svc.program}"


def state_command(svc: Service) -> str:
    """A shell line printing the service's state in one word (see `state`)."""
    if svc.manager == "systemd":
        return f"systemctl is-active {unit(svc)} || true"
    return f"supervisorctl status {svc.program} | awk '{{print $2}}' || true"


def state(svc: Service, output: str) -> str:
    """The output of `state_command` in supervisord's words (RUNNING, STOPPED, FATAL, ...)."""
    word = (output.split() or ["UNKNOWN"])[0]
    if svc.manager == "systemd":
        return SYSTEMD_STATES.get(word, word.upper())
    return word


def describe(svc: Service) -> str:
    """`supervisord program catalog` or `systemd unit booking-api.service`, for messages."""
    if svc.manager == "systemd":
        return f"systemd unit {unit(svc)}"
    return f"supervisord program {svc.program}"


def output_log(svc: Service) -> str:
    """Where the program's own stdout/stderr goes (its start errors): supervisord's log for the
    program, or for a systemd unit the file its unit appends them to."""
    if svc.kind in ("postgresql", "memcached"):  # their server log is their output
        return svc.log
    if svc.manager == "systemd":
        return f"/var/log/{svc.program}.out"
    return f"/var/log/supervisor/{svc.program}.log"


def output_tail(svc: Service, lines: int = 2) -> str:
    """A shell line printing the last lines of the program's own output."""
    return f"tail -n {lines} {shlex.quote(output_log(svc))} 2>/dev/null || true"


def not_running_command(services: list[Service]) -> str:
    """A shell line printing how many of `services` (one host's) are not running."""
    if not services:
        return "echo 0"
    if services[0].manager == "systemd":
        units = " ".join(unit(s) for s in services)
        return f"n=0; for u in {units}; do systemctl is-active -q $u || n=$((n+1)); done; echo $n"
    programs = " ".join(s.program for s in services)
    return f"supervisorctl status {programs} | awk '$2 != \"RUNNING\"' | wc -l"
