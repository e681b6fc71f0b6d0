"""Snapshot what a playbook will touch before it runs, and put it back when remediation fails.

Before each apply, the files the guard (and `touched()`, a second opinion from the playbook
itself) says the playbook edits are read over SSH — content, mode and owner — and the running
state of the services it changes is recorded. Only the first snapshot of an item counts: an
undo after attempt 3 restores what was there before attempt 1. Snapshots live in a private
directory per incident under the state dir (0700), never on the target host.

Undo writes each file back atomically (temp file beside it, chown, chmod, rename), checks its
sha256 against the snapshot, removes files the playbook created, tells supervisord to reread a
restored program config, then restarts services that were running (so they read the restored
files) and stops those that were stopped. What could not be restored is listed, never hidden.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from remed_daemon.agents.redact import scrub
from remed_daemon.agents.ssh import HostAccess, HostUnreachable

_SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$")
_FILE_MODULES = {
    "copy": ("dest",),
    "template": ("dest",),
    "lineinfile": ("path", "dest"),
    "blockinfile": ("path", "dest"),
    "replace": ("path", "dest"),
    "ini_file": ("path", "dest"),
    "file": ("path", "dest"),
    "assemble": ("dest",),
}
_SERVICE_MODULES = {"service": "name", "systemd": "name", "systemd_service": "name",
                    "supervisorctl": "name"}  # fmt: skip
_RUNNING = {"RUNNING", "STARTING", "BACKOFF", "active", "activating", "reloading"}


def _tasks(play: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    stack = [t for key in ("pre_tasks", "tasks", "post_tasks", "handlers")
             for t in (play.get(key) or []) if isinstance(t, Mapping)]  # fmt: skip
    while stack:
        task = stack.pop(0)
        for key in ("block", "rescue", "always"):
            stack.extend(t for t in (task.get(key) or []) if isinstance(t, Mapping))
        yield task


ANY_HOST = "*"


def touched(playbook: str) -> tuple[set[str], set[str]]:
    """(files, services) the playbook's modules name literally; templated values are skipped."""
    files: set[str] = set()
    services: set[str] = set()
    for play_files, play_services in touched_by_host(playbook, [ANY_HOST]).values():
        files |= play_files
        services |= play_services
    return files, services


def _play_hosts(play: Mapping[str, Any], hosts: Sequence[str]) -> list[str]:
    """The incident hosts a play targets (the guard has already refused any other target);
    `hosts=[ANY_HOST]` collects every play under that one key."""
    if list(hosts) == [ANY_HOST]:
        return [ANY_HOST]
    pattern = play.get("hosts")
    names = pattern if isinstance(pattern, list) else re.split(r"[,:\s]+", str(pattern or ""))
    names = [str(n).strip() for n in names if str(n).strip()]
    if "all" in names or "*" in names:
        return list(hosts)
    return [h for h in hosts if h in names]


def touched_by_host(playbook: str, hosts: Sequence[str]) -> dict[str, tuple[set[str], set[str]]]:
    """Per incident host its plays target: (files, services) the modules name literally;
    templated values are skipped."""
    out: dict[str, tuple[set[str], set[str]]] = {}
    try:
        plays = yaml.safe_load(playbook)
    except yaml.YAMLError:
        return out
    if not isinstance(plays, list):
        return out
    for play in plays:
        if not isinstance(play, Mapping):
            continue
        files, services = _touched_by_play(play)
        for host in _play_hosts(play, hosts):
            host_files, host_services = out.setdefault(host, (set(), set()))
            host_files |= files
            host_services |= services
    return out


