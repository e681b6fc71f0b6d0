"""`remed serve` as systemd runs it: sd_notify over $NOTIFY_SOCKET (READY, WATCHDOG, RELOADING,
STOPPING), SIGHUP reload of what can change, SIGTERM drain with a clean exit; and a planner
that cannot reach Triton makes the incident wait and retry, then escalate."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from remed_daemon.config import RemediationConfig
from remed_daemon.errors import PlannerUnavailable
from remed_daemon.journal import Incident, State
from remed_daemon.pipeline import TritonPlanner
from remed_stack.procs import free_port

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


def planning(service: str, host: str) -> Incident:
    """An incident in `planning`, as the scheduler hands it to a planner."""
    return Incident(
        id=f"{service}-incident",
        idem_key=f"report:{service}",
        source="kafka",
        target=f"{service}@{host}",
        state=State.PLANNING,
        report={"target": {"service": service, "host": host}, "summary": f"{service} is down"},
        traceparent="",
        kafka_partition=None,
        kafka_offset=None,
        reason="",
        created_at=0.0,
        updated_at=0.0,
        started_at=None,
        finished_at=None,
    )


async def test_triton_unreachable_is_retriable() -> None:
    planner = TritonPlanner(
        RemediationConfig(triton_url=f"127.0.0.1:{free_port()}", planner_timeout_s=5)
    )
    incident = planning("cart", "app")
    with pytest.raises(PlannerUnavailable) as err:
        await planner.plan(incident)
    assert err.value.retriable and "will retry" in str(err.value)


async def test_triton_planner_plans_in_shadow(triton: Any) -> None:
    """The real remed_planner answers the plain pipeline's planner: text, tokens, version."""
    planner = TritonPlanner(
        RemediationConfig(triton_url=triton.status()["http"], planner_max_tokens=16)
    )
    incident = planning("nginx", "web")
    plan = await planner.plan(incident)
    assert plan.planner == "triton" and plan.model_name == "remed_planner"
    assert plan.model_version and plan.prompt_tokens > 0 and 0 < plan.completion_tokens <= 16
    assert isinstance(plan.playbook, str) and plan.playbook
