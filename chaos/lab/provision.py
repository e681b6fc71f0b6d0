"""Provision the active lab system on running lab hosts, idempotently; the same call resets it
between cases.

`ensure(lab)` brings every host to the documented baseline (chaos/README.md):

1. files — configs, supervisord programs, the service code and its `current` release link —
   are written into each host's own directory tree (`.run/lab/hosts/<host>/root/...`, the
   source of the host's bind mounts), only where they differ from the baseline;
2. one SSH session per host then creates runtime directories and tmpfs mounts, initialises
   PostgreSQL's cluster once, removes what chaos faults leave behind (nftables tables named
   `chaos_*`, processes started from /run/remed-chaos, flood files), and makes supervisord
   run exactly the baseline programs, restarting those whose files changed;
3. it waits until every service answers its health check.

Runs after `LabHosts.up()`; `python -m chaos.lab provision` does the same from a shell.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from chaos.faults.base import CHAOS_ENV
from chaos.lab import manager
from chaos.lab import topology as topo
from chaos.lab.hosts import Lab

SHOP_SOURCE = Path(__file__).resolve().parent / "shop" / "shop.py"
HEALTHY_TIMEOUT_S = 30.0
CHAOS_RUN_DIR = "/run/remed-chaos"


@dataclass(frozen=True)
class FileSpec:
    path: str
    content: str
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    programs: tuple[str, ...] = ()  # programs restarted when this file changes


@dataclass
class ProvisionReport:
    changed_files: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    duration_s: float = 0.0


# -- file contents ---------------------------------------------------------------------------
# Every file is generated from the active system file (chaos/system.py): one function per
# service kind, each returning that service's files on its host.

NGINX_CONF = """\
# nginx main config (chaos lab, host {host}); the {system}'s site is {site}
user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log {error_log} warn;
events {{ worker_connections 512; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {access_log};
    keepalive_timeout 30;
    include {include};
}}
"""

NGINX_SITE = """\
# The {system}'s front end: /api/<service>/... is proxied to that service on host {on}.
{upstreams}

server {{
{listen}    server_name {system} {host};
{tls}
    proxy_connect_timeout 2s;
    proxy_read_timeout 5s;

    location = /health {{ default_type text/plain; return 200 "ok\\n"; }}
{locations}}}
"""

SHOP_INI_HEAD = """\
# {system} service {name} (chaos lab, host {host}); restart: sudo {restart}
[service]
name = {name}
listen = 0.0.0.0
port = {port}
"""

REDIS_CONF = """\
# redis (chaos lab, host {host}); run by {manager} as user redis
bind {address} 127.0.0.1
port {port}
protected-mode no
daemonize no
pidfile /run/redis/{pidfile}.pid
logfile {log}
dir {data}
save ""
appendonly no
maxmemory 64mb
maxclients 256
"""

PG_CONF = """\
# PostgreSQL {version} (chaos lab, host {host}); run by {manager} as user postgres
data_directory = '{data}'
hba_file = '{conf_dir}/pg_hba.conf'
ident_file = '{conf_dir}/pg_ident.conf'
listen_addresses = '{address},127.0.0.1'
port = {port}
max_connections = {max_connections}
superuser_reserved_connections = 3
unix_socket_directories = '/run/postgresql'
shared_buffers = 16MB
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
"""

PG_HBA = """\
# TYPE  DATABASE  USER      ADDRESS          METHOD
local   all       postgres                   peer
local   all       all                        peer
host    all       all       127.0.0.1/32     scram-sha-256
host    {db:<9} {user:<9} {subnet:<16} scram-sha-256
"""

MEMCACHED_CONF = """\
# memcached {name} (chaos lab, host {host}); run by {manager} through Debian's wrapper, which
# reads one option per line (memcached -h)
-v
-m 64
-p {port}
-U 0
-u memcache
-l {address},127.0.0.1
-c 256
"""

PROGRAM = """\
[program:{name}]
command={command}
user={user}
directory={directory}
autostart=true
autorestart=true
startsecs=1
startretries=2
stopsignal={stopsignal}
stopasgroup=true
killasgroup=true
stdout_logfile={stdout}
stdout_logfile_maxbytes=5MB
stdout_logfile_backups=1
redirect_stderr=true
"""

# A failed unit restarts every second without a start limit, so, as under supervisord, a fix of
# the cause (a freed port, a readable config) is followed by a running service.
UNIT = """\
# {name}: a service of the {system} lab system (chaos/lab/provision.py)
[Unit]
Description={name} ({system} lab system)
After=network.target
StartLimitIntervalSec=0

