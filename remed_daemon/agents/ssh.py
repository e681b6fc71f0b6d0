"""SSH to the incident's hosts for probes, snapshots, undo and verification (asyncssh).

Host keys are always verified against a known_hosts file: there is no switch to turn that off.
Connections are kept in a small pool keyed by host and reused by every step of every incident;
a dropped connection is replaced on next use. Addresses, the user, the key and the known_hosts
file come from the remediation config, else from the Ansible inventory's variables (the same
inventory ansible-runner uses), so probes and playbooks reach the same machine the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from remed_daemon.errors import RemedError


class HostUnreachable(RemedError):
    """A host could not be reached over SSH (connection, authentication or host key)."""

    retriable = True


@dataclass(frozen=True)
class HostEndpoint:
    name: str
    address: str
    user: str
    key: str
    known_hosts: str


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")


def parse_inventory(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """({host: address}, {var: value}) from an INI inventory: `ansible_host=` per host and the
    group vars remed needs (`ansible_user`, `ansible_ssh_private_key_file`, and the
    `UserKnownHostsFile` named in `ansible_ssh_common_args`)."""
    hosts: dict[str, str] = {}
    env: dict[str, str] = {}
    section = ""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return hosts, env
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section.endswith(":vars"):
            key, _, value = line.partition("=")
            value = value.strip().strip("'\"")
            env[key.strip()] = value
            if key.strip() == "ansible_ssh_common_args":
                with contextlib.suppress(ValueError):
                    for word in shlex.split(value):
                        if word.startswith("UserKnownHostsFile="):
                            env["known_hosts"] = word.split("=", 1)[1]
            continue
        if section.endswith(":children"):
            continue
        parts = line.split()
        address = parts[0]
        for p in parts[1:]:
            if p.startswith("ansible_host="):
                address = p.split("=", 1)[1]
        hosts[parts[0]] = address
    return hosts, env


class HostAccess:
    """Pooled, host-key-verified SSH to inventory hosts. `close()` is idempotent."""

    def __init__(
        self,
        inventory: str,
        *,
        user: str = "",
        key: str = "",
        known_hosts: str = "",
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.inventory = inventory
        self._hosts, env = parse_inventory(Path(inventory)) if inventory else ({}, {})
        self.user = user or env.get("ansible_user", "")
        self.key = key or env.get("ansible_ssh_private_key_file", "")
        self.known_hosts = known_hosts or env.get("known_hosts", "")
        if not self.known_hosts:
            default = Path.home() / ".ssh" / "known_hosts"
            self.known_hosts = str(default)
        self.connect_timeout_s = connect_timeout_s
        self._pool: dict[str, asyncssh.SSHClientConnection] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def endpoint(self, host: str) -> HostEndpoint:
        return HostEndpoint(
            name=host,
            address=self._hosts.get(host, host),
            user=self.user,
            key=self.key,
            known_hosts=self.known_hosts,
        )

    def address(self, host: str) -> str:
        return self._hosts.get(host, host)

    async def connection(self, host: str) -> asyncssh.SSHClientConnection:
        lock = self._locks.setdefault(host, asyncio.Lock())
        async with lock:
            conn = self._pool.get(host)
            if conn is not None and not conn.is_closed():
                return conn
            ep = self.endpoint(host)
            try:
                conn = await asyncssh.connect(
                    ep.address,
                    username=ep.user or None,
                    client_keys=[ep.key] if ep.key else None,
                    known_hosts=ep.known_hosts,  # always verified; never None
                    connect_timeout=self.connect_timeout_s,
                    keepalive_interval=15,
                )
            except (OSError, asyncssh.Error, TimeoutError) as exc:
                raise HostUnreachable(
                    f"cannot SSH to {host} ({ep.address}) as {ep.user or 'the current user'}: "
                    f"{exc}; check the inventory, the key and known_hosts {ep.known_hosts}"
                ) from exc
            self._pool[host] = conn
            return conn

    async def run(
        self,
        host: str,
        command: str,
        *,
        timeout_s: float,
        stdin: bytes | None = None,
        max_output_bytes: int = 1_048_576,
    ) -> CommandResult:
        """Run `command` (already quoted) on `host`; never raises for a non-zero exit."""
        for retry in (True, False):
            conn = await self.connection(host)
            try:
                async with asyncio.timeout(timeout_s):
                    res = await conn.run(command, input=stdin, encoding=None, check=False)
            except TimeoutError:
                return CommandResult(124, b"", f"timed out after {timeout_s}s".encode(), True)
            except (asyncssh.ConnectionLost, asyncssh.DisconnectError, BrokenPipeError) as exc:
                self._pool.pop(host, None)
                if retry:
                    continue
                raise HostUnreachable(f"connection to {host} lost: {exc}") from exc
            out = res.stdout if isinstance(res.stdout, bytes) else str(res.stdout or "").encode()
            err = res.stderr if isinstance(res.stderr, bytes) else str(res.stderr or "").encode()
            status = res.exit_status if res.exit_status is not None else 255
            return CommandResult(status, out[:max_output_bytes], err[:max_output_bytes])
        raise HostUnreachable(f"connection to {host} lost")  # pragma: no cover

    async def close(self) -> None:
        pool, self._pool = self._pool, {}
        for conn in pool.values():
            conn.close()
        for conn in pool.values():
            with contextlib.suppress(Exception):
                await conn.wait_closed()

    async def __aenter__(self) -> HostAccess:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
