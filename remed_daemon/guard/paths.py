"""Where a path lives on a host, and what reading, writing or deleting it costs.

The guard's module rules and its shell rules both end in the same question: "this task writes
(or deletes, or reads) that path; how dangerous is that?". This module answers it once, from the
path alone: it never looks at a host. A path the guard cannot know (a shell variable, an
unresolved template) is `None` and callers treat it as the worst plausible case.

Levels are ordered ints so that a task's risk is the max over its findings: LOW runs
automatically, MEDIUM runs `--check --diff` first, HIGH waits for a person, REJECT never runs.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from dataclasses import dataclass, field

LOW, MEDIUM, HIGH, REJECT = 0, 1, 2, 3
LEVEL_NAMES = ("low", "medium", "high", "reject")

UNKNOWN = "\x00"  # stands for a value only known at run time (shell variable, template, ...)


@dataclass(frozen=True)
class Finding:
    level: int
    rule: str
    detail: str


@dataclass
class Effects:
    """What one task was found to do: findings, and the files and services it touches."""

    findings: list[Finding] = field(default_factory=list)
    files: set[str] = field(default_factory=set)
    services: set[str] = field(default_factory=set)
    # Services this task stops (or kills) and starts (or restarts): the guard compares them
    # across the playbook, since a stop with no later start leaves the service down.
    stopped: set[str] = field(default_factory=set)
    started: set[str] = field(default_factory=set)

    def add(self, level: int, rule: str, detail: str) -> None:
        self.findings.append(Finding(level, rule, detail[:300]))

    def touch(self, path: str | None) -> None:
        if path and UNKNOWN not in path and not has_glob(path):
            self.files.add(path)


# Top-level directories and other trees whose loss, or whose contents' loss, breaks a host.
SYSTEM_DIRS = frozenset(
    {
        "/", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/usr", "/etc", "/var",
        "/boot", "/dev", "/proc", "/sys", "/run", "/home", "/root", "/opt", "/srv", "/tmp",
        "/mnt", "/media", "/snap", "/var/lib", "/var/log", "/var/cache", "/var/spool",
        "/var/tmp", "/var/run", "/var/mail", "/var/backups", "/var/opt", "/var/www", "/usr/local",
        "/etc/ssl", "/etc/supervisor", "/etc/supervisor/conf.d", "/etc/systemd",
        "/etc/systemd/system", "/dev/shm", "/lost+found",
    }
)  # fmt: skip
SYSBIN_PREFIXES = (
    "/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/", "/usr/", "/boot/",
    "/var/lib/dpkg/", "/var/lib/apt/", "/var/lib/rpm/", "/var/lib/dnf/", "/var/lib/yum/",
    "/etc/alternatives/",
)  # fmt: skip
# /etc/<name> directories that belong to the operating system, not to a service.
SYSTEM_ETC = frozenset(
    {
        "ssh", "sudoers.d", "pam.d", "security", "systemd", "apt", "yum.repos.d", "yum", "dnf",
        "cron.d", "cron.daily", "cron.hourly", "cron.weekly", "cron.monthly", "cron.yearly",
        "profile.d", "ld.so.conf.d", "modprobe.d", "modules-load.d", "sysctl.d", "network",
        "netplan", "NetworkManager", "init.d", "init", "rc0.d", "rc1.d", "rc2.d", "rc3.d",
        "rc4.d", "rc5.d", "rc6.d", "rcS.d", "update-motd.d", "logrotate.d", "skel", "selinux",
        "apparmor", "apparmor.d", "audit", "polkit-1", "dbus-1", "udev", "iptables", "ufw",
        "firewalld", "default", "alternatives", "ca-certificates", "pki", "X11", "xdg",
        "bash_completion.d", "dhcp", "iproute2", "kernel", "grub.d", "initramfs-tools", "dpkg",
        "rsyslog.d", "tmpfiles.d", "environment.d", "binfmt.d", "sysconfig", "sudo", "zsh",
        "ssl", "letsencrypt", "gnupg", "cloud", "sv", "runit", "fonts", "opt", "mysql_secrets",
        "nftables.d", "sysusers.d", "credstore", "credstore.encrypted", "depmod.d",
    }
)  # fmt: skip
# Files directly in /etc that belong to the system (a service's files live in /etc/<service>/).
ETC_FILES = frozenset(
    {
        "hosts", "hostname", "timezone", "localtime", "mtab", "issue", "motd", "services",
        "protocols", "networks", "exports", "ethers", "aliases", "mailname", "fstab", "crontab",
        "passwd", "group", "shadow", "gshadow", "sudoers", "environment", "inittab", "shells",
        "subuid", "subgid", "machine-id", "adjtime", "papersize", "printcap", "resolv",
    }
)  # fmt: skip
# Files whose change gives persistent code execution, access or privilege: never written.
CONTROL_FILES = frozenset(
    {
        "/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/shadow-",
        "/etc/gshadow-", "/etc/passwd-", "/etc/group-", "/etc/sudoers", "/etc/sudo.conf",
        "/etc/doas.conf", "/etc/crontab", "/etc/anacrontab", "/etc/ld.so.preload",
        "/etc/ld.so.conf", "/etc/profile", "/etc/bash.bashrc", "/etc/bashrc", "/etc/environment",
        "/etc/rc.local", "/etc/nsswitch.conf", "/etc/login.defs", "/etc/securetty",
        "/etc/pip.conf", "/etc/yum.conf", "/etc/hosts.equiv", "/etc/inittab", "/etc/fstab",
        "/etc/sysctl.conf", "/etc/modules", "/etc/shells", "/etc/inputrc", "/etc/zshenv",
        "/etc/zshrc", "/etc/csh.cshrc", "/etc/csh.login", "/etc/at.allow", "/etc/at.deny",
        "/etc/cron.allow", "/etc/cron.deny", "/etc/nftables.conf", "/etc/machine-id",
    }
)  # fmt: skip
CONTROL_ETC_DIRS = frozenset(
    {
        "ssh", "sudoers.d", "pam.d", "cron.d", "cron.daily", "cron.hourly", "cron.weekly",
        "cron.monthly", "cron.yearly", "profile.d", "ld.so.conf.d", "modprobe.d",
        "modules-load.d", "init.d", "init", "rc0.d", "rc1.d", "rc2.d", "rc3.d", "rc4.d",
        "rc5.d", "rc6.d", "rcS.d", "update-motd.d", "skel", "apt", "yum.repos.d", "dnf",
        "polkit-1", "xdg", "bash_completion.d", "dhcp", "NetworkManager", "network", "sudo",
        "selinux", "apparmor", "apparmor.d", "audit", "zsh", "binfmt.d", "environment.d",
        "systemd/system-generators", "X11",
    }
)  # fmt: skip
HOME_CONTROL = frozenset(
    {
        ".bashrc", ".bash_profile", ".bash_login", ".profile", ".zshrc", ".zprofile", ".zshenv",
        ".bash_logout", ".pam_environment", ".forward", ".rhosts", ".shosts", ".k5login",
        ".ssh", ".config", ".gnupg", ".netrc", ".pgpass", ".inputrc", ".vimrc", ".gitconfig",
        ".pydistutils.cfg", ".pip", ".npmrc", ".local",
    }
)  # fmt: skip
HISTORY_RE = re.compile(r"(^|/)\.?[\w.-]*_?history$|(^|/)\.(lesshst|viminfo)$")
# Logs whose loss hides what happened on the host (as opposed to one service's own logs).
SYSTEM_LOGS = frozenset(
    {
        "syslog", "messages", "auth.log", "secure", "kern.log", "daemon.log", "user.log",
        "wtmp", "btmp", "lastlog", "faillog", "dmesg", "boot.log", "audit", "journal",
        "sudo.log", "cron", "cron.log", "maillog", "mail.log", "debug", "dpkg.log", "apt",
        "alternatives.log", "installer", "sssd", "private", "sa", "sysstat", "tallylog",
    }
)  # fmt: skip
BENIGN_DEVICES = frozenset(
    {
        "/dev/null", "/dev/zero", "/dev/stdout", "/dev/stderr", "/dev/stdin", "/dev/tty",
        "/dev/urandom", "/dev/random", "/dev/full",
    }
)  # fmt: skip
SECRET_NAMES = frozenset(
    {
        "shadow", "gshadow", "shadow-", "gshadow-", "master.passwd", ".pgpass", ".netrc",
        ".git-credentials", "credentials", ".vault-token", "id_rsa", "id_dsa", "id_ecdsa",
        "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk", "identity", ".my.cnf", "kubeconfig",
        ".env", "secrets.yml", "secrets.yaml", "vault.yml", "environ", "kcore", "mem", "kmem",
    }
)  # fmt: skip
SECRET_DIRS = (".ssh", ".gnupg", ".aws", ".kube", ".docker", ".azure", ".gcloud", "private")
SECRET_SUFFIXES = (".key", ".p12", ".pfx", ".keytab", ".jks", ".kdbx", ".asc", ".gpg")
# Concrete secrets a glob might reach: `cat /etc/sha*` reads /etc/shadow.
SECRET_EXAMPLES = (
    "/etc/shadow", "/etc/gshadow", "/root/.ssh/id_rsa", "/root/.ssh/id_ed25519",
    "/home/user/.ssh/id_rsa", "/etc/ssh/ssh_host_rsa_key", "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssl/private/server.key", "/root/.aws/credentials", "/proc/1/environ",
    "/etc/sudoers", "/root/.pgpass", "/root/.bash_history",
)  # fmt: skip


def has_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def normalize(path: str | None, cwd: str | None = "/root") -> str | None:
    """An absolute, normalised path; None when run-time values decide it."""
    if path is None or path == "" or UNKNOWN in path or "{{" in path or "{%" in path:
        return None
    if path.startswith("~"):
        head, _, rest = path[1:].partition("/")
        home = "/root" if head in ("", "root") else f"/home/{head}"
        path = f"{home}/{rest}" if rest else home
    if not path.startswith("/"):
        if cwd is None:
            return None
        path = f"{cwd}/{path}"
    norm = posixpath.normpath(path)
    return "/" + norm.lstrip("/")


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def glob_base(path: str) -> str:
    """The longest leading directory of `path` that has no glob characters."""
    parts = _parts(path)
    for i, part in enumerate(parts):
        if has_glob(part):
            return "/" + "/".join(parts[:i])
    return path


def is_secret(path: str | None) -> bool:
    """A file whose content is a credential or another process's memory or environment."""
    if path is None:
        return False
    if has_glob(path):
        return any(fnmatch.fnmatchcase(example, path) for example in SECRET_EXAMPLES) or (
            is_secret(glob_base(path))
        )
    if any(example.startswith(path.rstrip("/") + "/") for example in SECRET_EXAMPLES):
        return True  # a directory that holds secrets, read recursively (tar, grep -r, cp -r)
    parts = _parts(path)
    if not parts:
        return False
    name = parts[-1]
    if path.startswith(("/proc/", "/dev/")) and name in ("environ", "mem", "kcore", "kmem"):
        return True
    if path.startswith("/proc/"):
        return False
    if name in SECRET_NAMES and not name.endswith(".pub"):
        return True
    if any(p in SECRET_DIRS for p in parts[:-1]) or name in SECRET_DIRS:
        return not name.endswith((".pub", "known_hosts"))
    if path.startswith("/etc/ssh/ssh_host_") and not name.endswith(".pub"):
        return True
    if name.endswith(SECRET_SUFFIXES):
        return True
    return (
        bool(HISTORY_RE.search(path))
        or path in ("/etc/sudoers",)
        or (path.startswith("/etc/sudoers.d/"))
    )