[Service]
Type=simple
User={user}
WorkingDirectory={directory}
ExecStart={command}
{reload}KillSignal=SIG{stopsignal}
Restart=on-failure
RestartSec=1
TimeoutStopSec=10
StandardOutput=append:{stdout}
StandardError=inherit

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class Program:
    """How a service's manager runs it."""

    command: str
    user: str
    directory: str = "/"
    stopsignal: str = "TERM"
    reload: str = ""  # systemd: ExecReload (supervisord: `supervisorctl signal HUP`)


def _program(svc: topo.Service, prog: Program) -> FileSpec:
    """The supervisord program or systemd unit file of a service."""
    stdout = manager.output_log(svc)
    values = dict(name=svc.program, command=prog.command, user=prog.user,
                  directory=prog.directory, stopsignal=prog.stopsignal, stdout=stdout,
                  system=topo.SYSTEM.name,
                  reload=f"ExecReload={prog.reload}\n" if prog.reload else "")  # fmt: skip
    if svc.manager == "systemd":
        return FileSpec(f"/etc/systemd/system/{svc.program}.service", UNIT.format(**values))
    return FileSpec(f"/etc/supervisor/conf.d/{svc.program}.conf", PROGRAM.format(**values))


def _nginx(svc: topo.Service) -> list[FileSpec]:
    ups = topo.upstreams(svc.name)
    names = [u.name for u in ups]
    site_dir = svc.config.rsplit("/", 1)[0]
    include = f"{site_dir}/*.conf" if site_dir == "/etc/nginx/sites-enabled" else svc.config
    log_dir = svc.log.rsplit("/", 1)[0]
    main = NGINX_CONF.format(host=svc.host, system=topo.SYSTEM.name,
                             site=svc.config.removeprefix("/etc/nginx/"), error_log=svc.log,
                             access_log=f"{log_dir}/access.log", include=include)  # fmt: skip
    upstream = {u.name: f"{u.host}:{u.port}" for u in ups}
    tls = dict(svc.tls)
    listen = f"    listen {svc.port} default_server;\n"
    tls_lines = ""
    if tls:
        listen += f"    listen {tls['port']} ssl default_server;\n"
        tls_lines = (f"    ssl_certificate     {tls['cert']};\n"
                     f"    ssl_certificate_key {tls['key']};\n")  # fmt: skip
    width = max(map(len, names), default=0)
    site = NGINX_SITE.format(
        system=topo.SYSTEM.name, host=svc.host, listen=listen, tls=tls_lines,
        on=" and ".join(dict.fromkeys(u.host for u in ups)) or svc.host,
        upstreams="\n".join(f"upstream {n}{' ' * (width - len(n))} {{ server {upstream[n]}; }}"
                             for n in names),
        locations="".join(f"    location /api/{n}/{' ' * (width - len(n))} "
                          f"{{ proxy_pass http://{n}/; }}\n" for n in names),
    )  # fmt: skip
    prog = Program("/usr/sbin/nginx -g 'daemon off;'", user="root", stopsignal="QUIT",
                   reload="/bin/kill -HUP $MAINPID")
    return [
        FileSpec("/etc/nginx/nginx.conf", main, programs=(svc.program,)),
        FileSpec(svc.config, site, programs=(svc.program,)),
        _program(svc, prog),
    ]


