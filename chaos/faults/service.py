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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, ClassVar

from chaos import variants
from chaos.faults.base import CHAOS_DIR, Check, Fault, Target, Targets
from chaos.lab import manager, probes
from chaos.lab import topology as topo


def _is_app(s: topo.Service) -> bool:
    """The system's own HTTP services (kind http): what the app-level faults target."""
    return s.kind == "http"


@dataclass(frozen=True)
class ConfigEdit:
    """One broken setting: `bad` replaces the text `good` in the service's config file."""

    good: str
    bad: str
    what: str


def _bad_port(port: int, host: str) -> int:
    """A port close to `port` that nothing on `host` uses: the last two digits swapped
    (8083 → 8038), else `port` + 10, + 100."""
    used = {s.port for s in topo.on_host(host)}
    text = str(port)
    swapped = int(text[:-2] + text[-1] + text[-2]) if len(text) >= 2 else port
    for candidate in (swapped, port + 10, port + 100, port + 1000):
        if candidate != port and candidate not in used and 1024 <= candidate <= 65535:
            return candidate
    raise ValueError(f"no free port near {port} on {host}")


def _bad_host() -> str:
    """A host name that resolves nowhere in the lab."""
    return next(h for h in ("cache", "cache-old", "cache-legacy") if h not in topo.HOST_ADDRESSES)


def config_errors(name: str) -> dict[str, ConfigEdit]:
    """The broken settings of service `name` a config-error can inject (at most two), read from
    what provisioning writes into its config (chaos/lab/provision.py):

    - http: a wrong port of its first upstream, then its stores' settings (PostgreSQL: the
      password, the port; Redis and memcached: the port, the host);
    - nginx: a wrong port for its last upstream; redis, postgresql, memcached: the listen port.
    """
    svc = topo.service(name)
    edits: dict[str, ConfigEdit] = {}
    if svc.kind == "http":
        ups = topo.upstreams(name)
        if ups:
            u = ups[0]
            edits["upstream"] = ConfigEdit(
                f"{u.name} = http://{u.host}:{u.port}",
                f"{u.name} = http://{u.host}:{u.port + 10}", f"{u.name} upstream",
            )  # fmt: skip
        for store in topo.stores(name):
            section = {"postgresql": "postgres"}.get(store.kind, store.kind)
            where = f"[{section}]\nhost = {store.host}\nport = "
            if store.kind == "postgresql":
                db = topo.pg_database(store)
                edits["credential"] = ConfigEdit(
                    f"password = {db['password']}", f"password = {db['user']}-old-pw",
                    "PostgreSQL password",
                )  # fmt: skip
                edits["db-port"] = ConfigEdit(f"{where}{store.port}", f"{where}{store.port + 1}",
                                              "PostgreSQL port")  # fmt: skip
            else:
                key, what = ("redis", "Redis") if store.kind == "redis" else ("cache", "memcached")
                edits[f"{key}-port"] = ConfigEdit(
                    f"{where}{store.port}", f"{where}{store.port + 1}", f"{what} port"
                )
                edits[f"{key}-host"] = ConfigEdit(
                    f"[{section}]\nhost = {store.host}\n", f"[{section}]\nhost = {_bad_host()}\n",
                    f"{what} host",
                )  # fmt: skip
        return dict(list(edits.items())[:2])
    if svc.kind == "nginx":
        ups = topo.upstreams(name)
        if not ups:
            return {}
        u, width = ups[-1], max(len(x.name) for x in ups)
        pad = " " * (width - len(u.name))
        line = f"upstream {u.name}{pad} {{{{ server {u.host}:{{}}; }}}}"
        return {"upstream": ConfigEdit(line.format(u.port), line.format(_bad_port(u.port, u.host)),
                                       f"{u.name} upstream")}  # fmt: skip
    used = {s.port for s in topo.on_host(svc.host)}
    bad_port = next(p for p in range(svc.port + 10, svc.port + 1000, 10) if p not in used)
    line = {"redis": "port {}", "postgresql": "port = {}", "memcached": "-p {}"}[svc.kind]
    return {"port": ConfigEdit(line.format(svc.port), line.format(bad_port), "listen port")}


class _ConfigErrors(Mapping[str, dict[str, ConfigEdit]]):
    """CONFIG_ERRORS[service] → {variant: edit}, for the active system's services."""

    def _table(self) -> dict[str, dict[str, ConfigEdit]]:
        table = {name: config_errors(name) for name in topo.SERVICES}
        return {name: edits for name, edits in table.items() if edits}

    def __getitem__(self, name: str) -> dict[str, ConfigEdit]:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


