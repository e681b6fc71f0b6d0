"""Faults of a supervised service: down, misconfigured, missing dependency, port taken, log disk
full, config unreadable, broken release.

Checks ask supervisord for the program's state and the service for its health (nginx: a proxied
request to each upstream), never the injector's memory. Their evidence (what a failed check
saw: the process on the port, the files filling the disk, the client holding the connections,
the release `current` points to) is read from the host too.

With variants (chaos/variants.py) the squatter, the dumper and its file, the leaking client and
its application name, the bad release's version and the config key broken are drawn per case.
"""

from __future__ import annotations

import random
import re
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, ClassVar

from chaos import variants
from chaos.faults.base import CHAOS_DIR, Check, Fault, Target
from chaos.lab import probes
from chaos.lab import topology as topo

APP_SERVICES = topo.SHOP_APPS  # the system's own HTTP services (kind http)


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
    front = topo.front_end()
    web = front.address
    bad = []
    for svc in front.depends_on:
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

    @classmethod
    def draw_variants(cls, r: random.Random, target: Target) -> dict[str, Any]:
        keys = sorted(CONFIG_ERRORS.get(target.service, {}))
        return {"variant": r.choice(keys)} if keys else {}

    def check(self) -> Check:
        result = self.running_and_functional()
        if result.ok:
            return result
        log = self.sh(
            f"grep -aiE 'error|fatal|refused|denied|fail|timeout|emerg' "
            f"{shlex.quote(self.target.svc.log)} 2>&1 | tail -n 3",
            check=False,
        )
        return Check(False, result.detail, tuple(line[:300] for line in log.splitlines()[-3:]))

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
        store = topo.store_of(self.target.service)
        if store is None:
            raise ValueError(f"dependency-down: {self.target.service} depends on no data store")
        return store

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
    squatter: str = f"{CHAOS_DIR}/legacy_admin.py"

    @classmethod
    def draw_variants(cls, r: random.Random, target: Target) -> dict[str, Any]:
        return {"squatter": variants.script_path(r, r.choice((".py", "")))}

    def inject(self) -> None:
        port, program = self.target.svc.port, self.target.svc.program
        path = self.write_helper(self.squatter, PORT_SQUATTER)
        self.sh(
            f"supervisorctl stop {program} >/dev/null\n"
            + self.spawn(f"/usr/bin/python3 {shlex.quote(path)} {port}")
            + f"for i in $(seq 50); do ss -ltnH 'sport = :{port}' | grep -q . && break; "
            "sleep 0.05; done\n"
            f"supervisorctl start {program} >/dev/null || true\n"
        )

    def check(self) -> Check:
        result = self.running_and_functional()
        if result.ok:
            return result
        port = self.target.svc.port
        listener = self.sh(f"ss -ltnpH 'sport = :{port}' || true", check=False).strip()
        evidence = [f"ss: port {port}: {listener or 'nothing listens'}"]
        for pid in sorted(set(re.findall(r"pid=(\d+)", listener)))[:2]:
            args = self.sh(f"ps -o args= -p {pid} || true", check=False).strip()
            evidence.append(f"ps: pid {pid}: {args}")
        return Check(False, result.detail, tuple(evidence))

    def cleanup(self) -> None:
        self.sh(
            f"pkill -KILL -f -- {shlex.quote(self.squatter)} || true\nsleep 0.1\n"
            + self.remove_helper(self.squatter)
            + f"supervisorctl start {self.target.svc.program} >/dev/null || true\n"
        )


FLOODER = """\
#!/bin/sh
# A debug dump left switched on: writes to the shop's log disk until it is full, and keeps at it.
while true; do
  yes "DEBUG $1 dump: cache state $(date +%s) $(head -c 120 /dev/zero | tr '\\0' x)" \
    >> "$2" 2>/dev/null
  sleep 0.5
done
"""


# The three largest files of a log directory, and who has the largest open or names it (a log
# flood's writer and the script that started it).
WRITERS_SCRIPT = """\
/usr/bin/python3 - <<'PY'
import os
d = {log_dir!r}
files = sorted((e for e in os.scandir(d) if e.is_file()), key=lambda e: -e.stat().st_size)[:3]
for e in files:
    print(f"file {{e.path}}: {{e.stat().st_size // 1024}} KiB")
def cmd(pid):
    try:
        return open(f"/proc/{{pid}}/cmdline").read().replace(chr(0), " ").strip()[:120]
    except OSError:
        return "?"
shown = 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        fds = {{os.readlink(f"/proc/{{pid}}/fd/{{fd}}") for fd in os.listdir(f"/proc/{{pid}}/fd")}}
        ppid = open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[1]
    except OSError:
        continue
    if files and (files[0].path in fds or files[0].path in cmd(pid)) and shown < 3:
        shown += 1
        print(f"writer pid {{pid}} ({{cmd(pid)}}) -> {{files[0].path}}; "
              f"parent {{ppid}} ({{cmd(ppid)}})")
PY
"""


