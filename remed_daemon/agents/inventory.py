"""The Ansible inventory, read by ansible-core itself, so remed's own SSH (probes, snapshots,
undo, verification) reaches each host the way a playbook does.

`load_inventory(path)` returns one `HostConnection` per host: the address, port, user, key and
SSH arguments ansible-core's `ssh` connection plugin would use, resolved from INI or YAML
inventories, inventory directories, `host_vars/` and `group_vars/` beside them, group
inheritance and templated values (`ansible_host: "{{ inventory_hostname }}.lan"`). Precedence
is ansible-core's: a per-host variable beats a group's, a child group's beats its parent's, and
`ansible_ssh_host`/`_port`/`_user` beat their short forms.

Why a child process: ansible-core reads its configuration once, at import, from `ANSIBLE_*`
variables and the first `ansible.cfg` it finds (the current directory, `~/.ansible.cfg`,
`/etc/ansible`), and creates `~/.ansible/tmp` as it does. In the daemon's own process that
configuration would be whatever was imported first (or whatever the daemon's working directory
holds). The child runs with the hermetic settings every ansible-core child of remed gets
(`remed_daemon.agents.ansible_env`: an empty `ansible.cfg`, no inherited `ANSIBLE_*` setting
except the collections path, where inventory plugins live, and a private `ANSIBLE_HOME` and
temporary directory), removed afterwards, so the result depends on the inventory alone and
nothing is written under the home directory. Every inventory plugin that ships enabled by
default is available (host_list, script, auto, yaml, ini, toml).

The result is cached per path until a file of the inventory (or of its `host_vars/` and
`group_vars/`) changes, or `max_age_s` passes (dynamic inventories change without their files
changing). Loading blocks for the child's run (about half a second): async code calls
`load_inventory_async`, which runs it in a thread.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from remed_daemon.agents import ansible_env
from remed_daemon.errors import RemedError

LOAD_TIMEOUT_S = 60.0
MAX_AGE_S = 300.0
# The connection types that are SSH underneath: remed reaches those hosts over asyncssh.
SSH_CONNECTIONS = frozenset(
    {"ssh", "smart", "paramiko", "paramiko_ssh", "ansible.builtin.ssh",
     "ansible.builtin.paramiko_ssh"}
)  # fmt: skip
_MAX_SIGNATURE_FILES = 10_000
_MAX_DETAIL_CHARS = 2000


class InventoryError(RemedError):
    """The inventory could not be read or parsed, or has no usable entry for a host. The
    message names the file."""


class UnknownHost(InventoryError, KeyError):
    """A host the inventory does not have (a `KeyError`, so `Mapping.get` works)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class HostConnection:
    """How ansible-core's ssh connection plugin reaches one inventory host. `None` means the
    inventory does not say: ansible then falls back to `--user`/`--private-key` (remed's
    `remediation.ssh_user`/`ssh_private_key`), and then to ssh's own defaults."""

    name: str
    address: str
    port: int | None = None
    user: str | None = None
    key_file: str | None = None
    connection: str = "ssh"
    # `ansible_ssh_args` when the inventory sets it: it replaces ANSIBLE_SSH_ARGS (where
    # ansible-runner puts remed's `-o UserKnownHostsFile=`).
    ssh_args: str | None = None
    ssh_common_args: str = ""
    ssh_extra_args: str = ""

    @property
    def over_ssh(self) -> bool:
        return self.connection in SSH_CONNECTIONS

    def known_hosts(self, default_ssh_args: str = "") -> str | None:
        """The known_hosts file OpenSSH would use for this host when ansible runs it with
        ANSIBLE_SSH_ARGS=`default_ssh_args`: ansible puts the ssh args first, then the common
        and the extra args, and OpenSSH keeps the first value it is given for an option."""
        ssh_args = default_ssh_args if self.ssh_args is None else self.ssh_args
        for args in (ssh_args, self.ssh_common_args, self.ssh_extra_args):
            found = user_known_hosts_file(args)
            if found:
                return found
        return None


