"""SSH lab hosts: network namespaces that feel like hosts (ARCHITECTURE.md, "Lab hosts").

Each host is a network namespace (`remed-<host>`) on the private /24 behind the bridge
`remedbr0`, with its own PID, mount and UTS namespaces (`unshare`), its own copies of the
standard service paths bind-mounted from `.run/lab/hosts/<host>/root/`, and supervisord as init
running that host's OpenSSH server (and, later, the chaos lab's services). A fault or a fix on
one host cannot touch another, and playbooks use ordinary paths, `sudo` and `supervisorctl`.

Reached as the automation user `remedops` (passwordless sudo, minimal shell profile) with a
generated key; every host key is recorded in `.run/lab/known_hosts` and checked strictly.

Nothing leaves the machine: the hosts' default route ends at the bridge address in the root
namespace, and an nftables table refuses to forward anything from or to the lab subnet, so the
lab stays closed even on a machine that has IP forwarding on.

Layout under `.run/lab/`:

    inventory.ini, known_hosts, ssh/id_ed25519   access material (status() names them)
    <host>.pid                                   the host's `unshare` (its init's parent)
    hosts/<host>/init.log                        the host's boot output
    hosts/<host>/root/...                        the host's own /etc/<service>, /var/log, /run...
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remed_stack import procs
from remed_stack.paths import StackPaths


@dataclass(frozen=True)
class LabHost:
    """One lab host: its stable name and address, and the kernel objects named after it."""

    name: str
    address: str
    # A lab system's own directories on this host (chaos/system.py host_dirs) beyond BIND_PATHS,
    # and the host's init (supervisord, or systemd when its services run under systemd).
    binds: tuple[str, ...] = ()
    init: str = "supervisord"

    @property
    def bind_paths(self) -> tuple[str, ...]:
        extra = SYSTEMD_BIND_PATHS if self.init == "systemd" else ()
        return (*BIND_PATHS, *extra, *self.binds)

    @property
    def netns(self) -> str:
        return f"remed-{self.name}"

    @property
    def veth(self) -> str:
        """The root-namespace end of the host's veth pair (names are limited to 15 bytes)."""
        return f"rl-{self.name}"[:15]

    @property
    def veth_peer(self) -> str:
        """The host's end before it moves into the namespace and is renamed eth0."""
        return f"rlp-{self.name}"[:15]


SUBNET = "10.231.77.0/24"
SUBNET_PREFIX = 24
BRIDGE = "remedbr0"
BRIDGE_ADDRESS = "10.231.77.1"
NFT_TABLE = "remed_lab"
# Stable: scenario files, chaos/README.md and the planner's prompts name these hosts.
HOSTS = (
    LabHost("web", "10.231.77.11"),
    LabHost("app", "10.231.77.12"),
    LabHost("db", "10.231.77.13"),
)
SYSTEM_ENV = "REMED_LAB_SYSTEM"  # a lab system file (chaos/system.py) whose hosts to add


def lab_hosts(recorded: tuple[str, ...] = ()) -> tuple[LabHost, ...]:
    """The dev stack's hosts (web, app, db) plus those of the system file named by
    `$REMED_LAB_SYSTEM` (`remed stack up --system FILE`) and of the `recorded` system files
    (those an earlier `up --system` brought up, so a later plain `up` keeps them in the
    inventory): each its own namespaces and address. A system host named like a dev stack
    host must have its address; its binds and init apply from the host's next boot."""
    paths = [*recorded]
    if os.environ.get(SYSTEM_ENV):
        paths.append(os.path.abspath(os.environ[SYSTEM_ENV]))
    if not paths:
        return HOSTS
    from chaos.system import SystemFileError, host_dirs, load

    hosts = {h.name: h for h in HOSTS}
    for path in dict.fromkeys(paths):
        try:
            system = load(path)
        except SystemFileError:
            if path in recorded and path != os.environ.get(SYSTEM_ENV):
                continue  # a system file since removed: its hosts are no longer wanted
            raise
        for spec in system.hosts.values():
            known = hosts.get(spec.name)
            if known is not None and known.address != spec.address:
                raise procs.StackError(
                    f"{path}: host {spec.name} is {known.address} in the dev stack, not "
                    f"{spec.address}: rename the host or use its address"
                )
            used = {h.address: h.name for h in hosts.values()}
            if known is None and spec.address in used:
                raise procs.StackError(
                    f"{path}: address {spec.address} of host {spec.name} is host "
                    f"{used[spec.address]}"
                )
            binds = tuple(d for d in host_dirs(system, spec.name) if not _covered(d))
            if known is not None:
                binds = tuple(dict.fromkeys((*known.binds, *binds)))
            hosts[spec.name] = LabHost(spec.name, spec.address, binds, spec.manager)
    return tuple(hosts.values())


