"""Shell-policy handlers for processes, services and their logs.

Kills (`kill`, `pkill`, `killall`, `fuser`) must name their target and never reach what keeps
the host reachable and supervised (`CRITICAL_CMDLINES`, `CRITICAL_COMMS`); service managers
(`systemctl`, `service`, `supervisorctl`, `nginx -s`) must not stop or mask
`CRITICAL_SERVICES`; log tools (`logrotate`, `journalctl`, `dmesg`) must not wipe logs;
`prlimit` and `renice` change a running process.
"""

from __future__ import annotations

import fnmatch
import re

from remed_daemon.guard.paths import HIGH, MEDIUM, category, has_glob, normalize
from remed_daemon.guard.shell.operands import (
    Ctx,
    flags_of,
    note_reads,
    operands_of,
    paths_of,
    url_is_local,
)
from remed_daemon.guard.shell.parse import Cmd, Refuse, Word

# Services whose loss cuts the host off or hides it: never stopped, killed or masked.
CRITICAL_SERVICES = frozenset(
    {
        "ssh", "sshd", "openssh-server", "supervisor", "supervisord", "systemd", "init",
        "dbus", "dbus-daemon", "networking", "network", "NetworkManager", "systemd-networkd",
        "systemd-resolved", "systemd-journald", "systemd-logind", "rsyslog", "syslog",
        "auditd", "sudo", "cron", "crond", "containerd", "docker", "kubelet", "all", "*",
    }
)  # fmt: skip
# Data stores: stopping or killing one loses in-flight writes and takes down every service that
# depends on it, so a person approves it (high), even when the playbook starts it again.
DATA_STORES = frozenset(
    {
        "redis", "redis-server", "postgres", "postgresql", "mysql", "mysqld", "mariadb",
        "mariadbd", "memcached", "mongod", "mongodb", "etcd", "kafka", "zookeeper",
        "elasticsearch", "opensearch", "cassandra", "rabbitmq", "rabbitmq-server", "clickhouse",
        "clickhouse-server", "influxdb", "influxd", "minio", "valkey", "valkey-server",
    }
)  # fmt: skip
_STOP_ACTIONS = frozenset({"stop", "disable", "mask", "kill", "freeze", "remove", "signal"})


def is_data_store(unit: str) -> bool:
    base = re.sub(r"(@.*|-\d+(\.\d+)*|\d+)$", "", unit.removesuffix(".service"))
    return base in DATA_STORES or unit.removesuffix(".service") in DATA_STORES


def data_store_in_pattern(pattern: str) -> str | None:
    """The data store a kill pattern (`pkill -f redis-server`) reaches, if any."""
    for store in sorted(DATA_STORES, key=len, reverse=True):
        try:
            if re.search(pattern, store) or store in pattern:
                return store
        except re.error:
            if store in pattern:
                return store
    return None


# Command lines of processes a kill must never reach (matched against pkill -f patterns).
CRITICAL_CMDLINES = (
    "/usr/sbin/sshd -D", "sshd: root@notty", "sshd: remed [priv]",
    "/usr/bin/python3 /usr/bin/supervisord -n -c /etc/supervisor/supervisord.conf",
    "/sbin/init", "/lib/systemd/systemd --system", "/usr/bin/dbus-daemon --system",
    "/usr/bin/python3 /root/.ansible/tmp/ansible-tmp-1/AnsiballZ_command.py",
    "/bin/sh -c /usr/bin/python3 && sleep 0", "sudo -H -S -n -u root /bin/sh -c echo BECOME",
    "/lib/systemd/systemd-journald", "/usr/sbin/rsyslogd -n", "bash", "-bash",
)  # fmt: skip
CRITICAL_COMMS = (
    "sshd", "supervisord", "init", "systemd", "python3", "python", "sh", "bash", "sudo",
    "dbus-daemon", "systemd-journald", "rsyslogd", "ansible", "ansible-playbook",
)  # fmt: skip