def shop_ini(svc: topo.Service) -> str:
    """An http service's INI: its port, one section per store, its upstreams, its log."""
    text = SHOP_INI_HEAD.format(system=topo.SYSTEM.name, name=svc.name, host=svc.host,
                                port=svc.port, restart=manager.ctl(svc, "restart"))  # fmt: skip
    if svc.role == "generic":
        text += "role = generic\n"
    for store in topo.stores(svc.name):
        if store.kind == "postgresql":
            db = topo.pg_database(store)
            text += (f"\n[postgres]\nhost = {store.host}\nport = {store.port}\n"
                     f"user = {db['user']}\npassword = {db['password']}\n"
                     f"dbname = {db['name']}\n")  # fmt: skip
        else:
            section = "redis" if store.kind == "redis" else "memcached"
            text += f"\n[{section}]\nhost = {store.host}\nport = {store.port}\n"
    ups = topo.upstreams(svc.name)
    if ups:
        text += "\n[upstreams]\n" + "".join(f"{u.name} = http://{u.host}:{u.port}\n" for u in ups)
    return text + f"\n[log]\npath = {svc.log}\n"


def _http(svc: topo.Service, code: str) -> list[FileSpec]:
    command = (f"/usr/bin/python3 {topo.current_link(svc.name)}/shop.py --service {svc.name} "
               f"--config {svc.config}")  # fmt: skip
    release = re.sub(r'(?m)^VERSION = ".*"$', f'VERSION = "{topo.SHOP_VERSION}"', code)
    return [
        FileSpec(svc.config, shop_ini(svc), mode=0o640, group=topo.SHOP_USER,
                 programs=(svc.program,)),
        FileSpec(f"{topo.release_dir(svc.name)}/shop.py", release, mode=0o755,
                 programs=(svc.program,)),
        _program(svc, Program(command, user=topo.SHOP_USER, directory=topo.deploy_dir(svc.name))),
    ]  # fmt: skip


def _redis_pidfile(svc: topo.Service) -> str:
    return "redis-server" if svc.program == "redis" else svc.program


def _redis(svc: topo.Service) -> list[FileSpec]:
    conf = REDIS_CONF.format(host=svc.host, manager=svc.manager, address=svc.address,
                             port=svc.port, pidfile=_redis_pidfile(svc), log=svc.log,
                             data=svc.data)  # fmt: skip
    prog = Program(f"/usr/bin/redis-server {svc.config}", user="redis", directory=svc.data)
    return [FileSpec(svc.config, conf, mode=0o640, group="redis", programs=(svc.program,)),
            _program(svc, prog)]  # fmt: skip


def pg_conf_dir(svc: topo.Service) -> str:
    return svc.config.rsplit("/", 1)[0]


def _pg_version(svc: topo.Service) -> str:
    return svc.version or topo.PG_VERSION


def _postgresql(svc: topo.Service) -> list[FileSpec]:
    conf_dir, version = pg_conf_dir(svc), _pg_version(svc)
    db = topo.pg_database(svc)
    conf = PG_CONF.format(version=version, host=svc.host, manager=svc.manager, data=svc.data,
                          conf_dir=conf_dir, address=svc.address, port=svc.port,
                          max_connections=svc.max_connections
                          or topo.PG_MAX_CONNECTIONS)  # fmt: skip
    hba = PG_HBA.format(db=db["name"], user=db["user"], subnet=topo.SYSTEM.subnet)
    prog = Program(f"/usr/lib/postgresql/{version}/bin/postgres -c config_file={svc.config}",
                   user="postgres", directory="/var/lib/postgresql", stopsignal="INT")  # fmt: skip
    pg, restart = "postgres", (svc.program,)
    return [
        FileSpec(svc.config, conf, owner=pg, group=pg, programs=restart),
        FileSpec(f"{conf_dir}/pg_hba.conf", hba, mode=0o640, owner=pg, group=pg, programs=restart),
        FileSpec(f"{conf_dir}/pg_ident.conf", "", mode=0o640, owner=pg, group=pg),
        _program(svc, prog),
    ]


MEMCACHED_WRAPPER = "/usr/share/memcached/scripts/systemd-memcached-wrapper"