def user_known_hosts_file(args: str) -> str | None:
    """The first file of the first `-o UserKnownHostsFile` in an ssh argument string."""
    try:
        words = shlex.split(args or "")
    except ValueError:
        return None
    for i, word in enumerate(words):
        if word == "-o" and i + 1 < len(words):
            option = words[i + 1]
        elif word.startswith("-o") and len(word) > 2:
            option = word[2:]
        else:
            continue
        key, _, value = option.replace("=", " ", 1).partition(" ")
        files = value.split()
        if key.strip().lower() == "userknownhostsfile" and files:
            return os.path.expanduser(files[0])
    return None


class Inventory(Mapping[str, HostConnection]):
    """Hosts by inventory name. Looking up a host that is not there raises `UnknownHost`;
    one whose variables ansible-core could not resolve raises `InventoryError` with why."""

    def __init__(
        self,
        path: Path,
        hosts: Mapping[str, HostConnection],
        errors: Mapping[str, str] | None = None,
        warnings: str = "",
    ) -> None:
        self.path = path
        self._hosts = dict(hosts)
        self.errors = dict(errors or {})
        self.warnings = warnings

    def __getitem__(self, name: str) -> HostConnection:
        found = self._hosts.get(name)
        if found is not None:
            return found
        if name in self.errors:
            raise InventoryError(
                f"Ansible inventory {self.path}: cannot resolve host {name!r}: "
                f"{self.errors[name]}; fix its variables there"
            )
        known = sorted([*self._hosts, *self.errors])
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listed = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "") or "no hosts"
        raise UnknownHost(
            f"host {name!r} is not in the Ansible inventory {self.path}{hint}; it has: "
            f"{listed}. Add the host there, or fix the report's target host"
        )

    def __contains__(self, name: object) -> bool:
        return name in self._hosts

    def __iter__(self) -> Iterator[str]:
        return iter(self._hosts)

    def __len__(self) -> int:
        return len(self._hosts)

    def __repr__(self) -> str:
        return f"Inventory({str(self.path)!r}, {sorted(self._hosts)})"


@dataclass
class _Cached:
    signature: tuple[tuple[str, int, int], ...]
    loaded_at: float
    inventory: Inventory


_cache: dict[Path, _Cached] = {}
_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def load_inventory(
    path: str | os.PathLike[str],
    *,
    timeout_s: float = LOAD_TIMEOUT_S,
    max_age_s: float = MAX_AGE_S,
) -> Inventory:
    """Every host of the inventory at `path` (a file or a directory), as ansible-core resolves
    it. Blocks (a child process); from async code use `load_inventory_async`. Raises
    `InventoryError` naming the file when it is missing, unreadable or unparseable."""
    source = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    _check_readable(source)
    with _locks_guard:
        lock = _locks.setdefault(source, threading.Lock())
    with lock:  # one load per path at a time; the others wait and take its result
        signature = _signature(source)
        cached = _cache.get(source)
        now = time.monotonic()
        if cached and cached.signature == signature and now - cached.loaded_at < max_age_s:
            return cached.inventory
        inventory = _read_with_ansible(source, timeout_s)
        _cache[source] = _Cached(signature, now, inventory)
        return inventory


async def load_inventory_async(
    path: str | os.PathLike[str],
    *,
    timeout_s: float = LOAD_TIMEOUT_S,
    max_age_s: float = MAX_AGE_S,
) -> Inventory:
    """`load_inventory` in a worker thread, so the event loop keeps running."""
    return await asyncio.to_thread(load_inventory, path, timeout_s=timeout_s, max_age_s=max_age_s)


def _check_readable(source: Path) -> None:
    if not source.exists():
        raise InventoryError(
            f"Ansible inventory {source} does not exist; point remediation.inventory at an "
            "inventory file or directory"
        )
    if not os.access(source, os.R_OK | (os.X_OK if source.is_dir() else 0)):
        raise InventoryError(
            f"Ansible inventory {source} is not readable by this user (uid {os.getuid()}); "
            "fix its permissions"
        )


