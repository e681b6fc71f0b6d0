"""Lab systems from a topology file (chaos/README.md, "System files").

A system is one YAML file: hosts with addresses, and services with kind, host, port, config /
log / data paths, health check, dependencies and service manager. `load(path)` reads and
validates one, with errors that name the file, the field and the fix (an unknown kind, a
dependency on a service that does not exist, a port used twice on a host, an address outside
the subnet...). `chaos.lab.topology` takes every fact of the active system from here.

The active system is `$REMED_LAB_SYSTEM` (a path), else the bundled shop
(`chaos/systems/shop.yaml`); `--system FILE` on `remed stack up`, `remed bench` and
`python -m chaos.lab` sets it.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SYSTEMS_DIR = Path(__file__).resolve().parent / "systems"
DEFAULT_SYSTEM = SYSTEMS_DIR / "shop.yaml"
ENV = "REMED_LAB_SYSTEM"

# kind → the health check the probes run against it
KINDS = {
    "http": "http",  # the generic HTTP service (chaos/lab/shop/shop.py), GET /health
    "nginx": "http",  # front end proxying /api/<service>/ to its HTTP dependencies
    "redis": "redis",  # PING
    "postgresql": "postgres",  # pg_isready
    "memcached": "memcached",  # `version`
}
STORE_KINDS = frozenset({"redis", "postgresql", "memcached"})
MANAGERS = ("supervisord", "systemd")
# What an http service's endpoints do (chaos/lab/shop/shop.py): the shop's three roles, and
# `generic` (GET /request touches each of its stores and calls each upstream's /request).
HTTP_ROLES = ("catalog", "cart", "checkout", "generic")
# Where a service's files may live: a directory of its own below one of these, which becomes a
# bind mount of the host's own copy (remed_stack/lab.py), so a fault on one host's file never
# touches another host or the machine.
PATH_ROOTS = ("/etc/", "/var/", "/srv/", "/opt/", "/run/", "/tmp/", "/home/")
# Parents shared by many packages: a service's own directory is one level below them.
SHARED_PARENTS = frozenset({
    "/etc", "/var", "/var/lib", "/var/cache", "/var/opt", "/var/spool", "/opt", "/srv", "/etc/ssl",
    "/run", "/tmp", "/home", "/var/log", "/var/tmp",
})  # fmt: skip
# Directories the lab host itself depends on: never a service's own.
PROTECTED_DIRS = frozenset({
    "/etc/systemd", "/etc/remed-lab", "/etc/ssh", "/etc/sudoers.d", "/etc/pam.d",
    "/etc/security", "/etc/apt", "/etc/alternatives", "/var/lib/dpkg", "/var/lib/apt",
    "/var/cache/apt", "/var/lib/systemd", "/etc/ssl/certs", "/etc/ssl/private",
})  # fmt: skip
SERVICE_KEYS = {
    "kind", "host", "port", "config", "log", "data", "health", "depends_on", "manager",
    "program", "deploy", "role", "tls", "version", "max_connections", "database",
}  # fmt: skip
TOP_KEYS = {"name", "subnet", "manager", "app_user", "release", "hosts", "services", "e2e"}


class SystemFileError(ValueError):
    """A system file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class HostSpec:
    name: str
    address: str
    tmpfs: dict[str, str] = field(default_factory=dict)
    manager: str = "supervisord"  # the host's init: what runs its services


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    kind: str
    host: str
    port: int
    config: str
    log: str
    data: str
    health: str
    depends_on: tuple[str, ...]
    manager: str
    program: str
    deploy: str = ""
    role: str = ""
    tls: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    max_connections: int = 0
    database: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class System:
    name: str
    path: Path
    subnet: str
    manager: str
    app_user: str
    release: str
    hosts: dict[str, HostSpec]
    services: dict[str, ServiceSpec]
    e2e: dict[str, str]

    def of_kind(self, *kinds: str) -> list[ServiceSpec]:
        return [s for s in self.services.values() if s.kind in kinds]


def active_path() -> Path:
    return Path(os.environ.get(ENV) or DEFAULT_SYSTEM)


