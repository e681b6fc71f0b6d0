"""Playbooks of the two reference remediators.

- `oracle_playbook`: what an experienced SRE runs for each category, parameterised by the target
  and the fault's parameters — fix the cause, restart only what needs it, check the result. The
  upper bound of `remed bench` and the SFT teacher.
- `rules_playbook`: a static category → runbook table with no probing, the way an Event-Driven
  Ansible rulebook is usually written: restart the alerting service (and clear old logs for a
  full disk). The baseline users already have.

Every playbook is one play with few tasks (each task costs an SSH round trip).
"""

from __future__ import annotations

from typing import Any

from chaos.lab import topology as topo

HEADER = """\
- name: {name}
  hosts: {host}
  become: true
  gather_facts: false
  tasks:
"""


def _restart(program: str) -> str:
    return f"""\
    - name: restart {program} under supervisord
      ansible.builtin.command: supervisorctl restart {program}
      register: restart_result
      failed_when: "'ERROR' in restart_result.stdout or restart_result.rc != 0"
"""


def _start(program: str) -> str:
    return f"""\
    - name: start {program} under supervisord
      ansible.builtin.command: supervisorctl start {program}
      register: start_result
      changed_when: "'started' in start_result.stdout"
      failed_when: "'ERROR' in start_result.stdout and 'already started' not in start_result.stdout"
"""


def _kill(pattern: str, what: str) -> str:
    return f"""\
    - name: stop {what}
      ansible.builtin.command: pkill -KILL -f {pattern}
      register: kill_result
      changed_when: kill_result.rc == 0
      failed_when: kill_result.rc > 1
"""


NFT_REMOVE = r"""import json, subprocess, sys
for item in json.load(sys.stdin)["nftables"]:
    rule = item.get("rule")
    text = json.dumps(rule["expr"]) if rule else ""
    if not rule or "VERDICT" not in text or "PORT" not in text:
        continue
    subprocess.run(["nft", "delete", "rule", rule["family"], rule["table"], rule["chain"],
                    "handle", str(rule["handle"])], check=True)
    print("removed", rule["family"], rule["table"], rule["chain"], rule["handle"])
    for expr in rule["expr"]:
        to = expr.get("redirect") if isinstance(expr, dict) else None
        if isinstance(to, dict) and to.get("port"):
            out = subprocess.run(["ss", "-ltnpH", f"sport = :{to['port']}"],
                                 capture_output=True, text=True).stdout
            words = out.replace(",", " ").split()
            for pid in {w.split("=")[1] for w in words if w.startswith("pid=")}:
                subprocess.run(["kill", pid])
                print("stopped the listener on", to["port"], "pid", pid)
"""


def _nft_remove(port: int, verdict: str) -> str:
    # Delete, by handle, every rule that matches the service's port with the given verdict;
    # for a redirect, also stop whatever listens on the port traffic was diverted to.
    script = NFT_REMOVE.replace("VERDICT", verdict).replace("PORT", str(port))
    indented = "".join(f"          {line}\n" for line in script.splitlines())
    return f"""\
    - name: remove nftables rules that {verdict} traffic for port {port}
      ansible.builtin.shell:
        cmd: nft -j list ruleset | /usr/bin/python3 -c "$REMOVE"
      environment:
        REMOVE: |
{indented}      register: nft_result
      changed_when: "'removed' in nft_result.stdout"
"""


def oracle_playbook(category: str, host: str, service: str, params: dict[str, Any]) -> str:
    svc = topo.service(service)
    program = svc.program
    body: list[str]
    name = f"fix {category} of {service} on {host}"
    if category in ("cpu-stress", "memory-stress", "disk-io"):
        body = [_kill("stress-ng", "the runaway stress-ng process outside supervisord")]
        if category == "disk-io":
            body.append(f"""\
    - name: remove the scratch files it left in {svc.data}
      ansible.builtin.shell: rm -rf {svc.data}/stress-ng-*
""")
    elif category == "network-loss":
        body = [_nft_remove(svc.port, "drop")]
    elif category == "network-delay":
        body = [_nft_remove(svc.port, "redirect")]
    elif category == "service-down":
        body = [_start(program)]
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
        owner: {spec.owner}
        group: {spec.group}
        mode: "{spec.mode:04o}"
        content: |
{content}      register: restored
""", _restart(program).replace(
            "      register: restart_result\n",
            "      when: restored.changed\n      register: restart_result\n",
        )]
    elif category == "dependency-down":
        dep = topo.SERVICES["redis" if service == "cart" else "postgresql"]
        host, name = dep.host, f"start {dep.name}, the store {service} depends on"
        body = [_start(dep.program)]
    elif category == "port-conflict":
        body = [f"""\
    - name: stop the process squatting port {svc.port}
      ansible.builtin.shell: |
        pids=$(ss -ltnpH "sport = :{svc.port}" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u)
        [ -z "$pids" ] || kill $pids
        sleep 0.3
        echo "killed: $pids"
      register: squat
      changed_when: "squat.stdout != 'killed: '"
""", _start(program)]
    elif category == "log-flood":
        body = [_kill("debug_dump.sh", "the process flooding the debug log"), f"""\
    - name: remove the flooded debug log
      ansible.builtin.file:
        path: /var/log/shop/{service}-debug.log
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
""", _restart(program)]
    elif category == "bad-deploy":
        body = [f"""\
    - name: roll {service} back to release {topo.SHOP_VERSION}
      ansible.builtin.file:
        src: releases/{topo.SHOP_VERSION}
        dest: {topo.current_link(service)}
        state: link
        force: true
""", _restart(program)]
    elif category == "tls-cert":
        body = [f"""\
    - name: issue a fresh certificate for web (the served one has expired)
      ansible.builtin.command: >-
        openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj /CN=web
        -addext subjectAltName=DNS:web,DNS:shop,IP:{topo.HOST_ADDRESSES["web"]}
        -keyout {topo.TLS_KEY} -out {topo.TLS_CERT}
    - name: reload nginx so it serves the new certificate
      ansible.builtin.command: supervisorctl signal HUP {program}
"""]
    elif category == "connection-exhaustion":
        body = ["""\
    - name: stop the client that holds most PostgreSQL connections
      ansible.builtin.shell: |
        pid=$(ss -tnpH 'dport = :5432' | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort | uniq -c \\
              | sort -rn | awk '$1 >= 5 {print $2; exit}')
        [ -z "$pid" ] || { ps -o args= -p "$pid"; kill "$pid"; }
      register: hog
      changed_when: hog.stdout != ''
"""]
    else:
        raise ValueError(f"no oracle playbook for category {category!r}")
    return HEADER.format(name=name, host=host) + "".join(body)


def rules_playbook(category: str, host: str, service: str) -> str:
    """The static runbook: restart the alerting service; for a full disk, drop rotated logs."""
    program = topo.service(service).program
    body = _restart(program)
    if category == "log-flood":
        body = """\
    - name: delete rotated logs
      ansible.builtin.shell: rm -f /var/log/shop/*.gz /var/log/shop/*.[0-9]
""" + body
    return HEADER.format(name=f"runbook for {category} on {service}", host=host) + body
