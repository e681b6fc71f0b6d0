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
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from remed_daemon.agents.guard_paths import (
    HIGH,
    LOW,
    MEDIUM,
    REJECT,
    UNKNOWN,
    Effects,
    category,
    delete_level,
    has_glob,
    is_secret,
    mode_level,
    normalize,
    read_level,
    write_level,
)

MAX_SHELL_DEPTH = 6
MAX_COMMANDS = 200

# Services whose loss cuts the host off or hides it: never stopped, killed or masked.
CRITICAL_SERVICES = frozenset(
    {
        "ssh", "sshd", "openssh-server", "supervisor", "supervisord", "systemd", "init",
        "dbus", "dbus-daemon", "networking", "network", "NetworkManager", "systemd-networkd",
        "systemd-resolved", "systemd-journald", "systemd-logind", "rsyslog", "syslog",
        "auditd", "sudo", "cron", "crond", "containerd", "docker", "kubelet", "all", "*",
    }
)  # fmt: skip
# Packages without which the host is unreachable or unmanageable.
CRITICAL_PACKAGES = (
    "openssh-server", "openssh-client", "openssh*", "ssh", "sudo", "python3", "python3-*",
    "python3.*", "python", "libpython3*", "supervisor", "systemd", "systemd-sysv", "init",
    "bash", "dash", "coreutils", "libc6", "libc-bin", "glibc", "iproute2", "apt", "dpkg",
    "rpm", "yum", "dnf", "login", "passwd", "util-linux", "procps", "base-files",
    "linux-image*", "kernel*", "grub*", "libssl*", "openssl", "ca-certificates", "nftables",
    "iptables", "ansible*", "netbase", "ifupdown", "netplan.io", "network-manager",
)  # fmt: skip
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


@dataclass
class Word:
    text: str
    unknown: bool = False  # contains a variable, substitution or unresolved template
    quoted: bool = False
    subs: list[str] = field(default_factory=list)  # inner scripts of $(...) / `...`

    def path(self, cwd: str | None) -> str | None:
        return None if self.unknown else normalize(self.text, cwd)


@dataclass
class Cmd:
    words: list[Word] = field(default_factory=list)
    redirects: list[tuple[str, Word]] = field(default_factory=list)
    pipe_in: bool = False
    pipe_out: bool = False
    heredoc_in: bool = False
    function_def: bool = False


@dataclass
class Ctx:
    effects: Effects
    local_hosts: frozenset[str]
    cwd: str | None = "/root"
    depth: int = 0
    count: int = 0
    shell_vars: dict[str, str] = field(default_factory=dict)
    stdin_data: bool = False

    def add(self, level: int, rule: str, detail: str) -> None:
        self.effects.add(level, rule, detail)


class _Refuse(Exception):
    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.rule, self.detail = rule, detail


# --- tokeniser ------------------------------------------------------------------------------

_OPS = ("&&", "||", ";;", "|&", ";", "|", "&", "\n", "(", ")")
_REDIR = re.compile(r"(\d*|&)(>>|>\||>&|<<<|<<-|<<|<>|<&|>|<)")
_INVISIBLE = re.compile(r"[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e"
                        r"\u2060-\u2064\ufeff]")  # fmt: skip
_ANSI_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]|[0-7]|u[0-9a-fA-F]|U[0-9a-fA-F]|c.)")


def _find_close(s: str, i: int, opener: str, closer: str) -> int:
    """Index of the `closer` that matches an `opener` just before `i` (quotes respected)."""
    depth = 1
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            j = s.find("'", i + 1)
            if j < 0:
                raise _Refuse("shell.syntax", "unterminated single quote")
            i = j + 1
            continue
        if c == '"':
            i = _find_dquote_end(s, i + 1) + 1
            continue
        if s.startswith(opener, i):
            depth += 1
            i += len(opener)
            continue
        if s.startswith(closer, i):
            depth -= 1
            if depth == 0:
                return i
            i += len(closer)
            continue
        i += 1
    raise _Refuse("shell.syntax", f"unterminated {opener!r}")


def _find_dquote_end(s: str, i: int) -> int:
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i
        if s.startswith("$(", i):
            i = _find_close(s, i + 2, "(", ")") + 1
            continue
        if c == "`":
            j = s.find("`", i + 1)
            if j < 0:
                raise _Refuse("shell.syntax", "unterminated backtick")
            i = j + 1
            continue
        i += 1
    raise _Refuse("shell.syntax", "unterminated double quote")


