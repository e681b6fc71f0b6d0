"""The guard: the authority on whether an LLM-written playbook may run, and with what oversight.

It decides from the playbook text and the incident's hosts only. Nothing from the alert, the
model's prose or the probes reaches it, so no text can widen what it allows (DESIGN.md, "Safety
model"). Everything it cannot judge it refuses: it fails closed.

A verdict is one of

- rejected (`allowed=False`): at least one finding is a refusal (CLI exit 1);
- allowed, risk `low`: runs automatically (exit 0);
- allowed, risk `medium`: runs `--check --diff` first, then automatically (exit 0);
- allowed, risk `high`: waits for a person's approval (exit 3).

The pieces: strict YAML loading (no aliases, anchors, merge keys, duplicate keys or unknown
tags, a size limit), a check of every play and task keyword, host patterns limited to the
incident's hosts, a module allowlist with FQCN normalisation, per-module argument rules, and the
shell policy in `guard_shell` for `command`/`shell`. Paths are classified in `guard_paths`.
Templates are resolved where the playbook itself gives their values (vars, set_fact, literal
loops), so a command hidden in a variable is judged as the command it is; any lookup, `query`,
`pipe` or sandbox escape in a template is refused wherever it appears.

How to extend: `docs/guard.md`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from remed_daemon.agents import guard_shell, guard_shell_processes, guard_templates
from remed_daemon.agents.guard_paths import (
    HIGH,
    LEVEL_NAMES,
    LOW,
    MEDIUM,
    REJECT,
    Effects,
    Finding,
    category,
    delete_level,
    is_secret,
    mode_level,
    normalize,
    read_level,
    write_level,
)

Risk = Literal["low", "medium", "high"]
EXIT_ALLOWED, EXIT_REJECTED, EXIT_USAGE, EXIT_APPROVAL = 0, 1, 2, 3


@dataclass(frozen=True)
class Violation:
    """One reason for the verdict: a rule id, the task (name or index) and what was found."""

    rule: str
    task: str
    detail: str


@dataclass(frozen=True)
class GuardPolicy:
    """Limits of the guard. The rules themselves are code, reviewed like code."""

    max_bytes: int = 128 * 1024
    max_depth: int = 40
    max_tasks: int = 300
    max_variants: int = 64

    def __post_init__(self) -> None:
        if min(self.max_bytes, self.max_depth, self.max_tasks, self.max_variants) <= 0:
            raise ValueError("GuardPolicy limits must be positive; use the defaults if unsure")


DEFAULT = GuardPolicy()


@dataclass(frozen=True)
class GuardVerdict:
    allowed: bool
    risk: Risk
    needs_approval: bool
    violations: tuple[Violation, ...]  # what makes it rejected (empty when allowed)
    reasons: tuple[Violation, ...] = ()  # what raised the risk above low
    touched_files: frozenset[str] = frozenset()
    touched_services: frozenset[str] = frozenset()

    @property
    def exit_code(self) -> int:
        if not self.allowed:
            return EXIT_REJECTED
        return EXIT_APPROVAL if self.needs_approval else EXIT_ALLOWED

    @property
    def check_first(self) -> bool:
        """Medium risk: run `--check --diff` before applying."""
        return self.allowed and self.risk == "medium"

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "risk": self.risk,
            "needs_approval": self.needs_approval,
            "violations": [v.__dict__ for v in self.violations],
            "reasons": [v.__dict__ for v in self.reasons],
            "touched_files": sorted(self.touched_files),
            "touched_services": sorted(self.touched_services),
        }


class GuardUsageError(ValueError):
    """The caller's mistake (no hosts, a bad host name), not the playbook's."""


_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def parse_hosts(hosts: Sequence[str] | str) -> tuple[str, ...]:
    items = hosts.split(",") if isinstance(hosts, str) else list(hosts)
    out = tuple(h.strip() for h in items if h.strip())
    if not out:
        raise GuardUsageError("no incident hosts given: pass --hosts H1,H2")
    for h in out:
        if not _HOST_NAME.match(h):
            raise GuardUsageError(f"{h!r} is not a host name (letters, digits, _ . -)")
    return out


def check_playbook(
    text: str, hosts: Sequence[str] | str, policy: GuardPolicy = DEFAULT
) -> GuardVerdict:
    """Judge a playbook for the incident's hosts. Never raises for any playbook text."""
    allowed_hosts = parse_hosts(hosts)
    checker = _Checker(allowed_hosts, policy)
    try:
        checker.run(text)
    except RecursionError:
        checker.add(REJECT, "yaml.too_deep", "playbook", "nesting too deep to judge")
    except Exception as exc:  # fail closed: a guard bug must never allow a playbook
        checker.add(REJECT, "guard.internal", "playbook", f"{type(exc).__name__}: {exc}"[:200])
    return checker.verdict()


# --- YAML -----------------------------------------------------------------------------------


