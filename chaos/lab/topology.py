"""The lab system's topology: every host, service, port and path the lab code uses, taken from
the active system file (chaos/system.py; the shop, chaos/systems/shop.yaml, by default).

Scenario files, fault classes, expert playbooks and the planner's prompts read these facts;
`use(FILE)` switches the whole lab to another system.

The daemon does not import this module: the lab hands it the same facts the way any user
would, as a topology file named by `agents.topology_file` (`write_topology_file`, or
`python -m chaos.lab.topology FILE`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from remed_daemon.agents.topology import ServiceFacts

from chaos.system import System, load

# Filled from the active system file (chaos/system.py) by `use()`; dicts are updated in place,
# so a module that imported them keeps seeing the active system's.
SYSTEM: System
HOST_ADDRESSES: dict[str, str] = {}
SERVICES: dict[str, Service] = {}

SHOP_USER = "shop"
SHOP_VERSION = "1.4.2"
DB_NAME = "shop"
DB_USER = "shop"
DB_PASSWORD = "shop-lab-pw"
PG_VERSION = "15"
PG_MAX_CONNECTIONS = 30
LOG_TMPFS_SIZE = "32m"  # app:/var/log/shop, so a log flood fills it and not the machine's disk
DATA_TMPFS_SIZE = "96m"  # app:/var/lib/shop, scratch space of the services


@dataclass(frozen=True)
class Service:
    """One supervised program on one host, as the active system file describes it."""

    name: str
    host: str
    port: int
    config: str
    log: str
    data: str
    health: str  # "http" (GET /health), "redis" (PING), "postgres" (pg_isready), "memcached"
    depends_on: tuple[str, ...] = ()
    kind: str = ""
    program: str = ""
    manager: str = "supervisord"
    deploy: str = ""
    role: str = ""
    tls: tuple[tuple[str, str], ...] = ()  # nginx: (("port", "443"), ("cert", ...), ...)
    version: str = ""  # postgresql: its major version
    max_connections: int = 0  # postgresql
    database: tuple[tuple[str, str], ...] = ()  # postgresql: name, user, password

    def __post_init__(self) -> None:
        if not self.program:
            object.__setattr__(self, "program", self.name)

    @property
    def address(self) -> str:
        return HOST_ADDRESSES[self.host]

    @property
    def health_url(self) -> str:
        return f"http://{self.address}:{self.port}/health"


# The system's own code, deployed as releases under each service's `deploy` directory.
SHOP_APPS: tuple[str, ...] = ()
# What each lab host's init runs the services under (ARCHITECTURE.md).
SERVICE_MANAGER = "supervisord"
HTTPS_PORT = 443
TLS_CERT = "/etc/ssl/shop/shop.crt"
TLS_KEY = "/etc/ssl/shop/shop.key"
# The end-to-end path every steady-state probe and the load generator take (the shop: nginx on
# web → checkout → catalog (PostgreSQL) + cart (Redis) → order row in PostgreSQL).
E2E_PATH = "/api/checkout/order?user={user}&item={item}"
E2E_SERVICE = "nginx"
ITEMS = ((1, "espresso", 250), (2, "croissant", 320), (3, "bagel", 280), (4, "tea", 190))


def use(path: str | Path | None = None) -> System:
    """Make the system file at `path` (default: `$REMED_LAB_SYSTEM`, else the shop) the one
    every fact below comes from, and return it."""
    global SYSTEM, SHOP_USER, SHOP_VERSION, DB_NAME, DB_USER, DB_PASSWORD, PG_VERSION
    global PG_MAX_CONNECTIONS, LOG_TMPFS_SIZE, DATA_TMPFS_SIZE, SHOP_APPS, SERVICE_MANAGER
    global HTTPS_PORT, TLS_CERT, TLS_KEY, E2E_PATH, E2E_SERVICE
    system = load(path)
    SYSTEM = system
    HOST_ADDRESSES.clear()
    HOST_ADDRESSES.update({h.name: h.address for h in system.hosts.values()})
    SERVICES.clear()
    for s in system.services.values():
        SERVICES[s.name] = Service(
            s.name, s.host, s.port, s.config, s.log, s.data, s.health, s.depends_on,
            kind=s.kind, program=s.program, manager=s.manager, deploy=s.deploy, role=s.role,
            tls=tuple((k, str(v)) for k, v in s.tls.items()), version=s.version,
            max_connections=s.max_connections, database=tuple(s.database.items()),
        )  # fmt: skip
    SHOP_USER, SHOP_VERSION = system.app_user, system.release
    SHOP_APPS = tuple(s.name for s in system.services.values() if s.kind == "http")
    SERVICE_MANAGER = system.manager
    for pg in system.of_kind("postgresql")[:1]:
        PG_VERSION = pg.version or PG_VERSION
        PG_MAX_CONNECTIONS = pg.max_connections or PG_MAX_CONNECTIONS
        DB_NAME = pg.database.get("name", DB_NAME)
        DB_USER = pg.database.get("user", DB_USER)
        DB_PASSWORD = pg.database.get("password", DB_PASSWORD)
    for ng in system.of_kind("nginx")[:1]:
        if ng.tls:
            HTTPS_PORT, TLS_CERT, TLS_KEY = int(ng.tls["port"]), ng.tls["cert"], ng.tls["key"]
    tmpfs = {p: size for h in system.hosts.values() for p, size in h.tmpfs.items()}
    LOG_TMPFS_SIZE = next((v for k, v in tmpfs.items() if k.startswith("/var/log")), "32m")
    DATA_TMPFS_SIZE = next((v for k, v in tmpfs.items() if k.startswith("/var/lib")), "96m")
    if system.e2e:
        E2E_PATH, E2E_SERVICE = system.e2e["path"], system.e2e["service"]
    return system


def service(name: str) -> Service:
    try:
        return SERVICES[name]
    except KeyError:
        raise ValueError(
            f"unknown service {name!r}; the {SYSTEM.name} system has {sorted(SERVICES)}"
        ) from None


STORE_KINDS = ("redis", "postgresql", "memcached")


def stores(name: str) -> list[Service]:
    """The data stores `name` depends on, in its `depends_on` order."""
    return [SERVICES[d] for d in service(name).depends_on if SERVICES[d].kind in STORE_KINDS]


def upstreams(name: str) -> list[Service]:
    """The http services `name` calls (or, for nginx, proxies), in its `depends_on` order."""
    return [SERVICES[d] for d in service(name).depends_on if SERVICES[d].kind == "http"]


def store_of(name: str) -> Service | None:
    """The data store `name` depends on (its first dependency of a store kind), if any."""
    found = stores(name)
    return found[0] if found else None


def pg_of(name: str) -> Service | None:
    """The PostgreSQL `name` depends on directly, if any."""
    return next((s for s in stores(name) if s.kind == "postgresql"), None)


def pg_database(pg: Service) -> dict[str, str]:
    """A PostgreSQL service's database: name, user and password (defaults: the shop's)."""
    db = dict(pg.database)
    return {"name": db.get("name", DB_NAME), "user": db.get("user", DB_USER),
            "password": db.get("password", DB_PASSWORD)}  # fmt: skip


def on_host(host: str) -> list[Service]:
    return [s for s in SERVICES.values() if s.host == host]


def tmpfs_of(host: str) -> dict[str, str]:
    return dict(SYSTEM.hosts[host].tmpfs) if host in SYSTEM.hosts else {}


def log_on_tmpfs(name: str) -> bool:
    """Whether the service's log directory is a (small) tmpfs mount, which a flood can fill."""
    svc = service(name)
    log_dir = svc.log.rsplit("/", 1)[0]
    return log_dir in tmpfs_of(svc.host)


