"""Start, track and stop the stack's long-running processes by pid.

A pid file holds the pid *and* the kernel's start time of that process, so a stale file left by
a killed run never makes `down` signal an unrelated process that reused the pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class StackError(RuntimeError):
    """A stack component failed to start or stop; the message says what to look at."""


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Field 22 (starttime) counted after the parenthesised command name, which may hold spaces.
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True)
class TrackedProcess:
    pid: int
    start_ticks: int

    def alive(self) -> bool:
        ticks = _start_ticks(self.pid)
        if ticks is None or ticks != self.start_ticks:
            return False
        state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"


def read_pidfile(path: Path) -> TrackedProcess | None:
    try:
        data = json.loads(path.read_text())
        return TrackedProcess(pid=int(data["pid"]), start_ticks=int(data["start_ticks"]))
    except (FileNotFoundError, ValueError, KeyError):
        return None


def live_process(pidfile: Path) -> TrackedProcess | None:
    """The process recorded in `pidfile` if it is still that same process, else None."""
    proc = read_pidfile(pidfile)
    if proc is not None and proc.alive():
        return proc
    return None


def spawn(
    argv: Sequence[str],
    *,
    pidfile: Path,
    logfile: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> TrackedProcess:
    """Start `argv` in its own session, output appended to `logfile`, and record its pid."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    ticks = _start_ticks(popen.pid)
    if ticks is None:
        raise StackError(f"{argv[0]} exited at once; see {logfile}")
    proc = TrackedProcess(pid=popen.pid, start_ticks=ticks)
    pidfile.write_text(json.dumps({"pid": proc.pid, "start_ticks": proc.start_ticks}))
    return proc


def stop(pidfile: Path, *, timeout_s: float = 20.0) -> bool:
    """Stop the recorded process group (TERM, then KILL after `timeout_s`). True if one ran."""
    proc = read_pidfile(pidfile)
    pidfile.unlink(missing_ok=True)
    if proc is None or not proc.alive():
        return False
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            _reap(proc.pid)
            return True
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while proc.alive() and time.monotonic() < deadline + 5:
        time.sleep(0.1)
    _reap(proc.pid)
    return True


def _reap(pid: int) -> None:
    # Only a child of this process can be reaped; for others the kernel's init does it.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def port_open(host: str, port: int, *, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS reports free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    timeout_s: float,
    proc: TrackedProcess | None = None,
    logfile: Path | None = None,
    interval_s: float = 0.25,
) -> None:
    """Poll `ready` until true; fail early if `proc` dies, naming the log to read."""
    deadline = time.monotonic() + timeout_s
    hint = f"; see {logfile}" if logfile else ""
    while time.monotonic() < deadline:
        if ready():
            return
        if proc is not None and not proc.alive():
            raise StackError(f"{what} exited before it became ready{hint}")
        time.sleep(interval_s)
    raise StackError(f"{what} not ready after {timeout_s:.0f} s{hint}")