class _YamlRefused(Exception):
    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.rule = rule


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without aliases, anchors, merge keys or duplicate keys, and with a depth cap."""

    max_depth = 40

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise _YamlRefused("yaml.alias", "YAML aliases are refused (billion laughs, hiding)")
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            raise _YamlRefused("yaml.alias", "YAML anchors are refused")
        self._depth += 1
        if self._depth > self.max_depth:
            raise _YamlRefused("yaml.too_deep", f"nesting deeper than {self.max_depth}")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise _YamlRefused("yaml.merge_key", "YAML merge keys (<<) are refused")
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise _YamlRefused("yaml.duplicate_key", f"duplicate key {key!r}")
                    seen.add(key)
                except TypeError:
                    raise _YamlRefused("yaml.invalid", "unhashable mapping key") from None
        return super().construct_mapping(node, deep=deep)


def load_playbook(text: str, policy: GuardPolicy = DEFAULT) -> Any:
    """Strictly parse playbook YAML; raises _YamlRefused with a rule id."""
    if len(text.encode("utf-8", "surrogatepass")) > policy.max_bytes:
        raise _YamlRefused("yaml.too_large", f"playbook larger than {policy.max_bytes} bytes")
    try:
        # The reader checks the characters as it is built: a control character raises here.
        loader = _StrictLoader(text)
    except yaml.YAMLError as exc:
        raise _YamlRefused("yaml.invalid", str(exc).strip().splitlines()[0][:200]) from None
    loader.max_depth = policy.max_depth
    try:
        return loader.get_single_data()
    except _YamlRefused:
        raise
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid YAML"
        raise _YamlRefused("yaml.invalid", first[:200]) from None
    finally:
        loader.dispose()


# --- keywords -------------------------------------------------------------------------------

PLAY_KEYS = frozenset(
    {
        "name", "hosts", "become", "become_user", "become_method", "gather_facts",
        "gather_subset", "gather_timeout", "tasks", "pre_tasks", "post_tasks", "handlers",
        "vars", "serial", "max_fail_percentage", "any_errors_fatal", "ignore_errors",
        "ignore_unreachable", "check_mode", "diff", "tags", "environment", "force_handlers",
        "no_log", "timeout", "throttle", "order", "strategy", "run_once", "collections",
        "connection",
    }
)  # fmt: skip
TASK_KEYS = frozenset(
    {
        "name", "when", "register", "become", "become_user", "become_method", "changed_when",
        "failed_when", "ignore_errors", "ignore_unreachable", "notify", "listen", "tags",
        "loop", "loop_control", "until", "retries", "delay", "vars", "environment",
        "check_mode", "diff", "no_log", "run_once", "timeout", "throttle", "any_errors_fatal",
        "args", "async", "poll", "collections", "connection",
    }
)  # fmt: skip
BLOCK_KEYS = frozenset(
    {
        "block", "rescue", "always", "name", "when", "become", "become_user", "become_method",
        "vars", "environment", "tags", "ignore_errors", "ignore_unreachable",
        "any_errors_fatal", "check_mode", "diff", "no_log", "run_once", "timeout", "throttle",
        "notify", "collections", "connection", "max_fail_percentage",
    }
)  # fmt: skip
# Keywords refused wherever they appear, with the rule that names why.
REFUSED_KEYS = {
    "delegate_to": "controller.delegate",
    "delegate_facts": "controller.delegate",
    "local_action": "controller.local_action",
    "vars_prompt": "controller.vars_prompt",
    "vars_files": "controller.file_read",
    "roles": "controller.roles",
    "import_playbook": "controller.include",
    "include": "controller.include",
    "module_defaults": "play.module_defaults",
    "remote_user": "play.identity",
    "port": "play.identity",
    "debugger": "controller.debugger",
    "become_flags": "privilege.become",
    "become_exe": "privilege.become",
    "fact_path": "controller.file_read",
}
LOOP_OK = frozenset(
    {
        "with_items", "with_list", "with_dict", "with_indexed_items", "with_flattened",
        "with_together", "with_nested", "with_sequence", "with_subelements",
        "with_random_choice", "with_cartesian",
    }
)  # fmt: skip
ALLOWED_COLLECTIONS = frozenset({"ansible.builtin", "ansible.legacy"})
EXPR_KEYS = frozenset({"when", "changed_when", "failed_when", "until", "that", "var"})
_DUNDER_WORD = re.compile(r"__\w+__")
_JINJA_BLOCK = re.compile(r"\{\{(.*?)\}\}|\{%(.*?)%\}", re.S)
_JINJA_DANGER: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"\b(lookup|query|q)\s*\("), "controller.lookup",
     "a lookup runs on the controller"),
    (re.compile(r"__\w+__|\bmro\s*\(|\bself\s*\."), "jinja.sandbox",
     "template sandbox escape attempt"),
    (re.compile(r"^\s*(include|import|extends|from|macro|call)\b"), "controller.include",
     "template includes or imports controller files"),
    (re.compile(r"\bhostvars\b|\bvars\s*\[|\bplay_hosts\b"), "jinja.hostvars",
     "reads variables of other hosts"),
    (re.compile(r"\|\s*(b64decode|unvault|vault|from_yaml_all)\b|\bb64decode\b|"
                r"ansible\.builtin\.\w+_lookup\b"), "obfuscation.decode",
     "template decodes hidden content"),
    (re.compile(r"\brange\s*\(\s*\d{5,}|\*\*\s*\d{3,}|\d{7,}\s*\*"), "jinja.resource",
     "template that exhausts memory or CPU"),
)  # fmt: skip

MAGIC_HOST_VARS = frozenset(
    {
        "inventory_hostname", "inventory_hostname_short", "ansible_host", "ansible_hostname",
        "ansible_fqdn", "ansible_nodename", "remed_host",
    }
)  # fmt: skip


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
class _ModCtx:
    hosts: frozenset[str]
    module: str
    fx: Effects


ModHandler = Callable[[dict[str, Any], _ModCtx], None]
_MODULES: dict[str, ModHandler] = {}
# Modules refused outright, with the rule and the reason.
_REFUSED_MODULES = {
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


def _module(*names: str) -> Callable[[ModHandler], ModHandler]:
    def deco(fn: ModHandler) -> ModHandler:
        for n in names:
            _MODULES[n] = fn
        return fn

    return deco


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("yes", "true", "1", "on", "y")


def _falsy(value: Any) -> bool:
    if isinstance(value, bool):
        return not value
    return str(value).strip().lower() in ("no", "false", "0", "off", "n")


def _str(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _path_arg(args: Mapping[str, Any], *keys: str) -> tuple[str | None, str]:
    """(normalised path or None, raw text) of the first of `keys` present."""
    for k in keys:
        if k in args:
            raw = _str(args[k])
            return (normalize(raw, None) if raw else None), (raw or repr(args[k]))[:120]
    return None, ""


@_module("command", "shell")
def _m_command(args: dict[str, Any], c: _ModCtx) -> None:
    cwd: str | None = "/root"
    if "chdir" in args:
        cwd = normalize(_str(args["chdir"]), "/root")
    if c.module == "shell" and "executable" in args:
        exe = _str(args["executable"]) or ""
        if exe not in ("/bin/sh", "/bin/bash", "/usr/bin/bash", "/usr/bin/sh", "/bin/dash"):
            c.fx.add(REJECT, "shell.executable", f"shell executable {exe[:60]!r}")
            return
    stdin = "stdin" in args
    raw = args.get("_raw_params", args.get("cmd"))
    argv = args.get("argv")
    if argv is not None and raw is not None:
        c.fx.add(REJECT, "shell.syntax", "both a command string and argv")
        return
    if isinstance(argv, list) and argv and all(_str(a) is not None for a in argv):
        if c.module == "shell":
            c.fx.add(REJECT, "shell.syntax", "shell takes a string, not argv")
            return
        guard_shell.check_argv([_str(a) or "" for a in argv], c.fx, sorted(c.hosts), cwd=cwd,
                               stdin_data=stdin)  # fmt: skip
        return
    text = _str(raw)
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
    guard_shell.check_script(text, c.fx, sorted(c.hosts), cwd=cwd, stdin_data=stdin)


def _service_state(name: str | None, state: str, enabled: Any, c: _ModCtx, module: str) -> None:
    if name is None:
        c.fx.add(HIGH, "service.unknown", f"{module} on a run-time service name")
        return
    unit = name.removesuffix(".service")
    critical = unit in guard_shell.CRITICAL_SERVICES or unit.startswith("ssh")
    c.fx.services.add(unit)
    if state in ("stopped", "absent", "signalled") or (enabled is not None and _falsy(enabled)):
        if critical:
            c.fx.add(REJECT, "destructive.critical_service",
                     f"{module} stops or disables {unit}: keeps the host reachable")  # fmt: skip
            return
        c.fx.add(MEDIUM if state != "absent" else HIGH, "service.stop", f"{module} {state} {unit}")
        c.fx.stopped.add(unit)
        if guard_shell_processes.is_data_store(unit):
            c.fx.add(HIGH, "service.data_store_stop", f"{module} {state} {unit}: a data store")
        return
    if state in ("restarted", "reloaded", "started", "present", "", "running"):
        if state in ("restarted", "reloaded", "started", "running"):
            c.fx.started.add(unit)
        if critical:
            c.fx.add(HIGH, "service.critical_restart", f"{module} {state} {unit}")
        if enabled is not None and _truthy(enabled):
            c.fx.add(MEDIUM, "service.enable", f"{module} enables {unit}")
        return
    c.fx.add(HIGH, "service.other", f"{module} state {state!r}")


@_module("service", "systemd", "systemd_service", "sysvinit")
def _m_service(args: dict[str, Any], c: _ModCtx) -> None:
    name = _str(args.get("name"))
    if name is not None and ("{{" in name or not re.fullmatch(r"[\w@.:\-]+", name)):
        name = None
    if _truthy(args.get("masked", False)):
        if name is None or name.removesuffix(".service") in guard_shell.CRITICAL_SERVICES:
            c.fx.add(REJECT, "destructive.critical_service", f"masks {name}")
            return
        c.fx.add(HIGH, "service.mask", f"masks {name}")
    if args.get("scope") not in (None, "system", "user", "global"):
        c.fx.add(HIGH, "service.other", "unusual systemd scope")
    if _truthy(args.get("daemon_reexec", False)):
        c.fx.add(HIGH, "service.other", "systemd daemon-reexec")
    if "name" not in args and (args.get("daemon_reload") is not None):
        return
    if "pattern" in args or "arguments" in args or "args" in args:
        c.fx.add(HIGH, "service.other", "service with a pattern or arguments")
    _service_state(name, _str(args.get("state")) or "", args.get("enabled"), c, c.module)


@_module("supervisorctl")
def _m_supervisorctl(args: dict[str, Any], c: _ModCtx) -> None:
    for key in ("supervisorctl_path", "config"):
        if key in args:
            c.fx.add(REJECT if key == "supervisorctl_path" else HIGH, "service.other",
                     f"supervisorctl {key} changes which program or config is used")  # fmt: skip
    url = _str(args.get("server_url"))
    if url and not url.startswith("unix://") and not guard_shell.url_is_local(url, c.hosts):
        c.fx.add(REJECT, "exfil.network", f"supervisorctl on a remote server {url[:60]}")
    name = _str(args.get("name"))
    if name is not None and ("{{" in name or not re.fullmatch(r"[\w.:\-*]+", name)):
        name = None
    state = _str(args.get("state")) or ""
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


def _edit(args: dict[str, Any], c: _ModCtx, *, content_keys: Sequence[str]) -> None:
    path, raw = _path_arg(args, "path", "dest", "name")
    if not raw:
        c.fx.add(REJECT, "task.bad_args", f"{c.module} without a destination")
        return
    level, rule = write_level(path)
    backup = _truthy(args.get("backup", False))
    if rule == "config.edit" and not backup:
        level, rule = HIGH, "config.no_backup"
    c.fx.add(level, rule, f"{c.module} writes {path or raw}")
    c.fx.touch(path)
    text = "\n".join(s for k in content_keys if (s := _str(args.get(k))) is not None)
    if text and _config_exec_directive(text) and category(path) not in ("tmp",):
        c.fx.add(HIGH, "config.exec_directive",
                 f"{c.module} sets a directive that runs code or moves files")  # fmt: skip
    mode = _str(args.get("mode"))
    if mode:
        m_level, m_rule, m_detail = mode_level(path, mode, recursive=False)
        if m_level >= HIGH or m_rule in ("perm.setuid", "perm.world_writable"):
            c.fx.add(m_level, m_rule, m_detail)
    validate = _str(args.get("validate"))
    if validate:
        guard_shell.check_script(validate.replace("%s", path or "/tmp/x"), c.fx, sorted(c.hosts))
    for key in ("others", "attributes", "unsafe_writes"):
        if key in args and key != "unsafe_writes":
            c.fx.add(HIGH, "task.bad_args", f"{c.module} {key}")


@_module("lineinfile", "replace", "blockinfile", "ini_file")
def _m_lineinfile(args: dict[str, Any], c: _ModCtx) -> None:
    _edit(args, c, content_keys=("line", "block", "replace", "value", "option", "regexp"))


@_module("copy", "template")
def _m_copy(args: dict[str, Any], c: _ModCtx) -> None:
    src = _str(args.get("src"))
    if src is not None:
        if c.module == "copy" and _truthy(args.get("remote_src", False)):
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


@_module("file")
def _m_file(args: dict[str, Any], c: _ModCtx) -> None:
    path, raw = _path_arg(args, "path", "dest", "name")
    if not raw:
        c.fx.add(REJECT, "task.bad_args", "file without a path")
        return
    state = _str(args.get("state")) or "file"
    recurse = _truthy(args.get("recurse", False))
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
        src = _str(args.get("src"))
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
    mode = _str(args.get("mode")) or ""
    owner_change = "owner" in args or "group" in args
    if mode or owner_change or recurse or state in ("touch", "directory"):
        level, rule, detail = mode_level(path, mode, recursive=recurse, owner_change=owner_change)
        if state in ("touch", "directory") and cat == "etc" and not (mode or owner_change):
            level, rule = HIGH, "config.system"
        c.fx.add(level, rule, f"file {detail}")


@_module("tempfile")
def _m_tempfile(args: dict[str, Any], c: _ModCtx) -> None:
    path, raw = _path_arg(args, "path")
    if raw and category(path) not in ("tmp",):
        c.fx.add(MEDIUM, "write.other", f"tempfile in {raw}")


@_module("stat", "find", "slurp", "wait_for")
def _m_read(args: dict[str, Any], c: _ModCtx) -> None:
    for key in ("path", "src", "paths"):
        value = args.get(key)
        values = value if isinstance(value, list) else [value]
        for v in values:
            s = _str(v)
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


@_module("uri")
def _m_uri(args: dict[str, Any], c: _ModCtx) -> None:
    url = _str(args.get("url")) or ""
    if not guard_shell.url_is_local(url.replace("{{", "\x00"), c.hosts):
        c.fx.add(REJECT, "exfil.network", f"uri to {url[:80]}: only the host itself may be called")
        return
    if "src" in args:
        c.fx.add(REJECT, "controller.file_read", "uri src uploads a controller file")
    if "unix_socket" in args:
        c.fx.add(REJECT, "exec.escape", "uri over a unix socket")
    if "dest" in args:
        path, raw = _path_arg(args, "dest")
        level, rule = write_level(path)
        c.fx.add(max(level, MEDIUM), rule, f"uri writes {path or raw}")
    method = (_str(args.get("method")) or "GET").upper()
    if method not in ("GET", "HEAD", "OPTIONS"):
        c.fx.add(MEDIUM, "http.local_write", f"uri {method} to {url[:60]}")


_PKG_URL = re.compile(r"://|^git\+|^(hg|svn|bzr)\+|^/|^\./|^~|\.(deb|rpm|whl|apk)$|\.tar\.gz$")


@_module("apt", "yum", "dnf", "package", "pip", "apk", "zypper", "pacman", "snap", "dnf5",
         "npm", "gem", "apt_rpm", "dpkg_selections", "pkgng", "portage")  # fmt: skip
def _m_package(args: dict[str, Any], c: _ModCtx) -> None:
    raw_names = args.get("name", args.get("pkg", args.get("package", [])))
    names = raw_names if isinstance(raw_names, list) else (
        [n.strip() for n in str(raw_names).split(",")] if raw_names not in (None, "") else []
    )  # fmt: skip
    names = [str(n) for n in names]
    for key in ("deb", "requirements", "chdir", "virtualenv_command", "executable", "src",
                "extra_args", "install_options"):  # fmt: skip
        value = _str(args.get(key))
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
    state = (_str(args.get("state")) or "present").lower()
    if state in ("absent", "removed", "purged") or _truthy(args.get("autoremove", False)):
        for n in names:
            base = re.split(r"[=<>:\s]", n, maxsplit=1)[0]
            for crit in guard_shell.CRITICAL_PACKAGES:
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
    if _truthy(args.get("update_cache", False)):
        c.fx.add(MEDIUM, "packages.cache", f"{c.module} refreshes package lists")


@_module("user", "group")
def _m_user(args: dict[str, Any], c: _ModCtx) -> None:
    state = _str(args.get("state")) or "present"
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


@_module("sysctl")
def _m_sysctl(args: dict[str, Any], c: _ModCtx) -> None:
    name = _str(args.get("name")) or ""
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


@_module("pam_limits")
def _m_pam_limits(args: dict[str, Any], c: _ModCtx) -> None:
    if "dest" in args:
        c.fx.add(REJECT, "persistence.control_file", "pam_limits dest")
        return
    c.fx.add(HIGH, "config.system", f"pam_limits {args.get('limit_item')} for {args.get('domain')}")


@_module("mount")
def _m_mount(args: dict[str, Any], c: _ModCtx) -> None:
    path, raw = _path_arg(args, "path", "name")
    state = _str(args.get("state")) or ""
    if category(path) in ("root", "sysbin", "unknown") and state in (
        "absent", "unmounted", "remounted", "absent_from_fstab", "ephemeral"
    ):  # fmt: skip
        c.fx.add(REJECT, "destructive.disk", f"mount {state} {raw}")
        return
    c.fx.add(HIGH, "system.mount", f"mount {state} {raw}")


@_module("iptables")
def _m_iptables(args: dict[str, Any], c: _ModCtx) -> None:
    if _truthy(args.get("flush", False)):
        c.fx.add(REJECT, "destructive.firewall_flush", "iptables flush")
        return
    policy = (_str(args.get("policy")) or "").upper()
    if policy in ("DROP", "REJECT"):
        c.fx.add(REJECT, "destructive.firewall_lockout", f"iptables default policy {policy}")
        return
    if policy:
        c.fx.add(HIGH, "firewall.policy", f"iptables default policy {policy}")
        return
    if "chain_management" in args:
        c.fx.add(HIGH, "firewall.other", "iptables chain management")
        return
    if (_str(args.get("state")) or "present") == "absent":
        c.fx.add(MEDIUM, "firewall.delete_rule", "iptables deletes one rule")
        return
    jump = (_str(args.get("jump")) or "").upper()
    port = str(args.get("destination_port", ""))
    if jump in ("DROP", "REJECT") or port in ("22", "ssh"):
        c.fx.add(HIGH, "firewall.block", f"iptables adds a {jump or 'rule'}")
        return
    c.fx.add(MEDIUM, "firewall.allow", f"iptables adds {jump or 'a rule'}")


@_module("ufw")
def _m_ufw(args: dict[str, Any], c: _ModCtx) -> None:
    state = _str(args.get("state")) or ""
    if state in ("disabled", "reset") or args.get("default") in ("deny", "reject"):
        c.fx.add(REJECT, "destructive.firewall_flush", f"ufw {state or 'default deny'}")
        return
    if _truthy(args.get("delete", False)):
        c.fx.add(MEDIUM, "firewall.delete_rule", "ufw deletes a rule")
        return
    if args.get("rule") == "allow":
        c.fx.add(MEDIUM, "firewall.allow", "ufw allow")
        return
    c.fx.add(HIGH, "firewall.other", f"ufw {args.get('rule') or state}")


@_module("firewalld")
def _m_firewalld(args: dict[str, Any], c: _ModCtx) -> None:
    if any(k in args for k in ("masquerade", "target", "icmp_block_inversion")):
        c.fx.add(HIGH, "firewall.other", "firewalld zone change")
        return
    if str(args.get("service", args.get("port", ""))) in ("ssh", "22/tcp") and (
        args.get("state") == "disabled"
    ):
        c.fx.add(REJECT, "destructive.firewall_lockout", "firewalld closes ssh")
        return
    c.fx.add(MEDIUM, "firewall.change", f"firewalld {args.get('state')}")


@_module("acl")
def _m_acl(args: dict[str, Any], c: _ModCtx) -> None:
    path, _ = _path_arg(args, "path", "name")
    level, rule, detail = mode_level(path, "", recursive=_truthy(args.get("recursive", False)))
    c.fx.add(max(level, MEDIUM), rule, f"acl {detail}")


@_module("getent")
def _m_getent(args: dict[str, Any], c: _ModCtx) -> None:
    if str(args.get("database", "")) in ("shadow", "gshadow"):
        c.fx.add(REJECT, "secrets.read", f"getent {args.get('database')}")


@_module("pause")
def _m_pause(args: dict[str, Any], c: _ModCtx) -> None:
    if "prompt" in args or not any(k in args for k in ("seconds", "minutes")):
        c.fx.add(REJECT, "controller.prompt", "pause waits for input on the controller")


@_module("meta")
def _m_meta(args: dict[str, Any], c: _ModCtx) -> None:
    action = _str(args.get("_raw_params")) or ""
    if action not in ("flush_handlers", "noop", "clear_facts", "clear_host_errors", "end_play",
                      "end_host", "end_batch", "end_role"):  # fmt: skip
        c.fx.add(REJECT, "controller.meta", f"meta {action[:40]}")


@_module("debug", "assert", "fail", "set_fact", "ping", "setup", "gather_facts",
         "service_facts", "package_facts", "wait_for_connection", "async_status", "set_stats",
         "validate_argument_spec")  # fmt: skip
def _m_harmless(args: dict[str, Any], c: _ModCtx) -> None:
    if c.module in ("setup", "gather_facts") and "fact_path" in args:
        c.fx.add(REJECT, "controller.file_read", "setup fact_path runs local fact scripts")


@_module("postgresql_query")
def _m_pg_query(args: dict[str, Any], c: _ModCtx) -> None:
    query = _str(args.get("query")) or ""
    fx = Effects()
    guard_shell.check_argv(["psql", "-c", query], fx, sorted(c.hosts))
    c.fx.findings.extend(fx.findings)
    host = _str(args.get("login_host"))
    if host and not guard_shell.url_is_local(host, c.hosts):
        c.fx.add(HIGH, "network.remote_db", f"postgresql_query on {host}")


# --- the checker ----------------------------------------------------------------------------


@dataclass
class _Task:
    label: str
    data: Mapping[str, Any]
    loop_items: list[Any] | None
    loop_var: str = "item"


@dataclass
class _Checker:
    hosts: tuple[str, ...]
    policy: GuardPolicy
    found: list[tuple[int, Violation]] = field(default_factory=list)
    files: set[str] = field(default_factory=set)
    services: set[str] = field(default_factory=set)
    defs: dict[str, list[Any]] = field(default_factory=dict)
    tasks: list[_Task] = field(default_factory=list)
    play_hosts: set[str] = field(default_factory=set)
    # (task label, services it stops, services it starts), in playbook order.
    service_events: list[tuple[str, set[str], set[str]]] = field(default_factory=list)

    def add(self, level: int, rule: str, task: str, detail: str) -> None:
        self.found.append((level, Violation(rule, task, detail[:300])))

    def verdict(self) -> GuardVerdict:
        rejected = tuple(v for level, v in self.found if level >= REJECT)
        reasons = tuple(
            v for level, v in sorted(self.found, key=lambda f: -f[0]) if MEDIUM <= level < REJECT
        )
        top = max((level for level, _ in self.found if level < REJECT), default=LOW)
        risk: Risk = "high" if rejected else ("low", "medium", "high")[top]
        return GuardVerdict(
            allowed=not rejected,
            risk=risk,
            needs_approval=not rejected and top >= HIGH,
            violations=_dedupe(rejected),
            reasons=_dedupe(reasons),
            touched_files=frozenset(self.files),
            touched_services=frozenset(self.services),
        )

    # -- structure ---------------------------------------------------------------------------

    def run(self, text: str) -> None:
        if not isinstance(text, str):
            self.add(REJECT, "yaml.invalid", "playbook", "playbook text is not a string")
            return
        try:
            data = load_playbook(text, self.policy)
        except _YamlRefused as exc:
            self.add(REJECT, exc.rule, "playbook", str(exc))
            return
        if not isinstance(data, list) or not data:
            self.add(
                REJECT, "playbook.shape", "playbook", "a playbook is a non-empty list of plays"
            )
            return
        self._scan_jinja(data, "playbook", key=None)
        for i, play in enumerate(data):
            label = f"play {i + 1}"
            if not isinstance(play, dict):
                self.add(REJECT, "playbook.shape", label, "each play is a mapping")
                continue
            self._play(play, label)
        self._collect_defs(data)
        for task in self.tasks:
            self._task_module(task)
        self._left_stopped()

    def _left_stopped(self) -> None:
        """A service stopped by one task and started by no later task stays down: high risk."""
        down: dict[str, str] = {}
        for label, stopped, started in self.service_events:
            for unit in started:
                down.pop(unit, None)
            for unit in stopped - started:
                down[unit] = label
        for unit, label in sorted(down.items()):
            self.add(HIGH, "service.left_stopped", label,
                     f"stops {unit} and no later task starts it again")  # fmt: skip

    def _keys(self, data: Mapping[str, Any], allowed: frozenset[str], label: str) -> None:
        for key in data:
            if not isinstance(key, str):
                self.add(REJECT, "playbook.unknown_key", label, f"non-string key {key!r}")
            elif key in REFUSED_KEYS:
                self.add(REJECT, REFUSED_KEYS[key], label, f"{key} is refused")
            elif key not in allowed and not key.startswith("with_"):
                self.add(REJECT, "playbook.unknown_key", label, f"unknown keyword {key!r}")

    def _common(self, data: Mapping[str, Any], label: str) -> None:
        """Keywords shared by plays, blocks and tasks."""
        if "become_user" in data and data["become_user"] != "root":
            self.add(REJECT, "privilege.become_user", label,
                     f"become_user {data['become_user']!r}: only root is allowed")  # fmt: skip
        if "become_method" in data and data["become_method"] != "sudo":
            self.add(REJECT, "privilege.become_method", label,
                     f"become_method {data['become_method']!r}: only sudo is allowed")  # fmt: skip
        if "check_mode" in data and not (data["check_mode"] is True or _truthy(data["check_mode"])):
            self.add(REJECT, "controller.check_mode_off", label,
                     "check_mode: false would run the task even in the check run")  # fmt: skip
        if "connection" in data and data["connection"] not in ("ssh", "paramiko", "smart"):
            self.add(REJECT, "controller.connection", label,
                     f"connection {data['connection']!r}: only ssh")  # fmt: skip
        if "collections" in data:
            cols = data["collections"]
            if not isinstance(cols, list) or any(c not in ALLOWED_COLLECTIONS for c in cols):
                self.add(REJECT, "module.collections", label,
                         "collections changes what short module names mean")  # fmt: skip
        if "environment" in data:
            self._environment(data["environment"], label)
        if "vars" in data and not isinstance(data["vars"], dict):
            self.add(REJECT, "playbook.shape", label, "vars must be a mapping")
        if "strategy" in data and data["strategy"] not in ("linear", "free"):
            self.add(REJECT, "controller.debugger", label, f"strategy {data['strategy']!r}")
        if "async" in data and str(data.get("poll", "")) == "0":
            self.add(HIGH, "task.background", label, "async with poll 0 leaves a process behind")

    def _environment(self, env: Any, label: str) -> None:
        envs = env if isinstance(env, list) else [env]
        for e in envs:
            if not isinstance(e, dict):
                self.add(REJECT, "env.smuggle", label, "environment from a template or non-map")
                continue
            for k in e:
                if not isinstance(k, str) or guard_shell.DANGEROUS_ENV.match(k):
                    self.add(REJECT, "env.smuggle", label,
                             f"environment sets {k!r}: changes what code runs")  # fmt: skip

    def _play(self, play: Mapping[str, Any], label: str) -> None:
        if isinstance(play.get("name"), str):
            label = f"{label} ({play['name'][:60]})"
        if any(isinstance(k, str) and normalize_module(k) in ("import_playbook", "include")
               for k in play):  # fmt: skip
            self.add(REJECT, "controller.include", label, "imports a playbook from the controller")
            return
        self._keys(play, PLAY_KEYS, label)
        self._hosts(play.get("hosts"), label)
        self._common(play, label)
        for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
            if section not in play:
                continue
            tasks = play[section]
            if tasks is None:
                continue
            if not isinstance(tasks, list):
                self.add(REJECT, "playbook.shape", label, f"{section} must be a list")
                continue
            self._tasks(tasks, f"{section}", depth=0)

    def _hosts(self, value: Any, label: str) -> None:
        if value is None or value == "" or value == []:
            self.add(REJECT, "hosts.missing", label, "a play must name its hosts")
            return
        items = value if isinstance(value, list) else [value]
        allowed = {h.lower() for h in self.hosts}
        for item in items:
            text = _str(item)
            if text is None:
                self.add(REJECT, "hosts.pattern", label, f"hosts entry {item!r} is not a name")
                continue
            for raw in re.split(r"[,:]", text) if "[" not in text else [text]:
                pat = raw.strip()
                low = pat.lower()
                if not pat:
                    continue
                if "{{" in pat or "{%" in pat:
                    rule, why = "hosts.templated", "a templated host pattern"
                elif low in ("localhost", "127.0.0.1", "::1", "ip6-localhost") or low.startswith(
                    "127."
                ):
                    rule, why = "controller.localhost", "the controller itself"
                elif low in ("all", "*", "ungrouped"):
                    rule, why = "hosts.all", "every host"
                elif pat.startswith("~"):
                    rule, why = "hosts.regex", "a regex host pattern"
                elif any(ch in pat for ch in "*?[]!&"):
                    rule, why = "hosts.glob", "a host pattern"
                elif low in allowed:
                    self.play_hosts.add(low)
                    continue
                else:
                    rule, why = "hosts.not_incident", "a host outside the incident"
                self.add(REJECT, rule, label, f"hosts {pat!r}: {why}; only {', '.join(self.hosts)}")

    def _tasks(self, tasks: list[Any], where: str, depth: int) -> None:
        if depth > 8:
            self.add(REJECT, "playbook.shape", where, "blocks nested too deeply")
            return
        for i, task in enumerate(tasks):
            if len(self.tasks) >= self.policy.max_tasks:
                self.add(REJECT, "playbook.too_many_tasks", where, "too many tasks")
                return
            index = f"{where}[{i}]"
            if not isinstance(task, dict):
                self.add(REJECT, "playbook.shape", index, "a task is a mapping")
                continue
            name = task.get("name")
            label = f"{name[:80]}" if isinstance(name, str) and name.strip() else index
            if "block" in task:
                self._keys(task, BLOCK_KEYS, label)
                self._common(task, label)
                for part in ("block", "rescue", "always"):
                    sub = task.get(part)
                    if sub is None:
                        continue
                    if not isinstance(sub, list):
                        self.add(REJECT, "playbook.shape", label, f"{part} must be a list")
                        continue
                    self._tasks(sub, f"{index}.{part}", depth + 1)
                continue
            self._task(task, label)

    def _task(self, task: Mapping[str, Any], label: str) -> None:
        self._common(task, label)
        for key in task:
            if isinstance(key, str) and key in REFUSED_KEYS:
                self.add(REJECT, REFUSED_KEYS[key], label, f"{key} is refused")
            if isinstance(key, str) and key.startswith("with_") and key not in LOOP_OK:
                self.add(REJECT, "controller.lookup", label,
                         f"{key} runs the {key[5:]} lookup on the controller")  # fmt: skip
        loop_items: list[Any] | None = None
        loop_key = "loop" if "loop" in task else next(
            (k for k in task if isinstance(k, str) and k in LOOP_OK), None
        )  # fmt: skip
        if loop_key is not None:
            value = task[loop_key]
            if isinstance(value, list):
                loop_items = value
                if loop_key == "with_nested" or loop_key == "with_together":
                    loop_items = None
        loop_var = "item"
        control = task.get("loop_control")
        if isinstance(control, dict) and isinstance(control.get("loop_var"), str):
            loop_var = control["loop_var"]
        self.tasks.append(_Task(label, task, loop_items, loop_var))

    # -- modules -----------------------------------------------------------------------------

    def _module_of(self, task: _Task) -> tuple[str, str, dict[str, Any]] | None:
        data = task.data
        candidates = [
            k for k in data
            if isinstance(k, str) and k not in TASK_KEYS and k not in REFUSED_KEYS
            and not k.startswith("with_") and k != "action"
        ]  # fmt: skip
        label = task.label
        if "action" in data:
            if candidates:
                self.add(REJECT, "playbook.unknown_key", label, f"action and {candidates}")
                return None
            action = data["action"]
            if isinstance(action, dict):
                name = action.get("module")
                rest = {k: v for k, v in action.items() if k != "module"}
                raw_args: Any = rest
            elif isinstance(action, str):
                name, _, raw_args = action.strip().partition(" ")
            else:
                self.add(REJECT, "task.bad_args", label, "action must be a string or mapping")
                return None
        elif "local_action" in data:
            return None
        else:
            if len(candidates) != 1:
                if not candidates:
                    self.add(REJECT, "task.no_module", label, "a task names exactly one module")
                else:
                    self.add(REJECT, "playbook.unknown_key", label,
                             f"unknown keywords or several modules: {candidates}")  # fmt: skip
                return None
            name = candidates[0]
            raw_args = data[name]
        if not isinstance(name, str) or "{{" in name:
            self.add(REJECT, "module.templated", label, "the module name comes from a template")
            return None
        short = normalize_module(name)
        if short is None:
            self.add(REJECT, "module.unknown", label,
                     f"module {name!r} is not on the allowlist (unknown collection)")  # fmt: skip
            return None
        free_form = short in ("command", "shell", "raw", "script", "meta", "include_tasks",
                              "import_tasks", "include_role", "import_role", "include",
                              "include_vars", "set_fact", "add_host", "group_by")  # fmt: skip
        args: dict[str, Any]
        if raw_args is None:
            args = {}
        elif isinstance(raw_args, dict):
            args = {str(k): v for k, v in raw_args.items()}
        elif isinstance(raw_args, str):
            if short in ("command", "shell", "raw", "script", "meta"):
                args = _parse_free_form(raw_args, short)
            else:
                try:
                    from ansible.parsing.splitter import parse_kv

                    args = dict(parse_kv(raw_args, check_raw=free_form))
                except Exception:
                    self.add(REJECT, "task.bad_args", label, "module arguments do not parse")
                    return None
        else:
            self.add(REJECT, "task.bad_args", label, f"arguments of {name} must be a mapping")
            return None
        extra = data.get("args")
        if extra is not None:
            if not isinstance(extra, dict):
                self.add(REJECT, "task.bad_args", label, "args must be a mapping, not a template")
                return None
            args.update({str(k): v for k, v in extra.items()})
        return name, short, args

    def _task_module(self, task: _Task) -> None:
        found = self._module_of(task)
        if found is None:
            return
        name, short, args = found
        label = task.label
        if short in _REFUSED_MODULES:
            rule, why = _REFUSED_MODULES[short]
            self.add(REJECT, rule, label, f"{name}: {why}")
            return
        handler = _MODULES.get(short)
        if handler is None:
            self.add(REJECT, "module.unknown", label, f"module {name!r} is not on the allowlist")
            return
        if short == "set_fact":
            return
        for variant in self._variants(args, task):
            fx = Effects()
            try:
                handler(variant, _ModCtx(frozenset(h.lower() for h in self.hosts), short, fx))
            except Exception as exc:  # a malformed argument is the playbook's problem
                fx.add(REJECT, "task.bad_args", f"{short}: {type(exc).__name__}: {exc}"[:200])
            for f in fx.findings:
                self.add(f.level, f.rule, label, f.detail)
            self.files |= fx.files
            self.services |= fx.services
            self.service_events.append((label, set(fx.stopped), set(fx.started)))

    # -- templates ---------------------------------------------------------------------------

    def _scan_jinja(self, node: Any, label: str, key: str | None, depth: int = 0) -> None:
        if depth > self.policy.max_depth:
            return
        if isinstance(node, dict):
            name = node.get("name") if isinstance(node.get("name"), str) else None
            if name and ("hosts" in node or any(k not in PLAY_KEYS for k in node)):
                label = name[:80] if "hosts" not in node else label
            for k, v in node.items():
                if isinstance(k, str):
                    self._jinja_text(k, label, expression=False)
                self._scan_jinja(v, label, k if isinstance(k, str) else None, depth + 1)
        elif isinstance(node, list):
            for v in node:
                self._scan_jinja(v, label, key, depth + 1)
        elif isinstance(node, str):
            self._jinja_text(node, label, expression=key in EXPR_KEYS)

    def _jinja_text(self, text: str, label: str, *, expression: bool) -> None:
        # The rule: the template as ansible-core's Jinja parses it (guard_templates).
        for finding in guard_templates.judge(text, expression=expression):
            self.add(REJECT, finding.rule, label, f"{finding.detail}: {text.strip()[:80]}")
        if _DUNDER_WORD.fullmatch(text.strip()):
            # A bare `__class__` value exists only to be used as a subscript key elsewhere.
            self.add(REJECT, "jinja.sandbox", label, f"value {text.strip()!r} names an internal")
        # A second opinion only: patterns over the text, for spellings the AST walk might miss.
        parts = [text] if expression else []
        parts += [m.group(1) or m.group(2) or "" for m in _JINJA_BLOCK.finditer(text)]
        if ("{{" in text or "{%" in text) and not _JINJA_BLOCK.search(text):
            parts.append(text)
        for part in parts:
            for pattern, rule, why in _JINJA_DANGER:
                if pattern.search(part):
                    self.add(REJECT, rule, label, f"{why}: {part.strip()[:80]}")
                    break

    def _collect_defs(self, data: Any) -> None:
        """Every literal value the playbook gives each variable (all of them, conservatively)."""
        unknown = object()

        def define(name: Any, value: Any) -> None:
            if isinstance(name, str):
                self.defs.setdefault(name, []).append(value)

        def walk(node: Any, depth: int = 0) -> None:
            if depth > self.policy.max_depth:
                return
            if isinstance(node, dict):
                if isinstance(node.get("vars"), dict):
                    for k, v in node["vars"].items():
                        define(k, v)
                if isinstance(node.get("register"), str):
                    define(node["register"], _registered(node) or unknown)
                for key in ("set_fact", "ansible.builtin.set_fact", "ansible.legacy.set_fact"):
                    if isinstance(node.get(key), dict):
                        for k, v in node[key].items():
                            if k != "cacheable":
                                define(k, v)
                    elif key in node:
                        for k in re.findall(r"(\w+)=", str(node[key])):
                            define(k, unknown)
                for v in node.values():
                    walk(v, depth + 1)
            elif isinstance(node, list):
                for v in node:
                    walk(v, depth + 1)

        walk(data)
        for name in MAGIC_HOST_VARS:
            self.defs.setdefault(name, []).extend(sorted(self.play_hosts) or list(self.hosts))
        self._unknown = unknown

    def _variants(self, args: dict[str, Any], task: _Task) -> list[dict[str, Any]]:
        """The task's arguments with every resolvable template replaced, one dict per case."""
        defs = dict(self.defs)
        loop_ref = task.data.get("loop", task.data.get("with_items"))
        found = re.fullmatch(r"\{\{\s*(\w+)\.files\s*\}\}", loop_ref.strip()) if isinstance(
            loop_ref, str
        ) else None  # fmt: skip
        finds = [v for v in self.defs.get(found.group(1), []) if isinstance(v, _FindResult)] if (
            found
        ) else []  # fmt: skip
        if task.loop_items is not None:
            defs[task.loop_var] = list(task.loop_items)
        elif finds:
            # Looping over a registered find: each item is a file matching its paths/patterns.
            defs[task.loop_var] = [{"path": p} for f in finds for p in f.globs]
        elif task.loop_var in defs:
            defs.pop(task.loop_var)
        current = [args]
        for _ in range(4):
            refs = set()
            for variant in current:
                refs |= _template_refs(variant)
            resolvable = {}
            for ref in refs:
                values = _lookup(ref, defs, self._unknown)
                if values is not None:
                    resolvable[ref] = values
            if not resolvable:
                break
            nxt: list[dict[str, Any]] = []
            keys = sorted(resolvable)
            for variant in current:
                for combo in itertools.product(*(resolvable[k] for k in keys)):
                    nxt.append(_substitute(variant, dict(zip(keys, combo, strict=True))))
                    if len(nxt) > self.policy.max_variants:
                        break
                if len(nxt) > self.policy.max_variants:
                    break
            if len(nxt) > self.policy.max_variants:
                self.add(HIGH, "jinja.too_many_cases", task.label,
                         "too many template combinations to check each one")  # fmt: skip
                break
            current = nxt
        return current


