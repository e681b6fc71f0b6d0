"""SSH lab hosts: network namespaces that feel like hosts (DESIGN.md, "Lab hosts").

Each host is a network namespace on a private /24 behind a bridge, with its own PID, mount and
UTS namespaces (`unshare`), its own copies of the standard service paths bind-mounted from
`.run/lab/hosts/<host>/root/`, and supervisord as init running that host's OpenSSH server (and,
later, the chaos lab's services). A fault or a fix on one host cannot touch another, and
playbooks use ordinary paths and `supervisorctl`.

Reached as the automation user `remedops` (passwordless sudo, minimal shell profile) with a
generated key; every host key is recorded in `.run/lab/known_hosts` and checked strictly.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remed_stack import procs
from remed_stack.paths import StackPaths


@dataclass(frozen=True)
class LabHost:
    name: str
    address: str

    @property
    def netns(self) -> str:
        return f"remed-{self.name}"

    @property
    def veth(self) -> str:
        # Interface names are limited to 15 characters.
        return f"rl-{self.name}"[:15]


SUBNET_PREFIX = 24
BRIDGE = "remedbr0"
BRIDGE_ADDRESS = "10.231.77.1"
# Stable: scenario files and the planner's prompts name these hosts.
HOSTS = (
    LabHost("web", "10.231.77.11"),
    LabHost("app", "10.231.77.12"),
    LabHost("db", "10.231.77.13"),
)
SSH_USER = "remedops"
SSH_READY_TIMEOUT_S = 30.0
SSH_CONNECT_TIMEOUT_S = 3
COMMAND_TIMEOUT_S = 30.0
INIT_SCRIPT = Path(__file__).resolve().parent / "lab_init.sh"

# Paths each host has its own copy of. Directories listed in SEEDED start as a copy of the
# machine's own (Debian's default configs), the rest start empty.
BIND_PATHS = (
    "/run",
    "/tmp",
    "/var/tmp",
    "/var/log",
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

SUPERVISORD_CONF = """\
; supervisord is this lab host's init: it runs sshd and the host's services.
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
stdout_logfile=/var/log/sshd.log
redirect_stderr=true