def _need(where: str, data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in data:
        raise SystemFileError(f"{where}: missing `{key}`")
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise SystemFileError(f"{where}: `{key}` must be {getattr(kind, '__name__', kind)}, "
                          f"not {value!r}")  # fmt: skip
    return value


def _path(where: str, value: Any, key: str, *, file: bool = False) -> str:
    if not isinstance(value, str) or not value.startswith("/") or ".." in value.split("/"):
        raise SystemFileError(f"{where}: `{key}` must be an absolute path, not {value!r}")
    if not value.startswith(PATH_ROOTS):
        raise SystemFileError(f"{where}: `{key}` {value} must lie below one of "
                              f"{[r.rstrip('/') for r in PATH_ROOTS]}")  # fmt: skip
    own = own_dir(value.rstrip("/").rsplit("/", 1)[0] if file else value.rstrip("/"))
    if own in SHARED_PARENTS:
        raise SystemFileError(f"{where}: `{key}` {value} lies straight in {own}; give the service "
                              f"a directory of its own (e.g. {own}/<name>/...)")  # fmt: skip
    if any(own == d or own.startswith(d + "/") or d.startswith(own + "/")
           for d in PROTECTED_DIRS):  # fmt: skip
        raise SystemFileError(f"{where}: `{key}` {value} is in {own}, which the lab host itself "
                              "needs; use another directory")  # fmt: skip
    return value


def own_dir(path: str) -> str:
    """The directory a path's service owns: the shortest prefix of `path` that is not one of
    SHARED_PARENTS (`/etc/shop/cart.ini` → `/etc/shop`, `/var/lib/ledger/x` → `/var/lib/ledger`,
    `/etc/ssl/booking/gw.crt` → `/etc/ssl/booking`)."""
    parts = [p for p in path.split("/") if p]
    prefix = ""
    for part in parts:
        prefix += "/" + part
        if prefix not in SHARED_PARENTS:
            return prefix
    return prefix or "/"


def parse(data: Any, path: Path) -> System:
    """Validate the mapping read from `path` and build the System."""
    src = str(path)
    if not isinstance(data, dict):
        raise SystemFileError(f"{src}: a system file is a mapping with `hosts` and `services`")
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise SystemFileError(f"{src}: unknown keys {sorted(unknown)}; known: {sorted(TOP_KEYS)}")
    name = str(data.get("name") or path.stem)
    try:
        subnet = ipaddress.ip_network(str(data.get("subnet", "10.231.77.0/24")))
    except ValueError as exc:
        raise SystemFileError(f"{src}: `subnet`: {exc}") from None
    manager = str(data.get("manager", "supervisord"))
    if manager not in MANAGERS:
        raise SystemFileError(f"{src}: `manager` must be one of {list(MANAGERS)}, not {manager!r}")
    hosts_in = _need(src, data, "hosts", dict)
    if not hosts_in:
        raise SystemFileError(f"{src}: `hosts` is empty")
    hosts: dict[str, HostSpec] = {}
    seen_addresses: dict[str, str] = {}
    for hname, h in hosts_in.items():
        where = f"{src}: hosts.{hname}"
        if not isinstance(hname, str) or not hname.isidentifier() or len(hname) > 10:
            raise SystemFileError(f"{where}: a host name is a short identifier (<= 10 characters)")
        if isinstance(h, str):
            h = {"address": h}
        if not isinstance(h, dict):
            raise SystemFileError(f"{where}: a host is a mapping with `address`")
        address = str(_need(where, h, "address", str))
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise SystemFileError(f"{where}: `address` {address!r} is not an IP address") from None
        if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address):
            raise SystemFileError(f"{where}: address {address} is not a host address in {subnet}")
        if address.endswith(".1"):
            raise SystemFileError(f"{where}: {address} is the lab bridge's address")
        if address in seen_addresses:
            other = seen_addresses[address]
            raise SystemFileError(f"{where}: address {address} is also host {other}")
        seen_addresses[address] = hname
        tmpfs = h.get("tmpfs") or {}
        if not isinstance(tmpfs, dict):
            raise SystemFileError(f"{where}: `tmpfs` maps a path to a size (e.g. /var/log/x: 32m)")
        hosts[hname] = HostSpec(hname, address,
                                {_path(where, k, "tmpfs"): str(v) for k, v in tmpfs.items()})
    services_in = _need(src, data, "services", dict)
    if not services_in:
        raise SystemFileError(f"{src}: `services` is empty")
    services: dict[str, ServiceSpec] = {}
    ports: dict[tuple[str, int], str] = {}
    for sname, s in services_in.items():
        where = f"{src}: services.{sname}"
        if not isinstance(sname, str) or not sname.replace("-", "_").isidentifier():
            raise SystemFileError(f"{where}: a service name is letters, digits, - and _")
        if not isinstance(s, dict):
            raise SystemFileError(f"{where}: a service is a mapping with kind, host and port")
        unknown = set(s) - SERVICE_KEYS
        if unknown:
            raise SystemFileError(f"{where}: unknown keys {sorted(unknown)}; "
                              f"known: {sorted(SERVICE_KEYS)}")  # fmt: skip
        kind = str(_need(where, s, "kind", str))
        if kind not in KINDS:
            raise SystemFileError(f"{where}: unknown kind {kind!r}; kinds: {sorted(KINDS)}")
        host = str(_need(where, s, "host", str))
        if host not in hosts:
            raise SystemFileError(f"{where}: host {host!r} is not in `hosts` ({sorted(hosts)})")
        port = _need(where, s, "port", int)
        if not 1 <= port <= 65535 or port == 22:
            raise SystemFileError(f"{where}: port {port} (1-65535, not 22: the host's sshd)")
        extra_ports = [port]
        tls = s.get("tls") or {}
        if tls:
            if kind != "nginx" or not isinstance(tls, dict):
                raise SystemFileError(f"{where}: `tls` ({{port, cert, key}}) is for nginx")
            extra_ports.append(_need(where + ".tls", tls, "port", int))
            for key in ("cert", "key"):
                _path(where + ".tls", tls.get(key), key, file=True)
        for p in extra_ports:
            if (host, p) in ports:
                raise SystemFileError(f"{where}: port {p} on host {host} is already used by "
                                  f"{ports[(host, p)]}")  # fmt: skip
            ports[(host, p)] = sname
        svc_manager = str(s.get("manager", manager))
        if svc_manager not in MANAGERS:
            raise SystemFileError(f"{where}: `manager` must be one of {list(MANAGERS)}")
        role = str(s.get("role", (sname if sname in HTTP_ROLES else "generic")
                              if kind == "http" else ""))
        if kind == "http" and role not in HTTP_ROLES:
            raise SystemFileError(f"{where}: an http service's `role` is one of {list(HTTP_ROLES)} "
                              f"(what its endpoints do), not {role!r}")  # fmt: skip
        deploy = s.get("deploy", f"/srv/{sname}" if kind == "http" else "")
        if deploy:
            _path(where, deploy, "deploy")
        deps = s.get("depends_on") or []
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise SystemFileError(f"{where}: `depends_on` is a list of service names")
        services[sname] = ServiceSpec(
            name=sname, kind=kind, host=host, port=port,
            config=_path(where, s.get("config"), "config", file=True),
            log=_path(where, s.get("log"), "log", file=True),
            data=_path(where, s.get("data"), "data"),
            health=str(s.get("health", KINDS[kind])), depends_on=tuple(deps),
            manager=svc_manager, program=str(s.get("program", sname)), deploy=str(deploy),
            role=role, tls=dict(tls), version=str(s.get("version", "")),
            max_connections=int(s.get("max_connections", 0) or 0),
            database={k: str(v) for k, v in (s.get("database") or {}).items()},
        )  # fmt: skip
    for s in services.values():
        for d in s.depends_on:
            if d not in services:
                raise SystemFileError(f"{src}: services.{s.name}: depends on {d!r}, which is not a "
                                  f"service of this system ({sorted(services)})")  # fmt: skip
            if d == s.name:
                raise SystemFileError(f"{src}: services.{s.name}: depends on itself")
            dep = services[d]
            if s.kind == "nginx" and dep.kind != "http":
                raise SystemFileError(f"{src}: services.{s.name}: nginx proxies /api/<service>/ to "
                                  f"http services; {d} is {dep.kind}")  # fmt: skip
            if s.kind in STORE_KINDS:
                raise SystemFileError(f"{src}: services.{s.name}: a {s.kind} store depends on "
                                  f"nothing (remove {d} from its depends_on)")  # fmt: skip
            if s.kind == "http" and dep.kind == "nginx":
                raise SystemFileError(f"{src}: services.{s.name}: an http service calls http "
                                  f"services and stores, not nginx ({d})")  # fmt: skip
        kinds = [services[d].kind for d in s.depends_on if services[d].kind in STORE_KINDS]
        for kind in set(kinds):
            if kinds.count(kind) > 1:
                raise SystemFileError(f"{src}: services.{s.name}: depends on {kinds.count(kind)} "
                                  f"{kind} stores; an http service has at most one of each "
                                  "kind")  # fmt: skip
    for hname in hosts:
        fronts = [s.name for s in services.values() if s.kind == "nginx" and s.host == hname]
        if len(fronts) > 1:
            raise SystemFileError(f"{src}: hosts.{hname}: nginx services {fronts} would share "
                                  "/etc/nginx/nginx.conf; one nginx per host")  # fmt: skip
    _no_cycles(src, services)
    hosts = _host_managers(src, hosts, services, manager)
    e2e = data.get("e2e") or {}
    if not e2e:
        entry = next(iter(s for s in services.values() if s.kind == "nginx"),
                     next(iter(s for s in services.values() if s.kind == "http"), None))
        if entry is not None:
            e2e = {"service": entry.name, "path": "/health"}
    if e2e:
        if not isinstance(e2e, dict) or e2e.get("service") not in services:
            raise SystemFileError(f"{src}: `e2e` needs `service` (one of the services) and `path`")
        if not str(e2e.get("path", "")).startswith("/"):
            raise SystemFileError(f"{src}: e2e.path must start with /")
    return System(
        name=name, path=path, subnet=str(subnet), manager=manager,
        app_user=str(data.get("app_user", "shop")), release=str(data.get("release", "1.0.0")),
        hosts=hosts, services=services, e2e={k: str(v) for k, v in e2e.items()},
    )  # fmt: skip