def is_history(path: str) -> bool:
    return bool(HISTORY_RE.search(path))


def _is_control(path: str) -> bool:
    if path in CONTROL_FILES:
        return True
    parts = _parts(path)
    if len(parts) >= 2 and parts[0] == "etc":
        if parts[1] in CONTROL_ETC_DIRS or "/".join(parts[1:3]) in CONTROL_ETC_DIRS:
            return True
        if parts[1].startswith(("cron", "rc")) and parts[1].endswith((".d", "tab")):
            return True
    if parts[:2] in (["var", "spool"],) and len(parts) >= 3 and parts[2] in ("cron", "at"):
        return True
    home = _home_rest(path)
    if home is not None and home and home[0] in HOME_CONTROL:
        return True
    return bool(parts) and parts[-1] in ("authorized_keys", "authorized_keys2", ".rhosts")


def _home_rest(path: str) -> list[str] | None:
    parts = _parts(path)
    if parts[:1] == ["root"]:
        return parts[1:]
    if parts[:1] == ["home"] and len(parts) >= 2:
        return parts[2:]
    return None


def category(path: str | None) -> str:
    """One word for where a path lives; see the tables at the top of this module."""
    if path is None:
        return "unknown"
    if has_glob(path):
        base = glob_base(path)
        if base in ("/tmp", "/var/tmp", "/dev/shm"):
            return "tmp"
        if base == "/var/log":
            return "syslog"
        cat = category(base)
        return cat.removesuffix("_root") if cat != "root" else cat
    parts = _parts(path)
    if path in BENIGN_DEVICES or path.startswith("/dev/fd/"):
        return "devnull"
    if path.startswith(("/dev/tcp/", "/dev/udp/")):
        return "net"
    if path in SYSTEM_DIRS:
        return "root"
    if path.startswith("/dev/"):
        return "device" if not path.startswith("/dev/shm/") else "tmp"
    if path.startswith(("/proc/", "/sys/")):
        return "proc"
    if is_history(path):
        return "history"
    if _is_control(path):
        return "control"
    if not parts:  # "", or what a glob's base reduces to: judge it as the root
        return "root"
    if parts[0] == "var" and len(parts) >= 2 and parts[1] == "log":
        if len(parts) == 3 and (parts[2] in SYSTEM_LOGS or "." in parts[2]):
            return "syslog"
        if parts[2] in SYSTEM_LOGS:
            return "syslog"
        return "svclog_root" if len(parts) == 3 else "svclog"
    if path.startswith(SYSBIN_PREFIXES) or path.startswith("/usr/local"):
        return "sysbin"
    if parts[0] == "etc":
        if len(parts) == 2:
            if parts[1] in SYSTEM_ETC or parts[1] in ETC_FILES or "." in parts[1]:
                return "etc"
            return "svcconf_root"
        if parts[1] == "ssl" and parts[2] not in ("private", "certs"):
            return "svcconf_root" if len(parts) == 3 else "svcconf"
        if parts[1] == "supervisor":
            return "svcconf"
        if parts[1] == "systemd" and len(parts) in (4, 5) and parts[3].endswith(".d"):
            return "svcconf"  # a unit's drop-in: /etc/systemd/system/<unit>.d/<x>.conf
        if parts[1] in SYSTEM_ETC:
            return "etc"
        return "svcconf"
    if parts[0] in ("tmp",) or parts[:2] == ["var", "tmp"]:
        return "tmp"
    if parts[0] in ("run",) or parts[:2] == ["var", "run"]:
        depth = 1 if parts[0] == "run" else 2
        return "run_root" if len(parts) == depth + 1 else "run"
    if parts[:2] == ["var", "spool"]:
        return "control" if parts[2] in ("cron", "at", "anacron") else "data"
    if parts[0] in ("srv", "opt") or parts[:2] in (
        ["var", "lib"],
        ["var", "cache"],
        ["var", "www"],
    ):
        depth = 1 if parts[0] in ("srv", "opt") else 2
        return "data_root" if len(parts) == depth + 1 else "data"
    if parts[0] in ("root", "home"):
        return "home"
    return "other"