@dataclass
class LogFlood(_ServiceFault):
    category: ClassVar[str] = "log-flood"
    summary: ClassVar[str] = "a debug log fills the service's log disk"
    services: ClassVar[tuple[str, ...]] = APP_SERVICES
    max_used_pct: int = 90
    dumper: str = f"{CHAOS_DIR}/debug_dump.sh"
    dump_file: str = ""  # "": <the service's log directory>/<service>-debug.log

    def __post_init__(self) -> None:
        log_dir = str(PurePosixPath(self.target.svc.log).parent)
        if not self.dump_file:
            self.dump_file = f"{log_dir}/{self.target.service}-debug.log"
        if str(PurePosixPath(self.dump_file).parent) != log_dir or ".." in self.dump_file:
            raise ValueError(f"log-flood: dump_file must be a file in {log_dir}")

    @classmethod
    def draw_variants(cls, r: random.Random, target: Target) -> dict[str, Any]:
        log_dir = str(PurePosixPath(topo.service(target.service).log).parent)
        return {
            "dumper": variants.script_path(r, r.choice((".sh", ""))),
            "dump_file": f"{log_dir}/{variants.log_name(r, target.service)}",
        }

    @property
    def log_dir(self) -> str:
        return str(PurePosixPath(self.target.svc.log).parent)

    def inject(self) -> None:
        path = self.write_helper(self.dumper, FLOODER)
        self.sh(
            self.spawn(f"{shlex.quote(path)} {self.target.service} {shlex.quote(self.dump_file)}")
            + f"for i in $(seq 100); do [ $(df --output=avail {self.log_dir} | tail -1) -lt 64 ] "
            "&& break; sleep 0.05; done\n"
        )

    def check(self) -> Check:
        log_dir = self.log_dir
        out = self.sh(f"df --output=pcent,avail {log_dir} | tail -1")
        used = int(out.split()[0].rstrip("%"))
        if used >= self.max_used_pct:
            return Check(False, f"{log_dir} is {used}% full", (out.strip(), *self._writers()))
        return self.functional()

    def _writers(self) -> tuple[str, ...]:
        """The largest files in the log directory, and the processes writing into it."""
        out = self.sh(WRITERS_SCRIPT.format(log_dir=self.log_dir), check=False)
        return tuple(line[:300] for line in out.splitlines() if line.strip())

    def cleanup(self) -> None:
        self.sh(
            f"pkill -KILL -f -- {shlex.quote(self.dumper)} || true\n"
            f"rm -f -- {shlex.quote(self.dump_file)}\n" + self.remove_helper(self.dumper)
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

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,40}", self.version) or (
            self.version == topo.SHOP_VERSION
        ):
            raise ValueError(f"bad-deploy: {self.version!r} is not a new release version")

    @classmethod
    def draw_variants(cls, r: random.Random, target: Target) -> dict[str, Any]:
        return {"version": variants.version(r, topo.SHOP_VERSION)}

    def check(self) -> Check:
        result = self.running_and_functional()
        if result.ok:
            return result
        link = topo.current_link(self.target.service)
        out = self.sh(
            f"echo \"current -> $(readlink {link})\"; ls {topo.deploy_dir(self.target.service)}"
            f"/releases | tr '\\n' ' '; echo; tail -n 2 {shlex.quote(self.target.svc.log)} "
            f"/var/log/supervisor/{self.target.svc.program}.log 2>/dev/null | grep -v '^==' "
            "| tail -n 2",
            check=False,
        )
        return Check(False, result.detail, tuple(x[:300] for x in out.splitlines() if x.strip()))

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
    address = (topo.front_end().address, topo.HTTPS_PORT)
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
                                      application_name=sys.argv[2]))
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
    client: str = f"{CHAOS_DIR}/report_batch.py"
    app_name: str = "report-batch"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", self.app_name):
            raise ValueError(f"connection-exhaustion: bad app_name {self.app_name!r}")

    @classmethod
    def draw_variants(cls, r: random.Random, target: Target) -> dict[str, Any]:
        return {"client": variants.script_path(r, r.choice((".py", ""))),
                "app_name": variants.app_name(r)}  # fmt: skip

    def inject(self) -> None:
        path = self.write_helper(self.client, CONNECTION_HOG)
        self.sh(
            self.spawn(f"/usr/bin/python3 {shlex.quote(path)} {topo.DB_PASSWORD} {self.app_name}")
            + "for i in $(seq 100); do "
            f"[ $(ss -tnH 'dport = :5432' | wc -l) -ge {topo.PG_MAX_CONNECTIONS - 5} ] && break; "
            "sleep 0.05; done\n"
        )

    def check(self) -> Check:
        # A slot another client frees can let a request through before the leak takes it back
        # (more often on a loaded host); recovered means five requests in a row succeed.
        for _ in range(5):
            result = self.functional()
            if not result.ok:
                return Check(False, result.detail, self._holders())
        return result

    def _holders(self) -> tuple[str, ...]:
        """Which processes on this host hold connections to PostgreSQL, most first."""
        pg = topo.SERVICES["postgresql"].port
        out = self.sh(
            f"ss -tnpH 'dport = :{pg}' | grep -o 'pid=[0-9]*' | sort | uniq -c | sort -rn "
            "| head -n 2 | while read n p; do pid=${p#pid=}; "
            'echo "$n connections to :' + str(pg) + ' from pid $pid: $(ps -o args= -p $pid)"; '
            "done",
            check=False,
        )
        return tuple(line.strip()[:300] for line in out.splitlines() if line.strip())

    def cleanup(self) -> None:
        self.sh(f"pkill -KILL -f -- {shlex.quote(self.client)} || true\n"
                + self.remove_helper(self.client))  # fmt: skip
