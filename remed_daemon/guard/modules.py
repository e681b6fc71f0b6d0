"""The module allowlist: FQCN normalisation and one argument rule per allowed module."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from remed_daemon.guard import shell
from remed_daemon.guard.paths import (
    HIGH,
    MEDIUM,
    REJECT,
    Effects,
    category,
    delete_level,
    is_secret,
    mode_level,
    normalize,
    read_level,
    write_level,
)

# --- module table ---------------------------------------------------------------------------

COLLECTION_MODULES = {
    "community.general.supervisorctl": "supervisorctl",
    "community.general.ini_file": "ini_file",
    "community.general.pam_limits": "pam_limits",
    "community.general.ufw": "ufw",
    "community.general.timezone": "timezone",
    "community.general.sudoers": "sudoers",
    "ansible.posix.sysctl": "sysctl",
    "ansible.posix.mount": "mount",
    "ansible.posix.firewalld": "firewalld",
    "ansible.posix.acl": "acl",
    "ansible.posix.authorized_key": "authorized_key",
    "ansible.posix.synchronize": "synchronize",
    "ansible.posix.at": "at",
    "community.general.filesystem": "filesystem",
    "community.general.parted": "parted",
    "community.general.lvol": "lvol",
    "community.general.shutdown": "shutdown",
    "community.general.modprobe": "modprobe",
    "community.general.npm": "npm",
    "community.general.gem": "gem",
    "community.general.snap": "snap",
    "community.general.pacman": "pacman",
    "community.general.zypper": "zypper",
    "community.general.apk": "apk",
    "community.general.nmcli": "nmcli",
    "community.postgresql.postgresql_query": "postgresql_query",
    "community.general.redis": "redis",
}


def normalize_module(name: str) -> str | None:
    """`ansible.builtin.copy`, `ansible.legacy.copy` and `copy` are one module; None if unknown."""
    for prefix in ("ansible.builtin.", "ansible.legacy."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    if name in COLLECTION_MODULES:
        return COLLECTION_MODULES[name]
    if "." in name or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        return None
    return name


@dataclass
class ModuleContext:
    hosts: frozenset[str]
    module: str
    fx: Effects


ModHandler = Callable[[dict[str, Any], ModuleContext], None]
MODULE_RULES: dict[str, ModHandler] = {}
# Modules refused outright, with the rule and the reason.
REFUSED_MODULES = {
    "raw": ("shell.raw", "raw bypasses the module system; use command with an argv"),
    "script": ("controller.script", "script copies and runs a controller file"),
    "expect": ("shell.interactive", "expect drives interactive programs"),
    "telnet": ("exfil.network", "telnet"),
    "fetch": ("exfil.fetch", "fetch copies host files to the controller"),
    "synchronize": ("exfil.network", "synchronize runs rsync between hosts"),
    "get_url": ("download.run", "downloads files from the network"),
    "git": ("download.run", "clones code from the network"),
    "subversion": ("download.run", "checks out code from the network"),
    "unarchive": ("download.run", "unpacks archives over the file system"),
    "assemble": ("controller.file_read", "assembles files from fragments"),
    "add_host": ("hosts.add", "adds hosts to the inventory at run time"),
    "group_by": ("hosts.add", "creates groups at run time"),
    "include_vars": ("controller.file_read", "reads controller files"),
    "include_tasks": ("controller.include", "includes a task file from the controller"),
    "import_tasks": ("controller.include", "imports a task file from the controller"),
    "include_role": ("controller.roles", "includes a role from the controller"),
    "import_role": ("controller.roles", "imports a role from the controller"),
    "import_playbook": ("controller.include", "imports a playbook from the controller"),
    "include": ("controller.include", "includes a file from the controller"),
    "authorized_key": ("persistence.ssh", "changes SSH authorized keys"),
    "known_hosts": ("persistence.ssh", "changes SSH known hosts"),
    "cron": ("persistence.cron", "installs cron jobs"),
    "at": ("persistence.cron", "schedules commands"),
    "sudoers": ("persistence.sudoers", "changes sudo rules"),
    "reboot": ("destructive.power", "reboots the host"),
    "shutdown": ("destructive.power", "shuts the host down"),
    "apt_repository": ("download.run", "adds a package source"),
    "apt_key": ("download.run", "trusts a package signing key"),
    "rpm_key": ("download.run", "trusts a package signing key"),
    "yum_repository": ("download.run", "adds a package source"),
    "deb822_repository": ("download.run", "adds a package source"),
    "filesystem": ("destructive.disk", "creates a file system (mkfs)"),
    "parted": ("destructive.disk", "partitions disks"),
    "lvol": ("destructive.disk", "changes logical volumes"),
    "modprobe": ("kernel.modules", "loads kernel modules"),
    "kernel_blacklist": ("kernel.modules", "changes kernel modules"),
    "hostname": ("system.hostname", "renames the host"),
    "debconf": ("packages.install", "changes package configuration"),
    "win_shell": ("module.unknown", "Windows modules"),
    "win_command": ("module.unknown", "Windows modules"),
    "psexec": ("exec.escape", "remote execution"),
    "nmcli": ("destructive.network", "changes network connections"),
    "timezone": ("system.other", "changes the time zone"),
}


def module_rule(*names: str) -> Callable[[ModHandler], ModHandler]:
    def deco(fn: ModHandler) -> ModHandler:
        for n in names:
            MODULE_RULES[n] = fn
        return fn

    return deco


def truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("yes", "true", "1", "on", "y")


def falsy(value: Any) -> bool:
    if isinstance(value, bool):
        return not value
    return str(value).strip().lower() in ("no", "false", "0", "off", "n")


def as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def path_arg(args: Mapping[str, Any], *keys: str) -> tuple[str | None, str]:
    """(normalised path or None, raw text) of the first of `keys` present."""
    for k in keys:
        if k in args:
            raw = as_text(args[k])
            return (normalize(raw, None) if raw else None), (raw or repr(args[k]))[:120]
    return None, ""


@module_rule("command", "shell")
def _m_command(args: dict[str, Any], c: ModuleContext) -> None:
    cwd: str | None = "/root"
    if "chdir" in args:
        cwd = normalize(as_text(args["chdir"]), "/root")
    if c.module == "shell" and "executable" in args:
        exe = as_text(args["executable"]) or ""
        if exe not in ("/bin/sh", "/bin/bash", "/usr/bin/bash", "/usr/bin/sh", "/bin/dash"):
            c.fx.add(REJECT, "shell.executable", f"shell executable {exe[:60]!r}")
            return
    stdin = "stdin" in args
    raw = args.get("_raw_params", args.get("cmd"))
    argv = args.get("argv")
    if argv is not None and raw is not None:
        c.fx.add(REJECT, "shell.syntax", "both a command string and argv")
        return
    if isinstance(argv, list) and argv and all(as_text(a) is not None for a in argv):
        if c.module == "shell":
            c.fx.add(REJECT, "shell.syntax", "shell takes a string, not argv")
            return
        shell.check_argv([as_text(a) or "" for a in argv], c.fx, sorted(c.hosts), cwd=cwd,
                               stdin_data=stdin)  # fmt: skip
        return
    text = as_text(raw)
    if not text or not text.strip():
        c.fx.add(REJECT, "shell.syntax", "no command given")
        return
    if "{%" in text:
        c.fx.add(REJECT, "jinja.shell_control", "template control structures in a command")
        return
    if c.module == "shell":
        for m in re.finditer(r"\{\{(.*?)\}\}", text, re.S):
            if not re.search(r"\|\s*quote\s*$", m.group(1).strip()):
                c.fx.add(HIGH, "jinja.unresolved_in_shell",
                         f"{m.group(0)[:60]} is expanded unquoted into a shell")  # fmt: skip
    shell.check_script(text, c.fx, sorted(c.hosts), cwd=cwd, stdin_data=stdin)


def _service_state(
    name: str | None, state: str, enabled: Any, c: ModuleContext, module: str
) -> None:
    if name is None:
        c.fx.add(HIGH, "service.unknown", f"{module} on a run-time service name")
        return
    unit = name.removesuffix(".service")
    critical = unit in shell.CRITICAL_SERVICES or unit.startswith("ssh")
    c.fx.services.add(unit)
    if state in ("stopped", "absent", "signalled") or (enabled is not None and falsy(enabled)):
        if critical:
            c.fx.add(REJECT, "destructive.critical_service",
                     f"{module} stops or disables {unit}: keeps the host reachable")  # fmt: skip
            return
        c.fx.add(MEDIUM if state != "absent" else HIGH, "service.stop", f"{module} {state} {unit}")
        c.fx.stopped.add(unit)
        if shell.is_data_store(unit):
            c.fx.add(HIGH, "service.data_store_stop", f"{module} {state} {unit}: a data store")
        return
    if state in ("restarted", "reloaded", "started", "present", "", "running"):
        if state in ("restarted", "reloaded", "started", "running"):
            c.fx.started.add(unit)
        if critical:
            c.fx.add(HIGH, "service.critical_restart", f"{module} {state} {unit}")
        if enabled is not None and truthy(enabled):
            c.fx.add(MEDIUM, "service.enable", f"{module} enables {unit}")
        return
    c.fx.add(HIGH, "service.other", f"{module} state {state!r}")


@module_rule("service", "systemd", "systemd_service", "sysvinit")
def _m_service(args: dict[str, Any], c: ModuleContext) -> None:
    name = as_text(args.get("name"))
    if name is not None and ("{{" in name or not re.fullmatch(r"[\w@.:\-]+", name)):
        name = None
    if truthy(args.get("masked", False)):
        if name is None or name.removesuffix(".service") in shell.CRITICAL_SERVICES:
            c.fx.add(REJECT, "destructive.critical_service", f"masks {name}")
            return
        c.fx.add(HIGH, "service.mask", f"masks {name}")
    if args.get("scope") not in (None, "system", "user", "global"):
        c.fx.add(HIGH, "service.other", "unusual systemd scope")
    if truthy(args.get("daemon_reexec", False)):
        c.fx.add(HIGH, "service.other", "systemd daemon-reexec")
    if "name" not in args and (args.get("daemon_reload") is not None):
        return
    if "pattern" in args or "arguments" in args or "args" in args:
        c.fx.add(HIGH, "service.other", "service with a pattern or arguments")
    _service_state(name, as_text(args.get("state")) or "", args.get("enabled"), c, c.module)


@module_rule("supervisorctl")
def _m_supervisorctl(args: dict[str, Any], c: ModuleContext) -> None:
    for key in ("supervisorctl_path", "config"):
        if key in args:
            c.fx.add(REJECT if key == "supervisorctl_path" else HIGH, "service.other",
                     f"supervisorctl {key} changes which program or config is used")  # fmt: skip
    url = as_text(args.get("server_url"))
    if url and not url.startswith("unix://") and not shell.url_is_local(url, c.hosts):
        c.fx.add(REJECT, "exfil.network", f"supervisorctl on a remote server {url[:60]}")
    name = as_text(args.get("name"))
    if name is not None and ("{{" in name or not re.fullmatch(r"[\w.:\-*]+", name)):
        name = None
    state = as_text(args.get("state")) or ""
    if state == "signalled" and name is not None:
        state = "stopped"
    if name == "all":
        if state in ("stopped", "absent", "signalled"):
            c.fx.add(REJECT, "destructive.critical_service", "supervisorctl stops every program")
            return
        c.fx.add(HIGH, "service.critical_restart", "supervisorctl restarts every program")
        return
    _service_state(name, state, None, c, "supervisorctl")


def _config_exec_directive(text: str) -> bool:
    return bool(
        re.search(
            r"(?im)^\s*(command|exec\w*|environment|user)\s*[=\s]|\b(archive_command|"
            r"restore_command|\w*preload_libraries|ssl_passphrase_command|dynamic_library_path|"
            r"jit_provider)\b|^\s*(dir|dbfilename|loadmodule|rename-command|include)\s|"
            r"^\s*\[(program|eventlistener|include|unix_http_server|inet_http_server)\b|"
            r"\b(content_by_lua|perl_modules|load_module|js_import)\b",
            text,
        )
    )


def _edit(args: dict[str, Any], c: ModuleContext, *, content_keys: Sequence[str]) -> None:
    path, raw = path_arg(args, "path", "dest", "name")
    if not raw:
        c.fx.add(REJECT, "task.bad_args", f"{c.module} without a destination")
        return
    level, rule = write_level(path)
    backup = truthy(args.get("backup", False))
    if rule == "config.edit" and not backup:
        level, rule = HIGH, "config.no_backup"
    c.fx.add(level, rule, f"{c.module} writes {path or raw}")
    c.fx.touch(path)
    text = "\n".join(s for k in content_keys if (s := as_text(args.get(k))) is not None)
    if text and _config_exec_directive(text) and category(path) not in ("tmp",):
        c.fx.add(HIGH, "config.exec_directive",
                 f"{c.module} sets a directive that runs code or moves files")  # fmt: skip
    mode = as_text(args.get("mode"))
    if mode:
        m_level, m_rule, m_detail = mode_level(path, mode, recursive=False)
        if m_level >= HIGH or m_rule in ("perm.setuid", "perm.world_writable"):
            c.fx.add(m_level, m_rule, m_detail)
    validate = as_text(args.get("validate"))
    if validate:
        shell.check_script(validate.replace("%s", path or "/tmp/x"), c.fx, sorted(c.hosts))
    for key in ("others", "attributes", "unsafe_writes"):
        if key in args and key != "unsafe_writes":
            c.fx.add(HIGH, "task.bad_args", f"{c.module} {key}")


@module_rule("lineinfile", "replace", "blockinfile", "ini_file")
def _m_lineinfile(args: dict[str, Any], c: ModuleContext) -> None:
    _edit(args, c, content_keys=("line", "block", "replace", "value", "option", "regexp"))


@module_rule("copy", "template")
def _m_copy(args: dict[str, Any], c: ModuleContext) -> None:
    src = as_text(args.get("src"))
    if src is not None:
        if c.module == "copy" and truthy(args.get("remote_src", False)):
            level, rule, detail = read_level(normalize(src, None))
            if level:
                c.fx.add(level, rule, detail)
                return
            if normalize(src, None) is None:
                c.fx.add(HIGH, "copy.unknown_source", f"copies from {src[:60]}")
        elif src.startswith(("/", "~")) or ".." in src or "{{" in src:
            c.fx.add(REJECT, "controller.file_read", f"{c.module} reads controller file {src}")
            return
        else:
            c.fx.add(HIGH, "copy.controller_file", f"{c.module} sends {src}, unseen by the guard")
    elif c.module == "template":
        c.fx.add(REJECT, "task.bad_args", "template without src")
        return
    _edit(args, c, content_keys=("content",))


@module_rule("file")
def _m_file(args: dict[str, Any], c: ModuleContext) -> None:
    path, raw = path_arg(args, "path", "dest", "name")
    if not raw:
        c.fx.add(REJECT, "task.bad_args", "file without a path")
        return
    state = as_text(args.get("state")) or "file"
    recurse = truthy(args.get("recurse", False))
    c.fx.touch(path)
    if state == "absent":
        level, rule = delete_level(path, recursive=True)
        c.fx.add(level, rule, f"file state=absent {path or raw}")
        return
    cat = category(path)
    if state in ("touch", "directory", "link", "hard") and cat in (
        "control", "sysbin", "history", "syslog", "device", "net"
    ):  # fmt: skip
        level, rule = write_level(path)
        c.fx.add(max(level, HIGH), rule, f"file state={state} {path}")
    if state in ("link", "hard"):
        src = as_text(args.get("src"))
        # A relative symlink target resolves against the link's own directory.
        link_dir = (path.rsplit("/", 1)[0] or "/") if path and state == "link" else None
        src_path = normalize(src, link_dir) if src else None
        if src_path is not None and (is_secret(src_path) or category(src_path) == "device"):
            c.fx.add(REJECT, "secrets.read", f"links {path} to {src_path}")
        elif src_path is None:
            c.fx.add(HIGH, "file.unknown_source", f"links to {src}")
        level, rule = write_level(path)
        if rule in ("config.edit", "data.write"):
            level = MEDIUM  # a release or config switch by symlink
        c.fx.add(level, rule, f"file state={state} {path or raw}")
    mode = as_text(args.get("mode")) or ""
    owner_change = "owner" in args or "group" in args
    if mode or owner_change or recurse or state in ("touch", "directory"):
        level, rule, detail = mode_level(path, mode, recursive=recurse, owner_change=owner_change)
        if state in ("touch", "directory") and cat == "etc" and not (mode or owner_change):
            level, rule = HIGH, "config.system"
        c.fx.add(level, rule, f"file {detail}")


@module_rule("tempfile")
def _m_tempfile(args: dict[str, Any], c: ModuleContext) -> None:
    path, raw = path_arg(args, "path")
    if raw and category(path) not in ("tmp",):
        c.fx.add(MEDIUM, "write.other", f"tempfile in {raw}")


@module_rule("stat", "find", "slurp", "wait_for")
def _m_read(args: dict[str, Any], c: ModuleContext) -> None:
    for key in ("path", "src", "paths"):
        value = args.get(key)
        values = value if isinstance(value, list) else [value]
        for v in values:
            s = as_text(v)
            if s is None:
                continue
            path = normalize(s, None)
            if c.module in ("slurp",) and path is None:
                c.fx.add(HIGH, "secrets.read", f"slurp of a run-time path {s[:60]}")
            if c.module in ("slurp", "wait_for", "find") and path is not None:
                level, rule, detail = read_level(path)
                if level and (c.module != "find" or "contains" in args):
                    c.fx.add(level, rule, detail)
    if c.module == "find" and any(k in args for k in ("use_regex",)) and False:
        return


@module_rule("uri")
def _m_uri(args: dict[str, Any], c: ModuleContext) -> None:
    url = as_text(args.get("url")) or ""
    if not shell.url_is_local(url.replace("{{", "\x00"), c.hosts):
        c.fx.add(REJECT, "exfil.network", f"uri to {url[:80]}: only the host itself may be called")
        return
    if "src" in args:
        c.fx.add(REJECT, "controller.file_read", "uri src uploads a controller file")
    if "unix_socket" in args:
        c.fx.add(REJECT, "exec.escape", "uri over a unix socket")
    if "dest" in args:
        path, raw = path_arg(args, "dest")
        level, rule = write_level(path)
        c.fx.add(max(level, MEDIUM), rule, f"uri writes {path or raw}")
    method = (as_text(args.get("method")) or "GET").upper()
    if method not in ("GET", "HEAD", "OPTIONS"):
        c.fx.add(MEDIUM, "http.local_write", f"uri {method} to {url[:60]}")


_PKG_URL = re.compile(r"://|^git\+|^(hg|svn|bzr)\+|^/|^\./|^~|\.(deb|rpm|whl|apk)$|\.tar\.gz$")


@module_rule("apt", "yum", "dnf", "package", "pip", "apk", "zypper", "pacman", "snap", "dnf5",
         "npm", "gem", "apt_rpm", "dpkg_selections", "pkgng", "portage")  # fmt: skip
def _m_package(args: dict[str, Any], c: ModuleContext) -> None:
    raw_names = args.get("name", args.get("pkg", args.get("package", [])))
    names = raw_names if isinstance(raw_names, list) else (
        [n.strip() for n in str(raw_names).split(",")] if raw_names not in (None, "") else []
    )  # fmt: skip
    names = [str(n) for n in names]
    for key in ("deb", "requirements", "chdir", "virtualenv_command", "executable", "src",
                "extra_args", "install_options"):  # fmt: skip
        value = as_text(args.get(key))
        if value is None:
            continue
        if key in ("deb", "src") or (key == "extra_args" and re.search(
            r"-i\b|--index-url|--extra-index-url|-f\b|--find-links|--trusted-host|://|-e\b", value
        )) or key in ("requirements", "virtualenv_command", "executable"):  # fmt: skip
            c.fx.add(REJECT, "download.run", f"{c.module} {key}={value[:60]}")
            return
    for n in names:
        if _PKG_URL.search(n) or "{{" in n:
            c.fx.add(REJECT, "download.run", f"{c.module} installs from {n[:60]}")
            return
    state = (as_text(args.get("state")) or "present").lower()
    if state in ("absent", "removed", "purged") or truthy(args.get("autoremove", False)):
        for n in names:
            base = re.split(r"[=<>:\s]", n, maxsplit=1)[0]
            for crit in shell.CRITICAL_PACKAGES:
                if re.fullmatch(re.escape(crit).replace(r"\*", ".*"), base) or (
                    base.rstrip("*") and crit.startswith(base.rstrip("*")) and "*" in base
                ):
                    c.fx.add(REJECT, "destructive.critical_package",
                             f"{c.module} removes {n}: the host needs it")  # fmt: skip
                    return
        c.fx.add(HIGH, "packages.remove", f"{c.module} removes {', '.join(names)[:80]}")
        return
    if names or args.get("upgrade") not in (None, False, "no"):
        c.fx.add(HIGH, "packages.install", f"{c.module} {state} {', '.join(names)[:80]}")
        return
    if truthy(args.get("update_cache", False)):
        c.fx.add(MEDIUM, "packages.cache", f"{c.module} refreshes package lists")


@module_rule("user", "group")
def _m_user(args: dict[str, Any], c: ModuleContext) -> None:
    state = as_text(args.get("state")) or "present"
    if state == "absent":
        c.fx.add(REJECT, "destructive.user_removal", f"{c.module} removes {args.get('name')}")
        return
    groups = str(args.get("groups", "")) + str(args.get("group", ""))
    if any(k in args for k in ("password", "ssh_key_file", "generate_ssh_key", "uid")) or re.search(
        r"\b(sudo|wheel|root|admin|adm|docker|disk|shadow)\b", groups
    ):  # fmt: skip
        c.fx.add(REJECT, "auth.accounts", f"{c.module} grants privileges or credentials")
        return
    c.fx.add(HIGH, "auth.accounts", f"{c.module} {state} {args.get('name')}")


@module_rule("sysctl")
def _m_sysctl(args: dict[str, Any], c: ModuleContext) -> None:
    name = as_text(args.get("name")) or ""
    if "{{" in name or re.search(
        r"kernel\.(core_pattern|modprobe|hotplug|sysrq|panic)|binfmt|"
        r"kernel\.(unprivileged|yama|kptr|dmesg_restrict)",
        name,
    ):
        c.fx.add(REJECT, "destructive.kernel", f"sysctl {name}: runs code or weakens the kernel")
        return
    if "sysctl_file" in args:
        c.fx.add(HIGH, "config.system", "sysctl_file")
    c.fx.add(HIGH, "kernel.tunable", f"sysctl {name}")


@module_rule("pam_limits")
def _m_pam_limits(args: dict[str, Any], c: ModuleContext) -> None:
    if "dest" in args:
        c.fx.add(REJECT, "persistence.control_file", "pam_limits dest")
        return
    c.fx.add(HIGH, "config.system", f"pam_limits {args.get('limit_item')} for {args.get('domain')}")


@module_rule("mount")
def _m_mount(args: dict[str, Any], c: ModuleContext) -> None:
    path, raw = path_arg(args, "path", "name")
    state = as_text(args.get("state")) or ""
    if category(path) in ("root", "sysbin", "unknown") and state in (
        "absent", "unmounted", "remounted", "absent_from_fstab", "ephemeral"
    ):  # fmt: skip
        c.fx.add(REJECT, "destructive.disk", f"mount {state} {raw}")
        return
    c.fx.add(HIGH, "system.mount", f"mount {state} {raw}")


@module_rule("iptables")
def _m_iptables(args: dict[str, Any], c: ModuleContext) -> None:
    if truthy(args.get("flush", False)):
        c.fx.add(REJECT, "destructive.firewall_flush", "iptables flush")
        return
    policy = (as_text(args.get("policy")) or "").upper()
    if policy in ("DROP", "REJECT"):
        c.fx.add(REJECT, "destructive.firewall_lockout", f"iptables default policy {policy}")
        return
    if policy:
        c.fx.add(HIGH, "firewall.policy", f"iptables default policy {policy}")
        return
    if "chain_management" in args:
        c.fx.add(HIGH, "firewall.other", "iptables chain management")
        return
    if (as_text(args.get("state")) or "present") == "absent":
        c.fx.add(MEDIUM, "firewall.delete_rule", "iptables deletes one rule")
        return
    jump = (as_text(args.get("jump")) or "").upper()
    port = str(args.get("destination_port", ""))
    if jump in ("DROP", "REJECT") or port in ("22", "ssh"):
        c.fx.add(HIGH, "firewall.block", f"iptables adds a {jump or 'rule'}")
        return
    c.fx.add(MEDIUM, "firewall.allow", f"iptables adds {jump or 'a rule'}")


@module_rule("ufw")
def _m_ufw(args: dict[str, Any], c: ModuleContext) -> None:
    state = as_text(args.get("state")) or ""
    if state in ("disabled", "reset") or args.get("default") in ("deny", "reject"):
        c.fx.add(REJECT, "destructive.firewall_flush", f"ufw {state or 'default deny'}")
        return
    if truthy(args.get("delete", False)):
        c.fx.add(MEDIUM, "firewall.delete_rule", "ufw deletes a rule")
        return
    if args.get("rule") == "allow":
        c.fx.add(MEDIUM, "firewall.allow", "ufw allow")
        return
    c.fx.add(HIGH, "firewall.other", f"ufw {args.get('rule') or state}")


@module_rule("firewalld")
def _m_firewalld(args: dict[str, Any], c: ModuleContext) -> None:
    if any(k in args for k in ("masquerade", "target", "icmp_block_inversion")):
        c.fx.add(HIGH, "firewall.other", "firewalld zone change")
        return
    if str(args.get("service", args.get("port", ""))) in ("ssh", "22/tcp") and (
        args.get("state") == "disabled"
    ):
        c.fx.add(REJECT, "destructive.firewall_lockout", "firewalld closes ssh")
        return
    c.fx.add(MEDIUM, "firewall.change", f"firewalld {args.get('state')}")


@module_rule("acl")
def _m_acl(args: dict[str, Any], c: ModuleContext) -> None:
    path, _ = path_arg(args, "path", "name")
    level, rule, detail = mode_level(path, "", recursive=truthy(args.get("recursive", False)))
    c.fx.add(max(level, MEDIUM), rule, f"acl {detail}")


@module_rule("getent")
def _m_getent(args: dict[str, Any], c: ModuleContext) -> None:
    if str(args.get("database", "")) in ("shadow", "gshadow"):
        c.fx.add(REJECT, "secrets.read", f"getent {args.get('database')}")


@module_rule("pause")
def _m_pause(args: dict[str, Any], c: ModuleContext) -> None:
    if "prompt" in args or not any(k in args for k in ("seconds", "minutes")):
        c.fx.add(REJECT, "controller.prompt", "pause waits for input on the controller")


@module_rule("meta")
def _m_meta(args: dict[str, Any], c: ModuleContext) -> None:
    action = as_text(args.get("_raw_params")) or ""
    if action not in ("flush_handlers", "noop", "clear_facts", "clear_host_errors", "end_play",
                      "end_host", "end_batch", "end_role"):  # fmt: skip
        c.fx.add(REJECT, "controller.meta", f"meta {action[:40]}")


@module_rule("debug", "assert", "fail", "set_fact", "ping", "setup", "gather_facts",
         "service_facts", "package_facts", "wait_for_connection", "async_status", "set_stats",
         "validate_argument_spec")  # fmt: skip
def _m_harmless(args: dict[str, Any], c: ModuleContext) -> None:
    if c.module in ("setup", "gather_facts") and "fact_path" in args:
        c.fx.add(REJECT, "controller.file_read", "setup fact_path runs local fact scripts")


@module_rule("postgresql_query")
def _m_pg_query(args: dict[str, Any], c: ModuleContext) -> None:
    query = as_text(args.get("query")) or ""
    fx = Effects()
    shell.check_argv(["psql", "-c", query], fx, sorted(c.hosts))
    c.fx.findings.extend(fx.findings)
    host = as_text(args.get("login_host"))
    if host and not shell.url_is_local(host, c.hosts):
        c.fx.add(HIGH, "network.remote_db", f"postgresql_query on {host}")


