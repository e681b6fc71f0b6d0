"""Provision the shop on running lab hosts, idempotently; the same call resets it between cases.

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
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from chaos.faults.base import CHAOS_ENV
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

NGINX_CONF = """\
# nginx main config (chaos lab, host web); the shop's site is sites-enabled/shop.conf
user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log warn;
events { worker_connections 512; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /var/log/nginx/access.log;
    keepalive_timeout 30;
    include /etc/nginx/sites-enabled/*.conf;
}
"""

NGINX_SITE = """\
# The shop's front end: /api/<service>/... is proxied to that service on host app.
upstream catalog  { server app:8081; }
upstream cart     { server app:8082; }
upstream checkout { server app:8083; }

server {
    listen 80 default_server;
    listen 443 ssl default_server;
    server_name shop web;
    ssl_certificate     /etc/ssl/shop/shop.crt;
    ssl_certificate_key /etc/ssl/shop/shop.key;

    proxy_connect_timeout 2s;
    proxy_read_timeout 5s;

    location = /health { default_type text/plain; return 200 "ok\\n"; }
    location /api/catalog/  { proxy_pass http://catalog/; }
    location /api/cart/     { proxy_pass http://cart/; }
    location /api/checkout/ { proxy_pass http://checkout/; }
}
"""

SHOP_INI = """\
# shop service {name} (chaos lab, host app); restart: sudo supervisorctl restart {name}
[service]
name = {name}
listen = 0.0.0.0
port = {port}

[postgres]
host = db
port = 5432
user = {db_user}
password = {db_password}
dbname = {db_name}

[redis]
host = db
port = 6379

[upstreams]
catalog = http://app:8081
cart = http://app:8082

[log]
path = /var/log/shop/{name}.log
"""

REDIS_CONF = """\
# redis (chaos lab, host db); run by supervisord as user redis
bind 10.231.77.13 127.0.0.1
port 6379
protected-mode no
daemonize no
pidfile /run/redis/redis-server.pid
logfile /var/log/redis/redis-server.log
dir /var/lib/redis
save ""
appendonly no
maxmemory 64mb
maxclients 256
"""

PG_CONF = f"""\
# PostgreSQL {topo.PG_VERSION} (chaos lab, host db); run by supervisord as user postgres
data_directory = '/var/lib/postgresql/{topo.PG_VERSION}/main'
hba_file = '/etc/postgresql/{topo.PG_VERSION}/main/pg_hba.conf'
ident_file = '/etc/postgresql/{topo.PG_VERSION}/main/pg_ident.conf'
listen_addresses = '10.231.77.13,127.0.0.1'
port = 5432
max_connections = {topo.PG_MAX_CONNECTIONS}
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
host    shop      shop      10.231.77.0/24   scram-sha-256
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


def _program(
    name: str, command: str, *, user: str, directory: str = "/", stopsignal: str = "TERM",
    stdout: str | None = None,
) -> str:  # fmt: skip
    return PROGRAM.format(
        name=name, command=command, user=user, directory=directory, stopsignal=stopsignal,
        stdout=stdout or f"/var/log/supervisor/{name}.log",
    )  # fmt: skip


def desired_files(lab: Lab | None) -> dict[str, list[FileSpec]]:
    shop_code = SHOP_SOURCE.read_text()
    web = [
        FileSpec("/etc/nginx/nginx.conf", NGINX_CONF, programs=("nginx",)),
        FileSpec(topo.SERVICES["nginx"].config, NGINX_SITE, programs=("nginx",)),
        FileSpec(
            "/etc/supervisor/conf.d/nginx.conf",
            _program("nginx", "/usr/sbin/nginx -g 'daemon off;'", user="root", stopsignal="QUIT"),
        ),
    ]
    app: list[FileSpec] = []
    for name in ("catalog", "cart", "checkout"):
        svc = topo.SERVICES[name]
        ini = SHOP_INI.format(
            name=name, port=svc.port, db_user=topo.DB_USER, db_password=topo.DB_PASSWORD,
            db_name=topo.DB_NAME,
        )  # fmt: skip
        command = (
            f"/usr/bin/python3 {topo.current_link(name)}/shop.py --service {name} "
            f"--config {svc.config}"
        )
        app += [
            FileSpec(svc.config, ini, mode=0o640, group=topo.SHOP_USER, programs=(name,)),
            FileSpec(
                f"{topo.release_dir(name)}/shop.py", shop_code, mode=0o755, programs=(name,)
            ),
            FileSpec(
                f"/etc/supervisor/conf.d/{name}.conf",
                _program(name, command, user=topo.SHOP_USER, directory=f"/srv/shop/{name}"),
            ),
        ]
    pg_dir = f"/etc/postgresql/{topo.PG_VERSION}/main"
    pg_bin = f"/usr/lib/postgresql/{topo.PG_VERSION}/bin/postgres"
    db = [
        FileSpec(topo.SERVICES["redis"].config, REDIS_CONF, mode=0o640, group="redis",
                 programs=("redis",)),
        FileSpec(f"{pg_dir}/postgresql.conf", PG_CONF, owner="postgres", group="postgres",
                 programs=("postgresql",)),
        FileSpec(f"{pg_dir}/pg_hba.conf", PG_HBA, mode=0o640, owner="postgres",
                 group="postgres", programs=("postgresql",)),
        FileSpec(f"{pg_dir}/pg_ident.conf", "", mode=0o640, owner="postgres", group="postgres"),
        FileSpec(
            "/etc/supervisor/conf.d/redis.conf",
            _program("redis", f"/usr/bin/redis-server {topo.SERVICES['redis'].config}",
                     user="redis", directory="/var/lib/redis"),
        ),
        FileSpec(
            "/etc/supervisor/conf.d/postgresql.conf",
            _program("postgresql", f"{pg_bin} -c config_file={pg_dir}/postgresql.conf",
                     user="postgres", directory="/var/lib/postgresql", stopsignal="INT",
                     stdout=topo.SERVICES["postgresql"].log),
        ),
    ]  # fmt: skip
    return {"db": db, "app": app, "web": web}


def documented_config(service: str) -> FileSpec:
    """The baseline of a service's main config file (`Service.config`), as provisioned."""
    path = topo.service(service).config
    for specs in desired_files(None).values():
        for spec in specs:
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


def _ensure_release_links(root: Path) -> list[str]:
    """`current` → the baseline release for each shop service; other releases removed."""
    changed: list[str] = []
    for name in ("catalog", "cart", "checkout"):
        link = root / topo.current_link(name).lstrip("/")
        want = f"releases/{topo.SHOP_VERSION}"
        if not link.is_symlink() or os.readlink(link) != want:
            if link.is_dir() and not link.is_symlink():
                shutil.rmtree(link)
            else:
                link.unlink(missing_ok=True)
            link.symlink_to(want)
            changed.append(name)
        releases = link.parent / "releases"
        for other in releases.iterdir():
            if other.name != topo.SHOP_VERSION:
                shutil.rmtree(other) if other.is_dir() else other.unlink()
    return changed


SAN = "subjectAltName=DNS:web,DNS:shop,IP:10.231.77.11"
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
    golden = lab.chaos_dir / "tls"
    crt, key = golden / "shop.crt", golden / "shop.key"
    if not crt.exists() or not key.exists():
        golden.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
             "-subj", "/CN=web", "-addext", SAN, "-keyout", str(key), "-out", str(crt)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    return crt.read_text(), key.read_text()


def expired_certificate(lab: Lab) -> tuple[str, str]:
    """A self-signed certificate for web that expired in 2024 (for the tls-cert fault)."""
    work = lab.chaos_dir / "tls" / "expired"
    crt, key = work / "shop.crt", work / "shop.key"
    if not crt.exists() or not key.exists():
        work.mkdir(parents=True, exist_ok=True)
        (work / "index.txt").write_text("")
        (work / "serial").write_text("1000\n")
        (work / "ca.conf").write_text(EXPIRED_CA_CONF.format(dir=work))
        run = functools.partial(subprocess.run, check=True, capture_output=True, timeout=60)
        run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=web",
             "-addext", SAN, "-keyout", str(key), "-out", str(work / "shop.csr")])
        run(["openssl", "ca", "-batch", "-selfsign", "-config", str(work / "ca.conf"),
             "-keyfile", str(key), "-in", str(work / "shop.csr"), "-out", str(crt),
             "-startdate", "20240101000000Z", "-enddate", "20240401000000Z", "-notext"])
    return crt.read_text(), key.read_text()


def _tls_files(lab: Lab) -> list[FileSpec]:
    crt, key = golden_certificate(lab)
    return [
        FileSpec(topo.TLS_CERT, crt, programs=("nginx",)),
        FileSpec(topo.TLS_KEY, key, mode=0o600, programs=("nginx",)),
    ]


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

HOST_SCRIPT = {
    "web": """\
mkdir -p /var/log/nginx /var/log/supervisor
""",
    "app": f"""\
mkdir -p /var/log/shop /var/lib/shop /var/log/supervisor
mountpoint -q /var/log/shop || mount -t tmpfs -o size={topo.LOG_TMPFS_SIZE},mode=0755 \
  tmpfs /var/log/shop
mountpoint -q /var/lib/shop || mount -t tmpfs -o size={topo.DATA_TMPFS_SIZE},mode=0755 \
  tmpfs /var/lib/shop
find /var/log/shop /var/lib/shop -mindepth 1 -maxdepth 1 \
  ! -name catalog.log ! -name cart.log ! -name checkout.log \
  ! -name catalog ! -name cart ! -name checkout -exec rm -rf {{}} +
for s in catalog cart checkout; do
  mkdir -p /var/lib/shop/$s; touch /var/log/shop/$s.log
  [ "$(stat -c %s /var/log/shop/$s.log)" -lt 4000000 ] || : > /var/log/shop/$s.log
done
chown -R {topo.SHOP_USER}:{topo.SHOP_USER} /var/log/shop /var/lib/shop
chmod 0755 /var/log/shop /var/lib/shop
""",
    "db": f"""\
mkdir -p /var/log/redis /var/log/postgresql /var/log/supervisor /run/redis /run/postgresql
chown redis:redis /var/log/redis /run/redis /var/lib/redis /etc/redis
chmod 2775 /etc/redis
chown postgres:postgres /var/log/postgresql /run/postgresql /var/lib/postgresql
chmod 2775 /run/postgresql
data=/var/lib/postgresql/{topo.PG_VERSION}/main
if [ ! -s $data/PG_VERSION ]; then
  install -d -o postgres -g postgres -m 0700 $data
  sudo -u postgres /usr/lib/postgresql/{topo.PG_VERSION}/bin/initdb -D $data -E UTF8 \
    --auth-local=peer --auth-host=scram-sha-256 --no-instructions >/dev/null
fi
chown -R postgres:postgres /var/lib/postgresql
chmod 0700 $data
""",
}

SUPERVISE = """\
[ -z "{update}" ] || {{ supervisorctl reread >/dev/null; supervisorctl update >/dev/null; }}
[ -z "{restart}" ] || supervisorctl restart {restart} >/dev/null || true
down=$(supervisorctl status {programs} | awk '$2 != "RUNNING" {{print $1}}')
[ -z "$down" ] || supervisorctl start $down >/dev/null || true
"""

DB_BOOTSTRAP = f"""\
for i in $(seq 1 100); do
  pg_isready -q -h /run/postgresql && break; sleep 0.1
done
sudo -u postgres psql -q -v ON_ERROR_STOP=1 -h /run/postgresql <<'SQL' >/dev/null
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{topo.DB_USER}') THEN
    CREATE ROLE {topo.DB_USER} LOGIN PASSWORD '{topo.DB_PASSWORD}';
  END IF;
END $$;
SELECT 'CREATE DATABASE {topo.DB_NAME} OWNER {topo.DB_USER}'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{topo.DB_NAME}') \\gexec
SQL
sudo -u postgres psql -q -v ON_ERROR_STOP=1 -h /run/postgresql -d {topo.DB_NAME} <<'SQL' >/dev/null
SET ROLE {topo.DB_USER};
CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, name text NOT NULL,
                                  price_cents int NOT NULL);
CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, username text NOT NULL,
  item_id int NOT NULL REFERENCES items(id), total_cents int NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO items VALUES {", ".join(f"({i}, '{n}', {p})" for i, n, p in topo.ITEMS)}
  ON CONFLICT (id) DO NOTHING;
DELETE FROM orders WHERE created_at < now() - interval '1 hour';
SQL
"""

DB_BOOTSTRAP_IF_MISSING = f"""\
for i in $(seq 1 100); do
  pg_isready -q -h /run/postgresql && break; sleep 0.1
done
if ! sudo -u postgres psql -Atq -h /run/postgresql -d {topo.DB_NAME} \\
     -c "SELECT 1 FROM items LIMIT 1" >/dev/null 2>&1; then
{DB_BOOTSTRAP}
fi
"""

HOST_PROGRAMS = {
    "web": ("nginx",),
    "app": ("catalog", "cart", "checkout"),
    "db": ("redis", "postgresql"),
}


def ensure(
    lab: Lab | None = None, *, bootstrap_db: bool = True, wait: bool = True
) -> ProvisionReport:
    """Bring the shop to its baseline; restart only what changed. Idempotent."""
    from chaos.lab import probes

    lab = lab or Lab.from_paths()
    started = time.monotonic()
    report = ProvisionReport()
    _ensure_shop_user()
    files = desired_files(lab)
    files["web"] += _tls_files(lab)
    for host in ("db", "app", "web"):
        root = lab.host_root(host)
        restart: set[str] = set()
        for spec in files[host]:
            if _write_if_changed(root, spec):
                report.changed_files.append(f"{host}:{spec.path}")
                restart.update(spec.programs)
        if host == "app":
            restart.update(_ensure_release_links(root))
        # Other programs in conf.d (other people's tests share the lab) are left alone.
        update = any(c.startswith(f"{host}:/etc/supervisor") for c in report.changed_files)
        leftovers = bool(lab.leftovers(host))
        script = CLEAN_CHAOS + clean_leftovers(lab, host) + HOST_SCRIPT[host] + SUPERVISE.format(
            update="yes" if update else "",
            restart=" ".join(sorted(restart)),
            programs=" ".join(HOST_PROGRAMS[host]),
        )
        if host == "db":
            # The shop's role and database are created when missing (a fresh cluster), and on
            # a full provision their tables are re-asserted.
            script += DB_BOOTSTRAP if bootstrap_db else DB_BOOTSTRAP_IF_MISSING
        lab.sh(host, script, timeout_s=90)
        if leftovers:
            lab.forget_leftovers(host)
        report.restarted += sorted(restart)
    if wait:
        probes.wait_healthy(timeout_s=HEALTHY_TIMEOUT_S)
    report.duration_s = time.monotonic() - started
    return report