def read_level(path: str | None) -> tuple[int, str, str]:
    if path is not None and is_secret(path):
        return REJECT, "secrets.read", f"reads {path}, a credential or private key"
    if category(path) == "device":
        return REJECT, "secrets.read", f"reads the raw device {path}"
    return LOW, "", ""


# A rotated or compressed log, named or by glob: `app.log.1`, `*.gz`, `*.[0-9]`, `*.log.[0-9]*`.
_ROTATED = re.compile(
    r"(\.\d+|\.\[\d-\d\]\*?|\.gz|\.bz2|\.xz|\.zst|\.old|\.bak|-\d{8,}|-\[\d-\d\]\*)(\.gz)?$"
)


def delete_level(path: str | None, *, recursive: bool, what: str = "deletes") -> tuple[int, str]:
    """The level and rule of deleting `path` (recursively or not)."""
    cat = category(path)
    glob = path is not None and has_glob(path)
    if path is None:
        return REJECT, "destructive.unknown_target"
    if cat in ("root", "sysbin", "control", "device", "proc", "net"):
        return REJECT, "destructive.system_path"
    if cat in ("history",):
        return REJECT, "tamper.history"
    if cat == "syslog" or cat == "svclog_root":
        return REJECT, "tamper.log_wipe"
    if cat in ("svcconf_root", "data_root", "run_root"):
        return REJECT, "destructive.service_root"
    if cat == "etc":
        return REJECT, "destructive.system_path"
    if cat == "svclog":
        if glob and not _ROTATED.search(path) and not path.endswith(".log"):
            return REJECT, "tamper.log_wipe"
        return MEDIUM, "logs.cleanup"
    if cat == "tmp":
        if glob and recursive and path.rstrip("/").endswith("/*"):
            return HIGH, "tmp.bulk_delete"
        return (MEDIUM if glob else LOW), "tmp.cleanup"
    if cat == "run":
        return MEDIUM, "run.stale_file"
    if cat == "data":
        if not glob and re.search(r"\.(pid|lock|sock)$", path):
            return MEDIUM, "data.stale_file"
        return HIGH, "data.delete"
    if cat == "svcconf":
        return HIGH, "config.delete"
    return HIGH, "delete.other"