class _Tokens:
    """Splits a script into simple commands; nested scripts are returned for recursion."""

    def __init__(self, s: str, shell_vars: dict[str, str]) -> None:
        if _INVISIBLE.search(s.replace("\t", " ")):
            raise _Refuse("obfuscation.invisible", "control or invisible characters in command")
        if nfkc_suspicious(s):
            raise _Refuse(
                "obfuscation.lookalike", "look-alike (fullwidth/compatibility) characters"
            )
        self.s = s
        self.i = 0
        self.vars = shell_vars
        self.cmds: list[Cmd] = []
        self.heredocs: list[tuple[str, bool, Cmd]] = []

    def parse(self) -> list[Cmd]:
        cur = Cmd()
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t":
                self.i += 1
                continue
            if c == "\\" and s.startswith("\\\n", self.i):
                self.i += 2
                continue
            if c == "#" and not cur.words:
                j = s.find("\n", self.i)
                self.i = len(s) if j < 0 else j
                continue
            m = _REDIR.match(s, self.i)
            if m and m.group(2) in ("<", ">") and s.startswith("(", m.end()):
                m = None  # process substitution, read as a word
            if m:
                op = m.group(2)
                self.i = m.end()
                while self.i < len(s) and s[self.i] in " \t":
                    self.i += 1
                if op in ("<<", "<<-"):
                    word = self._word()
                    quoted = word.quoted
                    self.heredocs.append((word.text, quoted, cur))
                    cur.heredoc_in = True
                    continue
                if op == "<<<":
                    cur.heredoc_in = True
                if (
                    op in (">&", "<&")
                    and self.i < len(s)
                    and (s[self.i].isdigit() or s[self.i] == "-")
                ):
                    self._word()
                    continue
                cur.redirects.append((op, self._word()))
                continue
            op2 = next((o for o in _OPS if s.startswith(o, self.i)), None)
            if op2 is not None and not (op2 in ("(",) and s.startswith("((", self.i)):
                self.i += len(op2)
                if op2 == "(" and cur.words:
                    cur.function_def = True
                if op2 == "\n" and self.heredocs:
                    self._read_heredocs()
                if op2 in ("|", "|&"):
                    cur.pipe_out = True
                    self._push(cur)
                    cur = Cmd(pipe_in=True)
                else:
                    self._push(cur)
                    cur = Cmd()
                continue
            if s.startswith("((", self.i):
                end = s.find("))", self.i)
                if end < 0:
                    raise _Refuse("shell.syntax", "unterminated (( ))")
                inner = s[self.i + 2 : end]
                if "$(" in inner or "`" in inner:
                    raise _Refuse("obfuscation.arithmetic", "command substitution in (( ))")
                self.i = end + 2
                continue
            cur.words.append(self._word())
        self._push(cur)
        return self.cmds

    def _push(self, cmd: Cmd) -> None:
        if cmd.words or cmd.redirects:
            self.cmds.append(cmd)
            if len(self.cmds) > MAX_COMMANDS:
                raise _Refuse("shell.too_long", "more than 200 commands in one script")

    def _read_heredocs(self) -> None:
        for delim, quoted, cmd in self.heredocs:
            lines = []
            while self.i < len(self.s):
                j = self.s.find("\n", self.i)
                line = self.s[self.i : (len(self.s) if j < 0 else j)]
                self.i = len(self.s) if j < 0 else j + 1
                if line.strip() == delim:
                    break
                lines.append(line)
            body = "\n".join(lines)
            if not quoted and ("$(" in body or "`" in body):
                # An unquoted here-document expands substitutions: they run.
                for m in re.finditer(r"\$\(|`", body):
                    inner = _extract_sub(body, m.start())
                    if inner is not None:
                        cmd.words.append(Word(UNKNOWN, unknown=True, subs=[inner]))
        self.heredocs = []

    def _word(self) -> Word:
        s = self.s
        out: list[str] = []
        word = Word("")
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\n;&|()" or (c in "<>" and not s.startswith("(", self.i + 1)):
                break
            if c == "\\":
                if self.i + 1 < len(s) and s[self.i + 1] == "\n":
                    self.i += 2
                    continue
                out.append(s[self.i + 1 : self.i + 2])
                word.quoted = True
                self.i += 2
                continue
            if c == "'":
                j = s.find("'", self.i + 1)
                if j < 0:
                    raise _Refuse("shell.syntax", "unterminated single quote")
                out.append(s[self.i + 1 : j])
                word.quoted = True
                self.i = j + 1
                continue
            if c == '"':
                end = _find_dquote_end(s, self.i + 1)
                self._dquoted(s[self.i + 1 : end], out, word)
                word.quoted = True
                self.i = end + 1
                continue
            if c == "$" and s.startswith("$'", self.i):
                j = self.i + 2
                while j < len(s) and s[j] != "'":
                    j += 2 if s[j] == "\\" else 1
                body = s[self.i + 2 : j]
                if _ANSI_ESCAPE.search(body):
                    raise _Refuse("obfuscation.escapes", f"$'...' with escapes: $'{body[:40]}'")
                out.append(body.replace("\\n", "\n").replace("\\t", "\t"))
                word.quoted = True
                self.i = j + 1
                continue
            if c == "$" or c == "`" or (c in "<>" and s.startswith("(", self.i + 1)):
                self.i = self._expansion(s, self.i, out, word)
                continue
            if c == "{" and s.startswith("{{", self.i):
                end = s.find("}}", self.i)
                if end < 0:
                    raise _Refuse("jinja.syntax", "unterminated {{ in command")
                out.append(UNKNOWN)
                word.unknown = True
                self.i = end + 2
                continue
            out.append(c)
            self.i += 1
        word.text = "".join(out)
        return word

    def _dquoted(self, body: str, out: list[str], word: Word) -> None:
        i = 0
        while i < len(body):
            c = body[i]
            if c == "\\" and i + 1 < len(body) and body[i + 1] in '$`"\\\n':
                out.append(body[i + 1])
                i += 2
                continue
            if c in "$`":
                i = self._expansion(body, i, out, word)
                continue
            if body.startswith("{{", i):
                end = body.find("}}", i)
                if end < 0:
                    raise _Refuse("jinja.syntax", "unterminated {{ in command")
                out.append(UNKNOWN)
                word.unknown = True
                i = end + 2
                continue
            out.append(c)
            i += 1

    def _expansion(self, s: str, i: int, out: list[str], word: Word) -> int:
        """Handle `$...`, backticks and process substitution at s[i]; return the next index."""
        if s.startswith("$((", i):
            end = s.find("))", i)
            if end < 0:
                raise _Refuse("shell.syntax", "unterminated $(( ))")
            if "$(" in s[i + 3 : end] or "`" in s[i + 3 : end]:
                raise _Refuse("obfuscation.arithmetic", "command substitution in $(( ))")
            out.append(UNKNOWN)
            word.unknown = True
            return end + 2
        if s.startswith("$(", i) or s.startswith("<(", i) or s.startswith(">(", i):
            end = _find_close(s, i + 2, "(", ")")
            word.subs.append(s[i + 2 : end])
            out.append(UNKNOWN)
            word.unknown = True
            return end + 1
        if s[i] == "`":
            end = s.find("`", i + 1)
            if end < 0:
                raise _Refuse("shell.syntax", "unterminated backtick")
            word.subs.append(s[i + 1 : end].replace("\\`", "`"))
            out.append(UNKNOWN)
            word.unknown = True
            return end + 1
        if s.startswith("${", i):
            end = _find_close(s, i + 2, "{", "}")
            inner = s[i + 2 : end]
            mname = re.match(r"[!#]?(\w*)", inner)
            if "IFS" in inner:
                raise _Refuse("obfuscation.ifs", "${IFS} used to hide word boundaries")
            if "$(" in inner or "`" in inner:
                word.subs.extend(re.findall(r"\$\(([^()]*)\)", inner))
            var = mname.group(1) if mname else ""
            if var in self.vars and inner == var:
                out.append(self.vars[var])
                return end + 1
            out.append(UNKNOWN)
            word.unknown = True
            return end + 1
        mv = re.match(r"\$([A-Za-z_]\w*|[0-9@*#?$!-])", s[i:])
        if mv:
            name = mv.group(1)
            if name == "IFS":
                raise _Refuse("obfuscation.ifs", "$IFS used to hide word boundaries")
            if name in self.vars:
                out.append(self.vars[name])
            else:
                out.append(UNKNOWN)
                word.unknown = True
            return i + mv.end()
        out.append("$")
        return i + 1


def _extract_sub(body: str, i: int) -> str | None:
    try:
        if body.startswith("$(", i):
            return body[i + 2 : _find_close(body, i + 2, "(", ")")]
        end = body.find("`", i + 1)
        return body[i + 1 : end] if end > 0 else None
    except _Refuse:
        return body[i:]


def _expand_braces(text: str) -> list[str]:
    m = re.search(r"\{([^{}]*,[^{}]*)\}", text)
    if not m:
        return [text]
    out: list[str] = []
    for alt in m.group(1).split(","):
        out.extend(_expand_braces(text[: m.start()] + alt + text[m.end() :]))
        if len(out) > 64:
            break
    return out


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


# --- generic argument helpers ---------------------------------------------------------------


def _operands(args: list[Word], with_value: str = "") -> list[Word]:
    """Non-option words; options listed in `with_value` (letters) take the next word."""
    out: list[Word] = []
    skip = False
    dashdash = False
    for w in args:
        if skip:
            skip = False
            continue
        t = w.text
        if dashdash or not t.startswith("-") or t == "-":
            out.append(w)
            continue
        if t == "--":
            dashdash = True
            continue
        if not t.startswith("--") and len(t) == 2 and t[1] in with_value:
            skip = True
    return out


def _flags(args: list[Word]) -> set[str]:
    out: set[str] = set()
    for w in args:
        t = w.text
        if t == "--":
            break
        if t.startswith("--"):
            out.add(t.split("=", 1)[0])
        elif t.startswith("-") and len(t) > 1:
            out.update("-" + c for c in t[1:])
    return out


def _paths(words: list[Word], ctx: Ctx) -> list[tuple[Word, str | None]]:
    out: list[tuple[Word, str | None]] = []
    for w in words:
        if w.unknown:
            out.append((w, None))
            continue
        for text in _expand_braces(w.text) if not w.quoted else [w.text]:
            out.append((w, normalize(text, ctx.cwd)))
    return out


def _reads(words: list[Word], ctx: Ctx) -> None:
    for w, path in _paths(words, ctx):
        if path is None:
            # A run-time part (`/proc/$(pgrep x)/environ`, `$HOME/.ssh/id_rsa`) may be anything.
            path = normalize(w.text.replace(UNKNOWN, "1"), ctx.cwd or "/root")
        level, rule, detail = read_level(path)
        if level:
            ctx.add(level, rule, detail)


def _deletes(words: list[Word], ctx: Ctx, *, recursive: bool, prog: str) -> None:
    for w, path in _paths(words, ctx):
        level, rule = delete_level(path, recursive=recursive)
        shown = path or w.text.replace(UNKNOWN, "$?")
        ctx.add(level, rule, f"{prog} {'-r ' if recursive else ''}{shown}")
        ctx.effects.touch(path)


def _writes(words: list[Word], ctx: Ctx, *, prog: str, backup: bool = False) -> None:
    for w, path in _paths(words, ctx):
        level, rule = write_level(path)
        if rule == "config.edit" and not backup:
            level, rule = HIGH, "config.no_backup"
        shown = path or w.text.replace(UNKNOWN, "$?")
        ctx.add(level, rule, f"{prog} writes {shown}")
        ctx.effects.touch(path)


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


# --- URL policy -----------------------------------------------------------------------------


def url_is_local(url: str, local_hosts: frozenset[str]) -> bool:
    """True for http(s) URLs to the host itself (loopback) or to one of the incident's hosts."""
    if UNKNOWN in url:
        return False
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        _ = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or parts.username or parts.password:
        return False
    if host in ("localhost", "ip6-localhost", "0.0.0.0") or host in local_hosts:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- program handlers -----------------------------------------------------------------------

Handler = Callable[[str, list[Word], Cmd, Ctx], None]


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


# grep options that take the next word as their value (`-A 3`, `--max-count 5`).
GREP_VALUE_OPTIONS = frozenset(
    {"-A", "-B", "-C", "-m", "-d", "-D", "--after-context", "--before-context", "--context",
     "--max-count", "--directories", "--devices", "--label", "--include", "--exclude",
     "--exclude-dir", "--exclude-from", "--binary-files", "--color", "--colour",
     "--group-separator"}
)  # fmt: skip


def _grep_like(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    """grep reads its FILE operands and any -f pattern file; the first operand is the pattern
    unless -e/-f gave one, so `grep -o 'pid=[0-9]*'` reads stdin, not a file named like that."""
    files: list[Word] = []
    pattern_given = recursive = False
    it = iter(args)
    for w in it:
        t = w.text
        if t == "--":
            files.extend(it)
            break
        short = t[1:] if t.startswith("-") and not t.startswith("--") else ""
        # Letters before a value-taking one are flags: -ri, -rl, -rA3 are recursive.
        if t in ("--recursive", "--dereference-recursive") or set(
            re.split("[efABCmdD]", short, maxsplit=1)[0]
        ) & {"r", "R"}:
            recursive = True
        if t in ("-e", "--regexp"):
            pattern_given = True
            next(it, None)
        elif t.startswith("--regexp="):
            pattern_given = True
        elif t in ("-f", "--file"):
            pattern_given = True
            nxt = next(it, None)
            if nxt is not None:
                files.append(nxt)
        elif t.startswith("--file="):
            pattern_given = True
            files.append(Word(t.split("=", 1)[1], w.unknown, w.quoted))
        elif t in GREP_VALUE_OPTIONS:
            next(it, None)
        elif t.startswith("-") and len(t) > 1:
            letters = t[1:] if not t.startswith("--") else ""
            # A bundled -e/-f takes the rest of the word, or the next word, as its value.
            for i, letter in enumerate(letters):
                if letter in "ef":
                    pattern_given = True
                    value = letters[i + 1 :]
                    nxt = Word(value, w.unknown, w.quoted) if value else next(it, None)
                    if letter == "f" and nxt is not None:
                        files.append(nxt)
                    break
                if letter in "ABCmdD":
                    if not letters[i + 1 :]:
                        next(it, None)
                    break
        elif not pattern_given:
            pattern_given = True
        else:
            files.append(w)
    if recursive and not files:
        files.append(Word("."))  # grep -r with no FILE searches the working directory
    _reads(files, ctx)


def _cat_like(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    _reads([w for w in args if not w.text.startswith("-")], ctx)


def _sed(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    scripts: list[str] = []
    files: list[Word] = []
    in_place = False
    backup = False
    it = iter(args)
    for w in it:
        t = w.text
        if t in ("-e", "--expression"):
            nxt = next(it, None)
            if nxt is not None:
                scripts.append(nxt.text)
        elif t.startswith("--expression="):
            scripts.append(t.split("=", 1)[1])
        elif t in ("-f", "--file") or t.startswith("--file="):
            ctx.add(HIGH, "shell.script_file", "sed -f runs a script file the guard cannot see")
            next(it, None)
        elif t.startswith("--in-place"):
            in_place, backup = True, "=" in t
        elif t.startswith("-") and not t.startswith("--") and len(t) > 1:
            letters = t[1:]
            if "i" in letters:
                in_place = True
                backup = len(letters.split("i", 1)[1]) > 0
            if "e" in letters:
                nxt = next(it, None)
                if nxt is not None:
                    scripts.append(nxt.text)
        elif not scripts:
            scripts.append(t)
        else:
            files.append(w)
    for script in scripts:
        _sed_script(script)
    if in_place:
        _writes(files, ctx, prog="sed -i", backup=backup)
    else:
        _reads(files, ctx)


_SED_S = re.compile(r"s(.)(?:\\.|(?!\1).)*\1(?:\\.|(?!\1).)*\1([a-zA-Z0-9]*)")


def _sed_script(script: str) -> None:
    if UNKNOWN in script:
        raise _Refuse("obfuscation.variable_command", "sed script from a variable")
    for m in _SED_S.finditer(script):
        if "e" in m.group(2) or "w" in m.group(2):
            raise _Refuse("shell.inline_code", "sed s///e or s///w runs commands or writes files")
    rest = _SED_S.sub("", script)
    for part in re.split(r"[;\n{}]", rest):
        part = re.sub(r"^\s*([0-9$]+|/[^/]*/)?(,\s*([0-9$]+|/[^/]*/))?\s*!?\s*", "", part)
        if part[:1] in ("e", "w", "W", "r", "R"):
            raise _Refuse("shell.inline_code", f"sed command {part[:20]!r} runs or reads files")


def _awk(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    program: str | None = None
    files: list[Word] = []
    it = iter(args)
    for w in it:
        t = w.text
        if t in ("-F", "-v"):
            nxt = next(it, None)
            if t == "-v" and nxt is not None and "ENVIRON" in nxt.text:
                raise _Refuse("shell.inline_code", "awk with environment tricks")
        elif t == "-f" or t.startswith("--file"):
            ctx.add(HIGH, "shell.script_file", "awk -f runs a program file the guard cannot see")
            next(it, None)
            program = ""
        elif t.startswith("-") and program is None and len(t) > 1:
            continue
        elif program is None:
            program = t
        else:
            files.append(w)
    prog = program or ""
    if UNKNOWN in prog:
        raise _Refuse("obfuscation.variable_command", "awk program from a variable")
    if re.search(r"system\s*\(|\|\s*getline|getline\s*<|\|&|print[f]?\b[^;{}]*[|>]\s*\"", prog):
        raise _Refuse("shell.inline_code", "awk program runs commands or writes files")
    if "ENVIRON" in prog:
        raise _Refuse("secrets.read", "awk reads the environment")
    _reads(files, ctx)


def _curl(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    value_opts = {
        "curl": set("XdFTouHAebcKxwmrEyYzCUQ") | {"--data", "--data-binary", "--data-raw",
                 "--data-urlencode", "--form", "--upload-file", "--output", "--header",
                 "--request", "--user", "--proxy", "--config", "--resolve", "--connect-to",
                 "--max-time", "--connect-timeout", "--retry", "--json", "--url", "--cookie",
                 "--cookie-jar", "--write-out", "--user-agent", "--referer", "--cert", "--key",
                 "--cacert", "--interface", "--unix-socket", "--abstract-unix-socket",
                 "--retry-delay", "--retry-max-time", "--limit-rate", "--range"},
        "wget": set("OoaiePTtwUQ") | {"--output-document", "--post-data", "--post-file",
                 "--body-data", "--body-file", "--method", "--header", "--execute",
                 "--input-file", "--timeout", "--tries", "--user", "--password", "--proxy",
                 "--output-file", "--append-output", "--directory-prefix", "--user-agent"},
    }[name]  # fmt: skip
    urls: list[str] = []
    method_write = False
    it = iter(args)
    for w in it:
        t = w.text
        opt, eq, inline = t.partition("=") if t.startswith("--") else (t, "", "")
        if (t.startswith("--") and opt in value_opts) or (
            t.startswith("-") and not t.startswith("--") and len(t) == 2 and t[1] in value_opts
        ):
            value = inline if eq else (nxt.text if (nxt := next(it, None)) else "")
            _curl_option(name, opt, value, ctx)
            if opt in ("-X", "--request", "--method") and value.upper() not in ("GET", "HEAD"):
                method_write = True
            if opt in ("-d", "--data", "--data-binary", "--data-raw", "--data-urlencode",
                       "-F", "--form", "-T", "--upload-file", "--json", "--post-data",
                       "--post-file", "--body-data", "--body-file"):  # fmt: skip
                method_write = True
            if opt == "--url":
                urls.append(value)
            continue
        if t.startswith("-") and len(t) > 1:
            if name == "curl" and t.startswith("-") and not t.startswith("--"):
                last = t[-1]
                if last in value_opts and len(t) > 2:
                    value = nxt.text if (nxt := next(it, None)) else ""
                    _curl_option(name, "-" + last, value, ctx)
                    if last in "dFT":
                        method_write = True
            continue
        urls.append(t if not w.unknown else UNKNOWN)
    for url in urls:
        if not url_is_local(url, ctx.local_hosts):
            raise _Refuse(
                "exfil.network",
                f"{name} to {url.replace(UNKNOWN, '$?')[:80]}: only the host itself may be "
                "called (no downloads, no uploads)",
            )
    if cmd.pipe_out:
        pass  # what it pipes into is judged on its own (a shell there is refused)
    if method_write:
        ctx.add(MEDIUM, "http.local_write", f"{name} sends a write request to a local URL")


def _curl_option(name: str, opt: str, value: str, ctx: Ctx) -> None:
    bad = {
        "curl": {"-K", "--config", "-x", "--proxy", "--resolve", "--connect-to",
                 "--unix-socket", "--abstract-unix-socket", "--preproxy"},
        "wget": {"-e", "--execute", "-i", "--input-file", "--proxy"},
    }[name]  # fmt: skip
    if opt in bad:
        raise _Refuse("exfil.network", f"{name} {opt}: redirects or scripts the transfer")
    if opt in ("-F", "--form") and re.search(r"=[@<]", value):
        value = "@" + re.split(r"=[@<]", value, maxsplit=1)[1].split(";")[0]
    if value.startswith("@") or opt in ("-T", "--upload-file", "--post-file", "--body-file"):
        path = normalize(value.lstrip("@"), "/root")
        level, rule, detail = read_level(path)
        if level:
            raise _Refuse(rule, detail)
        if path and category(path) not in ("tmp", "devnull"):
            ctx.add(HIGH, "http.upload_file", f"{name} uploads {path}")
    if opt in ("-o", "--output", "-O", "--output-document") and name in ("curl", "wget"):
        if value not in ("-", "") and not (name == "curl" and opt == "-O"):
            path = normalize(value, "/root")
            level, rule = write_level(path)
            if category(path) != "devnull":
                ctx.add(max(level, MEDIUM), "download.write", f"{name} writes {path or value}")
    if opt in ("-H", "--header") and UNKNOWN in value:
        raise _Refuse("exfil.network", f"{name} header carries run-time data")


def _nc(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    flags = _flags(args)
    ops = _operands(args, "wpsqiIOTxX")
    if "-z" in flags and not flags & {"-e", "-c", "-l", "--exec", "--sh-exec", "--lua-exec"}:
        if ops and url_is_local(ops[0].text, ctx.local_hosts) and not cmd.pipe_in:
            return
    raise _Refuse("exfil.network", f"{name}: raw network connections (exfiltration, shells)")


def _rm(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    flags = _flags(args)
    if "--no-preserve-root" in flags:
        raise _Refuse("destructive.system_path", "rm --no-preserve-root")
    recursive = bool(flags & {"-r", "-R", "--recursive"}) or (name == "rmdir" and "-p" in flags)
    targets = _operands(args)
    if not targets:
        return
    _deletes(targets, ctx, recursive=recursive, prog=name)


def _find(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    i = 0
    while i < len(args) and args[i].text in ("-H", "-L", "-P", "-O0", "-O1", "-O2", "-O3"):
        i += 1
    roots: list[Word] = []
    while i < len(args) and not args[i].text.startswith(("-", "(", "!", "\\(")):
        roots.append(args[i])
        i += 1
    if not roots:
        roots = [Word(".")]
    expr = args[i:]
    pattern = "*"
    filtered = False
    j = 0
    while j < len(expr):
        t = expr[j].text
        if t in ("-name", "-iname", "-path", "-ipath", "-regex", "-iregex", "-wholename"):
            if j + 1 < len(expr):
                pattern = expr[j + 1].text if t in ("-name", "-iname") else pattern
            filtered = True
        elif t in ("-mtime", "-mmin", "-size", "-newer", "-atime", "-ctime", "-user", "-empty"):
            filtered = True
        j += 1
    base_paths = []
    for _w, p in _paths(roots, ctx):
        base_paths.append(None if p is None else (p.rstrip("/") + "/" + pattern))
    j = 0
    while j < len(expr):
        t = expr[j].text
        if t == "-delete":
            for root, p in zip(roots, base_paths, strict=True):
                if p is None:
                    raise _Refuse(
                        "destructive.unknown_target", "find -delete under a run-time path"
                    )
                level, rule = delete_level(p, recursive=not filtered)
                root_path = root.path(ctx.cwd)
                if not filtered and root_path is not None:
                    level, rule = max((level, rule), delete_level(root_path, recursive=True))
                ctx.add(
                    level, rule, f"find {root.text} -delete ({'filtered' if filtered else 'all'})"
                )
        elif t in ("-exec", "-execdir", "-ok", "-okdir"):
            inner: list[Word] = []
            j += 1
            while j < len(expr) and expr[j].text not in (";", "+", "\\;"):
                w = expr[j]
                if "{}" in w.text:
                    for p in base_paths:
                        inner.append(Word(w.text.replace("{}", p or UNKNOWN), unknown=p is None))
                else:
                    inner.append(w)
                j += 1
            if not inner:
                raise _Refuse("shell.syntax", "find -exec without a command")
            ctx.depth += 1
            try:
                _program(inner, Cmd(words=inner), ctx)
            finally:
                ctx.depth -= 1
        elif t in ("-fprint", "-fprint0", "-fprintf", "-fls"):
            if j + 1 < len(expr):
                _writes([expr[j + 1]], ctx, prog="find -fprint")
        j += 1


def _chmod(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    flags = _flags(args)
    recursive = bool(flags & {"-R", "--recursive"})
    ops = [w for w in args if not (w.text.startswith("-") and not re.match(r"^-[rwxXst]", w.text))]
    ops = [w for w in ops if w.text != "--"]
    if any(w.text.startswith("--reference") for w in args):
        ops = [Word("0777"), *ops]
    if len(ops) < 2:
        return
    spec, targets = ops[0], ops[1:]
    for _w, path in _paths(targets, ctx):
        if name == "chmod":
            level, rule, detail = mode_level(path, spec.text, recursive=recursive)
        else:
            level, rule, detail = mode_level(path, "", recursive=recursive, owner_change=True)
        ctx.add(level, rule, f"{name} {spec.text} {detail}")
        ctx.effects.touch(path)


def _setfacl(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    recursive = bool(_flags(args) & {"-R", "--recursive"})
    for _w, path in _paths(_operands(args, "mMxX")[0:] if args else [], ctx):
        if path is not None and (is_secret(path) or category(path) == "control"):
            raise _Refuse("secrets.expose", f"setfacl on {path}")
        level, rule, detail = mode_level(path, "", recursive=recursive)
        ctx.add(max(level, MEDIUM), rule, f"setfacl {detail}")


def _zip(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    ops = [w for w in args if not w.text.startswith("-")]
    if ops:
        _writes(ops[:1], ctx, prog=name)
        _reads(ops[1:], ctx)


def _truncate(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    for _w, path in _paths(_operands(args, "sro"), ctx):
        level, rule = write_level(path)
        if rule == "config.edit":
            level, rule = HIGH, "config.truncate"
        if rule == "data.write":
            level = HIGH
        ctx.add(level, rule, f"truncate {path or '$?'}")
        ctx.effects.touch(path)


def _dd(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    for w in args:
        key, _, value = w.text.partition("=")
        if key == "of":
            _writes([Word(value, unknown=w.unknown)], ctx, prog="dd")
        elif key == "if":
            _reads([Word(value, unknown=w.unknown)], ctx)


def _tee(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    _writes(_operands(args), ctx, prog="tee")


def _touch_mkdir(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    ops = _operands(args, "mdrtTgoZ" if name != "touch" else "drt")
    for _w, path in _paths(ops, ctx):
        level, rule = write_level(path)
        if rule in ("config.edit", "data.write"):
            level = MEDIUM  # creating a directory or an empty file
        ctx.add(level, rule, f"{name} {path or '$?'}")
        ctx.effects.touch(path)


def _cp_mv(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    if name == "rsync":
        for w in args:
            if not w.text.startswith("-") and (
                "::" in w.text or "://" in w.text or re.match(r"^[^/]*:", w.text)
            ):
                raise _Refuse("exfil.network", f"rsync to or from a remote: {w.text}")
            if w.text.startswith(("-e", "--rsh", "--rsync-path")):
                raise _Refuse("exec.escape", "rsync with a remote shell or remote program")
    ops = _operands(args, "tSm" if name != "ln" else "tS")
    target_dir = None
    for k, w in enumerate(args):
        if w.text in ("-t",) and k + 1 < len(args):
            target_dir = args[k + 1]
        elif w.text.startswith("--target-directory="):
            target_dir = Word(w.text.split("=", 1)[1])
    if target_dir is None and len(ops) < 2:
        return
    dest = target_dir if target_dir is not None else ops[-1]
    if name == "install":
        for k, w in enumerate(args[:-1]):
            if w.text in ("-m", "--mode") or w.text.startswith("--mode="):
                mode = w.text.split("=", 1)[1] if "=" in w.text else args[k + 1].text
                level, rule, detail = mode_level(dest.path(ctx.cwd), mode, recursive=False)
                if level >= HIGH:
                    ctx.add(level, rule, f"install {detail}")
    sources = ops if target_dir is not None else ops[:-1]
    backup = any(w.text.startswith(("-b", "--backup")) for w in args)
    if name == "ln":
        for _w, p in _paths(sources, ctx):
            if p is not None and (category(p) in ("control", "device") or read_level(p)[0]):
                raise _Refuse("secrets.read", f"ln exposes {p} through a link")
    elif name == "mv":
        _deletes(sources, ctx, recursive=True, prog="mv")
        _reads(sources, ctx)
    else:
        _reads(sources, ctx)
    dest_path = dest.path(ctx.cwd)
    level, rule = write_level(dest_path)
    if name == "ln" and rule == "data.write":
        level = MEDIUM  # a release switch by symlink
    if rule == "config.edit" and not backup:
        level, rule = HIGH, "config.no_backup"
    ctx.add(level, rule, f"{name} into {dest_path or '$?'}")
    ctx.effects.touch(dest_path)


def _tar(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    text = " ".join(w.text for w in args)
    if re.search(r"--to-command|--checkpoint-action|--use-compress-program|(^|\s)-I\s|"
                 r"--info-script|--new-volume-script|--rsh-command|-F\s", text):  # fmt: skip
        raise _Refuse("shell.inline_code", f"{name} option that runs commands")
    if re.search(r"(^|\s)-?[a-zA-Z]*x", text.split(" ")[0] if args else "") or "--extract" in text:
        ctx.add(HIGH, "archive.extract", f"{name} extracts files over the file system")
        return
    for w in args:
        if ":" in w.text and not w.text.startswith("/"):
            raise _Refuse("exfil.network", f"{name} to a remote archive {w.text}")
    _reads([w for w in args if w.text.startswith("/")], ctx)
    ctx.add(MEDIUM, "archive.create", f"{name} writes an archive")


def _compress(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    flags = _flags(args)
    files = _operands(args, "S")
    if flags & {"-c", "--stdout", "-l", "-t"}:
        _reads(files, ctx)
        return
    _deletes(files, ctx, recursive="-r" in flags, prog=name)
    _reads(files, ctx)


def _kill(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    if name == "killall5":
        raise _Refuse("destructive.kill_all", "killall5 kills every process")
    flags = _flags(args)
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
            _reads(_operands(args, "n"), ctx)
            return
        for w in _operands(args, "n"):
            if (
                w.unknown
                or w.text in ("/", "22/tcp", "22")
                or category(normalize(w.text)) in ("root", "sysbin")
            ):
                raise _Refuse("destructive.kill_critical", f"fuser -k {w.text}")
        ctx.add(MEDIUM, "kill.targeted", "fuser -k kills the processes using a port or file")
        return
    # pkill / killall / pgrep-style pattern matching
    full = bool(flags & {"-f", "--full"})
    regex = name == "pkill" or "-r" in flags or "--regexp" in flags
    exact = bool(flags & {"-x", "--exact", "-e"}) if name == "pkill" else name == "killall"
    ops = _operands(args, "uUgGPstnsoOwcF" if name == "pkill" else "uoyOsn")
    for w in args:
        if w.text in ("-u", "-U", "--euid", "--uid", "--user") and w is not args[-1]:
            user = args[args.index(w) + 1].text
            if user in ("root", "0") or not ops:
                raise _Refuse("destructive.kill_all", f"{name} -u {user} kills a user's processes")
        if w.text in ("-P", "--parent") and w is not args[-1]:
            if args[args.index(w) + 1].text in ("0", "1"):
                raise _Refuse("destructive.kill_critical", f"{name} -P 1: every child of init")
    if not ops:
        raise _Refuse("destructive.kill_all", f"{name} without a pattern")
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
        raise _Refuse("destructive.kill_all", f"{name} pattern {pat!r} is too broad")
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
            raise _Refuse(
                "destructive.kill_critical",
                f"{name} {pat!r} would also kill {subject.split()[0]!r} (keeps the host reachable)",
            )


def _kill_target(w: Word, ctx: Ctx) -> None:
    t = w.text
    if not w.unknown:
        if t in ("1", "-1", "0") or re.fullmatch(r"-\d+", t):
            raise _Refuse("destructive.kill_critical", f"kill {t}: PID 1, all processes or a group")
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
                raise _Refuse("destructive.kill_critical", f"kill $(cat {name})")
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
            raise _Refuse(
                "destructive.critical_service",
                f"{prog} {action} {unit}: keeps the host reachable and supervised",
            )
        if action in _START_ACTIONS and critical:
            ctx.add(HIGH, "service.critical_restart", f"{prog} {action} {unit}")


def _systemctl(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    for w in args:
        if w.text in ("-H", "--host", "-M", "--machine") or w.text.startswith(
            ("--host=", "--machine=")
        ):
            raise _Refuse("exec.escape", "systemctl on another machine")
    ops = _operands(args, "tpnos")
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
        if "--now" in _flags(args) or action in ("stop", "kill", "disable"):
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
        raise _Refuse("destructive.power", f"systemctl {action}")
    ctx.add(HIGH, "service.other", f"systemctl {action}")


def _service(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    ops = _operands(args)
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


def _supervisorctl(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    it = list(args)
    k = 0
    while k < len(it) and it[k].text.startswith("-"):
        t = it[k].text
        if t in ("-s", "--serverurl") and k + 1 < len(it):
            if not url_is_local(it[k + 1].text.replace("unix://", "http://localhost"),
                                ctx.local_hosts):  # fmt: skip
                raise _Refuse("exfil.network", "supervisorctl on a remote server")
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
        raise _Refuse("shell.interactive", "supervisorctl without an action is interactive")
    action, names = ops[0].text, ops[1:]
    if action in ("status", "avail", "pid", "tail", "version", "help", "maintail"):
        if any(w.text == "-f" for w in names):
            raise _Refuse("shell.interactive", "supervisorctl tail -f never ends")
        return
    if action in ("restart", "start", "update", "reread", "add"):
        if action in ("restart", "start"):
            _service_name_check(name, action, names, ctx)
        if any(w.text == "all" for w in names):
            ctx.add(MEDIUM, "service.restart_all", f"supervisorctl {action} all")
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
            raise _Refuse("tamper.log_wipe", "supervisorctl clear all")
        ctx.add(MEDIUM, "logs.truncate", "supervisorctl clear empties a program's logs")
        return
    if action in ("shutdown",):
        raise _Refuse("destructive.critical_service", "supervisorctl shutdown stops supervisord")
    if action == "reload":
        ctx.add(HIGH, "service.critical_restart", "supervisorctl reload restarts every program")
        return
    if action in ("fg", "open"):
        raise _Refuse("shell.interactive", f"supervisorctl {action}")
    ctx.add(HIGH, "service.other", f"supervisorctl {action}")


def _pkg(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    text_args = [w.text for w in args]
    if any(w.unknown for w in args):
        raise _Refuse("packages.unknown", f"{name} with run-time package names")
    if name in ("apt", "apt-get", "aptitude") and any(
        "Invoke" in t or "Pre-" in t or "Post-" in t for t in text_args
    ):
        raise _Refuse("shell.inline_code", f"{name} -o hooks run commands")
    if name in ("pip", "pip3") or name.startswith("pip3."):
        return _pip(text_args, ctx)
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
                    raise _Refuse("download.run", f"dpkg installs an untrusted file {t}")
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
            raise _Refuse("download.run", f"{name} installs from a file or URL: {p}")
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
                raise _Refuse(
                    "destructive.critical_package",
                    f"{name} removes {p}: the host needs it to stay reachable and managed",
                )
    ctx.add(HIGH, "packages.remove", f"{name} removes {' '.join(pkgs)[:60]}")


def _pip(args: list[str], ctx: Ctx) -> None:
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
            raise _Refuse("download.run", f"pip {sub} from a URL, file or other index: {t}")
    if sub == "uninstall":
        _pkg_remove("pip", ops[1:], ctx)
        return
    ctx.add(HIGH, "packages.install", f"pip {sub} {' '.join(ops[1:])[:60]}")


def _firewall(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    text = [w.text for w in args]
    if any(w.unknown for w in args):
        raise _Refuse("firewall.unknown", f"{name} with run-time arguments")
    if name.startswith(("iptables", "ip6tables", "ebtables", "arptables")):
        if name.endswith("-restore"):
            ctx.add(HIGH, "firewall.replace", f"{name} replaces the whole rule set")
            return
        if name.endswith("-save"):
            return
        flags = set(text)
        if flags & {"-F", "--flush", "-X", "--delete-chain"} or any(
            re.fullmatch(r"-[a-zA-Z]*F[a-zA-Z]*", t) and t not in ("-F",) for t in text
        ):
            raise _Refuse("destructive.firewall_flush", f"{name} flushes rules or chains")
        if flags & {"-P", "--policy"}:
            k = text.index("-P") if "-P" in text else text.index("--policy")
            policy = text[k + 2] if k + 2 < len(text) else ""
            if policy.upper() in ("DROP", "REJECT"):
                raise _Refuse("destructive.firewall_lockout", f"{name} default policy {policy}")
            ctx.add(HIGH, "firewall.policy", f"{name} default policy {policy}")
            return
        if flags & {"-L", "-S", "--list", "--list-rules", "-C", "--check", "-nL", "-vnL"} or any(
            re.fullmatch(r"-[nvx]*L[nvx]*", t) for t in text
        ):
            return
        if flags & {"-D", "--delete"}:
            ctx.add(MEDIUM, "firewall.delete_rule", f"{name} deletes one rule")
            return
        if flags & {"-A", "-I", "--append", "--insert", "-R", "--replace"}:
            target = (
                text[text.index("-j") + 1]
                if "-j" in text and text.index("-j") + 1 < len(text)
                else ""
            )
            if target.upper() in ("DROP", "REJECT") and ("22" in text or "ssh" in text):
                raise _Refuse("destructive.firewall_lockout", f"{name} blocks ssh")
            if target.upper() in ("DROP", "REJECT") or "22" in text or "ssh" in text:
                ctx.add(HIGH, "firewall.block", f"{name} adds a blocking rule")
            else:
                ctx.add(MEDIUM, "firewall.allow", f"{name} adds a rule")
            return
        ctx.add(HIGH, "firewall.other", f"{name} {' '.join(text)[:60]}")
        return
    if name == "nft":
        flags = _flags(args)
        if flags & {"-f", "--file"}:
            ctx.add(HIGH, "firewall.replace", "nft -f loads a rule file")
            return
        if flags & {"-i", "--interactive"}:
            raise _Refuse("shell.interactive", "nft -i")
        words = " ".join(t for t in text if not t.startswith("-"))
        for stmt in re.split(r"[;\n]", words):
            toks = stmt.split()
            if not toks:
                continue
            verb = toks[0]
            if verb in ("list", "describe", "monitor", "-v"):
                continue
            if verb == "flush":
                raise _Refuse("destructive.firewall_flush", f"nft {stmt.strip()}")
            if verb in ("delete", "destroy"):
                if len(toks) >= 2 and toks[1] == "rule" and "handle" not in toks:
                    ctx.add(HIGH, "firewall.delete_rule", f"nft {stmt.strip()}")
                else:
                    ctx.add(MEDIUM, "firewall.delete_rule", f"nft {stmt.strip()}")
                continue
            if verb in ("add", "insert", "create", "replace"):
                if any(t in ("drop", "reject") for t in toks) and ("22" in toks or "ssh" in toks):
                    raise _Refuse("destructive.firewall_lockout", f"nft {stmt.strip()}")
                if any(t in ("drop", "reject") for t in toks) or "policy" in toks:
                    ctx.add(HIGH, "firewall.block", f"nft {stmt.strip()}")
                else:
                    ctx.add(MEDIUM, "firewall.allow", f"nft {stmt.strip()}")
                continue
            ctx.add(HIGH, "firewall.other", f"nft {stmt.strip()}")
        return
    if name == "ufw":
        ops = [t for t in text if not t.startswith("-")]
        if not ops or ops[0] in ("status", "show", "version", "app"):
            return
        if ops[0] in ("disable", "reset"):
            raise _Refuse("destructive.firewall_flush", f"ufw {ops[0]}")
        if ops[0] == "delete":
            ctx.add(MEDIUM, "firewall.delete_rule", "ufw delete")
            return
        if ops[0] in ("allow",):
            ctx.add(MEDIUM, "firewall.allow", "ufw allow")
            return
        ctx.add(HIGH, "firewall.other", f"ufw {ops[0]}")
        return
    if name == "firewall-cmd":
        joined = " ".join(text)
        if "--panic-on" in joined or ("--set-default-zone" in joined and "drop" in joined):
            raise _Refuse("destructive.firewall_lockout", "firewall-cmd panic/drop zone")
        if any(t.startswith(("--list", "--get", "--query", "--state")) for t in text):
            return
        if any(t.startswith(("--remove", "--add")) for t in text):
            ctx.add(MEDIUM, "firewall.change", "firewall-cmd changes a rule")
            return
        ctx.add(HIGH, "firewall.other", "firewall-cmd")


def _ip(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    ops = [w.text for w in args if not w.text.startswith("-")]
    if name in ("ifdown", "ifconfig") and (name == "ifdown" or "down" in ops):
        raise _Refuse("destructive.network", f"{name}: takes an interface down")
    if name in ("ifup", "ifconfig"):
        if name == "ifconfig" and len(ops) <= 1:
            return
        ctx.add(MEDIUM, "network.change", f"{name} {' '.join(ops)}")
        return
    if name == "tc":
        if not ops or ops[-1] in ("show", "list", "ls") or (len(ops) > 1 and ops[1] in (
            "show", "list", "ls")):  # fmt: skip
            return
        if len(ops) > 1 and ops[1] in ("del", "delete"):
            ctx.add(MEDIUM, "network.qdisc_delete", f"tc {' '.join(ops)}")
            return
        ctx.add(HIGH, "network.change", f"tc {' '.join(ops)}")
        return
    if name == "nmcli":
        if any(t in ("down", "off", "delete", "disconnect") for t in ops):
            raise _Refuse("destructive.network", "nmcli takes networking down")
        if (
            ops
            and ops[0] in ("general", "g", "device", "d", "connection", "c")
            and (len(ops) < 2 or ops[1] in ("status", "show", "s"))
        ):
            return
        ctx.add(HIGH, "network.change", "nmcli")
        return
    # ip
    if not ops:
        return
    obj = ops[0]
    verb = ops[1] if len(ops) > 1 else "show"
    if obj in ("netns",) or (obj == "vrf" and verb == "exec"):
        raise _Refuse("exec.escape", "ip netns: enters other hosts' network namespaces")
    if verb in ("show", "list", "ls", "get", "lst", "sh", "s"):
        return
    if obj.startswith("l") and "down" in ops:
        raise _Refuse("destructive.network", "ip link set ... down cuts the host off")
    if verb in ("flush", "f") or (obj.startswith("r") and verb in ("del", "delete") and
                                  "default" in ops):  # fmt: skip
        raise _Refuse("destructive.network", f"ip {obj} {verb} cuts the host off")
    if obj.startswith("l") and "up" in ops:
        ctx.add(MEDIUM, "network.link_up", "ip link set ... up")
        return
    ctx.add(HIGH, "network.change", f"ip {' '.join(ops)[:60]}")


def _sysctl(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    for w in args:
        if w.unknown:
            raise _Refuse("kernel.unknown", "sysctl with run-time values")
        if re.search(r"kernel\.(core_pattern|modprobe|hotplug|sysrq|panic)|binfmt|"
                     r"kernel/(core_pattern|modprobe)", w.text):  # fmt: skip
            if "=" in w.text or "-w" in [a.text for a in args]:
                raise _Refuse("destructive.kernel", f"sysctl {w.text}: runs code or kills host")
    if any("=" in w.text for w in args) or _flags(args) & {"-w", "-p", "--load", "--system"}:
        ctx.add(HIGH, "kernel.tunable", f"sysctl {' '.join(w.text for w in args)[:60]}")


def _mount(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    ops = _operands(args, "otLU")
    if not ops and name == "mount":
        return
    if name in ("umount", "swapoff") and (
        "-a" in _flags(args) or any(w.text in ("/", "/usr", "/var", "/boot") for w in ops)
    ):
        raise _Refuse("destructive.disk", f"{name} of the root or all file systems")
    if "remount" in " ".join(w.text for w in args) and any(w.text == "/" for w in ops):
        raise _Refuse("destructive.disk", "remounts the root file system")
    if (
        name == "mount"
        and ops
        and category(ops[-1].path(ctx.cwd)) in ("root", "sysbin", "control", "unknown", "etc")
    ):
        raise _Refuse("persistence.system_binary", f"mounts over {ops[-1].text}")
    ctx.add(HIGH, "system.mount", f"{name} {' '.join(w.text for w in ops)[:60]}")


def _openssl(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    if not args:
        raise _Refuse("shell.interactive", "openssl without a command")
    sub = args[0].text
    rest = args[1:]
    texts = [w.text for w in rest]
    if sub in ("enc", "base64", "smime", "cms", "pkeyutl", "rsautl") or (
        "-d" in texts and sub in ("enc", "base64")
    ):
        raise _Refuse("obfuscation.decode", f"openssl {sub}: encodes or decodes data")
    if sub in ("s_client", "s_time"):
        for k, t in enumerate(texts):
            if t in ("-connect",) and k + 1 < len(texts):
                if not url_is_local(texts[k + 1], ctx.local_hosts):
                    raise _Refuse("exfil.network", f"openssl {sub} to {texts[k + 1]}")
        return
    outputs = {"-out", "-keyout"}
    has_out = False
    for k, t in enumerate(texts):
        if k + 1 >= len(texts):
            break
        if t in outputs:
            has_out = True
            _writes([rest[k + 1]], ctx, prog=f"openssl {sub}", backup=True)
    if sub in ("rsa", "pkey", "ec", "pkcs12", "pkcs8", "dsa") and not has_out:
        if "-noout" not in texts or "-text" in texts:
            raise _Refuse("secrets.read", f"openssl {sub} prints private key material")
    if sub not in ("req", "x509", "genrsa", "genpkey", "ecparam", "verify", "version", "rand",
                   "dgst", "ciphers", "list", "dhparam", "crl", "rsa", "pkey", "ec",
                   "s_server", "speed", "pkcs12", "pkcs8"):  # fmt: skip
        ctx.add(HIGH, "shell.unknown_program", f"openssl {sub}")
    if sub == "s_server":
        raise _Refuse("exfil.network", "openssl s_server listens for connections")


def _redis_cli(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    k = 0
    words = [w.text for w in args]
    while k < len(words) and words[k].startswith("-"):
        t = words[k]
        if t in ("-h",) and k + 1 < len(words):
            if not url_is_local(words[k + 1], ctx.local_hosts):
                ctx.add(HIGH, "network.remote_db", f"redis-cli -h {words[k + 1]}")
            k += 2
            continue
        if t in ("-u",) and k + 1 < len(words):
            k += 2
            continue
        if t in ("-p", "-a", "-n", "--user", "--pass", "-r", "-i", "--tls", "--cacert"):
            k += 2 if t not in ("--tls",) else 1
            continue
        if t in ("--eval", "-x", "--rdb", "--pipe", "--functions-rdb"):
            raise _Refuse("shell.inline_code", f"redis-cli {t}")
        k += 1
    ops = [w.upper() for w in words[k:]]
    if not ops:
        if cmd.pipe_in or cmd.heredoc_in or ctx.stdin_data:
            ctx.add(HIGH, "db.stdin", "redis-cli reads commands from stdin")
            return
        raise _Refuse("shell.interactive", "redis-cli without a command is interactive")
    verb = ops[0]
    arg1 = ops[1] if len(ops) > 1 else ""
    if verb in ("FLUSHALL", "FLUSHDB", "SWAPDB"):
        raise _Refuse("destructive.data", f"redis-cli {verb} deletes every key")
    if verb in ("DEBUG", "MODULE", "SLAVEOF", "REPLICAOF", "MIGRATE", "EVAL", "EVALSHA",
                "SCRIPT", "FUNCTION", "FCALL", "ACL", "SYNC", "PSYNC", "MONITOR"):  # fmt: skip
        raise _Refuse("exec.escape", f"redis-cli {verb}")
    if verb == "CONFIG":
        if arg1 == "SET":
            param = ops[2] if len(ops) > 2 else ""
            if param in ("DIR", "DBFILENAME", "LOGFILE", "APPENDFILENAME", "APPENDDIRNAME"):
                raise _Refuse("persistence.control_file", f"redis CONFIG SET {param}: file write")
            ctx.add(MEDIUM, "db.config", f"redis-cli CONFIG SET {param}")
            return
        if arg1 in ("GET", "HELP"):
            return
        ctx.add(MEDIUM, "db.config", f"redis-cli CONFIG {arg1}")
        return
    if verb in ("PING", "INFO", "DBSIZE", "TTL", "PTTL", "TYPE", "EXISTS", "GET", "SCAN",
                "SLOWLOG", "LATENCY", "MEMORY", "CLUSTER", "ROLE", "TIME", "LASTSAVE",
                "LLEN", "HLEN", "SCARD", "ZCARD", "STRLEN", "OBJECT", "COMMAND",
                "HELLO"):  # fmt: skip
        if (verb == "SLOWLOG" and arg1 == "RESET") or (verb == "LATENCY" and arg1 == "RESET"):
            ctx.add(MEDIUM, "db.reset_stats", f"redis-cli {verb} RESET")
        if verb == "MEMORY" and arg1 == "PURGE":
            ctx.add(MEDIUM, "db.memory", "redis-cli MEMORY PURGE")
        return
    if verb == "CLIENT":
        if arg1 in ("KILL", "PAUSE", "NO-EVICT"):
            ctx.add(MEDIUM, "kill.targeted", f"redis-cli CLIENT {arg1}")
        return
    if verb in ("BGSAVE", "BGREWRITEAOF", "SAVE"):
        ctx.add(MEDIUM, "db.persist", f"redis-cli {verb}")
        return
    if verb == "SHUTDOWN":
        if "NOSAVE" in ops:
            ctx.add(HIGH, "destructive.data", "redis SHUTDOWN NOSAVE loses data")
        else:
            ctx.add(MEDIUM, "service.stop", "redis-cli SHUTDOWN")
        return
    if verb in ("KEYS",):
        ctx.add(MEDIUM, "db.slow", "KEYS blocks redis")
        return
    ctx.add(HIGH, "db.write", f"redis-cli {verb} changes data")


_SQL_REJECT = re.compile(
    r"\bCOPY\b[^;]*\bPROGRAM\b|\bpg_read_(binary_)?file\b|\blo_(import|export)\b|"
    r"\bpg_ls_dir\b|\bdblink\w*\b|\bpg_execute_server_program\b|\bCREATE\s+(OR\s+REPLACE\s+)?"
    r"(FUNCTION|EXTENSION|LANGUAGE|PROCEDURE|TRIGGER)\b|\bDO\s+\$|\bpg_file_write\b|"
    r"\bALTER\s+(USER|ROLE)\b|\bCREATE\s+(USER|ROLE)\b|\bGRANT\b|\bpg_authid\b|\bpg_shadow\b|"
    r"\bpg_user_mapping",
    re.I,
)
_SQL_DESTROY = re.compile(r"\b(DROP|TRUNCATE)\b|\bDELETE\s+FROM\b", re.I)
_SQL_KILL = re.compile(r"\bpg_(terminate|cancel)_backend\b", re.I)
_SQL_READ = re.compile(r"^\s*(SELECT|SHOW|EXPLAIN|WITH|TABLE|VALUES)\b", re.I)
_SQL_MAINT = re.compile(r"^\s*(VACUUM|ANALYZE|REINDEX|CHECKPOINT|RESET|DISCARD|"
                        r"SELECT\s+pg_reload_conf)\b", re.I)  # fmt: skip


def _sql(sql: str, ctx: Ctx, prog: str) -> None:
    if UNKNOWN in sql:
        ctx.add(HIGH, "db.unknown", f"{prog} SQL built at run time")
    if "\\!" in sql or re.search(r"\\(o|g|w|copy|i|ir|setenv|cd)\b", sql):
        raise _Refuse("shell.inline_code", f"{prog} meta-command runs programs or files")
    if _SQL_REJECT.search(sql):
        raise _Refuse("exec.escape", f"{prog}: SQL that runs programs, reads files or grants")
    if re.search(r"\bCOPY\b[^;]*\bTO\b", sql, re.I):
        raise _Refuse("exfil.file", f"{prog}: COPY TO writes server files")
    for stmt in [s for s in sql.split(";") if s.strip()]:
        if _SQL_DESTROY.search(stmt):
            if re.search(r"\bDROP\s+(DATABASE|SCHEMA|TABLE)\b|\bTRUNCATE\b", stmt, re.I):
                raise _Refuse("destructive.data", f"{prog}: {stmt.strip()[:60]}")
            ctx.add(HIGH, "destructive.data", f"{prog}: {stmt.strip()[:60]}")
        elif _SQL_KILL.search(stmt):
            ctx.add(MEDIUM, "kill.targeted", f"{prog}: {stmt.strip()[:60]}")
        elif _SQL_READ.search(stmt):
            continue
        elif _SQL_MAINT.search(stmt):
            ctx.add(MEDIUM, "db.maintenance", f"{prog}: {stmt.strip()[:60]}")
        elif re.match(r"^\s*ALTER\s+SYSTEM\b", stmt, re.I):
            ctx.add(MEDIUM, "db.config", f"{prog}: {stmt.strip()[:60]}")
        else:
            ctx.add(HIGH, "db.write", f"{prog}: {stmt.strip()[:60]}")


def _psql(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    sqls: list[str] = []
    it = iter(args)
    for w in it:
        t = w.text
        if t in ("-c", "--command"):
            nxt = next(it, None)
            if nxt is not None:
                sqls.append(nxt.text)
        elif t.startswith("--command="):
            sqls.append(t.split("=", 1)[1])
        elif t.startswith("-c") and len(t) > 2:
            sqls.append(t[2:])
        elif t in ("-f", "--file"):
            ctx.add(HIGH, "shell.script_file", "psql -f runs a SQL file the guard cannot see")
            next(it, None)
        elif t in ("-o", "--output", "-L", "--log-file"):
            nxt = next(it, None)
            if nxt is not None:
                _writes([nxt], ctx, prog="psql -o")
        elif t in ("-h", "--host"):
            nxt = next(it, None)
            if (
                nxt is not None
                and not url_is_local(nxt.text, ctx.local_hosts)
                and not (nxt.text.startswith("/"))
            ):
                ctx.add(HIGH, "network.remote_db", f"psql -h {nxt.text}")
        elif t in ("-U", "-d", "-p", "-v", "--set", "-P", "-F", "-R", "--username", "--dbname",
                   "--port"):  # fmt: skip
            nxt = next(it, None)
            if nxt is not None and t in ("-d", "--dbname") and "host=" in nxt.text:
                ctx.add(HIGH, "network.remote_db", "psql connection string")
    if not sqls:
        if cmd.pipe_in or cmd.heredoc_in or ctx.stdin_data:
            ctx.add(HIGH, "db.stdin", "psql reads SQL from stdin")
            return
        if name == "psql":
            raise _Refuse("shell.interactive", "psql without -c is interactive")
    for sql in sqls:
        _sql(sql, ctx, name)


def _pg_tools(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    ops = [w.text for w in args if not w.text.startswith("-")]
    if name in ("dropdb", "dropuser", "pg_resetwal", "pg_resetxlog"):
        raise _Refuse("destructive.data", f"{name} destroys data or access")
    if name in ("pg_ctl", "pg_ctlcluster"):
        action = next((o for o in ops if o in ("start", "stop", "restart", "reload", "status",
                                                "promote", "kill", "init",
                                                "initdb")), "")  # fmt: skip
        if action in ("status", "reload", "restart", "start"):
            ctx.effects.services.add("postgresql")
            return
        if action == "stop":
            ctx.add(MEDIUM, "service.stop", f"{name} stop")
            return
        ctx.add(HIGH, "db.other", f"{name} {action}")
        return
    if name == "pg_dumpall":
        raise _Refuse("secrets.read", "pg_dumpall dumps role password hashes")
    if name == "pg_dump":
        for k, w in enumerate(args):
            if w.text in ("-f", "--file") and k + 1 < len(args):
                _writes([args[k + 1]], ctx, prog="pg_dump")
        ctx.add(MEDIUM, "db.dump", "pg_dump")
        return
    if name in ("vacuumdb", "reindexdb", "clusterdb"):
        ctx.add(MEDIUM, "db.maintenance", name)
        return
    ctx.add(HIGH, "db.other", name)


def _nginx(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
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
            ctx.add(MEDIUM, "service.stop", f"nginx -s {sig}")
        return
    plain = [t for k, t in enumerate(texts) if t != "-c" and (k == 0 or texts[k - 1] != "-c")]
    if set(plain) <= {"-t", "-T", "-q", "-v", "-V", "-tq", "-qt"}:
        return
    ctx.add(HIGH, "service.other", f"nginx {' '.join(texts)[:40]}")


def _logrotate(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    for _w, path in _paths(_operands(args, "sml"), ctx):
        if path is None or not (path == "/etc/logrotate.conf" or path.startswith(
            "/etc/logrotate.d/")):  # fmt: skip
            ctx.add(HIGH, "logs.rotate_other", f"logrotate with {path or '$?'}")
    ctx.add(MEDIUM, "logs.rotate", "logrotate forces a rotation")


def _journalctl(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    for w in args:
        if w.text.startswith(("--vacuum", "--rotate", "--flush", "--relinquish", "--setup-keys")):
            raise _Refuse("tamper.log_wipe", f"journalctl {w.text}: deletes or moves logs")
        if w.text in ("-f", "--follow"):
            raise _Refuse("shell.interactive", "journalctl -f never ends")


def _dmesg(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    if _flags(args) & {"-c", "-C", "--clear", "--read-clear", "-n", "--console-level", "-D", "-E"}:
        raise _Refuse("tamper.log_wipe", "dmesg clears the kernel ring buffer")


def _getent(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    ops = _operands(args, "s")
    if ops and ops[0].text in ("shadow", "gshadow"):
        raise _Refuse("secrets.read", f"getent {ops[0].text}")


def _prlimit(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    if not any(w.text.startswith(("--pid", "-p")) for w in args):
        ctx.add(HIGH, "shell.unknown_program", "prlimit running a command")
        return
    ctx.add(MEDIUM, "process.limits", "prlimit changes a running process's limits")


def _renice(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    ctx.add(MEDIUM, "process.priority", f"{name} changes a process priority")


def _simple_medium(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    ctx.add(MEDIUM, "misc.medium", name)


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


def nfkc_suspicious(text: str) -> bool:
    """Text that changes under NFKC normalisation hides look-alike (fullwidth) characters."""
    return unicodedata.normalize("NFKC", text) != text
