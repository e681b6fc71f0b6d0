"""Facts about a target service: where it runs, its port, config, log, data and dependencies.

They feed the probe catalog (which log to tail, which port to look at), the planner's prompt and
the verifier (which health endpoint to poll). Source, in order: a topology file (YAML, the
`chaos/README.md` shape: `hosts: {name: address}` and `services: {name: {host, port, config,
log, data, health, depends_on, program}}`), else the chaos lab's `chaos.lab.topology` when it
is installed, else only what the report and the inventory say.
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
        parts = [
            f"{self.name} runs on host {self.host} ({self.address}) under supervisord as program "
            f"{self.program} (sudo supervisorctl restart {self.program})"
        ]
        if self.port:
            parts.append(f"port {self.port}")
        for label, value in (("config", self.config), ("log", self.log), ("data", self.data)):
            if value:
                parts.append(f"{label} {value}")
        parts.append(f"depends on {deps or 'none'}")
        return "; ".join(parts) + "."


Topology = Mapping[str, ServiceFacts]


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
        )
    return out


def _from_chaos() -> dict[str, ServiceFacts]:
    try:
        from chaos.lab import topology as topo
    except ImportError:
        return {}
    doc: dict[str, Any] = {"hosts": dict(topo.HOST_ADDRESSES), "services": {}}
    for name, s in topo.SERVICES.items():
        doc["services"][name] = {
            "host": s.host,
            "port": s.port,
            "config": s.config,
            "log": s.log,
            "data": s.data,
            "health": s.health,
            "depends_on": list(s.depends_on),
            "program": s.program,
        }
    return from_mapping(doc)


def load(path: str = "") -> dict[str, ServiceFacts]:
    """The topology from `path` (YAML), else the chaos lab's, else empty."""
    if path:
        doc = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(doc, Mapping):
            raise ValueError(f"topology file {path} must be a mapping with hosts and services")
        return from_mapping(doc)
    return _from_chaos()


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