def check_kill(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    if name == "killall5":
        raise Refuse("destructive.kill_all", "killall5 kills every process")
    flags = flags_of(args)
    if name == "kill":
        if any(w.text in ("-l", "-L", "--list", "--table") for w in args):
            return
        targets = []
        k = 0
        if args and args[0].text in ("-s", "-n", "--signal"):
            k = 2
        elif args and len(args) > 1 and re.fullmatch(r"-(\d+|[A-Z]+\d*|SIG\w+)", args[0].text):
            k = 1
        for w in args[k:]:
            if w.text == "--":
                continue
            targets.append(w)
        for w in targets:
            _kill_target(w, ctx)
        return
    if name == "fuser":
        if "-k" not in flags and not any(w.text.startswith("-k") for w in args):
            note_reads(operands_of(args, "n"), ctx)
            return
        for w in operands_of(args, "n"):
            if (
                w.unknown
                or w.text in ("/", "22/tcp", "22")
                or category(normalize(w.text)) in ("root", "sysbin")
            ):
                raise Refuse("destructive.kill_critical", f"fuser -k {w.text}")
        ctx.add(MEDIUM, "kill.targeted", "fuser -k kills the processes using a port or file")
        return
    # pkill / killall / pgrep-style pattern matching
    full = bool(flags & {"-f", "--full"})
    regex = name == "pkill" or "-r" in flags or "--regexp" in flags
    exact = bool(flags & {"-x", "--exact", "-e"}) if name == "pkill" else name == "killall"
    ops = operands_of(args, "uUgGPstnsoOwcF" if name == "pkill" else "uoyOsn")
    for w in args:
        if w.text in ("-u", "-U", "--euid", "--uid", "--user") and w is not args[-1]:
            user = args[args.index(w) + 1].text
            if user in ("root", "0") or not ops:
                raise Refuse("destructive.kill_all", f"{name} -u {user} kills a user's processes")
        if w.text in ("-P", "--parent") and w is not args[-1]:
            if args[args.index(w) + 1].text in ("0", "1"):
                raise Refuse("destructive.kill_critical", f"{name} -P 1: every child of init")
    if not ops:
        raise Refuse("destructive.kill_all", f"{name} without a pattern")
    for w in ops:
        _kill_pattern(name, w, full=full, regex=regex, exact=exact, ctx=ctx)
    ctx.add(MEDIUM, "kill.targeted", f"{name} {' '.join(w.text for w in ops)[:80]}")


def _kill_pattern(name: str, w: Word, *, full: bool, regex: bool, exact: bool, ctx: Ctx) -> None:
    if w.unknown:
        ctx.add(HIGH, "kill.unknown_target", f"{name} with a run-time pattern")
        return
    pat = w.text
    stripped = re.sub(r"[\^$.*+?()\[\]{}|\\]", "", pat)
    if len(stripped) < 3:
        raise Refuse("destructive.kill_all", f"{name} pattern {pat!r} is too broad")
    store = data_store_in_pattern(pat)
    if store is not None:
        ctx.effects.stopped.add(store)
        ctx.add(HIGH, "service.data_store_stop", f"{name} {pat!r} kills the data store {store}")
    subjects = CRITICAL_CMDLINES if full else CRITICAL_COMMS
    for subject in subjects:
        try:
            hit = (
                (re.fullmatch(pat, subject) if exact else re.search(pat, subject))
                if regex
                else pat == subject
            )
        except re.error:
            hit = pat in subject
        if hit:
            raise Refuse(
                "destructive.kill_critical",
                f"{name} {pat!r} would also kill {subject.split()[0]!r} (keeps the host reachable)",
            )


def _kill_target(w: Word, ctx: Ctx) -> None:
    t = w.text
    if not w.unknown:
        if t in ("1", "-1", "0") or re.fullmatch(r"-\d+", t):
            raise Refuse("destructive.kill_critical", f"kill {t}: PID 1, all processes or a group")
        if t.startswith("%") or t.isdigit():
            ctx.add(MEDIUM, "kill.targeted", f"kill {t}")
            return
        ctx.add(HIGH, "kill.unknown_target", f"kill {t}")
        return
    for sub in w.subs:
        m = re.match(r"\s*(pgrep|pidof|cat)\s+(.*)$", sub)
        if m is None:
            continue
        tokens = [x for x in m.group(2).split() if not x.startswith("-")]
        tokens = [x.strip("'\"") for x in tokens]
        if m.group(1) == "cat":
            name = tokens[-1].rsplit("/", 1)[-1] if tokens else ""
            if any(c in name for c in ("sshd", "supervisord", "init")):
                raise Refuse("destructive.kill_critical", f"kill $(cat {name})")
            ctx.add(MEDIUM, "kill.targeted", f"kill the process in {name}")
            return
        full = "-f" in m.group(2)
        for tok in tokens:
            _kill_pattern(m.group(1), Word(tok), full=full, regex=m.group(1) == "pgrep",
                          exact=m.group(1) == "pidof", ctx=ctx)  # fmt: skip
        if tokens:
            ctx.add(MEDIUM, "kill.targeted", f"kill $({sub.strip()[:60]})")
            return
    ctx.add(HIGH, "kill.unknown_target", "kill of a run-time PID")


_START_ACTIONS = frozenset(
    {"restart", "reload", "try-restart", "reload-or-restart", "start", "condrestart",
     "force-reload", "try-reload-or-restart"}
)  # fmt: skip


def _service_name_check(prog: str, action: str, units: list[Word], ctx: Ctx) -> None:
    for w in units:
        unit = w.text.removesuffix(".service")
        if w.unknown:
            ctx.add(HIGH, "service.unknown", f"{prog} {action} of a run-time name")
            continue
        ctx.effects.services.add(unit)
        critical = unit in CRITICAL_SERVICES or (
            has_glob(unit) and any(fnmatch.fnmatchcase(c, unit) for c in CRITICAL_SERVICES)
        )
        if action in ("stop", "disable", "mask", "kill", "freeze", "shutdown", "remove") and (
            critical or has_glob(unit)
        ):
            raise Refuse(
                "destructive.critical_service",
                f"{prog} {action} {unit}: keeps the host reachable and supervised",
            )
        if action in _START_ACTIONS and critical:
            ctx.add(HIGH, "service.critical_restart", f"{prog} {action} {unit}")
        if action in _STOP_ACTIONS:
            ctx.effects.stopped.add(unit)
            if is_data_store(unit):
                ctx.add(HIGH, "service.data_store_stop", f"{prog} {action} {unit}: a data store")
        elif action in _START_ACTIONS:
            ctx.effects.started.add(unit)


def check_systemctl(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    for w in args:
        if w.text in ("-H", "--host", "-M", "--machine") or w.text.startswith(
            ("--host=", "--machine=")
        ):
            raise Refuse("exec.escape", "systemctl on another machine")
    ops = operands_of(args, "tpnos")
    if not ops:
        return
    action = ops[0].text
    units = ops[1:]
    read = {"status", "is-active", "is-enabled", "is-failed", "show", "cat", "list-units",
            "list-unit-files", "list-timers", "list-sockets", "list-dependencies",
            "get-default", "show-environment", "list-jobs", "help"}  # fmt: skip
    if action in read:
        return
    if action in ("restart", "reload", "try-restart", "reload-or-restart", "start",
                  "condrestart", "force-reload", "try-reload-or-restart", "daemon-reload",
                  "reset-failed"):  # fmt: skip
        _service_name_check(name, action, units, ctx)
        return
    if action in ("stop", "disable", "mask", "kill", "freeze"):
        _service_name_check(name, action, units, ctx)
        if "--now" in flags_of(args) or action in ("stop", "kill", "disable"):
            ctx.add(MEDIUM, "service.stop", f"{name} {action} {' '.join(w.text for w in units)}")
        else:
            ctx.add(HIGH, "service.mask", f"{name} {action}")
        return
    if action in ("enable", "unmask", "thaw"):
        _service_name_check(name, action, units, ctx)
        ctx.add(MEDIUM, "service.enable", f"{name} {action}")
        return
    if action in ("poweroff", "reboot", "halt", "kexec", "suspend", "hibernate", "hybrid-sleep",
                  "rescue", "emergency", "isolate", "default", "soft-reboot", "exit",
                  "switch-root", "suspend-then-hibernate"):  # fmt: skip
        raise Refuse("destructive.power", f"systemctl {action}")
    ctx.add(HIGH, "service.other", f"systemctl {action}")


def check_service(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    ops = operands_of(args)
    if len(ops) < 2:
        return
    unit, action = ops[0], ops[1].text
    if action in ("status",):
        return
    if action in ("restart", "reload", "start", "force-reload", "try-restart", "condrestart"):
        _service_name_check(name, action, [unit], ctx)
        return
    if action == "stop":
        _service_name_check(name, action, [unit], ctx)
        ctx.add(MEDIUM, "service.stop", f"service {unit.text} stop")
        return
    ctx.add(HIGH, "service.other", f"service {unit.text} {action}")


def check_supervisorctl(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    it = list(args)
    k = 0
    while k < len(it) and it[k].text.startswith("-"):
        t = it[k].text
        if t in ("-s", "--serverurl") and k + 1 < len(it):
            if not url_is_local(it[k + 1].text.replace("unix://", "http://localhost"),
                                ctx.local_hosts):  # fmt: skip
                raise Refuse("exfil.network", "supervisorctl on a remote server")
            k += 2
            continue
        if t in ("-c", "--configuration") and k + 1 < len(it):
            ctx.add(HIGH, "service.other", "supervisorctl with another config file")
            k += 2
            continue
        if t in ("-u", "-p", "--username", "--password"):
            k += 2
            continue
        k += 1
    ops = it[k:]
    if not ops:
        raise Refuse("shell.interactive", "supervisorctl without an action is interactive")
    action, names = ops[0].text, ops[1:]
    if action in ("status", "avail", "pid", "tail", "version", "help", "maintail"):
        if any(w.text == "-f" for w in names):
            raise Refuse("shell.interactive", "supervisorctl tail -f never ends")
        return
    if action in ("restart", "start", "update", "reread", "add"):
        if action in ("restart", "start"):
            _service_name_check(name, action, names, ctx)
        if any(w.text == "all" for w in names):
            ctx.add(MEDIUM, "service.restart_all", f"supervisorctl {action} all")
        return
    if action == "signal" and names and names[0].text.upper().removeprefix("SIG") in (
        "HUP", "USR1", "USR2", "WINCH", "1", "10", "12"
    ):
        # Reopen logs / reload config: the program keeps running.
        _service_name_check(name, "reload", names[1:], ctx)
        ctx.add(MEDIUM, "service.signal", f"supervisorctl signal {names[0].text}")
        return
    if action in ("stop", "signal", "remove"):
        targets = names[1:] if action == "signal" else names
        _service_name_check(name, "stop" if action != "remove" else "remove", targets, ctx)
        ctx.add(MEDIUM if action != "remove" else HIGH, "service.stop",
                f"supervisorctl {action} {' '.join(w.text for w in names)}")  # fmt: skip
        return
    if action == "clear":
        _service_name_check(name, "clear", names, ctx)
        if any(w.text == "all" for w in names):
            raise Refuse("tamper.log_wipe", "supervisorctl clear all")
        ctx.add(MEDIUM, "logs.truncate", "supervisorctl clear empties a program's logs")
        return
    if action in ("shutdown",):
        raise Refuse("destructive.critical_service", "supervisorctl shutdown stops supervisord")
    if action == "reload":
        ctx.add(HIGH, "service.critical_restart", "supervisorctl reload restarts every program")
        return
    if action in ("fg", "open"):
        raise Refuse("shell.interactive", f"supervisorctl {action}")
    ctx.add(HIGH, "service.other", f"supervisorctl {action}")


def check_nginx(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    texts = [w.text for w in args]
    if not texts:
        ctx.add(HIGH, "service.other", "nginx started by hand")
        return
    for k, t in enumerate(texts):
        value = texts[k + 1] if k + 1 < len(texts) else ""
        if t in ("-g", "-p", "-e") or (t == "-c" and not value.startswith("/etc/nginx/")):
            ctx.add(HIGH, "service.other", "nginx with another config, prefix or directives")
    if "-s" in texts:
        k = texts.index("-s")
        sig = texts[k + 1] if k + 1 < len(texts) else ""
        ctx.effects.services.add("nginx")
        if sig in ("stop", "quit"):
            ctx.effects.stopped.add("nginx")
            ctx.add(MEDIUM, "service.stop", f"nginx -s {sig}")
        return
    plain = [t for k, t in enumerate(texts) if t != "-c" and (k == 0 or texts[k - 1] != "-c")]
    if set(plain) <= {"-t", "-T", "-q", "-v", "-V", "-tq", "-qt"}:
        return
    ctx.add(HIGH, "service.other", f"nginx {' '.join(texts)[:40]}")


def check_logrotate(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    for _w, path in paths_of(operands_of(args, "sml"), ctx):
        if path is None or not (path == "/etc/logrotate.conf" or path.startswith(
            "/etc/logrotate.d/")):  # fmt: skip
            ctx.add(HIGH, "logs.rotate_other", f"logrotate with {path or '$?'}")
    ctx.add(MEDIUM, "logs.rotate", "logrotate forces a rotation")


def check_journalctl(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    for w in args:
        if w.text.startswith(("--vacuum", "--rotate", "--flush", "--relinquish", "--setup-keys")):
            raise Refuse("tamper.log_wipe", f"journalctl {w.text}: deletes or moves logs")
        if w.text in ("-f", "--follow"):
            raise Refuse("shell.interactive", "journalctl -f never ends")


def check_dmesg(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    clearing = {"-c", "-C", "--clear", "--read-clear", "-n", "--console-level", "-D", "-E"}
    if flags_of(args) & clearing:
        raise Refuse("tamper.log_wipe", "dmesg clears the kernel ring buffer")


def check_prlimit(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    if not any(w.text.startswith(("--pid", "-p")) for w in args):
        ctx.add(HIGH, "shell.unknown_program", "prlimit running a command")
        return
    ctx.add(MEDIUM, "process.limits", "prlimit changes a running process's limits")


def check_renice(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    ctx.add(MEDIUM, "process.priority", f"{name} changes a process priority")