def _memcached(svc: topo.Service) -> list[FileSpec]:
    conf = MEMCACHED_CONF.format(name=svc.name, host=svc.host, manager=svc.manager,
                                 port=svc.port, address=svc.address)  # fmt: skip
    # The wrapper runs as root and drops to `-u memcache`.
    prog = Program(f"{MEMCACHED_WRAPPER} {svc.config}", user="root", directory="/")
    return [FileSpec(svc.config, conf, programs=(svc.program,)), _program(svc, prog)]


def desired_files(lab: Lab | None) -> dict[str, list[FileSpec]]:
    """Every host's configs, programs (or units) and code, from the active system."""
    code = SHOP_SOURCE.read_text()
    out: dict[str, list[FileSpec]] = {h: [] for h in topo.HOST_ADDRESSES}
    for svc in topo.SERVICES.values():
        if svc.kind == "nginx":
            out[svc.host] += _nginx(svc)
        elif svc.kind == "http":
            out[svc.host] += _http(svc, code)
        elif svc.kind == "redis":
            out[svc.host] += _redis(svc)
        elif svc.kind == "postgresql":
            out[svc.host] += _postgresql(svc)
        elif svc.kind == "memcached":
            out[svc.host] += _memcached(svc)
        else:
            raise ValueError(f"no provisioning for kind {svc.kind!r} ({svc.name})")
    return out


def documented_config(service: str) -> FileSpec:
    """The baseline of a service's main config file (`Service.config`), as provisioned."""
    path = topo.service(service).config
    for spec in desired_files(None).get(topo.service(service).host, []):
        if spec.path == path:
            return spec
    raise ValueError(f"no documented config for {service}")


# -- the machine side ------------------------------------------------------------------------


def _ensure_shop_user() -> None:
    try:
        pwd.getpwnam(topo.SHOP_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             topo.SHOP_USER],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip


def _ids(owner: str, group: str) -> tuple[int, int]:
    return pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid


def _write_if_changed(root: Path, spec: FileSpec) -> bool:
    path = root / spec.path.lstrip("/")
    uid, gid = _ids(spec.owner, spec.group)
    changed = False
    if path.is_symlink() or (path.exists() and not path.is_file()):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    try:
        same = path.read_text() == spec.content
    except (FileNotFoundError, UnicodeDecodeError, PermissionError):
        same = False
    if not same:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.remed-new")
        tmp.write_text(spec.content)
        os.chown(tmp, uid, gid)
        os.chmod(tmp, spec.mode)
        tmp.replace(path)
        changed = True
    st = path.stat()
    if (st.st_mode & 0o7777) != spec.mode or st.st_uid != uid or st.st_gid != gid:
        os.chown(path, uid, gid)
        os.chmod(path, spec.mode)
        changed = True
    return changed


def _ensure_release_links(root: Path, host: str) -> list[str]:
    """`current` → the baseline release for each http service on `host`; other releases
    removed. Returns the programs whose link changed."""
    changed: list[str] = []
    for svc in topo.on_host(host):
        if svc.kind != "http":
            continue
        link = root / topo.current_link(svc.name).lstrip("/")
        want = f"releases/{topo.SHOP_VERSION}"
        if not link.is_symlink() or os.readlink(link) != want:
            if link.is_dir() and not link.is_symlink():
                shutil.rmtree(link)
            else:
                link.unlink(missing_ok=True)
            link.symlink_to(want)
            changed.append(svc.program)
        releases = link.parent / "releases"
        for other in releases.iterdir():
            if other.name != topo.SHOP_VERSION:
                shutil.rmtree(other) if other.is_dir() else other.unlink()
    return changed


def _san() -> str:
    front = topo.front_end()
    return f"subjectAltName=DNS:{front.host},DNS:{topo.SYSTEM.name},IP:{front.address}"


def _tls_dir(lab: Lab) -> Path:
    """Where the machine keeps the active system's certificates (the shop's: tls/)."""
    base = lab.chaos_dir / "tls"
    return base if topo.SYSTEM.name == "shop" else base / topo.SYSTEM.name


EXPIRED_CA_CONF = """\
[ca]
default_ca = lab
[lab]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}
serial = {dir}/serial
default_md = sha256
policy = anything
copy_extensions = copy
[anything]
commonName = supplied
"""


