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
   reads, writes or deletes with `guard.paths`.

Anything that only makes sense as obfuscation (decoding piped anywhere, `printf '\\x..'`,
`$'\\x..'`, `${IFS}`, a variable or template as the program name, inline interpreter code, a
here-string into a shell, function definitions such as a fork bomb) is refused outright. An
unknown program is not refused but waits for a person.

Where it lives: `shell.parse` tokenises; this module holds the entry points, the
dispatcher (`check_program`: wrappers, paths, program classes), the rules for shells, interpreters,
wrappers, `eval`, `cd` and read-only programs, and the one table that maps every other program
to its handler. The handlers are grouped by theme in `shell.files`, `shell.network`,
`shell.processes`, `shell.system` and `shell.databases`; what they share
(`Ctx`, argument and path helpers, the URL policy) is in `shell.operands`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from remed_daemon.guard.paths import (
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
from remed_daemon.guard.shell.databases import check_pg_tools, check_psql, check_redis_cli
from remed_daemon.guard.shell.files import (
    check_awk,
    check_cat_like,
    check_chmod,
    check_compress,
    check_cp_mv,
    check_dd,
    check_find,
    check_grep_like,
    check_rm,
    check_sed,
    check_setfacl,
    check_tar,
    check_tee,
    check_touch_mkdir,
    check_truncate,
    check_zip,
)
from remed_daemon.guard.shell.network import (
    check_curl,
    check_firewall,
    check_ip,
    check_nc,
    check_openssl,
)
from remed_daemon.guard.shell.operands import (
    Ctx,
    Handler,
    flags_of,
    note_reads,
    operands_of,
    url_is_local,
)
from remed_daemon.guard.shell.parse import (
    MAX_COMMANDS,
    Cmd,
    Refuse,
    Tokens,
    Word,
    expand_braces,
)
from remed_daemon.guard.shell.processes import (
    CRITICAL_SERVICES,
    check_dmesg,
    check_journalctl,
    check_kill,
    check_logrotate,
    check_nginx,
    check_prlimit,
    check_renice,
    check_service,
    check_supervisorctl,
    check_systemctl,
)
from remed_daemon.guard.shell.system import (
    CRITICAL_PACKAGES,
    check_getent,
    check_mount,
    check_pip,
    check_pkg,
    check_simple_medium,
    check_sysctl,
)

# What the policy and the tests use; the constants and url_is_local live with their handlers.
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
    except Refuse as exc:
        ctx.add(REJECT, exc.rule, exc.detail)


def _script(script: str, ctx: Ctx) -> None:
    if ctx.depth > MAX_SHELL_DEPTH:
        ctx.add(REJECT, "obfuscation.nesting", "shell nesting deeper than 6 levels")
        return
    try:
        cmds = Tokens(script, ctx.shell_vars).parse()
        for cmd in cmds:
            ctx.count += 1
            if ctx.count > MAX_COMMANDS:
                raise Refuse("shell.too_long", "more than 200 commands")
            _simple(cmd, ctx)
        _pipeline_checks(cmds, ctx)
    except Refuse as exc:
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
            raise Refuse("obfuscation.decode", f"{name} decoding: hides the real command")
        if name == "xxd" and any(w.text.startswith("-r") for w in cmd.words):
            raise Refuse("obfuscation.decode", "xxd -r decoding: hides the real command")


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
        raise Refuse("obfuscation.function", "defines a shell function (fork bombs, hiding)")
    words: list[Word] = []
    for w in cmd.words:
        if not w.quoted and not w.unknown and "," in w.text and "{" in w.text:
            words.extend(Word(t) for t in expand_braces(w.text))
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
    check_program(words, cmd, ctx)


def _env_name(name: str, value: str, ctx: Ctx) -> None:
    if DANGEROUS_ENV.match(name):
        rule = "tamper.history" if name.startswith("HIST") else "env.smuggle"
        raise Refuse(rule, f"sets {name}={value[:40]}: changes what code runs or what is kept")


_DECL = frozenset({"export", "declare", "typeset", "readonly", "local"})


def check_program(words: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    prog = words[0]
    if prog.unknown:
        raise Refuse(
            "obfuscation.variable_command",
            "the program name comes from a variable, substitution or template",
        )
    raw = prog.text
    if raw in ("}", "!", "then", "else", "elif", "fi", "do", "done",
                                      "if", "while", "until", "time", "{"):  # fmt: skip
        if len(words) > 1:
            check_program(words[1:], cmd, ctx)
        return
    if raw == "for":
        _for_loop(words, ctx)
        return
    if raw in ("]]",):
        return
    name = raw.rsplit("/", 1)[-1]
    if raw.startswith("/etc/init.d/") and len(words) > 1:
        check_service("service", [Word(name), *words[1:]], cmd, ctx)
        return
    if raw != name:
        path = normalize(raw, ctx.cwd) or ""
        cat = category(path)
        if cat in ("tmp", "home", "svclog", "run", "devnull", "unknown"):
            raise Refuse("exec.untrusted_path", f"runs {raw}: a program outside system dirs")
        if cat in ("data", "other", "data_root", "svcconf"):
            ctx.add(HIGH, "exec.unknown_path", f"runs {raw}, a program the guard cannot see")
            return
    if name.startswith("-") or not name:
        raise Refuse("shell.syntax", f"odd program name {raw!r}")
    if name in _DECL:
        for w in words[1:]:
            m = re.match(r"^([A-Za-z_]\w*)=(.*)$", w.text, re.S)
            if m:
                _env_name(m.group(1), m.group(2), ctx)
                if not w.unknown:
                    ctx.shell_vars[m.group(1)] = m.group(2)
            elif w.text in ("-f", "-n") and name == "export":
                raise Refuse("obfuscation.function", "exports a shell function")
            elif re.fullmatch(r"[A-Za-z_]\w*", w.text) and DANGEROUS_ENV.match(w.text):
                raise Refuse("env.smuggle", f"{name} {w.text}")
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
        raise Refuse("destructive.power", f"{name}: shuts down or reboots the host")
    if DISK_DESTROYERS.match(name):
        raise Refuse("destructive.disk", f"{name}: destroys or rewrites disks or filesystems")
    if name in ESCAPES:
        raise Refuse("exec.escape", f"{name}: escapes the task's control or persists")
    if name in EXFIL:
        raise Refuse("exfil.network", f"{name}: sends data to or runs code from elsewhere")
    if name in USER_REMOVAL:
        raise Refuse("destructive.user_removal", f"{name}: removes accounts")
    if name in ACCOUNTS:
        raise Refuse("auth.accounts", f"{name}: changes accounts, passwords or keys")
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
            raise Refuse("exfil.network", f"opens network socket {path}")
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
            raise Refuse("obfuscation.escapes", f"{name} with hex/octal escapes builds text")
        return
    if name in ("dig", "host", "nslookup", "ping", "ping6", "traceroute", "tracepath"):
        if any(w.unknown for w in args) or (name.startswith("ping") and "-p" in flags_of(args)):
            raise Refuse("exfil.network", f"{name} with run-time data (DNS/ICMP exfiltration)")
        return
    if name == "history":
        if flags_of(args) & {"-c", "-w", "-d", "-a", "-r", "-n", "-s"}:
            raise Refuse("tamper.history", "history rewriting")
        return
    if name == "set":
        if any(w.text in ("+o", "history") for w in args) and any(
            w.text == "history" for w in args
        ):
            raise Refuse("tamper.history", "set +o history")
        return
    if name == "unset":
        if any(w.text.startswith("HIST") for w in args):
            raise Refuse("tamper.history", "unsets HISTFILE")
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
        if flags_of(args) & {"-d", "--decode", "-D", "-r"}:
            raise Refuse("obfuscation.decode", f"{name} decoding: hides the real command")
    if name in CONTENT_READERS:
        note_reads([w for w in args if not w.text.startswith("-")], ctx)


def _eval(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    if any(w.unknown for w in args):
        raise Refuse("obfuscation.eval", "eval of variables or substitutions")
    _nested(" ".join(w.text for w in args), ctx)


def _cd(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    ops = operands_of(args)
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
                raise Refuse("shell.syntax", f"{name} -c without a script")
            if nxt.unknown:
                raise Refuse("obfuscation.variable_command", f"{name} -c of a variable")
            script = nxt.text
            continue
        if script is None and (t.startswith(("-", "+"))):
            if t in ("-s", "-i") or ("s" in t[1:] and not t.startswith("--")):
                raise Refuse("shell.pipe_to_interpreter", f"{name} {t} reads commands from stdin")
            if t in ("-o", "+o") and (nxt := next(it, None)) is not None:
                if nxt.text == "history":
                    raise Refuse("tamper.history", f"{name} {t} history")
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
            raise Refuse("exec.untrusted_path", f"{name} runs a script from {rest[0].text}")
        ctx.add(HIGH, "shell.script_file", f"{name} runs {path}, a script the guard cannot see")
        return
    raise Refuse(
        "shell.pipe_to_interpreter",
        f"{name} reading commands from a pipe, here-string or stdin",
    )


def _interpreter(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    if name == "busybox":
        if not args:
            raise Refuse("shell.interactive", "busybox without an applet")
        check_program(args, cmd, ctx)
        return
    texts = [w.text for w in args]
    if (
        re.match(r"^python", name)
        and len(texts) >= 3
        and texts[0] == "-m"
        and texts[1] in ("pip", "pip3")
    ):
        check_pip(texts[2:], ctx)
        return
    if (
        not texts
        or texts[0] in ("-", "-i")
        or (cmd.pipe_in and not texts)
        or (cmd.heredoc_in or ctx.stdin_data)
    ):
        raise Refuse("shell.pipe_to_interpreter", f"{name} reading code from stdin")
    if set(texts) <= {"--version", "-V", "-v", "--help", "-h"}:
        return
    for t in texts:
        if t.startswith("-") and any(c in t for c in "ceErM") and not t.startswith("--"):
            raise Refuse("shell.inline_code", f"{name} {t}: inline code")
        if t in ("-m",):
            raise Refuse("shell.inline_code", f"{name} -m runs a module (e.g. an HTTP server)")
        if not t.startswith("-"):
            break
    script = next((w for w in args if not w.text.startswith("-")), None)
    path = script.path(ctx.cwd) if script else None
    if path is None or category(path) in ("tmp", "home", "other", "run", "devnull"):
        raise Refuse(
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
                raise Refuse("shell.interactive", f"{name} {t} opens a shell")
            if any(w.unknown for w in rest):
                raise Refuse("obfuscation.variable_command", f"{name} {t} with variables")
            _nested(" ".join(w.text for w in rest), ctx)
            return
        if name in ("sudo",) and opt in ("-e", "--edit"):
            raise Refuse("exec.escape", "sudo -e edits files through an editor")
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
                    raise Refuse("obfuscation.variable_command", f"{name} -c of a variable")
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
            raise Refuse("auth.accounts", f"{name} without -c switches user interactively")
    if name == "command" and any(a.text in ("-v", "-V") for a in args):
        return
    if not rest:
        if name in ("env",):
            return
        if name == "xargs":
            rest = [Word("echo")]
        else:
            raise Refuse("shell.interactive", f"{name} without a command")
    if name == "xargs":
        rest = [*rest, Word(UNKNOWN, unknown=True)]
        if any("{}" in w.text for w in rest) or any(a.text in ("-I", "-i") for a in args):
            rest = [Word(UNKNOWN, unknown=True) if "{}" in w.text else w for w in rest]
    check_program(rest, cmd, ctx)


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
    "grep": check_grep_like, "egrep": check_grep_like, "fgrep": check_grep_like,
    "zgrep": check_grep_like, "rg": check_grep_like, "ag": check_grep_like, "cat": check_cat_like,
    "head": check_cat_like, "tail": check_cat_like, "sed": check_sed, "awk": check_awk,
    "gawk": check_awk, "mawk": check_awk, "nawk": check_awk, "curl": check_curl, "wget": check_curl,
    "supervisorctl": check_supervisorctl, "getent": check_getent,
}  # fmt: skip

_HANDLERS: dict[str, Handler] = {
    "nc": check_nc, "setfacl": check_setfacl, "zip": check_zip, "7z": check_zip, "ncat": check_nc,
    "netcat": check_nc, "rm": check_rm, "rmdir": check_rm, "unlink": check_rm, "find": check_find,
    "chmod": check_chmod, "chown": check_chmod, "chgrp": check_chmod, "truncate": check_truncate,
    "dd": check_dd, "tee": check_tee, "touch": check_touch_mkdir, "mkdir": check_touch_mkdir,
    "install": check_cp_mv, "cp": check_cp_mv, "mv": check_cp_mv, "ln": check_cp_mv,
    "rsync": check_cp_mv, "tar": check_tar, "gzip": check_compress, "gunzip": check_compress,
    "bzip2": check_compress, "xz": check_compress, "zstd": check_compress, "kill": check_kill,
    "pkill": check_kill, "killall": check_kill, "killall5": check_kill, "fuser": check_kill,
    "systemctl": check_systemctl, "service": check_service, "apt": check_pkg, "apt-get": check_pkg,
    "aptitude": check_pkg, "dpkg": check_pkg, "yum": check_pkg, "dnf": check_pkg, "rpm": check_pkg,
    "zypper": check_pkg, "apk": check_pkg, "pacman": check_pkg, "snap": check_pkg,
    "flatpak": check_pkg, "pip": check_pkg, "pip3": check_pkg, "npm": check_pkg, "gem": check_pkg,
    "cargo": check_pkg, "yarn": check_pkg, "iptables": check_firewall, "ip6tables": check_firewall,
    "iptables-legacy": check_firewall, "iptables-nft": check_firewall,
    "ip6tables-legacy": check_firewall, "ip6tables-nft": check_firewall,
    "iptables-restore": check_firewall, "ip6tables-restore": check_firewall,
    "iptables-save": check_firewall, "ebtables": check_firewall, "arptables": check_firewall,
    "nft": check_firewall, "ufw": check_firewall, "firewall-cmd": check_firewall, "ip": check_ip,
    "ifdown": check_ip, "ifup": check_ip, "ifconfig": check_ip, "tc": check_ip, "nmcli": check_ip,
    "sysctl": check_sysctl, "mount": check_mount, "umount": check_mount, "swapoff": check_mount,
    "swapon": check_mount, "openssl": check_openssl, "redis-cli": check_redis_cli,
    "psql": check_psql, "pg_ctl": check_pg_tools, "pg_ctlcluster": check_pg_tools,
    "pg_dump": check_pg_tools, "pg_dumpall": check_pg_tools, "vacuumdb": check_pg_tools,
    "reindexdb": check_pg_tools, "clusterdb": check_pg_tools, "dropdb": check_pg_tools,
    "dropuser": check_pg_tools, "pg_resetwal": check_pg_tools, "createdb": check_pg_tools,
    "createuser": check_pg_tools, "nginx": check_nginx, "logrotate": check_logrotate,
    "journalctl": check_journalctl, "dmesg": check_dmesg, "prlimit": check_prlimit,
    "renice": check_renice, "eval": _eval, "cd": _cd, "pushd": _cd, "popd": _cd,
    "ldconfig": check_simple_medium, "ln.": check_cp_mv,
    **{w: _wrapper for w in _WRAPPERS},
}  # fmt: skip
