"""Read-only diagnostics on the incident's host over SSH: a catalog per failure category, plus
probes the planner asks for by name from the same allowlist.

There is no free shell. A probe is a fixed command template whose only parameters are facts of
the target (program name, port, config and log paths from the topology), each shell-quoted;
nothing from an alert or from model output is ever put into a command. A model's request for
anything that is not a catalog name is refused and recorded as refused, never run. Every probe
has a timeout, its output is cut to `max_output_chars` and redacted before it goes anywhere
(prompt, outcome, log).
"""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from remed_daemon.agents.redact import scrub
from remed_daemon.agents.ssh import HostAccess, HostUnreachable
from remed_daemon.agents.topology import ServiceFacts


class ProbeRefused(ValueError):
    """A probe outside the allowlist was requested; it was not run."""


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _status(f: ServiceFacts) -> str:
    supervisord = f"sudo -n supervisorctl status {_q(f.program)} 2>&1"
    systemd = f"systemctl status --no-pager {_q(f.program if f.manager else f.name)} 2>&1"
    if f.manager == "supervisord":
        return supervisord
    if f.manager == "systemd":
        return f"{systemd} | head -n 20"
    return f"{supervisord} || {systemd} | head -n 20"  # the topology does not say: ask both


def _all_services(f: ServiceFacts) -> str:
    supervisord = "sudo -n supervisorctl status 2>&1"
    systemd = "systemctl list-units --type=service --no-pager --no-legend 2>&1 | head -n 40"
    if f.manager == "supervisord":
        return supervisord
    if f.manager == "systemd":
        return systemd
    return f"{supervisord} || {systemd}"


def _log_tail(f: ServiceFacts) -> str:
    if not f.log:
        return "echo 'no log path known for this service'"
    return f"sudo -n tail -n 40 -- {_q(f.log)} 2>&1"


def _log_errors(f: ServiceFacts) -> str:
    if not f.log:
        return "echo 'no log path known for this service'"
    return (
        f"sudo -n grep -aiE 'error|fatal|refused|denied|timeout|traceback|permission' -- "
        f"{_q(f.log)} 2>&1 | tail -n 30"
    )


def _config(f: ServiceFacts) -> str:
    if not f.config:
        return "echo 'no config path known for this service'"
    return f"sudo -n head -c 4000 -- {_q(f.config)} 2>&1"


def _perms(f: ServiceFacts) -> str:
    paths = " ".join(_q(p) for p in (f.config, f.data, f.log) if p)
    return f"sudo -n stat -c '%A %U:%G %n' -- {paths} 2>&1" if paths else "true"


def _port_owner(f: ServiceFacts) -> str:
    if not f.port:
        return "sudo -n ss -ltnp 2>&1 | head -n 30"
    port = int(f.port)
    return f"sudo -n ss -ltnp 2>&1 | grep -E ':{port}\\b' || echo 'nothing listens on {port}'"


def _deps(f: ServiceFacts) -> str:
    if not f.depends_on:
        return "echo 'no dependencies'"
    checks = [
        f"(timeout 2 bash -c {_q(f'</dev/tcp/{d.address}/{int(d.port)}')} 2>/dev/null "
        f"&& echo {_q(f'{d.name} {d.address}:{d.port} reachable')} "
        f"|| echo {_q(f'{d.name} {d.address}:{d.port} UNREACHABLE')})"
        for d in f.depends_on
    ]
    return "; ".join(checks)


def _release(f: ServiceFacts) -> str:
    if not f.deploy:
        return "echo 'no deploy directory known for this service'"
    base = f.deploy.rstrip("/") or "/"
    return (
        f"ls -la -- {_q(base)} {_q(base + '/releases')} 2>&1 | head -n 30; "
        f"readlink -f -- {_q(base + '/current')} 2>&1"
    )


def _health(f: ServiceFacts) -> str:
    if not f.port:
        return "echo 'no port known for this service'"
    url = f"http://127.0.0.1:{int(f.port)}/health"
    script = (
        "import sys,urllib.request\n"
        "try:\n"
        f" r=urllib.request.urlopen({url!r},timeout=2);print(r.status,r.read(300).decode())\n"
        "except Exception as e:\n print(type(e).__name__, e)"
    )
    return f"python3 -c {_q(script)}"


