"""Playbooks of the two reference remediators.

- `oracle_playbook`: what an experienced SRE runs for each category, parameterised by the target
  and the fault's parameters — fix the cause, restart only what needs it, check the result. The
  upper bound of `remed bench` and the SFT teacher. Every name the fault's variants change (the
  hog's path, the nftables table, the dumper and its file, the leaking client, the proxy's
  port) comes from `params` (`Fault.params()`), defaulting to the fault class's own defaults:
  none is written here.
- `rules_playbook`: a static category → runbook table with no probing, the way an Event-Driven
  Ansible rulebook is usually written: restart the alerting service (and clear old logs for a
  full disk). The baseline users already have.

`python -m chaos.playbooks DIR` writes the oracle's playbooks as a directory for the daemon's
oracle planner (`agents.oracle_playbook_dir`), which is how `--planner oracle` reaches them.

Every playbook is one play with few tasks (each task costs an SSH round trip).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from chaos.faults.network import DELAY_PROXY_PORT_OFFSET
from chaos.lab import manager
from chaos.lab import topology as topo

HEADER = """\
- name: {name}
  hosts: {host}
  become: true
  gather_facts: false
  tasks:
"""


def _restart(svc: topo.Service) -> str:
    if svc.manager == "systemd":
        return f"""\
    - name: restart {manager.unit(svc)} under systemd
      ansible.builtin.command: systemctl restart {manager.unit(svc)}
      register: restart_result
      failed_when: restart_result.rc != 0
"""
    program = svc.program
    return f"""\
    - name: restart {program} under supervisord
      ansible.builtin.command: supervisorctl restart {program}
      register: restart_result
      # A program that was down prints "ERROR (not running)" for the stop half, then "started".
      failed_when: >-
        restart_result.rc != 0 or
        (not ansible_check_mode and 'started' not in restart_result.stdout)
"""


def _start(svc: topo.Service) -> str:
    if svc.manager == "systemd":
        return f"""\
    - name: start {manager.unit(svc)} under systemd
      ansible.builtin.command: systemctl start {manager.unit(svc)}
      register: start_result
      failed_when: start_result.rc != 0
"""
    program = svc.program
    return f"""\
    - name: start {program} under supervisord
      ansible.builtin.command: supervisorctl start {program}
      register: start_result
      changed_when: "'started' in start_result.stdout"
      failed_when: "'ERROR' in start_result.stdout and 'already started' not in start_result.stdout"
"""


def _kill(pattern: str, what: str, signal: str = "KILL") -> str:
    return f"""\
    - name: stop {what}
      ansible.builtin.command: pkill -{signal} -f {pattern}
      register: kill_result
      changed_when: kill_result.rc == 0
      failed_when: kill_result.rc > 1
"""


def _wait_gone(pattern: str, what: str) -> str:
    return f"""\
    - name: wait until {what} has exited
      ansible.builtin.command: pgrep -f {pattern}
      register: still_there
      until: still_there.rc == 1
      retries: 20
      delay: 1
      changed_when: false
      failed_when: still_there.rc > 1
      when: not ansible_check_mode  # a dry run skips commands, so there is nothing to wait for
"""


def _nft_delete_table(family: str, table: str, port: int, verdict: str) -> str:
    # The probe's `nft list ruleset` shows the table that holds the rule; deleting that one
    # table by name is a targeted change (the guard refuses flushes and run-time arguments).
    return f"""\
    - name: delete the nftables table {table} that {verdict}s traffic for port {port}
      ansible.builtin.command: nft delete table {family} {table}
      register: nft_result
      failed_when: nft_result.rc != 0 and 'No such file' not in nft_result.stderr
      changed_when: nft_result.rc == 0
"""


def _free_port(port: int, what: str) -> str:
    return f"""\
    - name: stop {what} on port {port}
      ansible.builtin.command: fuser -k -TERM -n tcp {port}
      register: fuser_result
      changed_when: fuser_result.rc == 0
      failed_when: false
