"""SSH to the incident's hosts for probes, snapshots, undo and verification (asyncssh).

Host keys are always verified against a known_hosts file: there is no switch to turn that off.
Connections are kept in a small pool keyed by host and reused by every step of every incident;
a dropped connection is replaced on next use. Each host's address, port, user, key and
known_hosts file are resolved from the Ansible inventory by ansible-core itself
(`remed_daemon.agents.inventory`), with the precedence a playbook run by ansible-runner sees:
the host's inventory variables first, then the remediation config (which ansible-runner passes
as `--user` and `--private-key`, the lowest precedence in Ansible), then ssh's defaults. The
config's known_hosts is in ANSIBLE_SSH_ARGS, which comes before the inventory's
`ansible_ssh_common_args` on ssh's command line, so it wins unless the host sets
`ansible_ssh_args`. Probes and playbooks reach the same machine the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from remed_daemon.agents.inventory import (
    LOAD_TIMEOUT_S,
    HostConnection,
    InventoryError,
    load_inventory_async,
)
from remed_daemon.errors import RemedError


class HostUnreachable(RemedError):
    """A host could not be reached over SSH (connection, authentication or host key)."""

    retriable = True


class HostMisconfigured(HostUnreachable):
    """The inventory has no usable entry for the host: trying again will not help."""

    retriable = False


@dataclass(frozen=True)
class HostEndpoint:
    name: str
    address: str
    user: str
    key: str
    known_hosts: str
    port: int | None = None  # None: ssh's default (22, or what ~/.ssh/config says)


def endpoint_for(
    conn: HostConnection, *, user: str = "", key: str = "", known_hosts: str = ""
) -> HostEndpoint:
    """The endpoint for an inventory host, with the fallbacks ansible-runner is given
    (`--user`, `--private-key`, `-o UserKnownHostsFile=` in ANSIBLE_SSH_ARGS) where the
    inventory is silent. Host keys are always checked: without any known_hosts setting it is
    ~/.ssh/known_hosts, as for ssh."""
    default_args = f"-o UserKnownHostsFile={shlex.quote(known_hosts)}" if known_hosts else ""
    return HostEndpoint(
        name=conn.name,
        address=conn.address,
        user=conn.user or user,
        key=conn.key_file or (os.path.expanduser(key) if key else ""),
        known_hosts=conn.known_hosts(default_args) or str(Path.home() / ".ssh" / "known_hosts"),
        port=conn.port,
    )


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
        inventory_timeout_s: float = LOAD_TIMEOUT_S,
    ) -> None:
        self.inventory = inventory
        # The fallbacks ansible-runner passes as `--user`, `--private-key` and
        # ANSIBLE_SSH_ARGS: an inventory variable for the host wins over the first two.
        self.user = user
        self.key = key
        self.known_hosts = known_hosts
        self.connect_timeout_s = connect_timeout_s
        self.inventory_timeout_s = inventory_timeout_s
        self._pool: dict[str, asyncssh.SSHClientConnection] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def endpoint(self, host: str) -> HostEndpoint:
        """Where and how to reach `host`, as its playbooks do. Raises `InventoryError` (naming
        the inventory) for an unknown host, a broken inventory or a host not reached over
        SSH."""
        if not self.inventory:
            conn = HostConnection(name=host, address=host)
        else:
            inv = await load_inventory_async(self.inventory, timeout_s=self.inventory_timeout_s)
            conn = inv[host]
            if not conn.over_ssh:
                raise InventoryError(
                    f"host {host!r} has ansible_connection={conn.connection} in the Ansible "
                    f"inventory {inv.path}: remed's probes, snapshots and verification reach "
                    "hosts over SSH only"
                )
        return endpoint_for(conn, user=self.user, key=self.key, known_hosts=self.known_hosts)

    async def address(self, host: str) -> str:
        return (await self.endpoint(host)).address

    async def connection(self, host: str) -> asyncssh.SSHClientConnection:
        lock = self._locks.setdefault(host, asyncio.Lock())
        async with lock:
            conn = self._pool.get(host)
            if conn is not None and not conn.is_closed():
                return conn
            try:
                ep = await self.endpoint(host)
            except InventoryError as exc:
                raise HostMisconfigured(f"cannot SSH to {host}: {exc}") from exc
            try:
                conn = await asyncssh.connect(
                    ep.address,
                    port=ep.port if ep.port is not None else (),
                    username=ep.user or None,
                    client_keys=[ep.key] if ep.key else None,
                    known_hosts=ep.known_hosts,  # always verified; never None
                    connect_timeout=self.connect_timeout_s,
                    keepalive_interval=15,
                )
            except (OSError, asyncssh.Error, TimeoutError) as exc:
                where = ep.address if ep.port is None else f"{ep.address}:{ep.port}"
                raise HostUnreachable(
                    f"cannot SSH to {host} ({where}) as {ep.user or 'the current user'}: "
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