CONFIG_ERRORS: Mapping[str, dict[str, ConfigEdit]] = _ConfigErrors()


def nginx_functional(name: str | None = None) -> Check:
    front = topo.service(name) if name else topo.front_end()
    web = topo.http_base(front)
    bad = []
    for svc in front.depends_on:
        url = f"{web}/api/{svc}/health"
        try:
            status, body = probes.http_get(url, probes.HEALTH_TIMEOUT_S)
        except OSError as exc:
            status, body = 0, str(exc)
        if status != 200:
            bad.append(f"GET {url} → {status} {body[:120]}")
    return Check(not bad, "; ".join(bad) or f"{front.name} proxies every upstream")


@dataclass
class _ServiceFault(Fault):
    def functional(self, name: str | None = None) -> Check:
        svc = topo.service(name or self.target.service)
        if svc.kind == "nginx":
            return nginx_functional(svc.name)
        return super().functional(name)

    def check(self) -> Check:
        return self.running_and_functional()

    def restart_program(self) -> None:
        self.sh(f"{self.ctl('restart')} >/dev/null || true")


@dataclass
class ServiceDown(_ServiceFault):
    category: ClassVar[str] = "service-down"
    summary: ClassVar[str] = "the service has stopped and was not restarted"

    def inject(self) -> None:
        self.sh(f"{self.ctl('stop')} >/dev/null")

    def cleanup(self) -> None:
        self.sh(f"{self.ctl('start')} >/dev/null || true")


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
    summary: ClassVar[str] = "a store the service needs (its first one) is down"
    services: ClassVar[Targets] = Targets(lambda s: _is_app(s) and bool(topo.stores(s.name)))

    @property
    def dependency(self) -> topo.Service:
        store = topo.store_of(self.target.service)
        if store is None:
            raise ValueError(f"dependency-down: {self.target.service} depends on no data store")
        return store

    def inject(self) -> None:
        self.sh(f"{self.ctl('stop', self.dependency)} >/dev/null", host=self.dependency.host)

    def check(self) -> Check:
        return self.functional()

    def cleanup(self) -> None:
        self.sh(f"{self.ctl('start', self.dependency)} >/dev/null || true",
                host=self.dependency.host)  # fmt: skip


PORT_SQUATTER = """\
#!/usr/bin/python3
# A forgotten admin tool that listens on the service's port (chaos lab port-conflict).
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory="/var/empty")
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), handler).serve_forever()
"""


@dataclass
class PortConflict(_ServiceFault):
    category: ClassVar[str] = "port-conflict"
    summary: ClassVar[str] = "another process holds the service's port, so it cannot start"
    services: ClassVar[Targets] = Targets(lambda s: s.kind in ("http", "nginx"),
                                          order=("http", "nginx"))
    squatter: str = f"{CHAOS_DIR}/legacy_admin.py"

    @classmethod
    def draw_variants(cls, r: random.Random, target: Target) -> dict[str, Any]:
        return {"squatter": variants.script_path(r, r.choice((".py", "")))}

    def inject(self) -> None:
        port = self.target.svc.port
        path = self.write_helper(self.squatter, PORT_SQUATTER)
        self.sh(
            f"{self.ctl('stop')} >/dev/null\n"
            + self.spawn(f"/usr/bin/python3 {shlex.quote(path)} {port}")
            + f"for i in $(seq 50); do ss -ltnH 'sport = :{port}' | grep -q . && break; "
            "sleep 0.05; done\n"
            f"{self.ctl('start')} >/dev/null || true\n"
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
            + f"{self.ctl('start')} >/dev/null || true\n"
        )


