"""`remed serve` as systemd runs it: sd_notify over $NOTIFY_SOCKET (READY, WATCHDOG, RELOADING,
STOPPING), SIGHUP reload of what can change, SIGTERM drain with a clean exit. (A planner that
cannot reach Triton: tests/integration/test_planner_triton.py; the scheduler's retries of it:
tests/unit/test_daemon_scheduler.py.)"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
TOKEN = "life-token"


def recv_until(sock: socket.socket, want: str, timeout_s: float, seen: list[str]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            msg = sock.recv(4096).decode()
        except TimeoutError:
            break
        seen.append(msg)
        if want in msg:
            return
    raise AssertionError(f"no {want!r} from the daemon; got {seen}")


def test_notify_reload_and_drain(tmp_path: Path) -> None:
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    state = tmp_path / "state"
    cfg = tmp_path / "remed.toml"
    base = f'state_dir = "{state}"\n[kafka]\nenabled = false\n[http]\nport = 0\n'
    cfg.write_text(base + f'bearer_token = "{TOKEN}"\n')
    log = tmp_path / "remed.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "remed_daemon", "serve", "--config", str(cfg)],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        env={
            "PATH": "/usr/bin:/bin",
            "NOTIFY_SOCKET": str(notify),
            "WATCHDOG_USEC": "1000000",
        },
    )
    seen: list[str] = []
    try:
        recv_until(sock, "READY=1", 30, seen)
        recv_until(sock, "WATCHDOG=1", 5, seen)
        port = int((state / "http.port").read_text())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            assert json.loads(r.read())["ready"] is True
        # SIGHUP: the kill switch can be turned on at run time; the port needs a restart
        cfg.write_text(base + f'bearer_token = "{TOKEN}"\n[scheduler]\nkill_switch = true\n')
        proc.send_signal(signal.SIGHUP)
        recv_until(sock, "RELOADING=1", 10, seen)
        recv_until(sock, "READY=1", 10, seen)
        # a broken file is refused and the running config stays
        cfg.write_text(base + "bearer_token = 42\n")
        proc.send_signal(signal.SIGHUP)
        recv_until(sock, "READY=1", 10, seen)
        proc.send_signal(signal.SIGTERM)
        recv_until(sock, "STOPPING=1", 10, seen)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    reloads = [x for x in lines if x["event"] == "config reloaded"]
    assert reloads and reloads[0]["applied"] == ["scheduler.kill_switch"]
    assert any(x["event"] == "reload refused; keeping the running config" for x in lines)
    assert TOKEN not in log.read_text(), "secrets are never logged"