"""


def fault_param(category: str, params: dict[str, Any], key: str) -> Any:
    """`params[key]`, else the default of the fault class's field `key` (what an injection
    without variants uses)."""
    import dataclasses

    from chaos.faults import CATALOG

    if params.get(key) not in (None, ""):
        return params[key]
    for f in dataclasses.fields(CATALOG[category]):
        if f.name == key and f.default is not dataclasses.MISSING:
            return f.default
    raise KeyError(f"{category} has no parameter {key!r}")


def oracle_playbook(
    category: str, host: str, service: str, params: dict[str, Any] | None = None
) -> str:
    """The expert's playbook for `category` on `service`, with the names the injected fault
    used (`params`, `Fault.params()`); a missing name is the fault class's default."""
    svc = topo.service(service)
    params = dict(params or {})
    body: list[str]
    name = f"fix {category} of {service} on {host}"
    if category in ("cpu-stress", "memory-stress"):
        hog = fault_param(category, params, "hog")
        what = hog.rsplit("/", 1)[-1]
        body = [_kill(hog, f"the runaway {what} process outside supervisord")]
    elif category == "disk-io":
        # SIGTERM lets stress-ng remove its own scratch files in the data directory.
        hog = fault_param(category, params, "hog")
        what = hog.rsplit("/", 1)[-1]
        body = [
            _kill(hog, f"the {what} process saturating the disk", signal="TERM"),
            _wait_gone(hog, what),
        ]
    elif category == "network-loss":
        table = fault_param(category, params, "table")
        body = [_nft_delete_table("inet", table, svc.port, "drop")]
    elif category == "network-delay":
        table = fault_param(category, params, "table")
        proxy_port = int(fault_param(category, params, "proxy_port") or 0)
        proxy_port = proxy_port or svc.port + DELAY_PROXY_PORT_OFFSET
        body = [
            _nft_delete_table("ip", table, svc.port, "redirect"),
            _free_port(proxy_port, "the delaying proxy traffic was diverted to"),
        ]
    elif category == "service-down":
        body = [_start(svc)]
    elif category == "config-error":
        # Restore the file from the documented baseline (the source of truth an SRE keeps in
        # config management) and restart only when that changed something.
        from chaos.lab.provision import documented_config

        spec = documented_config(service)
        content = "".join(f"          {line}\n" if line else "\n"
                          for line in spec.content.splitlines())
        body = [f"""\
    - name: restore {svc.config} to the documented configuration
      ansible.builtin.copy:
        dest: {svc.config}
        backup: true
        owner: {spec.owner}
        group: {spec.group}
        mode: "{spec.mode:04o}"
        content: |
{content}      register: restored
""", _restart(svc).replace(
            "      register: restart_result\n",
            "      when: restored.changed\n      register: restart_result\n",
        )]
    elif category == "dependency-down":
        store = topo.store_of(service)
        if store is None:
            raise ValueError(f"dependency-down: {service} depends on no data store")
        dep = store
        host, name = dep.host, f"start {dep.name}, the store {service} depends on"
        body = [_start(dep)]
    elif category == "port-conflict":
        body = [_free_port(svc.port, "the process squatting the service's port"), _start(svc)]
    elif category == "log-flood":
        dumper = fault_param(category, params, "dumper")
        dump_file = fault_param(category, params, "dump_file")
        if not dump_file:
            dump_file = f"{svc.log.rsplit('/', 1)[0]}/{service}-debug.log"
        body = [_kill(dumper, "the process flooding the debug log"), f"""\
    - name: remove the flooded debug log
      ansible.builtin.file:
        path: {dump_file}
        state: absent
"""]
    elif category == "wrong-permissions":
        body = [f"""\
    - name: restore owner, group and mode of {svc.config}
      ansible.builtin.file:
        path: {svc.config}
        owner: root
        group: {topo.SHOP_USER}
        mode: "0640"
""", _restart(svc)]
    elif category == "bad-deploy":
        body = [f"""\
    - name: roll {service} back to release {topo.SHOP_VERSION}
      ansible.builtin.file:
        src: releases/{topo.SHOP_VERSION}
        dest: {topo.current_link(service)}
        state: link
        force: true
""", _restart(svc)]
    elif category == "tls-cert":
        tls = dict(svc.tls)
        front = svc.host
        san = f"DNS:{front},DNS:{topo.SYSTEM.name},IP:{svc.address}"
        reload = (f"systemctl reload {manager.unit(svc)}" if svc.manager == "systemd"
                  else f"supervisorctl signal HUP {svc.program}")  # fmt: skip
        body = [f"""\
    - name: issue a fresh certificate for {front} (the served one has expired)
      ansible.builtin.command: >-
        openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj /CN={front}
        -addext subjectAltName={san}
        -keyout {tls.get("key", topo.TLS_KEY)} -out {tls.get("cert", topo.TLS_CERT)}
    - name: reload {svc.name} so it serves the new certificate
      ansible.builtin.command: {reload}
"""]
    elif category == "connection-exhaustion":
        # pg_stat_activity and ss/ps name the client holding most connections.
        client = fault_param(category, params, "client")
        body = [_kill(client, "the batch job leaking PostgreSQL connections")]
    else:
        raise ValueError(f"no oracle playbook for category {category!r}")
    return HEADER.format(name=name, host=host) + "".join(body)