def golden_certificate(lab: Lab) -> tuple[str, str]:
    """nginx's long-lived self-signed certificate and key, generated once per machine."""
    golden = _tls_dir(lab)
    crt, key = golden / "shop.crt", golden / "shop.key"
    if not crt.exists() or not key.exists():
        golden.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
             "-subj", f"/CN={topo.front_end().host}", "-addext", _san(),
             "-keyout", str(key), "-out", str(crt)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    return crt.read_text(), key.read_text()


def expired_certificate(lab: Lab) -> tuple[str, str]:
    """A self-signed certificate for the front end that expired in 2024 (the tls-cert fault)."""
    work = _tls_dir(lab) / "expired"
    crt, key = work / "shop.crt", work / "shop.key"
    if not crt.exists() or not key.exists():
        work.mkdir(parents=True, exist_ok=True)
        (work / "index.txt").write_text("")
        (work / "serial").write_text("1000\n")
        (work / "ca.conf").write_text(EXPIRED_CA_CONF.format(dir=work))
        run = functools.partial(subprocess.run, check=True, capture_output=True, timeout=60)
        run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes",
             "-subj", f"/CN={topo.front_end().host}", "-addext", _san(),
             "-keyout", str(key), "-out", str(work / "shop.csr")])
        run(["openssl", "ca", "-batch", "-selfsign", "-config", str(work / "ca.conf"),
             "-keyfile", str(key), "-in", str(work / "shop.csr"), "-out", str(crt),
             "-startdate", "20240101000000Z", "-enddate", "20240401000000Z", "-notext"])
    return crt.read_text(), key.read_text()


def _tls_files(lab: Lab) -> dict[str, list[FileSpec]]:
    """The certificate and key of every nginx with TLS, per host."""
    out: dict[str, list[FileSpec]] = {}
    for svc in topo.SERVICES.values():
        tls = dict(svc.tls)
        if svc.kind != "nginx" or not tls:
            continue
        crt, key = golden_certificate(lab)
        out.setdefault(svc.host, []).extend([
            FileSpec(tls["cert"], crt, programs=(svc.program,)),
            FileSpec(tls["key"], key, mode=0o600, programs=(svc.program,)),
        ])  # fmt: skip
    return out


# -- the host side (one SSH session per host) ------------------------------------------------

CLEAN_CHAOS = f"""\
for t in $(nft list tables 2>/dev/null | awk '$3 ~ /^chaos_/ {{print $2" "$3}}' | tr ' ' ':'); do
  nft delete table ${{t%%:*}} ${{t#*:}}
done
pkill -KILL -f '{CHAOS_RUN_DIR}/' || true
pkill -KILL -f 'stress-ng' || true
# whatever a fault started, under any name a variant gave it (chaos/faults/base.py CHAOS_ENV)
grep -lzx '{CHAOS_ENV}=.*' /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | xargs -r kill -KILL \
  2>/dev/null || true
rm -rf {CHAOS_RUN_DIR}/*.pid
"""


def clean_leftovers(lab: Lab, host: str) -> str:
    """Shell lines removing what variant faults recorded for `host` (files, nftables tables)."""
    import shlex

    lines = []
    for kind, value in lab.leftovers(host):
        if kind == "file" and value.startswith("/") and ".." not in value:
            lines.append(f"rm -rf -- {shlex.quote(value)}")
        elif kind == "nft" and len(value.split()) == 2:
            family, table = value.split()
            lines.append(f"nft delete table {shlex.quote(family)} {shlex.quote(table)} "
                         "2>/dev/null || true")  # fmt: skip
    return "".join(f"{line}\n" for line in lines)