_REF = re.compile(
    r"\{\{-?\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[\s*['\"]?\w+['\"]?\s*\])*)"
    r"((?:\s*\|\s*(?:quote|string|trim|lower|upper|int|basename|dirname|first|last|"
    r"join\([^)]*\)))*)\s*-?\}\}"
)


def _template_refs(node: Any) -> set[str]:
    out: set[str] = set()
    if isinstance(node, dict):
        for v in node.values():
            out |= _template_refs(v)
    elif isinstance(node, list):
        for v in node:
            out |= _template_refs(v)
    elif isinstance(node, str):
        out |= {m.group(0) for m in _REF.finditer(node)}
    return out


def _lookup(ref: str, defs: Mapping[str, list[Any]], unknown: object) -> list[str] | None:
    m = _REF.fullmatch(ref)
    if m is None:
        return None
    path = re.findall(r"[A-Za-z_]\w*|\[\s*['\"]?(\w+)['\"]?\s*\]", m.group(1))
    parts = re.split(r"\.|\[", m.group(1))
    parts = [p.strip("]'\" ") for p in parts]
    del path
    base = parts[0]
    if base not in defs:
        return None
    out: list[str] = []
    for value in defs[base]:
        if isinstance(value, _CmdOutput):
            out.append(str(value))
            continue
        for attr in parts[1:]:
            if isinstance(value, dict) and attr in value:
                value = value[attr]
            elif isinstance(value, list) and attr.isdigit() and int(attr) < len(value):
                value = value[int(attr)]
            else:
                return None
        if value is unknown or isinstance(value, dict | list) or value is None:
            return None
        text = str(value)
        filters = m.group(2)
        if "basename" in filters:
            text = text.rsplit("/", 1)[-1]
        if "quote" in filters and not re.fullmatch(r"[\w@%+=:,./-]+", text):
            text = "'" + text.replace("'", "'\"'\"'") + "'"
        out.append(text)
    return sorted(set(out)) or None