def _covered(path: str) -> bool:
    """Whether `path` lies in a directory every lab host already has its own copy of."""
    return any(path == b or path.startswith(b + "/") for b in BIND_PATHS if b != "/etc/hosts")


SSH_USER = "remedops"
SSH_READY_TIMEOUT_S = 30.0
SSH_CONNECT_TIMEOUT_S = 3
COMMAND_TIMEOUT_S = 30.0
HOST_STOP_TIMEOUT_S = 10.0
NETNS_DRAIN_TIMEOUT_S = 5.0
LOCK_TIMEOUT_S = 120.0
BOOT_GRACE_S = 10.0  # a host this young whose sshd is not listening yet is booting, not broken
INIT_SCRIPT = Path(__file__).resolve().parent / "lab_init.sh"

# Paths each host has its own copy of, bind-mounted over the standard path inside the host.
# A later service adds its /etc/<service>, /var/lib/<service> here; /var/log is per host whole.
# Directories listed in SEEDED start as a copy of the machine's own (Debian's default configs),
# the rest start empty. /etc/hosts is the one file: it lists every lab host by name.
BIND_PATHS = (
    "/run",
    "/tmp",
    "/var/tmp",
    "/var/log",
    "/home",
    "/etc/hosts",
    "/etc/remed-lab",
    "/etc/supervisor",
    "/etc/nginx",
    "/etc/redis",
    "/etc/postgresql",
    "/etc/shop",
    "/etc/ssl/shop",
    "/var/lib/redis",
    "/var/lib/postgresql",
    "/var/lib/shop",
    "/srv",
)
SEEDED = ("/etc/nginx", "/etc/redis", "/etc/postgresql")
# A systemd host's own unit directory (only the lab's units enabled, see SYSTEMD_MASKED) and
# state directory.
SYSTEMD_BIND_PATHS = ("/etc/systemd/system", "/var/lib/systemd", "/etc/hostname")
# Units of a full boot that would act on the machine rather than the host (kernel settings,
# module loading, remounting the shared root, users in the shared /etc/passwd, tmpfiles on
# shared directories, a getty on the machine's console): masked on every systemd host.
SYSTEMD_MASKED = (
    "systemd-sysctl.service", "systemd-modules-load.service", "systemd-remount-fs.service",
    "systemd-sysusers.service", "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service", "systemd-tmpfiles-clean.timer",
    "console-getty.service", "getty.target", "systemd-journal-flush.service",
    "systemd-update-utmp.service", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount", "dev-hugepages.mount", "systemd-logind.service",
    "systemd-machine-id-commit.service", "systemd-firstboot.service", "ldconfig.service",
    "systemd-hwdb-update.service", "systemd-random-seed.service", "apt-daily.timer",
    "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer", "man-db.timer",
)  # fmt: skip
SYSTEMD_SSHD_UNIT = "remed-lab-sshd.service"
SYSTEMD_SSHD = """\
# The lab host's sshd (remed_stack/lab.py), the one unit a systemd lab host boots with.
[Unit]
Description=OpenSSH server of the remed lab host

[Service]
ExecStart=/usr/sbin/sshd -D -e -f /etc/remed-lab/sshd_config
RuntimeDirectory=sshd
RuntimeDirectoryPreserve=yes
Restart=always
RestartSec=1
StandardOutput=append:/var/log/sshd.log
StandardError=inherit

[Install]
WantedBy=multi-user.target
"""

