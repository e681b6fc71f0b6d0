"""sd_notify over `$NOTIFY_SOCKET`, without libsystemd: one datagram per message.

Messages: `READY=1` once intakes serve, `WATCHDOG=1` while the loop makes progress,
`STOPPING=1` when draining starts, `RELOADING=1`/`READY=1` around SIGHUP, `STATUS=...` lines.
Outside systemd (no `$NOTIFY_SOCKET`) every call is a cheap no-op.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send `message` to the service manager; False when there is none or it is unreachable."""
    env = os.environ if env is None else env
    path = env.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path.startswith("@"):  # abstract namespace socket
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)  # a datagram to a local socket; never wait on a full queue
            sock.connect(path)
            sock.sendall(message.encode())
        return True
    except OSError:
        return False


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """Half of systemd's `WatchdogSec=` (`$WATCHDOG_USEC`) if the watchdog is meant for us."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 2_000_000, 0.1)
    except ValueError:
        return None


def monotonic_usec() -> int:
    """For `RELOADING=1` with `MONOTONIC_USEC=` (systemd >= 253 Type=notify-reload)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
