"""A `remed serve` for the chaos lab, as `make demo` and the alerting e2e test run it: ThinkRemed
in ansible mode on the lab hosts, the shop's topology and the oracle's expert playbooks handed
over as files (like any user's), Kafka on the given topics, the webhook and the approval
endpoint on a port from the OS. The daemon is a subprocess, its log and state in `out`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from remed_stack.paths import StackPaths
from remed_stack.procs import StackError

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LabDaemonSettings:
    bootstrap: str
    topics: dict[str, str]
    webhook_token: str
    approval_token: str
    planner: str = "oracle"  # oracle | triton
    triton_url: str = ""
    approval_timeout_s: float = 300.0
    max_attempts: int = 2


def write_config(out: Path, s: LabDaemonSettings, paths: StackPaths | None = None) -> Path:
    from chaos.lab.topology import write_topology_file
    from chaos.playbooks import write_oracle_dir

    paths = paths or StackPaths.from_env()
    lab = paths.run / "lab"
    write_oracle_dir(out / "oracle")
    topics = "\n".join(f'{key} = "{name}"' for key, name in s.topics.items())
    text = f"""\
state_dir = "{out / "state"}"
[kafka]
bootstrap = "{s.bootstrap}"
group_id = "remed-lab-{os.getpid()}-{int(time.time())}"
{topics}
[http]
port = 0
bearer_token = "{s.webhook_token}"
[scheduler]
max_concurrency = 2
per_target_budget_per_hour = 100
breaker_failures = 100
[remediation]
mode = "ansible"
planner = "{s.planner}"
triton_url = "{s.triton_url or "127.0.0.1:8000"}"
inventory = "{lab / "inventory.ini"}"
ssh_private_key = "{lab / "ssh" / "id_ed25519"}"
ssh_user = "remedops"
known_hosts = "{lab / "known_hosts"}"
playbook_timeout_s = 120
[agents]
approval_token = "{s.approval_token}"
approval_timeout_s = {s.approval_timeout_s}
max_attempts = {s.max_attempts}
oracle_playbook_dir = "{out / "oracle"}"
topology_file = "{write_topology_file(out / "topology.json")}"
verify_window_s = 20
verify_stable_s = 2
verify_interval_s = 0.5
[telemetry]
log_format = "json"
spans_file = "{out / "spans.jsonl"}"
"""
    path = out / "remed.toml"
    path.write_text(text)
    return path


class LabDaemon:
    """`remed serve --config` as a subprocess; `port` once it is ready."""

    def __init__(self, config: Path, out: Path) -> None:
        self.config = config
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LabDaemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        port_file = self.out / "state" / "http.port"
        port_file.unlink(missing_ok=True)
        log = open(self.out / "daemon.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "remed_cli", "serve", "--config", str(self.config)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StackError(f"remed serve exited with {self.proc.returncode}; see "
                                 f"{self.out / 'daemon.log'}")  # fmt: skip
            text = port_file.read_text().strip() if port_file.exists() else ""
            if text:
                self.port = int(text)
                try:
                    with urllib.request.urlopen(f"{self.url}/readyz", timeout=5) as r:
                        if r.status == 200:
                            return
                except OSError:
                    pass
            time.sleep(0.3)
        self.stop()
        raise StackError(f"remed serve not ready within {READY_TIMEOUT_S}s; see "
                         f"{self.out / 'daemon.log'}")  # fmt: skip

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