[include]
files = /etc/supervisor/conf.d/*.conf
"""

SSHD_CONFIG = """\
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


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if check and result.returncode != 0:
        raise procs.StackError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def _keygen(path: Path, *, comment: str) -> None:
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))


def _netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


class LabHosts:
    """The lab's hosts: `up()` is idempotent and recovers from a killed run's leftovers."""

    name = "lab"

    def __init__(self, paths: StackPaths) -> None:
        self.paths = paths
        self.dir = paths.component_dir(self.name)
        self.ssh_dir = self.dir / "ssh"
        self.key = self.ssh_dir / "id_ed25519"
        self.known_hosts = self.dir / "known_hosts"
        self.inventory = self.dir / "inventory.ini"

    # -- public -----------------------------------------------------------------------------

    def up(self) -> None:
        if not shutil.which("sshd") and not Path("/usr/sbin/sshd").exists():
            raise procs.StackError("OpenSSH server not installed: run `make setup`")
        self._ensure_user_and_key()
        self._ensure_bridge()
        for host in HOSTS:
            if self._host_ok(host):
                continue
            self._stop_host(host)
            self._prepare_host_dir(host)
            self._create_netns(host)
            self._start_host(host)
        self._write_known_hosts()
        self._write_inventory()
        for host in HOSTS:
            procs.wait_until(
                lambda h=host: self._ssh_login_works(h),  # type: ignore[misc]
                what=f"lab host {host.name} (ssh {SSH_USER}@{host.address})",
                timeout_s=SSH_READY_TIMEOUT_S,
                proc=procs.live_process(self._pidfile(host)),
                logfile=self._host_dir(host) / "root/var/log/sshd.log",
                interval_s=0.2,
            )

    def down(self) -> None:
        for host in HOSTS:
            self._stop_host(host)
        if Path("/sys/class/net", BRIDGE).exists():
            _run("ip", "link", "del", BRIDGE, check=False)

    def status(self) -> dict[str, Any]:
        return {
            "hosts": [
                {"name": h.name, "address": h.address, "ok": self._host_ok(h)} for h in HOSTS
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
        return procs.live_process(self._pidfile(host)) is not None and procs.port_open(
            host.address, 22
        )

    def _prepare_host_dir(self, host: LabHost) -> None:
        root = self._host_dir(host) / "root"
        for path in BIND_PATHS:
            target = root / path.lstrip("/")
            if path == "/etc/hosts":
                continue
            if not target.exists() and path in SEEDED and Path(path).is_dir():
                shutil.copytree(path, target, symlinks=True)
            target.mkdir(parents=True, exist_ok=True)
            # The mount point itself must exist on the shared root file system.
            Path(path).mkdir(parents=True, exist_ok=True)
        (root / "tmp").chmod(0o1777)
        (root / "var/tmp").chmod(0o1777)
        (root / "etc/supervisor/conf.d").mkdir(exist_ok=True)
        (root / "etc/supervisor/supervisord.conf").write_text(SUPERVISORD_CONF)
        hosts = ["127.0.0.1 localhost", f"127.0.1.1 {host.name}"]
        hosts += [f"{h.address} {h.name}" for h in HOSTS]
        (root / "etc/hosts").write_text("\n".join(hosts) + "\n")

        etc = root / "etc/remed-lab"
        etc.chmod(0o755)
        host_key = etc / "ssh_host_ed25519_key"
        if not host_key.exists():
            _keygen(host_key, comment=host.name)
        (etc / "sshd_config").write_text(SSHD_CONFIG.format(address=host.address, user=SSH_USER))
        authorized = etc / "authorized_keys"
        authorized.write_text(self.key.with_suffix(".pub").read_text())
        authorized.chmod(0o644)

    def _create_netns(self, host: LabHost) -> None:
        ns, peer = host.netns, f"rlp-{host.name}"[:15]
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", peer)
        _run("ip", "link", "set", peer, "netns", ns)
        _run("ip", "-n", ns, "link", "set", peer, "name", "eth0")
        _run("ip", "-n", ns, "addr", "add", f"{host.address}/{SUBNET_PREFIX}", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "route", "add", "default", "via", BRIDGE_ADDRESS)
        _run("ip", "link", "set", host.veth, "master", BRIDGE)
        _run("ip", "link", "set", host.veth, "up")

    def _start_host(self, host: LabHost) -> None:
        procs.spawn(
            [
                "ip", "netns", "exec", host.netns,
                "unshare", "--pid", "--mount", "--uts", "--fork", "--mount-proc",
                "--propagation", "private",
                str(INIT_SCRIPT), host.name, str(self._host_dir(host)), *BIND_PATHS,
            ],
            pidfile=self._pidfile(host),
            logfile=self._host_dir(host) / "init.log",
        )  # fmt: skip

    def _stop_host(self, host: LabHost) -> None:
        procs.stop(self._pidfile(host), timeout_s=10.0)
        if _netns_exists(host.netns):
            # A killed earlier run may have left processes in the namespace with no pid file.
            for pid in _run("ip", "netns", "pids", host.netns, check=False).stdout.split():
                _run("kill", "-KILL", pid, check=False)
            deadline = time.monotonic() + 5
            while _run("ip", "netns", "pids", host.netns, check=False).stdout.strip():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            _run("ip", "netns", "del", host.netns, check=False)
        if Path("/sys/class/net", host.veth).exists():
            _run("ip", "link", "del", host.veth, check=False)

    # -- shared -----------------------------------------------------------------------------

    def _ensure_bridge(self) -> None:
        if not Path("/sys/class/net", BRIDGE).exists():
            _run("ip", "link", "add", BRIDGE, "type", "bridge")
        addrs = _run("ip", "-o", "-4", "addr", "show", "dev", BRIDGE).stdout
        if f"{BRIDGE_ADDRESS}/" not in addrs:
            _run("ip", "addr", "add", f"{BRIDGE_ADDRESS}/{SUBNET_PREFIX}", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")

    def _ensure_user_and_key(self) -> None:
        if _run("id", SSH_USER, check=False).returncode != 0:
            _run("useradd", "--create-home", "--shell", "/bin/bash", SSH_USER)
        # useradd leaves the password field "!", which sshd (without PAM) reads as a locked
        # account even for key logins; "*" means "no password" without locking.
        _run("usermod", "-p", "*", SSH_USER)
        home = Path(_run("getent", "passwd", SSH_USER).stdout.split(":")[5])
        (home / ".profile").write_text(PROFILE)
        (home / ".bashrc").write_text(BASHRC)
        (home / ".bash_logout").unlink(missing_ok=True)
        (home / ".hushlogin").touch()
        sudoers = Path("/etc/sudoers.d/remed-lab")
        if not sudoers.exists() or sudoers.read_text() != SUDOERS:
            staged = sudoers.with_name(".remed-lab.new")
            staged.write_text(SUDOERS)
            staged.chmod(0o440)
            _run("visudo", "-cf", str(staged))
            staged.replace(sudoers)
        self.ssh_dir.mkdir(parents=True, exist_ok=True)
        self.ssh_dir.chmod(0o700)
        if not self.key.exists():
            _keygen(self.key, comment="remed-lab")

    def _write_known_hosts(self) -> None:
        lines = []
        for host in HOSTS:
            pub = (self._host_dir(host) / "root/etc/remed-lab/ssh_host_ed25519_key.pub").read_text()
            key_type, key = pub.split()[:2]
            lines.append(f"{host.name},{host.address} {key_type} {key}")
        self.known_hosts.write_text("\n".join(lines) + "\n")

    def _write_inventory(self) -> None:
        ssh_args = (
            f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={self.known_hosts} "
            "-o ControlMaster=auto -o ControlPersist=60s"
        )
        lines = ["[lab:children]", *(h.name for h in HOSTS), ""]
        for host in HOSTS:
            lines += [f"[{host.name}]", f"{host.name} ansible_host={host.address}", ""]
        lines += [
            "[lab:vars]",
            f"ansible_user={SSH_USER}",
            f"ansible_ssh_private_key_file={self.key}",
            "ansible_python_interpreter=/usr/bin/python3",
            f"ansible_ssh_common_args='{ssh_args}'",
            "",
        ]
        self.inventory.write_text("\n".join(lines))

    def _ssh_login_works(self, host: LabHost) -> bool:
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
        return result.returncode == 0