def front_end() -> Service:
    """The nginx front end (or the e2e probe's entry service)."""
    for s in SERVICES.values():
        if s.kind == "nginx":
            return s
    return SERVICES[E2E_SERVICE]


def http_base(svc: Service) -> str:
    """`http://<address>` (port 80) or `http://<address>:<port>` of an HTTP service."""
    return f"http://{svc.address}" + ("" if svc.port == 80 else f":{svc.port}")


def deploy_dir(svc: str) -> str:
    return SERVICES[svc].deploy if svc in SERVICES and SERVICES[svc].deploy else f"/srv/shop/{svc}"


def release_dir(svc: str, version: str | None = None) -> str:
    return f"{deploy_dir(svc)}/releases/{version or SHOP_VERSION}"


def current_link(svc: str) -> str:
    return f"{deploy_dir(svc)}/current"


def topology_document() -> dict[str, Any]:
    """The shop as a topology file: the shape the daemon reads as `agents.topology_file`."""
    services: dict[str, Any] = {}
    for name, s in SERVICES.items():
        doc: dict[str, Any] = {
            "host": s.host, "port": s.port, "config": s.config, "log": s.log, "data": s.data,
            "health": s.health, "depends_on": list(s.depends_on), "program": s.program,
            "manager": s.manager,
        }  # fmt: skip
        if s.deploy:
            doc["deploy"] = s.deploy
        services[name] = doc
    return {"hosts": dict(HOST_ADDRESSES), "services": services}


def write_topology_file(path: str | Path) -> Path:
    """Write the shop's topology file (JSON, which YAML readers read too) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(topology_document(), indent=2) + "\n")
    return path


def daemon_topology() -> dict[str, ServiceFacts]:
    """The shop as the daemon sees it when given the topology file (the bench's in-process
    remediators use it to build the daemon's prompt and incident hosts)."""
    from remed_daemon.agents.topology import from_mapping

    return from_mapping(topology_document())


def facts(name: str) -> str:
    """The target's facts as one paragraph, for reports and planner prompts."""
    s = service(name)
    deps = ", ".join(f"{d}@{SERVICES[d].host}" for d in s.depends_on) or "none"
    if s.manager == "systemd":
        managed = (f"under systemd as unit {s.program}.service "
                   f"(sudo systemctl restart {s.program}.service)")  # fmt: skip
    else:
        managed = (f"under supervisord as program {s.program} "
                   f"(sudo supervisorctl restart {s.program})")  # fmt: skip
    return (
        f"{s.name} runs on host {s.host} ({s.address}) {managed}; port {s.port}; config "
        f"{s.config}; log {s.log}; data {s.data}; depends on {deps}."
    )


use()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chaos.lab.topology",
        description="write the shop's topology file for the daemon's agents.topology_file",
    )
    parser.add_argument("file", metavar="FILE", help="where to write it (JSON)")
    parser.add_argument("--system", help="the lab system file (default: the shop)")
    args = parser.parse_args(argv)
    if args.system:
        use(args.system)
    print(write_topology_file(args.file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
