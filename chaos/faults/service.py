"""Faults of a supervised service: down, misconfigured, missing dependency, port taken, log disk
full, config unreadable, broken release.

Checks ask supervisord for the program's state and the service for its health (nginx: a proxied
request to each upstream), never the injector's memory.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import ClassVar

from chaos.faults.base import Check, Fault
from chaos.lab import probes
from chaos.lab import topology as topo

APP_SERVICES = ("catalog", "cart", "checkout")


@dataclass(frozen=True)
class ConfigEdit:
    """One broken setting: `bad` replaces the line `good` in the service's config file."""

    good: str
    bad: str
    what: str


CONFIG_ERRORS: dict[str, dict[str, ConfigEdit]] = {
    "catalog": {
        "credential": ConfigEdit(f"password = {topo.DB_PASSWORD}", "password = shop-old-pw",
                                 "PostgreSQL password"),
        "db-port": ConfigEdit("port = 5432", "port = 5433", "PostgreSQL port"),
    },
    "cart": {
        "redis-port": ConfigEdit("port = 6379", "port = 6380", "Redis port"),
        "redis-host": ConfigEdit("host = db", "host = cache", "Redis host"),
    },
    "checkout": {
        "upstream": ConfigEdit("catalog = http://app:8081", "catalog = http://app:8091",
                               "catalog upstream"),
        "credential": ConfigEdit(f"password = {topo.DB_PASSWORD}", "password = changeme",
                                 "PostgreSQL password"),
    },
    "nginx": {
        "upstream": ConfigEdit("upstream checkout { server app:8083; }",
                               "upstream checkout { server app:8038; }", "checkout upstream"),
    },
    "redis": {
        "port": ConfigEdit("port 6379", "port 6389", "listen port"),
    },
    "postgresql": {
        "port": ConfigEdit("port = 5432", "port = 5442", "listen port"),
    },
}  # fmt: skip


def nginx_functional() -> Check:
    web = topo.HOST_ADDRESSES["web"]
    bad = []
    for svc in APP_SERVICES:
        url = f"http://{web}/api/{svc}/health"
        try:
            status, body = probes.http_get(url, probes.HEALTH_TIMEOUT_S)
        except OSError as exc:
            status, body = 0, str(exc)
        if status != 200:
            bad.append(f"GET {url} → {status} {body[:120]}")
    return Check(not bad, "; ".join(bad) or "nginx proxies every upstream")


@dataclass
class _ServiceFault(Fault):
    def functional(self, name: str | None = None) -> Check:
        if (name or self.target.service) == "nginx":
            return nginx_functional()
        return super().functional(name)

    def check(self) -> Check:
        return self.running_and_functional()

    def restart_program(self) -> None:
        self.sh(f"supervisorctl restart {self.target.svc.program} >/dev/null || true")


@dataclass
class ServiceDown(_ServiceFault):
    category: ClassVar[str] = "service-down"
    summary: ClassVar[str] = "the service has stopped and was not restarted"

    def inject(self) -> None:
        self.sh(f"supervisorctl stop {self.target.svc.program} >/dev/null")

    def cleanup(self) -> None:
        self.sh(f"supervisorctl start {self.target.svc.program} >/dev/null || true")


@dataclass
class ConfigError(_ServiceFault):
    category: ClassVar[str] = "config-error"
    summary: ClassVar[str] = "a broken setting in the service's config file"
    variant: str = ""

    def __post_init__(self) -> None:
        variants = CONFIG_ERRORS.get(self.target.service, {})
        if not self.variant:
            self.variant = next(iter(variants))
        if self.variant not in variants:
            raise ValueError(
                f"config-error on {self.target.service}: unknown variant {self.variant!r}; "
                f"known: {sorted(variants)}"
            )

    @property
    def edit(self) -> ConfigEdit:
        return CONFIG_ERRORS[self.target.service][self.variant]

    def _replace(self, old: str, new: str) -> bool:
        path = self.lab.host_root(self.target.host) / self.target.svc.config.lstrip("/")
        text = path.read_text()
        if old not in text:
            return False
        path.write_text(text.replace(old, new))
        return True

    def inject(self) -> None:
        self._replace(self.edit.good, self.edit.bad)
        self.restart_program()

    def cleanup(self) -> None:
        # A remediation that already restored the setting needs no second restart.
        if self._replace(self.edit.bad, self.edit.good) or self.program_state() != "RUNNING":
            self.restart_program()


@dataclass
class DependencyDown(_ServiceFault):
    category: ClassVar[str] = "dependency-down"
    summary: ClassVar[str] = "a store the service needs (Redis or PostgreSQL) is down"
    services: ClassVar[tuple[str, ...]] = APP_SERVICES

    @property
    def dependency(self) -> topo.Service:
        name = "redis" if self.target.service == "cart" else "postgresql"
        return topo.SERVICES[name]

    def inject(self) -> None:
        self.sh(f"supervisorctl stop {self.dependency.program} >/dev/null",
                host=self.dependency.host)  # fmt: skip

    def check(self) -> Check:
        return self.functional()

    def cleanup(self) -> None:
        self.sh(f"supervisorctl start {self.dependency.program} >/dev/null || true",
                host=self.dependency.host)  # fmt: skip