SUPERVISORD_CONF = """\
; supervisord is this lab host's init: it runs sshd and the host's services.
; Services are added as /etc/supervisor/conf.d/<name>.conf; `sudo supervisorctl` finds this file.
[unix_http_server]
file=/run/supervisor.sock
chmod=0700

[supervisord]
logfile=/var/log/supervisor/supervisord.log
pidfile=/run/supervisord.pid
childlogdir=/var/log/supervisor
nodaemon=true
user=root

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix:///run/supervisor.sock

[program:sshd]
command=/usr/sbin/sshd -D -e -f /etc/remed-lab/sshd_config
autorestart=true
startsecs=1
stopwaitsecs=5
stdout_logfile=/var/log/sshd.log
redirect_stderr=true

[include]
files = /etc/supervisor/conf.d/*.conf
"""

SSHD_CONFIG = """\
# The lab host's sshd (remed_stack/lab.py): keys only, one automation user, no login noise.
ListenAddress {address}
Port 22
HostKey /etc/remed-lab/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile /etc/remed-lab/authorized_keys
AllowUsers {user}
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowAgentForwarding no
ClientAliveInterval 30
MaxStartups 100:30:200
MaxSessions 50
Subsystem sftp internal-sftp
LogLevel INFO
"""

# The automation user's whole shell profile: a predictable PATH and umask, nothing printed, so
# that Ansible and asyncssh see clean output.
PROFILE = """\
umask 022
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LANG=C.UTF-8
"""
BASHRC = "# remed lab: deliberately minimal\n[ -z \"$PS1\" ] && return\nPS1='\\u@\\h:\\w\\$ '\n"
SUDOERS = f"Defaults:{SSH_USER} !requiretty\n{SSH_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n"

# Forwarding is not needed (hosts reach each other over the bridge, the root namespace reaches
# them directly), so refuse it outright: a lab packet never leaves the machine, nor enters it.
NFT_RULES = f"""\
table inet {NFT_TABLE}
delete table inet {NFT_TABLE}
table inet {NFT_TABLE} {{
    chain forward {{
        type filter hook forward priority filter; policy accept;
        ip saddr {SUBNET} ip daddr != {SUBNET} drop
        ip daddr {SUBNET} ip saddr != {SUBNET} drop
    }}
}}
"""


def _run(
    *argv: str, check: bool = True, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, input=input_text, timeout=COMMAND_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        raise procs.StackError(f"{' '.join(argv)} hung for {COMMAND_TIMEOUT_S:.0f} s") from exc
    if check and result.returncode != 0:
        raise procs.StackError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def _ensure_keypair(path: Path, *, comment: str) -> None:
    """Generate an ed25519 key once; a half-written pair (a killed run) is made again."""
    if path.exists() and path.with_suffix(".pub").exists():
        return
    path.unlink(missing_ok=True)
    path.with_suffix(".pub").unlink(missing_ok=True)
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))


def _netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def _link(name: str) -> str | None:
    """`ip -o link show` of one interface, or None when there is none (asked of the kernel,
    not /sys, which shows the namespace it was mounted in)."""
    result = _run("ip", "-o", "link", "show", "dev", name, check=False)
    return result.stdout if result.returncode == 0 else None