def _signature(source: Path) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime, size) of every file that can change what the inventory says: the source
    itself (all of it, for a directory) and the host_vars/ and group_vars/ ansible reads
    beside a file source."""
    roots = [source]
    if not source.is_dir():
        roots += [source.parent / "host_vars", source.parent / "group_vars"]
    out: list[tuple[str, int, int]] = []
    for root in roots:
        if root.is_file():
            candidates: Iterator[Path] = iter([root])
        elif root.is_dir():
            candidates = (Path(d) / f for d, _, files in os.walk(root) for f in files)
        else:
            continue
        for file in candidates:
            try:
                st = file.stat()
            except OSError:
                continue
            out.append((str(file), st.st_mtime_ns, st.st_size))
            if len(out) >= _MAX_SIGNATURE_FILES:
                return tuple(out)
    return tuple(out)


def _child_env(tmp: Path) -> dict[str, str]:
    env = ansible_env.environ(tmp / "ansible")
    env.update(
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        # Nothing parsed at all is an error, not "only implicit localhost".
        ANSIBLE_INVENTORY_UNPARSED_FAILED="1",
    )
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def _read_with_ansible(source: Path, timeout_s: float) -> Inventory:
    with tempfile.TemporaryDirectory(prefix="remed-inventory-") as tmp:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "remed_daemon.agents.inventory", str(source)],
                cwd=tmp,
                env=_child_env(Path(tmp)),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise InventoryError(
                f"reading the Ansible inventory {source} took longer than {timeout_s:g}s "
                "(a dynamic inventory script or plugin that hangs?)"
            ) from exc
        except OSError as exc:
            raise InventoryError(f"cannot start ansible-core to read {source}: {exc}") from exc
    said = _tail(proc.stderr.decode("utf-8", "replace"))
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        doc = None
    if proc.returncode != 0 or not isinstance(doc, dict):
        raise InventoryError(
            f"ansible-core could not read the Ansible inventory {source} "
            f"(exit {proc.returncode}): {said or 'no output'}"
        )
    if doc.get("error"):
        raise InventoryError(
            f"ansible-core could not parse the Ansible inventory {source}: {doc['error']}"
            + (f"; ansible said: {said}" if said else "")
        )
    hosts = {name: HostConnection(**fields) for name, fields in doc["hosts"].items()}
    return Inventory(source, hosts, doc.get("errors", {}), warnings=said)


def _tail(text: str) -> str:
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return text[-_MAX_DETAIL_CHARS:]


# -- the child: ansible-core's own inventory and variable managers ----------------------------


def _resolve(source: str) -> dict[str, Any]:
    from ansible import constants as C
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.playbook.play_context import PlayContext
    from ansible.plugins.loader import connection_loader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    try:
        inventory = InventoryManager(loader=loader, sources=[source])
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    variables = VariableManager(loader=loader, inventory=inventory)
    connection_loader.get("ssh", PlayContext())  # registers the plugin's option definitions
    names = C.config.get_plugin_vars("connection", "ssh")
    hosts: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for host in inventory.get_hosts():
        try:
            hv = variables.get_vars(host=host, include_hostvars=False)
            templar = Templar(loader=loader, variables=hv)
            options = {k: templar.template(hv[k]) for k in names if k in hv}
            # What TaskExecutor does: the plugin's own option resolution over the host's vars.
            ssh = connection_loader.get("ssh", PlayContext())
            ssh.set_options(var_options=options)
            port = ssh.get_option("port")
            key = ssh.get_option("private_key_file")
            user = ssh.get_option("remote_user")
            conn = HostConnection(
                name=host.name,
                address=str(ssh.get_option("host") or host.name),
                port=int(port) if port not in (None, "") else None,
                user=str(user) if user else None,
                key_file=os.path.expanduser(str(key)) if key else None,
                connection=str(templar.template(hv.get("ansible_connection") or "ssh")),
                ssh_args=str(options["ansible_ssh_args"]) if "ansible_ssh_args" in options
                else None,
                ssh_common_args=str(ssh.get_option("ssh_common_args") or ""),
                ssh_extra_args=str(ssh.get_option("ssh_extra_args") or ""),
            )  # fmt: skip
            hosts[host.name] = asdict(conn)
        except Exception as exc:
            errors[host.name] = f"{type(exc).__name__}: {exc}"[:_MAX_DETAIL_CHARS]
    return {"hosts": hosts, "errors": errors}


def _child_main(argv: list[str]) -> int:
    # ansible-core may print to stdout; the answer goes to the original stdout alone.
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if len(argv) != 1:
        print("usage: python -m remed_daemon.agents.inventory INVENTORY", file=sys.stderr)
        return 2
    try:
        doc = _resolve(argv[0])
    except Exception as exc:
        doc = {"error": f"{type(exc).__name__}: {exc}"}
    json.dump(doc, answer)
    answer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))
