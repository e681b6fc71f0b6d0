"""Facts about a target service: where it runs, its port, config, log, data and dependencies.

They feed the probe catalog (which log to tail, which port to look at, how to ask the service
manager), the planner's prompt and the verifier (which health endpoint to poll). The source is
the topology file `agents.topology_file` (YAML or JSON: `hosts: {name: address}` and
`services: {name: {host, port, config, log, data, deploy, health, depends_on, program,
manager}}`, the shape a lab system is described in). Without one the daemon knows only what the
report and the inventory say: the service's name and its host. The chaos lab writes its own
file (`python -m chaos.lab.topology FILE`) and passes it through the config like any user.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Dependency:
    name: str
    host: str
    address: str
    port: int


@dataclass(frozen=True)
class ServiceFacts:
    name: str
    host: str
    address: str
    program: str
    port: int | None = None
    config: str = ""
    log: str = ""
    data: str = ""
    health: str = ""  # "http" (GET /health), "redis", "postgres", or "" (unknown)
    depends_on: tuple[Dependency, ...] = ()
    manager: str = ""  # the service manager running `program`: one of MANAGERS, "" = unknown
    deploy: str = ""  # the directory holding releases/ and the `current` link, if it has one

    @property
    def health_url(self) -> str:
        if self.health == "http" and self.port:
            return f"http://{self.address}:{self.port}/health"
        return ""

    @property
    def incident_hosts(self) -> list[str]:
        """The hosts a remediation may touch: the service's own and those of its dependencies
        (a cart outage caused by a stopped Redis is fixed on Redis's host)."""
        return list(dict.fromkeys([self.host, *(d.host for d in self.depends_on if d.host)]))

    def describe(self) -> str:
        """One paragraph for the planner prompt."""
        deps = ", ".join(f"{d.name}@{d.host} ({d.address}:{d.port})" for d in self.depends_on)
        where = f"{self.name} runs on host {self.host} ({self.address})"
        if self.manager == "supervisord":
            where += (
                f" under supervisord as program {self.program} "
                f"(sudo supervisorctl restart {self.program})"
            )
        elif self.manager == "systemd":
            where += (
                f" under systemd as unit {self.program} (sudo systemctl restart {self.program})"
            )
        parts = [where]
        if self.port:
            parts.append(f"port {self.port}")
        for label, value in (("config", self.config), ("log", self.log), ("data", self.data)):
            if value:
                parts.append(f"{label} {value}")
        parts.append(f"depends on {deps or 'none'}")
        return "; ".join(parts) + "."


Topology = Mapping[str, ServiceFacts]

# The service managers the probes, the prompt and the verifier know how to ask.
MANAGERS = ("supervisord", "systemd")


def from_mapping(doc: Mapping[str, Any]) -> dict[str, ServiceFacts]:
    hosts = {str(k): str(v) for k, v in dict(doc.get("hosts", {})).items()}
    raw = dict(doc.get("services", {}))
    out: dict[str, ServiceFacts] = {}

    def address(host: str) -> str:
        return hosts.get(host, host)

    for name, s in raw.items():
        s = dict(s)
        deps = []
        for d in s.get("depends_on", ()) or ():
            dep = dict(raw.get(d, {}))
            if dep.get("host") and dep.get("port"):
                dh = str(dep["host"])
                deps.append(Dependency(str(d), dh, address(dh), int(dep["port"])))
        host = str(s.get("host", ""))
        manager = str(s.get("manager", "") or "")
        if manager and manager not in MANAGERS:
            raise ValueError(
                f"service {name!r}: manager {manager!r} is not one of {', '.join(MANAGERS)} "
                "(or leave it out when unknown)"
            )
        out[str(name)] = ServiceFacts(
            name=str(name),
            host=host,
            address=address(host),
            program=str(s.get("program", name)),
            port=int(s["port"]) if s.get("port") else None,
            config=str(s.get("config", "")),
            log=str(s.get("log", "")),
            data=str(s.get("data", "")),
            health=str(s.get("health", "")),
            depends_on=tuple(deps),
            manager=manager,
            deploy=str(s.get("deploy", "") or ""),
        )
    return out


def load(path: str = "") -> dict[str, ServiceFacts]:
    """The topology from `path` (YAML, which JSON is too); empty without a path."""
    if not path:
        return {}
    doc = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(doc, Mapping):
        raise ValueError(f"topology file {path} must be a mapping with hosts and services")
    return from_mapping(doc)


def facts_for(topology: Topology, service: str, host: str, address: str) -> ServiceFacts:
    """The target's facts; a service the topology does not know gets the bare minimum. A known
    service reported on another host keeps the report's host (the report names the target)."""
    known = topology.get(service)
    if known is not None and known.host == host:
        return known
    if known is not None:
        with contextlib.suppress(Exception):
            return ServiceFacts(**{**known.__dict__, "host": host, "address": address})
    return ServiceFacts(name=service, host=host, address=address, program=service)
