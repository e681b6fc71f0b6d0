"""Shell-policy handlers for the host's own setup: packages, kernel, mounts, accounts.

Package managers (`apt`, `dpkg`, `yum`, `rpm`, `pip`, ...) may not install from files or URLs
nor remove `CRITICAL_PACKAGES`; `sysctl` must not set code-running tunables; `mount`,
`umount` and `swapoff` must not touch the root or system directories; `getent` must not read
the shadow databases; `ldconfig` is a medium change.
"""

from __future__ import annotations

import fnmatch
import re

from remed_daemon.guard.paths import HIGH, MEDIUM, category, normalize
from remed_daemon.guard.shell.operands import Ctx, flags_of, operands_of
from remed_daemon.guard.shell.parse import Cmd, Refuse, Word

# Packages without which the host is unreachable or unmanageable.
CRITICAL_PACKAGES = (
    "openssh-server", "openssh-client", "openssh*", "ssh", "sudo", "python3", "python3-*",
    "python3.*", "python", "libpython3*", "supervisor", "systemd", "systemd-sysv", "init",
    "bash", "dash", "coreutils", "libc6", "libc-bin", "glibc", "iproute2", "apt", "dpkg",
    "rpm", "yum", "dnf", "login", "passwd", "util-linux", "procps", "base-files",
    "linux-image*", "kernel*", "grub*", "libssl*", "openssl", "ca-certificates", "nftables",
    "iptables", "ansible*", "netbase", "ifupdown", "netplan.io", "network-manager",
)  # fmt: skip