FLOODER = """\
#!/bin/sh
# A debug dump left switched on: writes to the service's log disk until it is full, and keeps at it.
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
    # only where the log directory is a small tmpfs: a flood never fills the machine's disk
    services: ClassVar[Targets] = Targets(lambda s: _is_app(s) and topo.log_on_tmpfs(s.name))
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
    services: ClassVar[Targets] = Targets(_is_app)

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
            f"  {self.ctl('restart')} >/dev/null || true\n"
            "fi\n"
        )


@dataclass
class BadDeploy(_ServiceFault):
    category: ClassVar[str] = "bad-deploy"
    summary: ClassVar[str] = "the service was started from a broken release"
    services: ClassVar[Targets] = Targets(_is_app)
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
            f"{shlex.quote(manager.output_log(self.target.svc))} 2>/dev/null | grep -v '^==' "
            "| tail -n 2",
            check=False,
        )
        return Check(False, result.detail, tuple(x[:300] for x in out.splitlines() if x.strip()))

    def inject(self) -> None:
        name = self.target.service
        release = topo.release_dir(name, self.version)
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
            f"  {self.ctl('restart')} >/dev/null || true\n"
            "fi\n"
            f"rm -rf {shlex.quote(topo.release_dir(name, self.version))}\n"
        )


def served_certificate_end() -> tuple[str, bool]:
    """The notAfter of the certificate the front end serves on its TLS port, and whether it is
    still valid."""
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
    services: ClassVar[Targets] = Targets(lambda s: s.kind == "nginx" and bool(s.tls))

    def inject(self) -> None:
        from chaos.lab.provision import expired_certificate

        crt, key = expired_certificate(self.lab)
        root = self.lab.host_root(self.target.host)
        (root / topo.TLS_CERT.lstrip("/")).write_text(crt)
        (root / topo.TLS_KEY.lstrip("/")).write_text(key)
        self.restart_program()

    def check(self) -> Check:
        where = f"{self.target.host}:{topo.HTTPS_PORT}"
        try:
            end, valid = served_certificate_end()
        except OSError as exc:
            return Check(False, f"no TLS handshake with {where}: {exc}")
        if not valid:
            return Check(False, f"{where} serves an expired certificate ({end})")
        return self.running_and_functional()

    def cleanup(self) -> None:
        from chaos.lab.provision import golden_certificate

        crt, key = golden_certificate(self.lab)
        root = self.lab.host_root(self.target.host)
        if (root / topo.TLS_CERT.lstrip("/")).read_text() != crt:
            (root / topo.TLS_CERT.lstrip("/")).write_text(crt)
            (root / topo.TLS_KEY.lstrip("/")).write_text(key)
            self.restart_program()


CONNECTION_HOG = """\
#!/usr/bin/python3
# A batch job that leaks PostgreSQL connections and reconnects when they are cut
# (chaos lab connection-exhaustion).
# Usage: PASSWORD APP_NAME HOST PORT DBNAME USER
import sys, time
import psycopg2

host, port, dbname, user = sys.argv[3:7]
conns = []
while True:
    conns = [c for c in conns if not c.closed]
    try:
        conns.append(psycopg2.connect(host=host, port=int(port), dbname=dbname, user=user,
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
    services: ClassVar[Targets] = Targets(lambda s: _is_app(s) and topo.pg_of(s.name) is not None)
    client: str = f"{CHAOS_DIR}/report_batch.py"
    app_name: str = "report-batch"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", self.app_name):
            raise ValueError(f"connection-exhaustion: bad app_name {self.app_name!r}")

    @classmethod
    def draw_variants(cls, r: random.Random, target: Target) -> dict[str, Any]:
        return {"client": variants.script_path(r, r.choice((".py", ""))),
                "app_name": variants.app_name(r)}  # fmt: skip

    @property
    def pg(self) -> topo.Service:
        pg = topo.pg_of(self.target.service)
        if pg is None:
            raise ValueError(f"connection-exhaustion: {self.target.service} uses no PostgreSQL")
        return pg

    def inject(self) -> None:
        path = self.write_helper(self.client, CONNECTION_HOG)
        pg, db = self.pg, topo.pg_database(self.pg)
        args = [db["password"], self.app_name, pg.host, str(pg.port), db["name"], db["user"]]
        limit = pg.max_connections or topo.PG_MAX_CONNECTIONS
        self.sh(
            self.spawn(f"/usr/bin/python3 {shlex.quote(path)} "
                       + " ".join(shlex.quote(a) for a in args))
            + "for i in $(seq 100); do "
            f"[ $(ss -tnH 'dport = :{pg.port}' | wc -l) -ge {limit - 5} ] && break; "
            "sleep 0.05; done\n"
        )  # fmt: skip

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
        port = self.pg.port
        out = self.sh(
            f"ss -tnpH 'dport = :{port}' | grep -o 'pid=[0-9]*' | sort | uniq -c | sort -rn "
            "| head -n 2 | while read n p; do pid=${p#pid=}; "
            'echo "$n connections to :' + str(port) + ' from pid $pid: $(ps -o args= -p $pid)"; '
            "done",
            check=False,
        )
        return tuple(line.strip()[:300] for line in out.splitlines() if line.strip())

    def cleanup(self) -> None:
        self.sh(f"pkill -KILL -f -- {shlex.quote(self.client)} || true\n"
                + self.remove_helper(self.client))  # fmt: skip