PORT_SQUATTER = """\
#!/usr/bin/python3
# A forgotten admin tool that listens on the shop service's port (chaos lab port-conflict).
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory="/var/empty")
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), handler).serve_forever()
"""


@dataclass
class PortConflict(_ServiceFault):
    category: ClassVar[str] = "port-conflict"
    summary: ClassVar[str] = "another process holds the service's port, so it cannot start"
    services: ClassVar[tuple[str, ...]] = (*APP_SERVICES, "nginx")

    def inject(self) -> None:
        port, program = self.target.svc.port, self.target.svc.program
        path = self.write_helper("legacy_admin.py", PORT_SQUATTER)
        self.sh(
            f"supervisorctl stop {program} >/dev/null\n"
            f"setsid nohup /usr/bin/python3 {path} {port} </dev/null >/dev/null 2>&1 &\n"
            f"for i in $(seq 50); do ss -ltnH 'sport = :{port}' | grep -q . && break; "
            "sleep 0.05; done\n"
            f"supervisorctl start {program} >/dev/null || true\n"
        )

    def cleanup(self) -> None:
        self.sh(
            "pkill -KILL -f /run/remed-chaos/legacy_admin.py || true\nsleep 0.1\n"
            f"supervisorctl start {self.target.svc.program} >/dev/null || true\n"
        )


FLOODER = """\
#!/bin/sh
# A debug dump left switched on: writes to the shop's log disk until it is full, and keeps at it.
while true; do
  yes "DEBUG $1 dump: cache state $(date +%s) $(head -c 120 /dev/zero | tr '\\0' x)" \
    >> /var/log/shop/$1-debug.log 2>/dev/null
  sleep 0.5
done
"""


@dataclass
class LogFlood(_ServiceFault):
    category: ClassVar[str] = "log-flood"
    summary: ClassVar[str] = "a debug log fills the service's log disk"
    services: ClassVar[tuple[str, ...]] = APP_SERVICES
    max_used_pct: int = 90

    def inject(self) -> None:
        path = self.write_helper("debug_dump.sh", FLOODER)
        self.sh(
            f"setsid nohup {path} {self.target.service} </dev/null >/dev/null 2>&1 &\n"
            "for i in $(seq 100); do [ $(df --output=avail /var/log/shop | tail -1) -lt 64 ] "
            "&& break; sleep 0.05; done\n"
        )

    def check(self) -> Check:
        log_dir = str(PurePosixPath(self.target.svc.log).parent)
        out = self.sh(f"df --output=pcent,avail {log_dir} | tail -1")
        used = int(out.split()[0].rstrip("%"))
        if used >= self.max_used_pct:
            return Check(False, f"{log_dir} is {used}% full", (out.strip(),))
        return self.functional()

    def cleanup(self) -> None:
        self.sh(
            "pkill -KILL -f /run/remed-chaos/debug_dump.sh || true\n"
            f"rm -f /var/log/shop/{self.target.service}-debug.log\n"
        )


@dataclass
class WrongPermissions(_ServiceFault):
    category: ClassVar[str] = "wrong-permissions"
    summary: ClassVar[str] = "the service's config file is no longer readable by its user"
    services: ClassVar[tuple[str, ...]] = APP_SERVICES

    def inject(self) -> None:
        config = shlex.quote(self.target.svc.config)
        self.sh(f"chown root:root {config}\nchmod 0600 {config}\n")
        self.restart_program()

    def check(self) -> Check:
        config = self.target.svc.config
        readable = self.sh(f"sudo -u {topo.SHOP_USER} test -r {config} && echo yes || echo no")
        if readable.strip() != "yes":
            mode = self.sh(f"stat -c '%A %U:%G %n' {config}").strip()
            return Check(False, f"{config} is not readable by {topo.SHOP_USER}", (mode,))
        return self.running_and_functional()

    def cleanup(self) -> None:
        config = shlex.quote(self.target.svc.config)
        self.sh(
            f"if [ \"$(stat -c %U:%G:%a {config})\" != root:{topo.SHOP_USER}:640 ]; then\n"
            f"  chown root:{topo.SHOP_USER} {config}; chmod 0640 {config}\n"
            f"  supervisorctl restart {self.target.svc.program} >/dev/null || true\n"
            "fi\n"
        )