class LabHosts:
    """The lab's hosts. `up()` is idempotent and recovers from a killed run's leftovers.

    `up()` and `down()` hold a lock under `.run/lab/`, so a second caller (a test fixture next
    to a developer's `remed stack up`) waits instead of restarting hosts that are still booting.
    """

    name = "lab"

    def __init__(self, paths: StackPaths) -> None:
        self.paths = paths
        self.dir = paths.component_dir(self.name)
        self.ssh_dir = self.dir / "ssh"
        self.key = self.ssh_dir / "id_ed25519"
        self.known_hosts = self.dir / "known_hosts"
        self.inventory = self.dir / "inventory.ini"
        self.systems_file = self.dir / "systems"

    # -- public -----------------------------------------------------------------------------

    def hosts(self) -> tuple[LabHost, ...]:
        """This stack's hosts: the dev stack's, and those of the recorded lab systems."""
        return lab_hosts(self._recorded_systems())

    def _recorded_systems(self) -> tuple[str, ...]:
        try:
            return tuple(p for p in self.systems_file.read_text().splitlines() if p.strip())
        except FileNotFoundError:
            return ()

    def _record_system(self) -> None:
        """Remember `$REMED_LAB_SYSTEM`, so later `up`/`status`/`down` keep its hosts."""
        path = os.environ.get(SYSTEM_ENV)
        if not path:
            return
        path = os.path.abspath(path)
        known = self._recorded_systems()
        if path not in known:
            _write_if_changed(self.systems_file, "".join(f"{p}\n" for p in (*known, path)))

    def up(self) -> None:
        """Start every host that is not healthy, then wait until an SSH login works on each.

        A healthy host is left running untouched; an unhealthy one (stale pid, closed port,
        leftovers of a killed run) is torn down completely and booted again.
        """
        if not Path("/usr/sbin/sshd").exists() or not Path("/usr/bin/supervisord").exists():
            raise procs.StackError("lab hosts need openssh-server and supervisor: run `make setup`")
        with self._locked():
            self.hosts()  # a broken system file fails here, before anything is recorded
            self._record_system()
            self._ensure_user_and_key()
            self._ensure_bridge()
            self._ensure_no_forwarding()
            started: dict[str, procs.TrackedProcess] = {}
            for host in self.hosts():
                self._attach(host)
                if self._host_ok(host) or self._finishes_booting(host):
                    self._refresh_etc_hosts(host)
                    continue
                self._stop_host(host)
                self._prepare_host_dir(host)
                self._create_netns(host)
                started[host.name] = self._start_host(host)
            self._write_known_hosts()
            self._write_inventory()
            for host in self.hosts():
                log = self._host_dir(host) / "root/var/log/sshd.log"
                procs.wait_until(
                    lambda h=host: self._ssh_login_works(h),  # type: ignore[misc]
                    what=f"lab host {host.name} (ssh {SSH_USER}@{host.address})",
                    timeout_s=SSH_READY_TIMEOUT_S,
                    proc=started.get(host.name) or procs.live_process(self._pidfile(host)),
                    logfile=log if log.exists() else self._host_dir(host) / "init.log",
                    interval_s=0.2,
                )

    def down(self) -> None:
        """Stop each host by its recorded pid, then remove namespaces, veths, bridge and rules.

        Host directories (host keys, configs, logs) stay, so known_hosts is stable across
        restarts and a failed run can still be read. With `$REMED_LAB_SYSTEM` (`remed stack
        down --system FILE`), only that system's own hosts stop (not the dev stack's, nor
        another system's) and the file is no longer recorded.
        """
        with self._locked():
            path = os.environ.get(SYSTEM_ENV)
            if path:
                self._down_system(os.path.abspath(path))
                return
            for host in self.hosts():
                self._stop_host(host)
            if _link(BRIDGE) is not None:
                _run("ip", "link", "del", BRIDGE, check=False)
            _run("nft", "delete", "table", "inet", NFT_TABLE, check=False)

    def _down_system(self, path: str) -> None:
        saved = os.environ.pop(SYSTEM_ENV)
        try:
            others = tuple(p for p in self._recorded_systems() if p != path)
            keep = {h.name for h in lab_hosts(others)}
            for host in lab_hosts((*others, path)):
                if host.name not in keep:
                    self._stop_host(host)
            _write_if_changed(self.systems_file, "".join(f"{p}\n" for p in others))
            self._write_known_hosts()
            self._write_inventory()
        finally:
            os.environ[SYSTEM_ENV] = saved

    def status(self) -> dict[str, Any]:
        """The lab's part of `remed stack status --json` (ARCHITECTURE.md contract)."""
        return {
            "hosts": [
                {"name": h.name, "address": h.address, "ok": self._host_ok(h)} for h in self.hosts()
            ],
            "inventory": str(self.inventory),
            "ssh_key": str(self.key),
            "ssh_user": SSH_USER,
            "known_hosts": str(self.known_hosts),
        }

    # -- per host ---------------------------------------------------------------------------

    def _host_dir(self, host: LabHost) -> Path:
        return self.dir / "hosts" / host.name

    def _pidfile(self, host: LabHost) -> Path:
        return self.dir / f"{host.name}.pid"

    def _host_ok(self, host: LabHost) -> bool:
        # The address exists only inside that host's namespace, so an open port 22 there is
        # that host's sshd; the pid check makes sure it is the init this lab started.
        return procs.live_process(self._pidfile(host)) is not None and procs.port_open(
            host.address, 22
        )

    def _finishes_booting(self, host: LabHost) -> bool:
        """Whether a host started moments ago (by a run killed before it saw it ready) opens
        port 22 within its boot grace. Stopping a host mid-boot would be slow as well as
        wasteful: a TERM that lands between supervisord's fork and sshd's exec is lost."""
        proc = procs.live_process(self._pidfile(host))
        if proc is None:
            return False
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
        age_s = uptime_s - proc.start_ticks / os.sysconf("SC_CLK_TCK")
        deadline = time.monotonic() + BOOT_GRACE_S - age_s
        while time.monotonic() < deadline and proc.alive():
            if procs.port_open(host.address, 22):
                return True
            time.sleep(0.1)
        return False

    def _attach(self, host: LabHost) -> None:
        """Re-attach a running host's veth to a bridge that was deleted and made again."""
        link = _link(host.veth)
        if link is not None and f" master {BRIDGE} " not in link:
            _run("ip", "link", "set", host.veth, "master", BRIDGE, check=False)
            _run("ip", "link", "set", host.veth, "up", check=False)

    def _prepare_host_dir(self, host: LabHost) -> None:
        root = self._host_dir(host) / "root"
        for path in host.bind_paths:
            if path in ("/etc/hosts", "/etc/hostname"):
                continue
            target = root / path.lstrip("/")
            if not target.exists() and path in SEEDED and Path(path).is_dir():
                shutil.copytree(path, target, symlinks=True)
            target.mkdir(parents=True, exist_ok=True)
            # The mount point itself must exist on the shared root file system.
            Path(path).mkdir(parents=True, exist_ok=True)
        # A boot starts with an empty /run, as on a real host: no stale sockets or pid files.
        for entry in (root / "run").iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        (root / "tmp").chmod(0o1777)
        (root / "var/tmp").chmod(0o1777)
        (root / "var/log/supervisor").mkdir(exist_ok=True)

        (root / "etc/supervisor/conf.d").mkdir(exist_ok=True)
        (root / "etc/supervisor/supervisord.conf").write_text(SUPERVISORD_CONF)
        (root / "etc/hosts").write_text(self._etc_hosts(host))
        if host.init == "systemd":  # systemd sets the hostname from /etc/hostname at boot
            (root / "etc/hostname").write_text(f"{host.name}\n")
            self._prepare_systemd(root)
        self._prepare_home(root)

        # sshd's StrictModes: the host key, authorized_keys and their directory root-owned and
        # not writable by group or others.
        etc = root / "etc/remed-lab"
        etc.chmod(0o755)
        _ensure_keypair(etc / "ssh_host_ed25519_key", comment=host.name)
        (etc / "sshd_config").write_text(SSHD_CONFIG.format(address=host.address, user=SSH_USER))
        authorized = etc / "authorized_keys"
        authorized.write_text(self.key.with_suffix(".pub").read_text())
        authorized.chmod(0o644)

    def _etc_hosts(self, host: LabHost) -> str:
        lines = ["127.0.0.1 localhost", f"127.0.1.1 {host.name}", "::1 localhost ip6-localhost"]
        lines += [f"{h.address} {h.name}" for h in self.hosts()]
        return "\n".join(lines) + "\n"

    def _refresh_etc_hosts(self, host: LabHost) -> None:
        """A running host learns the names of hosts added since it booted. Written in place:
        the host sees this file through a bind mount of its inode."""
        path = self._host_dir(host) / "root/etc/hosts"
        text = self._etc_hosts(host)
        with contextlib.suppress(OSError):
            if path.read_text() != text:
                with open(path, "r+") as fh:
                    fh.write(text)
                    fh.truncate()

    def _prepare_systemd(self, root: Path) -> None:
        """A systemd host's own /etc/systemd/system: multi-user.target as default, the lab's
        sshd as its one enabled unit, and SYSTEMD_MASKED masked."""
        units = root / "etc/systemd/system"
        wants = units / "multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        (units / SYSTEMD_SSHD_UNIT).write_text(SYSTEMD_SSHD)
        links = {units / "default.target": "/lib/systemd/system/multi-user.target",
                 wants / SYSTEMD_SSHD_UNIT: f"../{SYSTEMD_SSHD_UNIT}"}  # fmt: skip
        links |= {units / unit: "/dev/null" for unit in SYSTEMD_MASKED}
        for link, target in links.items():
            if not link.is_symlink() or os.readlink(link) != target:
                link.unlink(missing_ok=True)
                link.symlink_to(target)
        (root / "var/lib/systemd").mkdir(parents=True, exist_ok=True)

    def _prepare_home(self, root: Path) -> None:
        """The automation user's home on this host: its own, with the minimal profile."""
        user = pwd.getpwnam(SSH_USER)
        home = root / user.pw_dir.lstrip("/")
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, user.pw_uid, user.pw_gid)
        home.chmod(0o700)
        for name, text in ((".profile", PROFILE), (".bashrc", BASHRC), (".hushlogin", "")):
            (home / name).write_text(text)
            os.chown(home / name, user.pw_uid, user.pw_gid)
        (home / ".bash_logout").unlink(missing_ok=True)

    def _create_netns(self, host: LabHost) -> None:
        ns = host.netns
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", host.veth_peer)
        _run("ip", "link", "set", host.veth_peer, "netns", ns)
        _run("ip", "-n", ns, "link", "set", host.veth_peer, "name", "eth0")
        _run("ip", "-n", ns, "addr", "add", f"{host.address}/{SUBNET_PREFIX}", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "route", "add", "default", "via", BRIDGE_ADDRESS)
        _run("ip", "link", "set", host.veth, "master", BRIDGE)
        _run("ip", "link", "set", host.veth, "up")

    def _start_host(self, host: LabHost) -> procs.TrackedProcess:
        # --kill-child: should the recorded process die (even by SIGKILL), the host's init dies
        # with it, and with PID 1 gone the kernel ends everything in the host's PID namespace.
        return procs.spawn(
            [
                "ip", "netns", "exec", host.netns,
                "unshare", "--kill-child", "--pid", "--mount", "--uts", "--fork", "--mount-proc",
                "--propagation", "private",
                str(INIT_SCRIPT), host.name, str(self._host_dir(host)), *host.bind_paths,
            ],
            pidfile=self._pidfile(host),
            logfile=self._host_dir(host) / "init.log",
            env={**os.environ, "REMED_LAB_INIT": host.init},
        )  # fmt: skip

    def _stop_host(self, host: LabHost) -> None:
        procs.stop(self._pidfile(host), timeout_s=HOST_STOP_TIMEOUT_S)
        if _netns_exists(host.netns):
            # A killed earlier run may have left processes in the namespace with no pid file.
            deadline = time.monotonic() + NETNS_DRAIN_TIMEOUT_S
            while pids := _run("ip", "netns", "pids", host.netns, check=False).stdout.split():
                if time.monotonic() > deadline:
                    raise procs.StackError(
                        f"processes {' '.join(pids)} in netns {host.netns} survived SIGKILL"
                    )
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), 9)
                time.sleep(0.1)
            _run("ip", "netns", "del", host.netns, check=False)
        if _link(host.veth) is not None:
            _run("ip", "link", "del", host.veth, check=False)
        _remove_cgroups(host)

    # -- shared -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.dir / ".lock", "w") as lock:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise procs.StackError(
                            f"another `remed stack up/down` held {lock.name} for "
                            f"{LOCK_TIMEOUT_S:.0f} s; wait for it or end it"
                        ) from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _ensure_bridge(self) -> None:
        if _link(BRIDGE) is None:
            _run("ip", "link", "add", BRIDGE, "type", "bridge")
        addrs = _run("ip", "-o", "-4", "addr", "show", "dev", BRIDGE).stdout
        if f"{BRIDGE_ADDRESS}/" not in addrs:
            _run("ip", "addr", "add", f"{BRIDGE_ADDRESS}/{SUBNET_PREFIX}", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")

    def _ensure_no_forwarding(self) -> None:
        if not shutil.which("nft"):
            raise procs.StackError("lab hosts need nftables (`nft`): run `make setup`")
        # One atomic transaction that replaces the table, so running it twice is harmless.
        _run("nft", "-f", "-", input_text=NFT_RULES)

    def _ensure_user_and_key(self) -> None:
        if _run("id", SSH_USER, check=False).returncode != 0:
            _run("useradd", "--create-home", "--shell", "/bin/bash", SSH_USER)
        # useradd leaves the password field "!", which sshd (without PAM) reads as a locked
        # account even for key logins; "*" means "no password" without locking.
        _run("usermod", "-p", "*", SSH_USER)
        # The machine's own copy of the home; each host sees its own (BIND_PATHS has /home).
        self._prepare_home(Path("/"))
        sudoers = Path("/etc/sudoers.d/remed-lab")
        if not sudoers.exists() or sudoers.read_text() != SUDOERS:
            staged = sudoers.with_name(".remed-lab.new")
            staged.write_text(SUDOERS)
            staged.chmod(0o440)
            _run("visudo", "-cf", str(staged))
            staged.replace(sudoers)
        self.ssh_dir.mkdir(parents=True, exist_ok=True)
        self.ssh_dir.chmod(0o700)
        _ensure_keypair(self.key, comment="remed-lab")

    def _write_known_hosts(self) -> None:
        lines = []
        for host in self.hosts():
            pub = (self._host_dir(host) / "root/etc/remed-lab/ssh_host_ed25519_key.pub").read_text()
            key_type, key = pub.split()[:2]
            lines.append(f"{host.name},{host.address} {key_type} {key}")
        _write_if_changed(self.known_hosts, "\n".join(lines) + "\n")

    def _write_inventory(self) -> None:
        ssh_args = (
            f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={self.known_hosts} "
            "-o ControlMaster=auto -o ControlPersist=60s"
        )
        lines = ["[lab:children]", *(h.name for h in self.hosts()), ""]
        for host in self.hosts():
            lines += [f"[{host.name}]", f"{host.name} ansible_host={host.address}", ""]
        lines += [
            "[lab:vars]",
            f"ansible_user={SSH_USER}",
            f"ansible_ssh_private_key_file={self.key}",
            "ansible_python_interpreter=/usr/bin/python3",
            f"ansible_ssh_common_args='{ssh_args}'",
            "",
        ]
        _write_if_changed(self.inventory, "\n".join(lines))

    def _ssh_login_works(self, host: LabHost) -> bool:
        try:
            result = subprocess.run(
                [
                    "ssh", "-F", "/dev/null", "-o", "BatchMode=yes",
                    "-o", "StrictHostKeyChecking=yes",
                    "-o", f"UserKnownHostsFile={self.known_hosts}",
                    "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT_S}",
                    "-i", str(self.key), f"{SSH_USER}@{host.address}", "true",
                ],
                capture_output=True,
                timeout=SSH_CONNECT_TIMEOUT_S + 5,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0


# Removes a systemd host's (empty, once its processes are gone) cgroup subtrees, in every
# hierarchy, mounted for a moment in a mount namespace of its own (the machine may have some
# hierarchies mounted nowhere).
REMOVE_CGROUPS = """\
set -u
scratch=$(mktemp -d)
mapfile -t hierarchies < /proc/self/cgroup
for line in "${hierarchies[@]}"; do
  IFS=: read -r _ controllers _ <<<"$line"
  if [ -n "$controllers" ]; then
    mount -t cgroup -o "$controllers" cgroup "$scratch" || continue
  else
    mount -t cgroup2 cgroup2 "$scratch" || continue
  fi
  find "$scratch" -depth -type d -name "remed-lab-$1" -print | while read -r sub; do
    find "$sub" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  umount "$scratch"
done
rmdir "$scratch"
"""


def _remove_cgroups(host: LabHost) -> None:
    """The cgroup subtrees a systemd host had (lab_init.sh)."""
    if host.init != "systemd":
        return
    _run("unshare", "--mount", "--propagation", "private", "bash", "-c", REMOVE_CGROUPS,
         "remove-cgroups", host.name, check=False)  # fmt: skip


def _write_if_changed(path: Path, text: str) -> None:
    """Replace atomically, and only on change, so a reader never sees a half-written file."""
    if path.exists() and path.read_text() == text:
        return
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(text)
    staged.replace(path)
