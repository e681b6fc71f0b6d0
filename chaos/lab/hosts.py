"""Commands on the lab hosts over SSH, the way an operator reaches them.

One multiplexed OpenSSH connection per host (ControlMaster) keeps each command at tens of
milliseconds; the host key is always checked against the lab's known_hosts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from remed_stack.paths import StackPaths

COMMAND_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5


class HostCommandError(RuntimeError):
    """A command on a lab host failed; the message has the host, the command and stderr."""


@dataclass(frozen=True)
class Lab:
    """Where the lab's access material lives (written by `remed stack up`)."""

    run_dir: Path
    repo: Path

    @classmethod
    def from_paths(cls, paths: StackPaths | None = None) -> Lab:
        paths = paths or StackPaths.from_env()
        return cls(run_dir=paths.run, repo=paths.repo)

    @property
    def lab_dir(self) -> Path:
        return self.run_dir / "lab"

    @property
    def inventory(self) -> Path:
        return self.lab_dir / "inventory.ini"

    @property
    def key(self) -> Path:
        return self.lab_dir / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.lab_dir / "known_hosts"

    @property
    def chaos_dir(self) -> Path:
        path = self.run_dir / "chaos"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def exclusive(self, who: str) -> Iterator[None]:
        """Hold the lab for fault injection: two benches (or a bench and the fault tests)
        injecting at once would each see the other's faults and resets. Waits for the holder."""
        with open(self.chaos_dir / "inject.lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                print(f"{who}: waiting for the lab hosts, held by {holder}", file=sys.stderr)
                fcntl.flock(fh, fcntl.LOCK_EX)
            fh.seek(0)
            fh.truncate()
            fh.write(f"{who} (pid {os.getpid()})\n")
            fh.flush()
            try:
                yield
            finally:
                fh.seek(0)
                fh.truncate()
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- what faults leave on a host under names drawn per case (chaos/variants.py) ---------
    # A reset must remove a variant's files and nftables tables even after a killed run, and
    # their names are not known in advance: each fault writes them down here first, on the
    # machine's side (never inside the host, where a probe could read them).

    def _leftover_file(self, host: str) -> Path:
        path = self.chaos_dir / "leftovers" / host
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def remember_leftover(self, host: str, kind: str, value: str) -> None:
        """Record `file PATH` or `nft FAMILY TABLE` a fault is about to create on `host`."""
        with open(self._leftover_file(host), "a") as fh:
            fh.write(f"{kind} {value}\n")

    def leftovers(self, host: str) -> list[tuple[str, str]]:
        try:
            lines = self._leftover_file(host).read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            kind, _, value = line.partition(" ")
            if kind and value and (kind, value) not in out:
                out.append((kind, value))
        return out

    def forget_leftovers(self, host: str) -> None:
        self._leftover_file(host).unlink(missing_ok=True)

    def host_root(self, host: str) -> Path:
        """The host's own copy of its bind-mounted paths, seen from the machine."""
        return self.lab_dir / "hosts" / host / "root"

    def ssh_argv(self, address: str) -> list[str]:
        control = self.chaos_dir / "ssh-%C"
        return [
            "ssh", "-F", "/dev/null", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
            "-o", "ControlMaster=auto", "-o", f"ControlPath={control}",
            "-o", "ControlPersist=120s",
            "-i", str(self.key), f"remedops@{address}",
        ]  # fmt: skip

    def sh(
        self, host: str, script: str, *, check: bool = True, timeout_s: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """Run a bash script as root on `host` (sudo), the script fed on stdin."""
        from chaos.lab.topology import HOST_ADDRESSES

        argv = [*self.ssh_argv(HOST_ADDRESSES[host]), "sudo -n /bin/bash -s"]
        try:
            result = subprocess.run(
                argv, input=script, capture_output=True, text=True, timeout=timeout_s
            )
        except subprocess.TimeoutExpired as exc:
            raise HostCommandError(f"{host}: timed out after {timeout_s}s: {script[:200]}") from exc
        if check and result.returncode != 0:
            raise HostCommandError(
                f"{host}: exit {result.returncode}: {script.strip()[:300]}\n"
                f"{result.stderr.strip()[-1500:]}"
            )
        return result