@dataclass
class BadDeploy(_ServiceFault):
    category: ClassVar[str] = "bad-deploy"
    summary: ClassVar[str] = "the service was started from a broken release"
    services: ClassVar[tuple[str, ...]] = APP_SERVICES
    version: str = "1.5.0-rc1"

    def inject(self) -> None:
        name = self.target.service
        release = f"/srv/shop/{name}/releases/{self.version}"
        self.sh(
            f"mkdir -p {release}\n"
            f"sed 's/^import argparse$/import argparse\\nimport shop_featureflags/; "
            f"s/^VERSION = .*/VERSION = \"{self.version}\"/' "
            f"{topo.release_dir(name)}/shop.py > {release}/shop.py\n"
            f"chmod 0755 {release}/shop.py\n"
            f"ln -sfn releases/{self.version} {topo.current_link(name)}\n"
        )
        self.restart_program()

    def cleanup(self) -> None:
        name = self.target.service
        link = topo.current_link(name)
        self.sh(
            f"if [ \"$(readlink {link})\" != releases/{topo.SHOP_VERSION} ]; then\n"
            f"  ln -sfn releases/{topo.SHOP_VERSION} {link}\n"
            f"  supervisorctl restart {self.target.svc.program} >/dev/null || true\n"
            "fi\n"
            f"rm -rf /srv/shop/{name}/releases/{self.version}\n"
        )


def served_certificate_end() -> tuple[str, bool]:
    """The notAfter of the certificate nginx serves on web:443, and whether it is still valid."""
    import socket
    import ssl
    import subprocess

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    address = (topo.HOST_ADDRESSES["web"], topo.HTTPS_PORT)
    with socket.create_connection(address, timeout=probes.HEALTH_TIMEOUT_S) as sock:
        with ctx.wrap_socket(sock) as tls:
            der = tls.getpeercert(binary_form=True) or b""
    result = subprocess.run(
        ["openssl", "x509", "-inform", "DER", "-noout", "-enddate", "-checkend", "0"],
        input=der, capture_output=True, timeout=10,
    )  # fmt: skip
    end = result.stdout.decode().splitlines()[0] if result.stdout else "unreadable certificate"
    return end, result.returncode == 0


@dataclass
class TlsCertExpired(_ServiceFault):
    category: ClassVar[str] = "tls-cert"
    summary: ClassVar[str] = "nginx serves an expired TLS certificate"
    services: ClassVar[tuple[str, ...]] = ("nginx",)

    def inject(self) -> None:
        from chaos.lab.provision import expired_certificate

        crt, key = expired_certificate(self.lab)
        root = self.lab.host_root("web")
        (root / topo.TLS_CERT.lstrip("/")).write_text(crt)
        (root / topo.TLS_KEY.lstrip("/")).write_text(key)
        self.restart_program()

    def check(self) -> Check:
        try:
            end, valid = served_certificate_end()
        except OSError as exc:
            return Check(False, f"no TLS handshake with web:{topo.HTTPS_PORT}: {exc}")
        if not valid:
            return Check(False, f"web:{topo.HTTPS_PORT} serves an expired certificate ({end})")
        return self.running_and_functional()

    def cleanup(self) -> None:
        from chaos.lab.provision import golden_certificate

        crt, key = golden_certificate(self.lab)
        root = self.lab.host_root("web")
        if (root / topo.TLS_CERT.lstrip("/")).read_text() != crt:
            (root / topo.TLS_CERT.lstrip("/")).write_text(crt)
            (root / topo.TLS_KEY.lstrip("/")).write_text(key)
            self.restart_program()


CONNECTION_HOG = """\
#!/usr/bin/python3
# A batch job that leaks PostgreSQL connections and reconnects when they are cut
# (chaos lab connection-exhaustion).
import sys, time
import psycopg2

conns = []
while True:
    conns = [c for c in conns if not c.closed]
    try:
        conns.append(psycopg2.connect(host="db", dbname="shop", user="shop",
                                      password=sys.argv[1], connect_timeout=2,
                                      application_name="report-batch"))
        continue
    except psycopg2.Error:
        pass
    for c in conns:
        try:
            c.cursor().execute("SELECT 1")
        except psycopg2.Error:
            c.close()
    time.sleep(0.05)
"""


@dataclass
class ConnectionExhaustion(_ServiceFault):
    category: ClassVar[str] = "connection-exhaustion"
    summary: ClassVar[str] = "a leaking client holds every PostgreSQL connection slot"
    services: ClassVar[tuple[str, ...]] = ("catalog", "checkout")

    def inject(self) -> None:
        path = self.write_helper("report_batch.py", CONNECTION_HOG)
        self.sh(
            f"setsid nohup /usr/bin/python3 {path} {topo.DB_PASSWORD} "
            "</dev/null >/dev/null 2>&1 &\n"
            "for i in $(seq 100); do "
            f"[ $(ss -tnH 'dport = :5432' | wc -l) -ge {topo.PG_MAX_CONNECTIONS - 5} ] && break; "
            "sleep 0.05; done\n"
        )

    def check(self) -> Check:
        # A slot another client frees can let a request through before the leak takes it back
        # (more often on a loaded host); recovered means five requests in a row succeed.
        for _ in range(5):
            result = self.functional()
            if not result.ok:
                return result
        return result

    def cleanup(self) -> None:
        self.sh("pkill -KILL -f /run/remed-chaos/report_batch.py || true")