def write_level(path: str | None) -> tuple[int, str]:
    """The level and rule of changing the content of `path` (create, edit, replace, link)."""
    cat = category(path)
    if path is None:
        return HIGH, "write.unknown_target"
    if cat == "devnull" or cat == "tmp":
        return LOW, "write.tmp"
    if cat == "net":
        return REJECT, "exfil.network"
    if cat == "device":
        return REJECT, "destructive.block_device"
    if cat == "proc":
        if path.startswith("/proc/sysrq") or re.search(
            r"/proc/sys/kernel/(core_pattern|modprobe|hotplug|sysrq)|/sys/kernel/uevent_helper|"
            r"/sys/power|/proc/sys/fs/binfmt_misc|/sys/.*/(remove|unbind)$",
            path,
        ):
            return REJECT, "destructive.kernel"
        return HIGH, "kernel.tunable"
    if cat in ("control",):
        return REJECT, "persistence.control_file"
    if cat == "history":
        return REJECT, "tamper.history"
    if cat == "syslog":
        return REJECT, "tamper.log_wipe"
    if cat == "sysbin":
        return REJECT, "persistence.system_binary"
    if cat in ("svcconf", "svcconf_root"):
        if re.search(r"\.(bak|orig|old|backup|remed)(\.\w+)?$|~$", path):
            return MEDIUM, "config.backup_copy"
        return MEDIUM, "config.edit"
    if cat in ("svclog", "svclog_root"):
        return MEDIUM, "logs.truncate"
    if cat in ("run", "run_root"):
        return MEDIUM, "run.write"
    if cat in ("data", "data_root"):
        return HIGH, "data.write"
    if cat == "etc":
        return HIGH, "config.system"
    if cat == "root":
        return HIGH, "write.system_dir"
    return HIGH, "write.other"