def host_script(host: str) -> str:
    """Runtime directories, tmpfs mounts and store initialisation of `host`'s services."""
    import shlex

    q = shlex.quote
    services = topo.on_host(host)
    lines = ["mkdir -p /var/log/supervisor"]
    user = topo.SHOP_USER
    for mount, size in topo.tmpfs_of(host).items():
        keep = sorted({p.rsplit("/", 1)[1] for s in services for p in (s.log, s.data)
                       if p.rsplit("/", 1)[0] == mount})  # fmt: skip
        lines += [
            f"mkdir -p {q(mount)}",
            f"mountpoint -q {q(mount)} || mount -t tmpfs -o size={size},mode=0755 tmpfs {q(mount)}",
            f"find {q(mount)} -mindepth 1 -maxdepth 1 "
            + "".join(f"! -name {q(k)} " for k in keep) + "-exec rm -rf {} +",
            # a size changed in the system file applies without a reboot
            f"mount -o remount,size={size} {q(mount)} || true",
        ]
    for svc in services:
        log_dir = svc.log.rsplit("/", 1)[0]
        lines.append(f"mkdir -p {q(log_dir)}")
        if svc.kind == "http":
            lines += [
                f"mkdir -p {q(svc.data)}; touch {q(svc.log)}",
                f"[ \"$(stat -c %s {q(svc.log)})\" -lt 4000000 ] || : > {q(svc.log)}",
                f"chown {user}:{user} {q(svc.log)}; chown -R {user}:{user} {q(svc.data)}",
            ]
        elif svc.kind == "redis":
            conf_dir = svc.config.rsplit("/", 1)[0]
            lines += [
                f"mkdir -p /run/redis {q(svc.data)}",
                f"chown redis:redis {q(log_dir)} /run/redis {q(svc.data)} {q(conf_dir)}",
                f"chmod 2775 {q(conf_dir)}",
            ]
        elif svc.kind == "postgresql":
            data, version = q(svc.data), _pg_version(svc)
            lines += [
                f"mkdir -p /run/postgresql; chown postgres:postgres {q(log_dir)} /run/postgresql",
                "chmod 2775 /run/postgresql",
                f"if [ ! -s {data}/PG_VERSION ]; then",
                f"  install -d -o postgres -g postgres -m 0700 {data}",
                f"  sudo -u postgres /usr/lib/postgresql/{version}/bin/initdb -D {data} -E UTF8 "
                "--auth-local=peer --auth-host=scram-sha-256 --no-instructions >/dev/null",
                "fi",
                f"chown -R postgres:postgres {q(_pg_root(svc))}",
                f"chmod 0700 {data}",
            ]
    for mount in topo.tmpfs_of(host):
        lines.append(f"chown {user}:{user} {q(mount)}; chmod 0755 {q(mount)}")
    return "\n".join(lines) + "\n"


def _pg_root(svc: topo.Service) -> str:
    """The directory above a PostgreSQL data directory that postgres owns (its own_dir)."""
    from chaos.system import own_dir

    return own_dir(svc.data)


SUPERVISE = """\
[ -z "{update}" ] || {{ supervisorctl reread >/dev/null; supervisorctl update >/dev/null; }}
[ -z "{restart}" ] || supervisorctl restart {restart} >/dev/null || true
down=$(supervisorctl status {programs} | awk '$2 != "RUNNING" {{print $1}}')
[ -z "$down" ] || supervisorctl start $down >/dev/null || true
"""

SUPERVISE_SYSTEMD = """\
[ -z "{update}" ] || {{ systemctl daemon-reload; systemctl enable --quiet {programs}; }}
[ -z "{restart}" ] || systemctl restart {restart} || true
for u in {programs}; do
  systemctl is-active -q $u || {{ systemctl reset-failed $u 2>/dev/null; systemctl start $u; }} \\
    || true
done
"""


def supervise(host: str, *, update: bool, restart: set[str]) -> str:
    """Make the host's manager run exactly its services, restarting `restart` (programs)."""
    services = topo.on_host(host)
    if not services:
        return ""
    if services[0].manager == "systemd":
        by_program = {s.program: manager.unit(s) for s in services}
        return SUPERVISE_SYSTEMD.format(
            update="yes" if update else "",
            restart=" ".join(by_program.get(p, p) for p in sorted(restart)),
            programs=" ".join(by_program.values()),
        )
    return SUPERVISE.format(
        update="yes" if update else "", restart=" ".join(sorted(restart)),
        programs=" ".join(s.program for s in services),
    )  # fmt: skip


