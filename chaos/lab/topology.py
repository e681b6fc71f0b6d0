"""The shop's topology on the lab hosts: the one place the facts in chaos/README.md come from.

Scenario files, fault classes, expert playbooks and the planner's prompts are written against
these names, ports and paths. Keep them stable.

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

HOST_ADDRESSES = {"web": "10.231.77.11", "app": "10.231.77.12", "db": "10.231.77.13"}

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
    """One supervised program on one host. `program` is its supervisord name."""

    name: str
    host: str
    port: int
    config: str
    log: str
    data: str
    health: str  # "http" (GET /health), "redis" (PING) or "postgres" (pg_isready)
    depends_on: tuple[str, ...] = ()

    @property
    def program(self) -> str:
        return self.name

    @property
    def address(self) -> str:
        return HOST_ADDRESSES[self.host]

    @property
    def health_url(self) -> str:
        return f"http://{self.address}:{self.port}/health"


SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service(
            "nginx", "web", 80, "/etc/nginx/sites-enabled/shop.conf", "/var/log/nginx/error.log",
            "/var/lib/nginx", "http", ("catalog", "cart", "checkout"),
        ),
        Service(
            "catalog", "app", 8081, "/etc/shop/catalog.ini", "/var/log/shop/catalog.log",
            "/var/lib/shop/catalog", "http", ("postgresql",),
        ),
        Service(
            "cart", "app", 8082, "/etc/shop/cart.ini", "/var/log/shop/cart.log",
            "/var/lib/shop/cart", "http", ("redis",),
        ),
        Service(
            "checkout", "app", 8083, "/etc/shop/checkout.ini", "/var/log/shop/checkout.log",
            "/var/lib/shop/checkout", "http", ("catalog", "cart", "postgresql"),
        ),
        Service(
            "redis", "db", 6379, "/etc/redis/redis.conf", "/var/log/redis/redis-server.log",
            "/var/lib/redis", "redis",
        ),
        Service(
            "postgresql", "db", 5432, f"/etc/postgresql/{PG_VERSION}/main/postgresql.conf",
            f"/var/log/postgresql/postgresql-{PG_VERSION}-main.log",
            f"/var/lib/postgresql/{PG_VERSION}/main", "postgres",
        ),
    )
}  # fmt: skip

# The shop's own code, deployed as releases under /srv/shop/<name> (`deploy_dir`).
SHOP_APPS = ("catalog", "cart", "checkout")
# Every lab host runs supervisord as its init, and it runs the services (ARCHITECTURE.md).
SERVICE_MANAGER = "supervisord"

HTTPS_PORT = 443
TLS_CERT = "/etc/ssl/shop/shop.crt"
TLS_KEY = "/etc/ssl/shop/shop.key"
# The end-to-end path every steady-state probe and the load generator take: nginx on web →
# checkout → catalog (PostgreSQL) + cart (Redis) → order row in PostgreSQL.
E2E_PATH = "/api/checkout/order?user={user}&item={item}"
ITEMS = ((1, "espresso", 250), (2, "croissant", 320), (3, "bagel", 280), (4, "tea", 190))


def service(name: str) -> Service:
    try:
        return SERVICES[name]
    except KeyError:
        raise ValueError(f"unknown service {name!r}; the shop has {sorted(SERVICES)}") from None


def deploy_dir(svc: str) -> str:
    return f"/srv/shop/{svc}"


def release_dir(svc: str, version: str = SHOP_VERSION) -> str:
    return f"{deploy_dir(svc)}/releases/{version}"


def current_link(svc: str) -> str:
    return f"{deploy_dir(svc)}/current"


def topology_document() -> dict[str, Any]:
    """The shop as a topology file: the shape the daemon reads as `agents.topology_file`."""
    services: dict[str, Any] = {}
    for name, s in SERVICES.items():
        doc: dict[str, Any] = {
            "host": s.host, "port": s.port, "config": s.config, "log": s.log, "data": s.data,
            "health": s.health, "depends_on": list(s.depends_on), "program": s.program,
            "manager": SERVICE_MANAGER,
        }  # fmt: skip
        if name in SHOP_APPS:
            doc["deploy"] = deploy_dir(name)
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
    return (
        f"{s.name} runs on host {s.host} ({s.address}) under supervisord as program "
        f"{s.program} (sudo supervisorctl restart {s.program}); port {s.port}; config "
        f"{s.config}; log {s.log}; data {s.data}; depends on {deps}."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chaos.lab.topology",
        description="write the shop's topology file for the daemon's agents.topology_file",
    )
    parser.add_argument("file", metavar="FILE", help="where to write it (JSON)")
    args = parser.parse_args(argv)
    print(write_topology_file(args.file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
