"""The guard's policy for `command`/`shell` arguments: parse like a shell, then judge each program.

Regexes over the command string are defeated by quoting (`r''m`, `"r"m`, `\\rm`), paths
(`/bin/rm`), wrappers (`sudo`, `env`, `nice`, `xargs`, `find -exec`), nesting (`bash -c`,
`$(...)`, backticks, `eval`) and encodings (`base64 -d | sh`). So this module does what the shell
would do, conservatively:

1. tokenise into words with quotes and escapes removed, splitting on control operators
   (`;` `&&` `||` `|` `&` newlines, subshells) and recording redirections;
2. recurse into every nested script: `$(...)`, backticks, `<(...)`, `bash -c STR`, `eval`,
   `su -c`, `find -exec`, `xargs`, `env -S`;
3. resolve the program behind wrappers and paths;
4. judge the program and its arguments with a per-program rule, and classify every path it
   reads, writes or deletes with `guard_paths`.

Anything that only makes sense as obfuscation (decoding piped anywhere, `printf '\\x..'`,
`$'\\x..'`, `${IFS}`, a variable or template as the program name, inline interpreter code, a
here-string into a shell, function definitions such as a fork bomb) is refused outright. An
unknown program is not refused but waits for a person.

Where it lives: `guard_shell_parse` tokenises; this module holds the entry points, the
dispatcher (`_program`: wrappers, paths, program classes), the rules for shells, interpreters,
wrappers, `eval`, `cd` and read-only programs, and the one table that maps every other program
to its handler. The handlers are grouped by theme in `guard_shell_files`, `guard_shell_network`,
`guard_shell_processes`, `guard_shell_system` and `guard_shell_databases`; what they share
(`Ctx`, argument and path helpers, the URL policy) is in `guard_shell_operands`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from remed_daemon.agents.guard_paths import (
    HIGH,
    LOW,
    MEDIUM,
    REJECT,
    UNKNOWN,
    Effects,
    category,
    normalize,
    read_level,
    write_level,
)
from remed_daemon.agents.guard_shell_databases import _pg_tools, _psql, _redis_cli
from remed_daemon.agents.guard_shell_files import (
    _awk,
    _cat_like,
    _chmod,
    _compress,
    _cp_mv,
    _dd,
    _find,
    _grep_like,
    _rm,
    _sed,
    _setfacl,
    _tar,
    _tee,
    _touch_mkdir,
    _truncate,
    _zip,
)
from remed_daemon.agents.guard_shell_network import _curl, _firewall, _ip, _nc, _openssl
from remed_daemon.agents.guard_shell_operands import (
    Ctx,
    Handler,
    _flags,
    _operands,
    _reads,
    url_is_local,
)
from remed_daemon.agents.guard_shell_parse import (
    MAX_COMMANDS,
    Cmd,
    Word,
    _expand_braces,
    _Refuse,
    _Tokens,
)
from remed_daemon.agents.guard_shell_processes import (
    CRITICAL_SERVICES,
    _dmesg,
    _journalctl,
    _kill,
    _logrotate,
    _nginx,
    _prlimit,
    _renice,
    _service,
    _supervisorctl,
    _systemctl,
)
from remed_daemon.agents.guard_shell_system import (
    CRITICAL_PACKAGES,
    _getent,
    _mount,
    _pip,
    _pkg,
    _simple_medium,
    _sysctl,
)

# What guard.py and the tests use; the constants and url_is_local live with their handlers.
__all__ = [
    "CRITICAL_PACKAGES",
    "CRITICAL_SERVICES",
    "DANGEROUS_ENV",
    "check_argv",
    "check_script",
    "url_is_local",
]


MAX_SHELL_DEPTH = 6

# Environment variables that change which code runs or where data goes.
DANGEROUS_ENV = re.compile(
    r"^(LD_\w+|PATH|BASH_ENV|ENV|IFS|PS4|PROMPT_COMMAND|SHELLOPTS|BASHOPTS|GLOBIGNORE|"
    r"CDPATH|PYTHON\w*|PERL5\w*|PERLLIB|RUBY\w*|NODE_OPTIONS|NODE_PATH|JAVA_TOOL_OPTIONS|"
    r"_JAVA_OPTIONS|GIT_\w+|SSH_\w+|SUDO_\w+|\w*_proxy|\w*_PROXY|HIST\w*|ANSIBLE_\w+|"
    r"LESSOPEN|LESSCLOSE|PAGER|EDITOR|VISUAL|BROWSER|TMPDIR|HOME|SHELL|LC_ALL|GCONV_PATH|"
    r"MALLOC_\w+|GLIBC_TUNABLES|OPENSSL_\w+|PGSERVICEFILE|PSQLRC|REDISCLI_\w+)$"
)
SHELLS = frozenset(
    {"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "csh", "tcsh", "rbash", "yash"}
)
INTERPRETERS = re.compile(
    r"^(python[\d.]*|pypy[\d.]*|perl[\d.]*|ruby[\d.]*|irb|node(js)?|deno|bun|php[\d.]*|"
    r"lua[\d.]*|luajit|tclsh[\d.]*|wish|Rscript|R|pwsh|powershell|osascript|jshell|groovy|"
    r"scala|julia|guile|racket|sbcl|ghci|erl|elixir|iex|busybox|gdb|lldb|vim?|nvim|emacs|"
    r"ed|ex|nano|jrunscript|jjs|expect|dc)$"
)
READ_ONLY = frozenset(
    {
        "cat", "tac", "head", "tail", "grep", "egrep", "fgrep", "zgrep", "zcat", "bzcat",
        "xzcat", "zstdcat", "rg", "ag", "wc", "sort", "uniq", "cut", "tr", "column", "nl",
        "od", "hexdump", "strings", "file", "stat", "ls", "dir", "tree", "du", "df", "free",
        "uptime", "w", "who", "users", "last", "lastlog", "ps", "pgrep", "pidof", "top",
        "vmstat", "iostat", "mpstat", "pidstat", "sar", "ss", "netstat", "lsof", "id",
        "whoami", "groups", "date", "uname", "lscpu", "lsblk", "lsmem", "lsmod", "blkid",
        "findmnt", "mountpoint", "nproc", "getconf", "arch", "printenv", "locale", "basename",
        "dirname", "readlink", "realpath", "pwd", "seq", "expr", "diff", "cmp", "comm",
        "md5sum", "sha1sum", "sha256sum", "sha512sum", "cksum", "jq", "test", "[", "[[",
        "true", "false", ":", "sleep", "echo", "printf", "ping", "ping6", "traceroute",
        "tracepath", "ethtool", "which", "whereis", "type", "hash", "lsattr", "getfacl",
        "namei", "pg_isready", "timedatectl", "loginctl", "sync", "ulimit", "umask", "exit",
        "return", "read", "wait", "shift", "break", "continue", "local", "unset", "set",
        "logger", "fold", "fmt", "paste", "join", "rev", "look", "yes", "tput", "env",
        "pstree", "pmap", "slabtop", "iotop", "nstat", "ifstat", "arp", "route", "dig",
        "host", "nslookup", "curl", "wget", "getent", "history", "hostname", "hostnamectl",
        "numfmt", "bc", "awk", "gawk", "mawk", "nawk", "sed", "supervisorctl", "jobs",
        "times", "let", "getopts", "xxd", "base32", "base64", "sum",
    }
)  # fmt: skip
# Programs that print file contents (a secret path among their operands is refused).
CONTENT_READERS = frozenset(
    {
        "tac", "zcat", "bzcat", "xzcat", "zstdcat", "sort", "uniq", "cut", "tr", "column",
        "nl", "od", "hexdump", "strings", "fold", "fmt", "paste", "join", "rev", "look",
        "diff", "cmp", "comm", "jq", "xxd", "base32", "base64", "md5sum", "sha1sum",
        "sha256sum", "sha512sum", "sum", "cksum", "wc",
    }
)  # fmt: skip
DISK_DESTROYERS = re.compile(
    r"^(mkfs(\.\w+)?|mke2fs|mkswap|mkdosfs|mkntfs|mkfs\.\w+|wipefs|fdisk|sfdisk|cfdisk|parted|"
    r"gdisk|sgdisk|blkdiscard|hdparm|cryptsetup|lvremove|vgremove|pvremove|lvreduce|zpool|"
    r"zfs|mdadm|badblocks|resize2fs|tune2fs|debugfs|dcfldd|sg_format|nvme|wipe|srm|shred|"
    r"mknod|losetup|dmsetup|e2fsck|fsck(\.\w+)?|xfs_repair|btrfs|partprobe|kpartx)$"
)
POWER = re.compile(
    r"^(shutdown|reboot|halt|poweroff|init|telinit|kexec|rtcwake|systemd-shutdown|pm-\w+)$"
)
ESCAPES = frozenset(
    {
        "nsenter", "unshare", "chroot", "ip-netns", "systemd-run", "systemd-nspawn",
        "machinectl", "setpriv", "capsh", "firejail", "cgexec", "lxc-attach", "lxc-execute",
        "screen", "tmux", "script", "at", "batch", "parallel", "watch", "strace", "ltrace",
        "crontab", "visudo", "sudoedit", "ssh-copy-id", "ssh-add", "insmod", "modprobe",
        "rmmod", "kmod", "alias", "trap", "enable", "source", ".", "function", "coproc",
        "case", "select", "disown", "bind", "complete", "fc", "dtrace", "bpftrace", "gcore",
        "perf", "unalias", "setcap", "chattr", "exec-in", "ld.so", "ld-linux.so.2",
        "ld-linux-x86-64.so.2", "pkexec", "runc", "ctr", "crictl", "kubectl", "docker",
        "podman", "nerdctl", "lxc", "incus", "less", "more", "man", "most", "pg", "virsh",
        "qemu-system-x86_64", "busybox-sh",
    }
)  # fmt: skip
EXFIL = frozenset(
    {
        "nc", "ncat", "netcat", "socat", "telnet", "ssh", "scp", "sftp", "ftp", "tftp",
        "lftp", "smbclient", "mail", "mailx", "sendmail", "mutt", "aws", "gsutil", "az",
        "gcloud", "s3cmd", "rclone", "nsupdate", "git", "svn", "hg", "http", "https", "xh",
        "aria2c", "axel", "curlie", "ncftp", "rsh", "rlogin", "rcp", "sshpass", "tshark",
        "tcpdump", "openvpn", "wg", "cloudflared", "ngrok", "ssh-keyscan", "finger", "whois",
        "irc", "proxychains", "torsocks", "msmtp", "swaks", "gpg", "age",
    }
)  # fmt: skip
USER_REMOVAL = frozenset({"userdel", "deluser", "groupdel", "delgroup"})
ACCOUNTS = frozenset(
    {
        "usermod", "passwd", "chpasswd", "chage", "gpasswd", "newusers", "vipw", "vigr",
        "chsh", "chfn", "pwconv", "grpconv", "pam-auth-update", "authconfig", "faillock",
        "pam_tally2", "ssh-keygen", "useradd", "adduser", "groupadd", "addgroup", "newgrp",
        "su", "sg", "login",
    }
)  # fmt: skip
DECODERS = frozenset({"base64", "base32", "basenc", "xxd", "uudecode", "openssl", "rev"})


# --- entry points ---------------------------------------------------------------------------


def check_script(
    script: str,
    effects: Effects,
    local_hosts: Sequence[str] = (),
    *,
    cwd: str | None = "/root",
    stdin_data: bool = False,
) -> None:
    """Judge a shell script (the `shell` module's string, or `command`'s free form)."""
    ctx = Ctx(effects, frozenset(h.lower() for h in local_hosts), cwd=cwd, stdin_data=stdin_data)
    _script(script, ctx)


def check_argv(
    argv: Sequence[str],
    effects: Effects,
    local_hosts: Sequence[str] = (),
    *,
    cwd: str | None = "/root",
    stdin_data: bool = False,
) -> None:
    """Judge a `command` module argv list: each element is one word, no shell parsing."""
    ctx = Ctx(effects, frozenset(h.lower() for h in local_hosts), cwd=cwd, stdin_data=stdin_data)
    words = []
    for a in argv:
        unknown = "{{" in a or "{%" in a
        words.append(Word(re.sub(r"\{\{.*?\}\}|\{%.*?%\}", UNKNOWN, a), unknown=unknown))
    try:
        _simple(Cmd(words=words), ctx)
    except _Refuse as exc:
        ctx.add(REJECT, exc.rule, exc.detail)


def _script(script: str, ctx: Ctx) -> None:
    if ctx.depth > MAX_SHELL_DEPTH:
        ctx.add(REJECT, "obfuscation.nesting", "shell nesting deeper than 6 levels")
        return
    try:
        cmds = _Tokens(script, ctx.shell_vars).parse()
        for cmd in cmds:
            ctx.count += 1
            if ctx.count > MAX_COMMANDS:
                raise _Refuse("shell.too_long", "more than 200 commands")
            _simple(cmd, ctx)
        _pipeline_checks(cmds, ctx)
    except _Refuse as exc:
        ctx.add(REJECT, exc.rule, exc.detail)
    except RecursionError:
        ctx.add(REJECT, "obfuscation.nesting", "command nested too deeply to judge")


def _nested(script: str, ctx: Ctx, *, stdin_data: bool = False) -> None:
    saved = (ctx.cwd, ctx.stdin_data)
    ctx.depth += 1
    ctx.stdin_data = stdin_data
    try:
        _script(script, ctx)
    finally:
        ctx.depth -= 1
        ctx.cwd, ctx.stdin_data = saved


def _pipeline_checks(cmds: list[Cmd], ctx: Ctx) -> None:
    names = [_prog_name(c) for c in cmds]
    for cmd, name in zip(cmds, names, strict=True):
        if name in ("base64", "base32", "basenc", "uudecode") and any(
            w.text in ("-d", "--decode", "-D", "-di", "-id") for w in cmd.words
        ):
            raise _Refuse("obfuscation.decode", f"{name} decoding: hides the real command")
        if name == "xxd" and any(w.text.startswith("-r") for w in cmd.words):
            raise _Refuse("obfuscation.decode", "xxd -r decoding: hides the real command")


def _prog_name(cmd: Cmd) -> str:
    for w in cmd.words:
        if re.match(r"^[A-Za-z_]\w*=", w.text):
            continue
        return w.text.rsplit("/", 1)[-1]
    return ""


# --- simple commands ------------------------------------------------------------------------


def _simple(cmd: Cmd, ctx: Ctx) -> None:
    for w in cmd.words:
        for sub in w.subs:
            _nested(sub, ctx)
    for op, target in cmd.redirects:
        for sub in target.subs:
            _nested(sub, ctx)
        _redirect(op, target, ctx)
    if cmd.function_def:
        raise _Refuse("obfuscation.function", "defines a shell function (fork bombs, hiding)")
    words: list[Word] = []
    for w in cmd.words:
        if not w.quoted and not w.unknown and "," in w.text and "{" in w.text:
            words.extend(Word(t) for t in _expand_braces(w.text))
        else:
            words.append(w)
    # Leading NAME=value assignments: environment for this command, or shell variables.
    while words and (m := re.match(r"^([A-Za-z_]\w*)(\+?=)(.*)$", words[0].text, re.S)):
        name, value = m.group(1), m.group(3)
        _env_name(name, value, ctx)
        if len(words) == 1 and not words[0].unknown:
            ctx.shell_vars[name] = value
        words.pop(0)
    if not words:
        return
    _program(words, cmd, ctx)


def _env_name(name: str, value: str, ctx: Ctx) -> None:
    if DANGEROUS_ENV.match(name):
        rule = "tamper.history" if name.startswith("HIST") else "env.smuggle"
        raise _Refuse(rule, f"sets {name}={value[:40]}: changes what code runs or what is kept")


_DECL = frozenset({"export", "declare", "typeset", "readonly", "local"})


def _program(words: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    prog = words[0]
    if prog.unknown:
        raise _Refuse(
            "obfuscation.variable_command",
            "the program name comes from a variable, substitution or template",
        )
    raw = prog.text
    if raw in ("}", "!", "then", "else", "elif", "fi", "do", "done",
                                      "if", "while", "until", "time", "{"):  # fmt: skip
        if len(words) > 1:
            _program(words[1:], cmd, ctx)
        return
    if raw == "for":
        _for_loop(words, ctx)
        return
    if raw in ("]]",):
        return
    name = raw.rsplit("/", 1)[-1]
    if raw.startswith("/etc/init.d/") and len(words) > 1:
        _service("service", [Word(name), *words[1:]], cmd, ctx)
        return
    if raw != name:
        path = normalize(raw, ctx.cwd) or ""
        cat = category(path)
        if cat in ("tmp", "home", "svclog", "run", "devnull", "unknown"):
            raise _Refuse("exec.untrusted_path", f"runs {raw}: a program outside system dirs")
        if cat in ("data", "other", "data_root", "svcconf"):
            ctx.add(HIGH, "exec.unknown_path", f"runs {raw}, a program the guard cannot see")
            return
    if name.startswith("-") or not name:
        raise _Refuse("shell.syntax", f"odd program name {raw!r}")
    if name in _DECL:
        for w in words[1:]:
            m = re.match(r"^([A-Za-z_]\w*)=(.*)$", w.text, re.S)
            if m:
                _env_name(m.group(1), m.group(2), ctx)
                if not w.unknown:
                    ctx.shell_vars[m.group(1)] = m.group(2)
            elif w.text in ("-f", "-n") and name == "export":
                raise _Refuse("obfuscation.function", "exports a shell function")
            elif re.fullmatch(r"[A-Za-z_]\w*", w.text) and DANGEROUS_ENV.match(w.text):
                raise _Refuse("env.smuggle", f"{name} {w.text}")
        return
    handler = _HANDLERS.get(name)
    args = words[1:]
    if handler is not None:
        handler(name, args, cmd, ctx)
        return
    if name in SHELLS:
        _shell(name, args, cmd, ctx)
        return
    if INTERPRETERS.match(name):
        _interpreter(name, args, cmd, ctx)
        return
    if POWER.match(name):
        raise _Refuse("destructive.power", f"{name}: shuts down or reboots the host")
    if DISK_DESTROYERS.match(name):
        raise _Refuse("destructive.disk", f"{name}: destroys or rewrites disks or filesystems")
    if name in ESCAPES:
        raise _Refuse("exec.escape", f"{name}: escapes the task's control or persists")
    if name in EXFIL:
        raise _Refuse("exfil.network", f"{name}: sends data to or runs code from elsewhere")
    if name in USER_REMOVAL:
        raise _Refuse("destructive.user_removal", f"{name}: removes accounts")
    if name in ACCOUNTS:
        raise _Refuse("auth.accounts", f"{name}: changes accounts, passwords or keys")
    if name in READ_ONLY:
        _read_only(name, args, cmd, ctx)
        return
    ctx.add(HIGH, "shell.unknown_program", f"{name}: not a program the guard knows")


def _for_loop(words: list[Word], ctx: Ctx) -> None:
    if len(words) >= 3 and words[2].text == "in":
        var = words[1].text
        values = [w.text for w in words[3:] if not w.unknown]
        if values and len(values) == len(words) - 3 and len(set(values)) == 1:
            ctx.shell_vars[var] = values[0]
        else:
            ctx.shell_vars.pop(var, None)  # several values: uses of it are unknown


def _redirect(op: str, target: Word, ctx: Ctx) -> None:
    path = target.path(ctx.cwd)
    if op in ("<", "<>"):
        if target.unknown:
            return
        level, rule, detail = read_level(path)
        if level:
            ctx.add(level, rule, detail)
        if path is not None and path.startswith(("/dev/tcp/", "/dev/udp/")):
            raise _Refuse("exfil.network", f"opens network socket {path}")
        if op == "<":
            return
    if op == "<<<":
        return
    level, rule = write_level(path)
    if rule == "config.edit":
        level, rule = HIGH, "config.no_backup"
    if rule == "logs.truncate" and op == ">>":
        level = LOW
    shown = path or target.text.replace(UNKNOWN, "$?")
    ctx.add(level, rule, f"redirect {op} {shown}")
    ctx.effects.touch(path)


# --- read-only programs, shells, interpreters, wrappers (they recurse) ----------------------


def _read_only(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    special = _READ_SPECIAL.get(name)
    if special is not None:
        special(name, args, cmd, ctx)
        return
    if name in ("echo", "printf"):
        text = " ".join(w.text for w in args)
        if re.search(r"\\(x[0-9a-fA-F]|[0-7]{1,3}|u[0-9a-fA-F]|U[0-9a-fA-F])", text) or (
            name == "printf" and "%b" in text
        ):
            raise _Refuse("obfuscation.escapes", f"{name} with hex/octal escapes builds text")
        return
    if name in ("dig", "host", "nslookup", "ping", "ping6", "traceroute", "tracepath"):
        if any(w.unknown for w in args) or (name.startswith("ping") and "-p" in _flags(args)):
            raise _Refuse("exfil.network", f"{name} with run-time data (DNS/ICMP exfiltration)")
        return
    if name == "history":
        if _flags(args) & {"-c", "-w", "-d", "-a", "-r", "-n", "-s"}:
            raise _Refuse("tamper.history", "history rewriting")
        return
    if name == "set":
        if any(w.text in ("+o", "history") for w in args) and any(
            w.text == "history" for w in args
        ):
            raise _Refuse("tamper.history", "set +o history")
        return
    if name == "unset":
        if any(w.text.startswith("HIST") for w in args):
            raise _Refuse("tamper.history", "unsets HISTFILE")
        return
    if name in ("hostname", "hostnamectl"):
        ops = [w for w in args if not w.text.startswith("-")]
        if ops and not (name == "hostnamectl" and ops[0].text in ("status",)):
            ctx.add(HIGH, "system.hostname", f"{name} changes the host name")
        return
    if name == "env":
        _env(name, args, cmd, ctx)
        return
    if name in ("base64", "base32", "xxd"):
        if _flags(args) & {"-d", "--decode", "-D", "-r"}:
            raise _Refuse("obfuscation.decode", f"{name} decoding: hides the real command")
    if name in CONTENT_READERS:
        _reads([w for w in args if not w.text.startswith("-")], ctx)


def _eval(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    if any(w.unknown for w in args):
        raise _Refuse("obfuscation.eval", "eval of variables or substitutions")
    _nested(" ".join(w.text for w in args), ctx)


def _cd(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    ops = _operands(args)
    if not ops:
        ctx.cwd = "/root"
        return
    ctx.cwd = ops[0].path(ctx.cwd) if ops[0].text != "-" else None


def _shell(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    script: str | None = None
    rest: list[Word] = []
    it = iter(args)
    for w in it:
        t = w.text
        if script is None and t.startswith("-") and not t.startswith("--") and "c" in t[1:]:
            nxt = next(it, None)
            if nxt is None:
                raise _Refuse("shell.syntax", f"{name} -c without a script")
            if nxt.unknown:
                raise _Refuse("obfuscation.variable_command", f"{name} -c of a variable")
            script = nxt.text
            continue
        if script is None and (t.startswith(("-", "+"))):
            if t in ("-s", "-i") or ("s" in t[1:] and not t.startswith("--")):
                raise _Refuse("shell.pipe_to_interpreter", f"{name} {t} reads commands from stdin")
            if t in ("-o", "+o") and (nxt := next(it, None)) is not None:
                if nxt.text == "history":
                    raise _Refuse("tamper.history", f"{name} {t} history")
            continue
        rest.append(w)
        if script is None:
            break
    if script is not None:
        _nested(script, ctx)
        return
    if rest:
        path = rest[0].path(ctx.cwd)
        if path is None or category(path) in ("tmp", "home", "other", "run"):
            raise _Refuse("exec.untrusted_path", f"{name} runs a script from {rest[0].text}")
        ctx.add(HIGH, "shell.script_file", f"{name} runs {path}, a script the guard cannot see")
        return
    raise _Refuse(
        "shell.pipe_to_interpreter",
        f"{name} reading commands from a pipe, here-string or stdin",
    )


def _interpreter(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    if name == "busybox":
        if not args:
            raise _Refuse("shell.interactive", "busybox without an applet")
        _program(args, cmd, ctx)
        return
    texts = [w.text for w in args]
    if (
        re.match(r"^python", name)
        and len(texts) >= 3
        and texts[0] == "-m"
        and texts[1] in ("pip", "pip3")
    ):
        _pip(texts[2:], ctx)
        return
    if (
        not texts
        or texts[0] in ("-", "-i")
        or (cmd.pipe_in and not texts)
        or (cmd.heredoc_in or ctx.stdin_data)
    ):
        raise _Refuse("shell.pipe_to_interpreter", f"{name} reading code from stdin")
    if set(texts) <= {"--version", "-V", "-v", "--help", "-h"}:
        return
    for t in texts:
        if t.startswith("-") and any(c in t for c in "ceErM") and not t.startswith("--"):
            raise _Refuse("shell.inline_code", f"{name} {t}: inline code")
        if t in ("-m",):
            raise _Refuse("shell.inline_code", f"{name} -m runs a module (e.g. an HTTP server)")
        if not t.startswith("-"):
            break
    script = next((w for w in args if not w.text.startswith("-")), None)
    path = script.path(ctx.cwd) if script else None
    if path is None or category(path) in ("tmp", "home", "other", "run", "devnull"):
        raise _Refuse(
            "exec.untrusted_path", f"{name} runs code from {script.text if script else '?'}"
        )
    ctx.add(HIGH, "shell.script_file", f"{name} runs {path}, code the guard cannot see")


def _wrapper(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    """sudo, env, nice, nohup, timeout, xargs, ...: find the real command and judge it."""
    spec = _WRAPPERS[name]
    k = 0
    while k < len(args):
        t = args[k].text
        if t == "--":
            k += 1
            break
        if not t.startswith("-") or t == "-":
            break
        opt = t.split("=", 1)[0]
        if name in ("sudo", "doas") and opt in ("-i", "-s", "--login", "--shell"):
            rest = args[k + 1 :]
            if not rest:
                raise _Refuse("shell.interactive", f"{name} {t} opens a shell")
            if any(w.unknown for w in rest):
                raise _Refuse("obfuscation.variable_command", f"{name} {t} with variables")
            _nested(" ".join(w.text for w in rest), ctx)
            return
        if name in ("sudo",) and opt in ("-e", "--edit"):
            raise _Refuse("exec.escape", "sudo -e edits files through an editor")
        if name in ("env",) and opt in ("-S", "--split-string"):
            value = t.split("=", 1)[1] if "=" in t else (args[k + 1].text if k + 1 < len(args)
                                                         else "")  # fmt: skip
            _nested(value + " " + " ".join(w.text for w in args[k + 2 :]), ctx)
            return
        if name in ("env",) and opt in ("-C", "--chdir"):
            value = t.split("=", 1)[1] if "=" in t else (args[k + 1].text if k + 1 < len(args)
                                                         else "")  # fmt: skip
            ctx.cwd = normalize(value, ctx.cwd)
        if name in ("xargs", "flock", "su", "runuser", "sg") and opt in ("-c", "--command"):
            if k + 1 < len(args):
                if args[k + 1].unknown:
                    raise _Refuse("obfuscation.variable_command", f"{name} -c of a variable")
                _nested(args[k + 1].text, ctx)
                return
        if name in ("ionice", "chrt", "taskset") and opt in ("-p", "--pid"):
            ctx.add(MEDIUM, "process.priority", f"{name} -p changes a running process")
            return
        if name == "xargs" and opt in ("-a", "--arg-file"):
            pass
        if opt in spec[0] and "=" not in t:
            k += 2
        else:
            k += 1
    # env-style NAME=value before the command
    while (
        k < len(args)
        and name in ("env", "sudo", "doas")
        and re.match(r"^[A-Za-z_]\w*=", args[k].text)
    ):
        n, _, v = args[k].text.partition("=")
        _env_name(n, v, ctx)
        k += 1
    rest = args[k:]
    if name in ("timeout", "flock", "taskset", "chrt") and rest:
        rest = rest[1:]  # the duration, lock file, CPU mask or priority
    if name in ("su", "runuser", "sg"):
        if name != "runuser" or not rest:
            raise _Refuse("auth.accounts", f"{name} without -c switches user interactively")
    if name == "command" and any(a.text in ("-v", "-V") for a in args):
        return
    if not rest:
        if name in ("env",):
            return
        if name == "xargs":
            rest = [Word("echo")]
        else:
            raise _Refuse("shell.interactive", f"{name} without a command")
    if name == "xargs":
        rest = [*rest, Word(UNKNOWN, unknown=True)]
        if any("{}" in w.text for w in rest) or any(a.text in ("-I", "-i") for a in args):
            rest = [Word(UNKNOWN, unknown=True) if "{}" in w.text else w for w in rest]
    _program(rest, cmd, ctx)


def _env(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    _wrapper("env", args, cmd, ctx)


# (options that take a value, unused, special)
_WRAPPERS: dict[str, tuple[frozenset[str], None, str]] = {
    "sudo": (frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-T", "-U", "--user",
                        "--group", "--chdir", "--prompt", "--close-from"}), None, ""),
    "doas": (frozenset({"-u", "-C"}), None, ""),
    "env": (frozenset({"-u", "--unset", "-C", "--chdir", "-P"}), None, ""),
    "nice": (frozenset({"-n", "--adjustment"}), None, ""),
    "nohup": (frozenset(), None, ""),
    "setsid": (frozenset(), None, ""),
    "time": (frozenset({"-f", "-o", "--format", "--output"}), None, ""),
    "stdbuf": (frozenset({"-i", "-o", "-e"}), None, ""),
    "timeout": (frozenset({"-s", "-k", "--signal", "--kill-after"}), None, "duration"),
    "ionice": (frozenset({"-c", "-n", "-t", "--class", "--classdata"}), None, ""),
    "chrt": (frozenset(), None, ""),
    "taskset": (frozenset(), None, ""),
    "unbuffer": (frozenset(), None, ""),
    "command": (frozenset(), None, ""),
    "builtin": (frozenset(), None, ""),
    "exec": (frozenset({"-a"}), None, ""),
    "xargs": (frozenset({"-a", "-d", "-E", "-e", "-I", "-L", "-l", "-n", "-P", "-s",
                         "--arg-file", "--delimiter", "--max-args", "--max-procs",
                         "--max-chars", "--max-lines", "--replace", "--eof"}), None, ""),
    "flock": (frozenset({"-w", "-E", "--timeout", "--conflict-exit-code"}), None, ""),
    "runuser": (frozenset({"-u", "-g", "-G", "--user", "--group", "-s", "--shell"}), None, ""),
    "su": (frozenset({"-s", "-g", "-G", "--shell", "--group"}), None, ""),
    "sg": (frozenset(), None, ""),
    "catchsegv": (frozenset(), None, ""),
    "caffeinate": (frozenset(), None, ""),
    "chronic": (frozenset(), None, ""),
}  # fmt: skip


# --- handler tables -------------------------------------------------------------------------

_READ_SPECIAL: dict[str, Handler] = {
    "grep": _grep_like, "egrep": _grep_like, "fgrep": _grep_like, "zgrep": _grep_like,
    "rg": _grep_like, "ag": _grep_like, "cat": _cat_like, "head": _cat_like,
    "tail": _cat_like, "sed": _sed, "awk": _awk, "gawk": _awk, "mawk": _awk, "nawk": _awk,
    "curl": _curl, "wget": _curl, "supervisorctl": _supervisorctl, "getent": _getent,
}  # fmt: skip

_HANDLERS: dict[str, Handler] = {
    "nc": _nc,
    "setfacl": _setfacl,
    "zip": _zip,
    "7z": _zip,
    "ncat": _nc,
    "netcat": _nc,
    "rm": _rm, "rmdir": _rm, "unlink": _rm, "find": _find, "chmod": _chmod, "chown": _chmod,
    "chgrp": _chmod, "truncate": _truncate, "dd": _dd, "tee": _tee, "touch": _touch_mkdir,
    "mkdir": _touch_mkdir, "install": _cp_mv, "cp": _cp_mv, "mv": _cp_mv, "ln": _cp_mv,
    "rsync": _cp_mv, "tar": _tar, "gzip": _compress, "gunzip": _compress, "bzip2": _compress,
    "xz": _compress, "zstd": _compress, "kill": _kill, "pkill": _kill, "killall": _kill,
    "killall5": _kill, "fuser": _kill, "systemctl": _systemctl, "service": _service,
    "apt": _pkg, "apt-get": _pkg, "aptitude": _pkg, "dpkg": _pkg, "yum": _pkg, "dnf": _pkg,
    "rpm": _pkg, "zypper": _pkg, "apk": _pkg, "pacman": _pkg, "snap": _pkg, "flatpak": _pkg,
    "pip": _pkg, "pip3": _pkg, "npm": _pkg, "gem": _pkg, "cargo": _pkg, "yarn": _pkg,
    "iptables": _firewall, "ip6tables": _firewall, "iptables-legacy": _firewall,
    "iptables-nft": _firewall, "ip6tables-legacy": _firewall, "ip6tables-nft": _firewall,
    "iptables-restore": _firewall, "ip6tables-restore": _firewall, "iptables-save": _firewall,
    "ebtables": _firewall, "arptables": _firewall, "nft": _firewall, "ufw": _firewall,
    "firewall-cmd": _firewall, "ip": _ip, "ifdown": _ip, "ifup": _ip, "ifconfig": _ip,
    "tc": _ip, "nmcli": _ip, "sysctl": _sysctl, "mount": _mount, "umount": _mount,
    "swapoff": _mount, "swapon": _mount, "openssl": _openssl, "redis-cli": _redis_cli,
    "psql": _psql, "pg_ctl": _pg_tools, "pg_ctlcluster": _pg_tools, "pg_dump": _pg_tools,
    "pg_dumpall": _pg_tools, "vacuumdb": _pg_tools, "reindexdb": _pg_tools,
    "clusterdb": _pg_tools, "dropdb": _pg_tools, "dropuser": _pg_tools,
    "pg_resetwal": _pg_tools, "createdb": _pg_tools, "createuser": _pg_tools,
    "nginx": _nginx, "logrotate": _logrotate, "journalctl": _journalctl, "dmesg": _dmesg,
    "prlimit": _prlimit, "renice": _renice, "eval": _eval, "cd": _cd, "pushd": _cd,
    "popd": _cd, "ldconfig": _simple_medium, "ln.": _cp_mv,
    **{w: _wrapper for w in _WRAPPERS},
}  # fmt: skip