def db_bootstrap(svc: topo.Service, *, if_missing: bool) -> str:
    """The database, role and tables of a PostgreSQL service (created when missing; with
    `if_missing` false their tables are re-asserted too)."""
    db = topo.pg_database(svc)
    psql = f"sudo -u postgres psql -q -v ON_ERROR_STOP=1 -h /run/postgresql -p {svc.port}"
    items = ", ".join(f"({i}, '{n}', {p})" for i, n, p in topo.ITEMS)
    bootstrap = f"""\
{psql} <<'SQL' >/dev/null
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{db["user"]}') THEN
    CREATE ROLE {db["user"]} LOGIN PASSWORD '{db["password"]}';
  END IF;
END $$;
SELECT 'CREATE DATABASE {db["name"]} OWNER {db["user"]}'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{db["name"]}') \\gexec
SQL
{psql} -d {db["name"]} <<'SQL' >/dev/null
SET ROLE {db["user"]};
CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, name text NOT NULL,
                                  price_cents int NOT NULL);
CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, username text NOT NULL,
  item_id int NOT NULL REFERENCES items(id), total_cents int NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS requests (id serial PRIMARY KEY, service text NOT NULL,
  username text NOT NULL, item int NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO items VALUES {items}
  ON CONFLICT (id) DO NOTHING;
DELETE FROM orders WHERE created_at < now() - interval '1 hour';
DELETE FROM requests WHERE created_at < now() - interval '1 hour';
SQL
"""
    wait = f"""\
for i in $(seq 1 100); do
  pg_isready -q -h /run/postgresql -p {svc.port} && break; sleep 0.1
done
"""
    if not if_missing:
        return wait + bootstrap
    return wait + f"""\
if ! sudo -u postgres psql -Atq -h /run/postgresql -p {svc.port} -d {db["name"]} \\
     -c "SELECT 1 FROM requests LIMIT 1" >/dev/null 2>&1; then
{bootstrap}
fi
"""


def _host_order() -> list[str]:
    """Hosts with stores first, then the http services', then the front end's."""
    rank = {"redis": 0, "postgresql": 0, "memcached": 0, "http": 1, "nginx": 2}
    hosts = list(topo.HOST_ADDRESSES)
    return sorted(hosts, key=lambda h: min((rank[s.kind] for s in topo.on_host(h)), default=3))


def ensure(
    lab: Lab | None = None, *, bootstrap_db: bool = True, wait: bool = True
) -> ProvisionReport:
    """Bring the active system to its baseline; restart only what changed. Idempotent."""
    from chaos.lab import probes

    lab = lab or Lab.from_paths()
    started = time.monotonic()
    report = ProvisionReport()
    _ensure_shop_user()
    files = desired_files(lab)
    for host, specs in _tls_files(lab).items():
        files[host] += specs
    for host in _host_order():
        root = lab.host_root(host)
        restart: set[str] = set()
        for spec in files[host]:
            if _write_if_changed(root, spec):
                report.changed_files.append(f"{host}:{spec.path}")
                restart.update(spec.programs)
        restart.update(_ensure_release_links(root, host))
        # Other programs in conf.d (other people's tests share the lab) are left alone.
        update = any(c.startswith((f"{host}:/etc/supervisor", f"{host}:/etc/systemd"))
                     for c in report.changed_files)  # fmt: skip
        leftovers = bool(lab.leftovers(host))
        script = (CLEAN_CHAOS + clean_leftovers(lab, host) + host_script(host)
                  + supervise(host, update=update, restart=restart))  # fmt: skip
        # A PostgreSQL's role and database are created when missing (a fresh cluster), and on
        # a full provision their tables are re-asserted.
        for svc in topo.on_host(host):
            if svc.kind == "postgresql":
                script += db_bootstrap(svc, if_missing=not bootstrap_db)
        lab.sh(host, script, timeout_s=90)
        if leftovers:
            lab.forget_leftovers(host)
        report.restarted += sorted(restart)
    if wait:
        probes.wait_healthy(timeout_s=HEALTHY_TIMEOUT_S)
    report.duration_s = time.monotonic() - started
    return report
