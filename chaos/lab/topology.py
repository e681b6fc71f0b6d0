"""The shop's topology on the lab hosts: the one place the facts in chaos/README.md come from.

Scenario files, fault classes, expert playbooks and the planner's prompts are written against
these names, ports and paths. Keep them stable.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def release_dir(svc: str, version: str = SHOP_VERSION) -> str:
    return f"/srv/shop/{svc}/releases/{version}"


def current_link(svc: str) -> str:
    return f"/srv/shop/{svc}/current"


def facts(name: str) -> str:
    """The target's facts as one paragraph, for reports and planner prompts."""
    s = service(name)
    deps = ", ".join(f"{d}@{SERVICES[d].host}" for d in s.depends_on) or "none"
    return (
        f"{s.name} runs on host {s.host} ({s.address}) under supervisord as program "
        f"{s.program} (sudo supervisorctl restart {s.program}); port {s.port}; config "
        f"{s.config}; log {s.log}; data {s.data}; depends on {deps}."
    )