def _host_managers(
    src: str, hosts: dict[str, HostSpec], services: dict[str, ServiceSpec], default: str
) -> dict[str, HostSpec]:
    """A host's init is the manager of its services: one per host."""
    out = {}
    for name, h in hosts.items():
        managers = {s.manager for s in services.values() if s.host == name}
        if len(managers) > 1:
            raise SystemFileError(f"{src}: hosts.{name}: its services use {sorted(managers)}; "
                              "a host has one init (move a service, or give all one manager)")
        out[name] = HostSpec(h.name, h.address, h.tmpfs, next(iter(managers), default))
    return out


def host_dirs(system: System, host: str) -> tuple[str, ...]:
    """The directories of `system`'s services (configs, logs, data, releases, certificates,
    tmpfs mounts) on `host`, each a service's own (`own_dir`): what the host needs its own
    copy of."""
    paths: list[str] = list(system.hosts[host].tmpfs)
    for s in system.services.values():
        if s.host != host:
            continue
        paths += [s.config.rsplit("/", 1)[0], s.log.rsplit("/", 1)[0], s.data]
        if s.deploy:
            paths.append(s.deploy)
        paths += [str(s.tls[k]).rsplit("/", 1)[0] for k in ("cert", "key") if k in s.tls]
    out: list[str] = []
    for p in paths:
        d = own_dir(p)
        if d not in out:
            out.append(d)
    return tuple(out)


def _no_cycles(src: str, services: dict[str, ServiceSpec]) -> None:
    state: dict[str, int] = {}

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise SystemFileError(f"{src}: dependency cycle {' → '.join([*chain, name])}")
        state[name] = 1
        for d in services[name].depends_on:
            visit(d, [*chain, name])
        state[name] = 2

    for name in services:
        visit(name, [])


def load(path: str | Path | None = None) -> System:
    """Read and validate a system file (default: the active one)."""
    path = Path(path) if path else active_path()
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SystemFileError(f"cannot read system file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SystemFileError(f"{path}: not YAML: {exc}") from None
    return parse(data, path.resolve())