def mode_bits(mode: str) -> tuple[bool, bool, bool]:
    """(world_writable, setuid_or_setgid, others_readable) of a chmod-style mode string."""
    mode = mode.strip()
    if re.fullmatch(r"0?[0-7]{3,4}", mode) or re.fullmatch(r"0o[0-7]{3,4}", mode):
        digits = mode.removeprefix("0o")
        value = int(digits, 8)
        return bool(value & 0o002), bool(value & 0o6000), bool(value & 0o004)
    ww = suid = oread = False
    for clause in mode.split(","):
        m = re.fullmatch(r"([ugoa]*)([-+=])([rwxXstugo]*)", clause)
        if not m:
            return True, True, True  # unparseable: assume the worst
        who, op, perms = m.groups()
        if op == "-":
            continue
        if ("o" in who or "a" in who) and "w" in perms:
            ww = True
        if ("o" in who or "a" in who or who == "") and "r" in perms:
            oread = True
        if "s" in perms:
            suid = True
    return ww, suid, oread


def mode_level(
    path: str | None, mode: str, *, recursive: bool, owner_change: bool = False
) -> tuple[int, str, str]:
    """chmod/chown (and the file module's mode/owner): level, rule and a reason."""
    cat = category(path)
    shown = path or "a run-time path"
    if mode:
        ww, suid, oread = mode_bits(mode)
        if suid:
            return REJECT, "perm.setuid", f"sets setuid/setgid ({mode}) on {shown}"
        if ww and cat not in ("tmp", "devnull"):
            if cat in ("svcconf", "svclog", "data", "run", "other", "home"):
                return HIGH, "perm.world_writable", f"makes {shown} world-writable ({mode})"
            return REJECT, "perm.world_writable", f"makes system path {shown} world-writable"
        if oread and path is not None and is_secret(path):
            return REJECT, "secrets.expose", f"makes {shown} readable by others ({mode})"
    if path is None:
        return HIGH, "perm.unknown_target", "changes permissions of a run-time path"
    if cat in ("root", "sysbin", "control", "etc", "device", "proc", "syslog", "history"):
        if recursive or cat in ("root", "sysbin", "device"):
            return REJECT, "perm.system_path", f"changes ownership/permissions of {shown}"
        return HIGH, "perm.system_path", f"changes ownership/permissions of {shown}"
    if cat == "tmp":
        return LOW, "perm.tmp", f"permissions of {shown}"
    if cat in ("home", "other"):
        return HIGH, "perm.other", f"permissions of {shown}"
    return (
        MEDIUM,
        "perm.service_path",
        f"permissions of {shown}" + (" (owner)" if owner_change else ""),
    )