# name → (what it shows, command template over the target's facts). Read-only, all of them.
CATALOG: dict[str, tuple[str, Callable[[ServiceFacts], str]]] = {
    "service_status": ("the service as its service manager sees it", _status),
    "all_services": ("every service the host's service manager runs", _all_services),
    "recent_log": ("last lines of the service log", _log_tail),
    "log_errors": ("error lines in the service log", _log_errors),
    "config_show": ("the service config (redacted)", _config),
    "file_permissions": ("mode and owner of config, data and log", _perms),
    "listening_ports": ("listening TCP sockets", lambda f: "sudo -n ss -ltnp 2>&1 | head -n 40"),
    "port_owner": ("who listens on the service port", _port_owner),
    "top_cpu": (
        "processes by CPU",
        lambda f: "ps -eo pid,pcpu,pmem,rss,etime,args --sort=-pcpu | cut -c1-200 | head -n 12",
    ),
    "top_memory": (
        "processes by resident memory",
        lambda f: "ps -eo pid,pcpu,pmem,rss,etime,args --sort=-rss | cut -c1-200 | head -n 12",
    ),
    "disk_usage": (
        "file systems and the largest log dirs",
        lambda f: "df -h 2>&1 | head -n 20; sudo -n du -sh /var/log/* 2>/dev/null | sort -h | "
        "tail -n 8",
    ),
    "load": ("load and pressure", lambda f: "cat /proc/loadavg; cat /proc/pressure/* 2>/dev/null"),
    "network": (
        "addresses, routes and traffic shaping",
        lambda f: "ip -brief addr 2>&1; ip route 2>&1; sudo -n tc qdisc show 2>&1",
    ),
    "dependencies": ("TCP reachability of the service's dependencies", _deps),
    "health_local": ("the service's /health from its own host", _health),
    "release": ("deployed releases and the current link", _release),
}

GENERIC = ("service_status", "recent_log", "port_owner", "top_cpu")
BY_CATEGORY: dict[str, tuple[str, ...]] = {
    "cpu-stress": ("top_cpu", "load", "service_status"),
    "memory-stress": ("top_memory", "service_status", "load"),
    "disk-io": ("load", "disk_usage", "top_cpu"),
    "service-down": ("service_status", "recent_log", "port_owner"),
    "config-error": ("service_status", "log_errors", "config_show"),
    "dependency-down": ("service_status", "dependencies", "log_errors"),
    "port-conflict": ("port_owner", "service_status", "log_errors"),
    "log-flood": ("disk_usage", "top_cpu", "recent_log"),
    "wrong-permissions": ("file_permissions", "log_errors", "service_status"),
    "bad-deploy": ("release", "log_errors", "service_status"),
    "network-loss": ("network", "dependencies", "health_local"),
    "network-delay": ("network", "dependencies", "health_local"),
}

# What a model may write to ask for a probe: `PROBE: name` on a line of its own.
_REQUEST = re.compile(r"(?im)^\s*(?:#\s*)?probe\s*:\s*(\S.*?)\s*$")


@dataclass(frozen=True)
class ProbeResult:
    name: str
    host: str
    exit_status: int | None
    output: str
    refused: bool = False
    timed_out: bool = False

    def as_text(self) -> str:
        if self.refused:
            return f"[{self.name}] refused: {self.output}"
        status = "timed out" if self.timed_out else f"exit {self.exit_status}"
        return f"[{self.name} on {self.host}, {status}]\n{self.output}"


def catalog_for(category: str) -> tuple[str, ...]:
    return BY_CATEGORY.get(category, GENERIC)


def requested_probes(completion: str, limit: int = 4) -> list[str]:
    """The probe names a model asked for (`PROBE: name` lines), at most `limit`."""
    return [m.group(1)[:80] for m in _REQUEST.finditer(completion)][:limit]


class Prober:
    """Runs catalog probes on a host. Never runs anything that is not in `CATALOG`."""

    def __init__(
        self,
        hosts: HostAccess,
        *,
        timeout_s: float = 10.0,
        max_output_chars: int = 2000,
        max_parallel: int = 4,
    ) -> None:
        self.hosts = hosts
        self.timeout_s = timeout_s
        self.max_output_chars = max_output_chars
        self._sem = asyncio.Semaphore(max_parallel)

    def command(self, name: str, facts: ServiceFacts) -> str:
        """The shell command of catalog probe `name`; ProbeRefused for anything else."""
        entry = CATALOG.get(name)
        if entry is None:
            raise ProbeRefused(
                f"probe {name[:80]!r} is not in the allowlist; allowed: {', '.join(CATALOG)}"
            )
        return entry[1](facts)

    async def probe(self, name: str, facts: ServiceFacts) -> ProbeResult:
        try:
            command = self.command(name, facts)
        except ProbeRefused as exc:
            return ProbeResult(name[:80], facts.host, None, str(exc), refused=True)
        async with self._sem:
            try:
                res = await self.hosts.run(facts.host, command, timeout_s=self.timeout_s)
            except HostUnreachable as exc:
                return ProbeResult(name, facts.host, None, scrub(str(exc), 500))
        text = res.text + (("\n" + res.err) if res.err.strip() else "")
        return ProbeResult(
            name,
            facts.host,
            res.exit_status,
            scrub(text.strip(), self.max_output_chars),
            timed_out=res.timed_out,
        )

    async def run(self, names: Iterable[str], facts: ServiceFacts) -> list[ProbeResult]:
        return list(await asyncio.gather(*(self.probe(n, facts) for n in names)))

    async def for_category(self, category: str, facts: ServiceFacts) -> list[ProbeResult]:
        return await self.run(catalog_for(category), facts)

    async def requested(
        self, names: Sequence[str], facts: ServiceFacts, already: Iterable[str] = ()
    ) -> list[ProbeResult]:
        """Model-requested probes: allowlisted names run once each, the rest are refused."""
        seen = set(already)
        todo = [n for n in dict.fromkeys(names) if n not in seen]
        return await self.run(todo, facts)