def _touched_by_play(play: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    files: set[str] = set()
    services: set[str] = set()
    for task in _tasks(play):
        for key, args in task.items():
            module = str(key).rsplit(".", 1)[-1]
            if not isinstance(args, Mapping):
                continue
            for arg in _FILE_MODULES.get(module, ()):
                value = args.get(arg)
                if isinstance(value, str) and value.startswith("/") and "{{" not in value:
                    files.add(value)
            name_arg = _SERVICE_MODULES.get(module)
            if name_arg:
                value = args.get(name_arg)
                if isinstance(value, str) and _SERVICE.match(value):
                    services.add(value)
    return files, services


def _valid_path(path: str) -> bool:
    return (
        path.startswith("/")
        and len(path) < 4096
        and not any(c in path for c in "\x00\n\r")
        and "/../" not in path + "/"
    )


@dataclass
class Item:
    host: str
    kind: str  # "file" | "service"
    name: str
    existed: bool = True
    mode: str = ""
    uid: int = 0
    gid: int = 0
    sha256: str = ""
    blob: str = ""
    manager: str = ""  # service: "supervisor" | "systemd"
    state: str = ""


@dataclass
class Snapshot:
    """The pre-apply state of one incident's touched files and services."""

    hosts: HostAccess
    directory: Path
    timeout_s: float = 30.0
    max_file_bytes: int = 8 * 1_048_576
    items: list[Item] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def _has(self, host: str, kind: str, name: str) -> bool:
        return any(i.host == host and i.kind == kind and i.name == name for i in self.items)

    def _save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        manifest = {"items": [asdict(i) for i in self.items], "errors": self.errors}
        (self.directory / "manifest.json").write_text(json.dumps(manifest, indent=1))

    async def take(self, host: str, files: Iterable[str], services: Iterable[str]) -> list[str]:
        """Record what is not recorded yet; returns the errors of this call."""
        errors: list[str] = []
        for path in sorted(set(files)):
            if self._has(host, "file", path):
                continue
            if not _valid_path(path):
                errors.append(f"{host}:{path[:200]!r}: not an absolute, plain path; not saved")
                continue
            try:
                errors += await self._take_file(host, path)
            except HostUnreachable as exc:
                errors.append(f"{host}:{path}: {exc}")
        for name in sorted(set(services)):
            if self._has(host, "service", name) or not _SERVICE.match(name):
                continue
            try:
                self.items.append(await self._take_service(host, name))
            except HostUnreachable as exc:
                errors.append(f"{host}: service {name}: {exc}")
        self.errors += errors
        self._save()
        return errors

    async def _take_file(self, host: str, path: str) -> list[str]:
        q = shlex.quote(path)
        st = await self.hosts.run(
            host, f"sudo -n stat -c '%a %u %g %s %F' -- {q}", timeout_s=self.timeout_s
        )
        if st.exit_status != 0:
            if "No such file" in st.err:
                self.items.append(Item(host, "file", path, existed=False))
                return []
            return [f"{host}:{path}: stat failed: {scrub(st.err.strip(), 300)}"]
        mode, uid, gid, size, *kind = st.text.split()
        if " ".join(kind) not in ("regular file", "regular empty file"):
            return [f"{host}:{path}: is a {' '.join(kind)}, only regular files are saved"]
        if int(size) > self.max_file_bytes:
            return [f"{host}:{path}: {size} bytes is over the snapshot limit; not saved"]
        body = await self.hosts.run(
            host, f"sudo -n cat -- {q}", timeout_s=self.timeout_s,
            max_output_bytes=self.max_file_bytes + 1,
        )  # fmt: skip
        if body.exit_status != 0:
            return [f"{host}:{path}: read failed: {scrub(body.err.strip(), 300)}"]
        blob = f"{len(self.items):04d}.blob"
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.directory / blob).write_bytes(body.stdout)
        (self.directory / blob).chmod(0o600)
        self.items.append(
            Item(host, "file", path, True, mode, int(uid), int(gid),
                 hashlib.sha256(body.stdout).hexdigest(), blob)
        )  # fmt: skip
        return []

    async def _take_service(self, host: str, name: str) -> Item:
        q = shlex.quote(name)
        res = await self.hosts.run(
            host, f"sudo -n supervisorctl status {q}", timeout_s=self.timeout_s
        )
        words = res.text.split()
        if len(words) > 1 and words[0] == name and "no such process" not in res.text.lower():
            return Item(host, "service", name, manager="supervisor", state=words[1])
        res = await self.hosts.run(
            host, f"systemctl is-active -- {q} 2>/dev/null", timeout_s=self.timeout_s
        )
        return Item(host, "service", name, manager="systemd", state=res.text.strip() or "unknown")

    async def undo(self) -> dict[str, Any]:
        """Restore every item; the outcome's `undo` object."""
        restored: list[dict[str, str]] = []
        errors: list[str] = []
        reread: set[str] = set()
        for item in [i for i in self.items if i.kind == "file"]:
            try:
                error = await self._restore_file(item)
            except HostUnreachable as exc:
                error = str(exc)
            if error:
                errors.append(f"{item.host}:{item.name}: {error}"[:2000])
                continue
            restored.append({"host": item.host, "kind": "file", "name": item.name})
            if item.name.startswith("/etc/supervisor"):
                reread.add(item.host)
        for host in sorted(reread):
            res = await self.hosts.run(host, "sudo -n supervisorctl update", timeout_s=60)
            if res.exit_status != 0:
                errors.append(f"{host}: supervisorctl update: {scrub(res.text + res.err, 300)}")
        for item in [i for i in self.items if i.kind == "service"]:
            try:
                error = await self._restore_service(item)
            except HostUnreachable as exc:
                error = str(exc)
            if error:
                errors.append(f"{item.host}: service {item.name}: {error}"[:2000])
            else:
                restored.append({"host": item.host, "kind": "service", "name": item.name})
        errors = [*self.errors, *errors][:100]
        return {"performed": True, "restored": restored[:500], "errors": errors}

    async def _restore_file(self, item: Item) -> str:
        q = shlex.quote(item.name)
        if not item.existed:
            res = await self.hosts.run(
                item.host,
                f"if sudo -n test -d {q}; then echo 'now a directory, left alone' >&2; exit 1; "
                f"fi; sudo -n rm -f -- {q}",
                timeout_s=self.timeout_s,
            )
            return "" if res.exit_status == 0 else scrub(res.err.strip(), 500)
        content = (self.directory / item.blob).read_bytes()
        script = (
            'set -e; d=$(dirname -- "$1"); mkdir -p -- "$d"; t="$1.remed-undo.$$"; '
            'umask 077; cat > "$t"; chown "$2:$3" -- "$t"; chmod "$4" -- "$t"; '
            'mv -f -- "$t" "$1"; sha256sum -- "$1"'
        )
        owner = (item.name, str(item.uid), str(item.gid), item.mode)
        args = " ".join(shlex.quote(a) for a in owner)
        res = await self.hosts.run(
            item.host,
            f"sudo -n sh -c {shlex.quote(script)} remed-undo {args}",
            timeout_s=self.timeout_s,
            stdin=content,
        )
        if res.exit_status != 0:
            return scrub(res.err.strip() or f"exit {res.exit_status}", 500)
        digest = res.text.split()[0] if res.text.split() else ""
        if digest != item.sha256:
            return f"content after restore has sha256 {digest[:16]}…, expected {item.sha256[:16]}…"
        return ""

    async def _restore_service(self, item: Item) -> str:
        q = shlex.quote(item.name)
        running = item.state in _RUNNING
        if item.manager == "supervisor":
            cmd = f"sudo -n supervisorctl {'restart' if running else 'stop'} {q}"
        elif item.state in ("unknown", ""):
            return ""  # nothing known to restore to
        else:
            cmd = f"sudo -n systemctl {'restart' if running else 'stop'} -- {q}"
        res = await self.hosts.run(item.host, cmd, timeout_s=max(self.timeout_s, 60))
        text = res.text + res.err
        if res.exit_status != 0 and not (not running and "NOT_RUNNING" in text):
            return scrub(text.strip() or f"exit {res.exit_status}", 500)
        return ""