def check_pkg(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    text_args = [w.text for w in args]
    if any(w.unknown for w in args):
        raise Refuse("packages.unknown", f"{name} with run-time package names")
    if name in ("apt", "apt-get", "aptitude") and any(
        "Invoke" in t or "Pre-" in t or "Post-" in t for t in text_args
    ):
        raise Refuse("shell.inline_code", f"{name} -o hooks run commands")
    if name in ("pip", "pip3") or name.startswith("pip3."):
        return check_pip(text_args, ctx)
    if name == "dpkg":
        flags = set(text_args)
        if flags & {"-r", "-P", "--remove", "--purge"}:
            _pkg_remove(name, [t for t in text_args if not t.startswith("-")], ctx)
            return
        if flags & {"-i", "--install", "--unpack", "-x", "--extract"}:
            for t in text_args:
                if not t.startswith("-") and category(normalize(t, ctx.cwd)) in (
                    "tmp",
                    "home",
                    "unknown",
                    "run",
                ):
                    raise Refuse("download.run", f"dpkg installs an untrusted file {t}")
            ctx.add(HIGH, "packages.install", "dpkg installs a local package file")
            return
        return
    if name == "rpm":
        if any(t.startswith("-e") or t == "--erase" for t in text_args):
            _pkg_remove(name, [t for t in text_args if not t.startswith("-")], ctx)
            return
        if any(t.startswith(("-i", "-U", "-F")) for t in text_args):
            ctx.add(HIGH, "packages.install", "rpm installs packages")
        return
    ops = [t for t in text_args if not t.startswith("-")]
    if not ops:
        return
    sub, pkgs = ops[0], ops[1:]
    for p in pkgs:
        if "://" in p or p.startswith(("/", "./", "~")) or p.endswith((".deb", ".rpm", ".apk")):
            raise Refuse("download.run", f"{name} installs from a file or URL: {p}")
    if sub in ("remove", "purge", "autoremove", "erase", "uninstall", "del", "autopurge"):
        _pkg_remove(name, pkgs, ctx)
        if sub in ("autoremove", "autopurge") and not pkgs:
            ctx.add(HIGH, "packages.remove", f"{name} {sub}")
        return
    if sub in ("install", "reinstall", "upgrade", "dist-upgrade", "full-upgrade", "update",
               "add", "build-dep", "downgrade", "distro-sync", "groupinstall",
               "localinstall"):  # fmt: skip
        if sub == "update" and name in ("apt", "apt-get", "aptitude", "apk"):
            ctx.add(MEDIUM, "packages.cache", f"{name} update refreshes package lists")
            return
        ctx.add(HIGH, "packages.install", f"{name} {sub} {' '.join(pkgs)[:60]}")
        return
    if sub in ("list", "show", "policy", "search", "info", "check", "madison", "depends",
               "rdepends", "changelog", "provides", "history", "repolist", "-q"):  # fmt: skip
        return
    ctx.add(HIGH, "packages.other", f"{name} {sub}")


def _pkg_remove(name: str, pkgs: list[str], ctx: Ctx) -> None:
    for p in pkgs:
        base = re.split(r"[=:<>]", p, maxsplit=1)[0]
        for crit in CRITICAL_PACKAGES:
            if fnmatch.fnmatchcase(base, crit) or fnmatch.fnmatchcase(crit.rstrip("*"), base):
                raise Refuse(
                    "destructive.critical_package",
                    f"{name} removes {p}: the host needs it to stay reachable and managed",
                )
    ctx.add(HIGH, "packages.remove", f"{name} removes {' '.join(pkgs)[:60]}")


def check_pip(args: list[str], ctx: Ctx) -> None:
    ops = [t for t in args if not t.startswith("-")]
    if not ops:
        return
    sub = ops[0]
    if sub in ("list", "show", "freeze", "check", "--version", "config", "debug"):
        return
    for t in args:
        if (
            "://" in t
            or t.startswith(("git+", "hg+", "svn+", "/", "./", "file:"))
            or t
            in (
                "-i",
                "--index-url",
                "--extra-index-url",
                "-f",
                "--find-links",
                "--trusted-host",
                "-e",
                "--editable",
                "-r",
                "--requirement",
            )
            or t.startswith(("--index-url=", "--extra-index-url=", "--find-links="))
            or t.endswith((".whl", ".tar.gz", ".zip"))
        ):
            raise Refuse("download.run", f"pip {sub} from a URL, file or other index: {t}")
    if sub == "uninstall":
        _pkg_remove("pip", ops[1:], ctx)
        return
    ctx.add(HIGH, "packages.install", f"pip {sub} {' '.join(ops[1:])[:60]}")


def check_sysctl(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    for w in args:
        if w.unknown:
            raise Refuse("kernel.unknown", "sysctl with run-time values")
        if re.search(r"kernel\.(core_pattern|modprobe|hotplug|sysrq|panic)|binfmt|"
                     r"kernel/(core_pattern|modprobe)", w.text):  # fmt: skip
            if "=" in w.text or "-w" in [a.text for a in args]:
                raise Refuse("destructive.kernel", f"sysctl {w.text}: runs code or kills host")
    if any("=" in w.text for w in args) or flags_of(args) & {"-w", "-p", "--load", "--system"}:
        ctx.add(HIGH, "kernel.tunable", f"sysctl {' '.join(w.text for w in args)[:60]}")


def check_mount(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    ops = operands_of(args, "otLU")
    if not ops and name == "mount":
        return
    if name in ("umount", "swapoff") and (
        "-a" in flags_of(args) or any(w.text in ("/", "/usr", "/var", "/boot") for w in ops)
    ):
        raise Refuse("destructive.disk", f"{name} of the root or all file systems")
    if "remount" in " ".join(w.text for w in args) and any(w.text == "/" for w in ops):
        raise Refuse("destructive.disk", "remounts the root file system")
    if (
        name == "mount"
        and ops
        and category(ops[-1].path(ctx.cwd)) in ("root", "sysbin", "control", "unknown", "etc")
    ):
        raise Refuse("persistence.system_binary", f"mounts over {ops[-1].text}")
    ctx.add(HIGH, "system.mount", f"{name} {' '.join(w.text for w in ops)[:60]}")


def check_getent(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    ops = operands_of(args, "s")
    if ops and ops[0].text in ("shadow", "gshadow"):
        raise Refuse("secrets.read", f"getent {ops[0].text}")


def check_simple_medium(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    ctx.add(MEDIUM, "misc.medium", name)