class _CmdOutput(str):
    """A registered PID lookup's output, substituted as `$(command)` so that `kill` sees it."""


@dataclass(frozen=True)
class _FindResult:
    """A registered `find`: the files it can return, as globs (`/tmp/*.tmp`)."""

    globs: tuple[str, ...]


def _registered(task: Mapping[str, Any]) -> _CmdOutput | _FindResult | None:
    for key in ("find", "ansible.builtin.find", "ansible.legacy.find"):
        args = task.get(key)
        if isinstance(args, dict):
            paths = args.get("paths", args.get("path", args.get("name")))
            pats = args.get("patterns", args.get("pattern", "*"))
            paths = paths if isinstance(paths, list) else str(paths).split(",")
            pats = pats if isinstance(pats, list) else str(pats).split(",")
            if _truthy(args.get("recurse", False)) or _truthy(args.get("use_regex", False)):
                pats = ["*"]
            if args.get("file_type") in ("directory", "any", "link"):
                pats = ["*"]
            return _FindResult(
                tuple(f"{str(p).rstrip('/')}/{str(q).strip()}" for p in paths for q in pats)
            )
    for key in ("command", "shell", "ansible.builtin.command", "ansible.builtin.shell",
                "ansible.legacy.command", "ansible.legacy.shell"):  # fmt: skip
        cmd = task.get(key)
        if isinstance(cmd, dict):
            cmd = cmd.get("cmd")
        if isinstance(cmd, str) and re.fullmatch(r"\s*(pgrep|pidof)\s[^;|&$`<>(){}]*", cmd):
            return _CmdOutput(f"$({cmd.strip()})")
    return None


def _substitute(node: Any, values: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values) for v in node]
    if isinstance(node, str):
        for ref, value in values.items():
            node = node.replace(ref, value)
        return node
    return node


def _parse_free_form(text: str, module: str) -> dict[str, Any]:
    """`command`/`shell` free form: the command plus Ansible's own key=value options."""
    from ansible.parsing.splitter import parse_kv

    try:
        args = dict(parse_kv(text, check_raw=True))
    except Exception:
        return {"_raw_params": text}
    return args


def _dedupe(items: tuple[Violation, ...]) -> tuple[Violation, ...]:
    seen: set[Violation] = set()
    out = []
    for v in items:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return tuple(out)


def level_name(level: int) -> str:
    return LEVEL_NAMES[level]


# fmt: off
__all__ = [
    "DEFAULT", "EXIT_ALLOWED", "EXIT_APPROVAL", "EXIT_REJECTED", "EXIT_USAGE", "Finding",
    "GuardPolicy", "GuardUsageError", "GuardVerdict", "Violation", "check_playbook",
    "load_playbook", "normalize_module", "parse_hosts",
]
# fmt: on
