"""What every program handler of the shell policy shares: the state of one judgement (`Ctx`),
the handler signature, the helpers that split arguments into options and operands and record
what reading, writing or deleting those operands costs (`guard.paths` decides the level), and
the URL policy (only the host itself and the incident's hosts may be called).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from remed_daemon.guard.paths import (
    HIGH,
    UNKNOWN,
    Effects,
    delete_level,
    normalize,
    read_level,
    write_level,
)
from remed_daemon.guard.shell.parse import Cmd, Word, expand_braces


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


Handler = Callable[[str, list[Word], Cmd, Ctx], None]


# --- generic argument helpers ---------------------------------------------------------------


def operands_of(args: list[Word], with_value: str = "") -> list[Word]:
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


def flags_of(args: list[Word]) -> set[str]:
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


def paths_of(words: list[Word], ctx: Ctx) -> list[tuple[Word, str | None]]:
    out: list[tuple[Word, str | None]] = []
    for w in words:
        if w.unknown:
            out.append((w, None))
            continue
        for text in expand_braces(w.text) if not w.quoted else [w.text]:
            out.append((w, normalize(text, ctx.cwd)))
    return out


def note_reads(words: list[Word], ctx: Ctx) -> None:
    for w, path in paths_of(words, ctx):
        if path is None:
            # A run-time part (`/proc/$(pgrep x)/environ`, `$HOME/.ssh/id_rsa`) may be anything.
            path = normalize(w.text.replace(UNKNOWN, "1"), ctx.cwd or "/root")
        level, rule, detail = read_level(path)
        if level:
            ctx.add(level, rule, detail)


def note_deletes(words: list[Word], ctx: Ctx, *, recursive: bool, prog: str) -> None:
    for w, path in paths_of(words, ctx):
        level, rule = delete_level(path, recursive=recursive)
        shown = path or w.text.replace(UNKNOWN, "$?")
        ctx.add(level, rule, f"{prog} {'-r ' if recursive else ''}{shown}")
        ctx.effects.touch(path)


def note_writes(words: list[Word], ctx: Ctx, *, prog: str, backup: bool = False) -> None:
    for w, path in paths_of(words, ctx):
        level, rule = write_level(path)
        if rule == "config.edit" and not backup:
            level, rule = HIGH, "config.no_backup"
        shown = path or w.text.replace(UNKNOWN, "$?")
        ctx.add(level, rule, f"{prog} writes {shown}")
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