def rules_playbook(category: str, host: str, service: str) -> str:
    """The static runbook: restart the alerting service; for a full disk, drop rotated logs."""
    svc = topo.service(service)
    body = _restart(svc)
    if category == "log-flood":
        log_dir = svc.log.rsplit("/", 1)[0]
        body = f"""\
    - name: delete rotated logs
      ansible.builtin.shell: rm -f {log_dir}/*.gz {log_dir}/*.[0-9]
""" + body
    return HEADER.format(name=f"runbook for {category} on {service}", host=host) + body


# What the team behind the runbook has seen before (their incident history): the names the
# lab's faults use without variants. The runbook knows them; it cannot know a variant's.
RUNBOOK_KNOWN_OFFENDERS: dict[str, Any] = {
    "hog": "stress-ng", "table": "chaos_loss", "delay_table": "chaos_delay",
    "dumper": "debug_dump.sh", "client": "report_batch.py",
}  # fmt: skip


def runbook_playbook(category: str, host: str, service: str) -> str:
    """The runbook table a competent team writes for Event-Driven Ansible: one entry per alert
    category, filled in from the alert's labels (category, service, host) and the topology
    only: no probing, no reading of evidence. It starts what is down (the service, or the
    stores it depends on), frees the service's port, re-applies the configuration and file
    modes from config management, rolls back to the release the topology names, renews the
    certificate, and kills or removes the offenders it knows from past incidents
    (RUNBOOK_KNOWN_OFFENDERS) — which is where it falls short once the names vary."""
    svc = topo.service(service)
    known = RUNBOOK_KNOWN_OFFENDERS
    if category in ("cpu-stress", "memory-stress", "disk-io"):
        params: dict[str, Any] = {"hog": known["hog"]}
    elif category == "network-loss":
        params = {"table": known["table"]}
    elif category == "network-delay":
        params = {"table": known["delay_table"], "proxy_port": 0}
    elif category == "log-flood":
        params = {"dumper": known["dumper"], "dump_file": ""}
    elif category == "connection-exhaustion":
        params = {"client": known["client"]}
    elif category == "dependency-down":
        stores = [topo.SERVICES[d] for d in svc.depends_on if topo.SERVICES[d].health != "http"]
        if not stores:
            return rules_playbook(category, host, service)
        plays = []
        for dep_host in sorted({d.host for d in stores}):
            body = "".join(_start(d) for d in stores if d.host == dep_host)
            name = f"runbook for {category} of {service}, start its stores on {dep_host}"
            plays.append(HEADER.format(name=name, host=dep_host) + body)
        return "".join(plays)
    elif category in ("service-down", "port-conflict", "config-error", "wrong-permissions",
                      "bad-deploy", "tls-cert"):  # fmt: skip
        params = {}
    else:
        return rules_playbook(category, host, service)
    text = oracle_playbook(category, host, service, params)
    return text.replace(f"- name: fix {category} of", f"- name: runbook for {category} of", 1)


HOST_PLACEHOLDER = "{{ remed_host }}"


def write_oracle_dir(directory: Path) -> list[Path]:
    """The oracle's playbooks as the daemon's oracle planner reads them
    (`agents.oracle_playbook_dir`): `DIR/<category>/<service>.yml` for every category and shop
    service it has a fix for, the target host left as `{{ remed_host }}` (the planner fills it
    in). Returns the files written."""
    from chaos.faults import CATEGORIES

    written = []
    for category in CATEGORIES:
        for service in topo.SERVICES:
            try:
                text = oracle_playbook(category, HOST_PLACEHOLDER, service, {})
            except (ValueError, KeyError):
                continue
            path = directory / category / f"{service}.yml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="write the oracle's playbooks as a directory for agents.oracle_playbook_dir"
    )
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    files = write_oracle_dir(args.directory)
    print(f"{len(files)} playbooks under {args.directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
