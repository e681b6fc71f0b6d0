"""Steady-state probes of the active lab system and a small, bounded load generator.

Probes read the system from outside, the way a monitoring system does: HTTP health endpoints,
Redis PING, memcached `version`, PostgreSQL's pg_isready, and end-to-end requests through the
system's entry (the shop: orders through nginx on host web). They never look at what an
injector wrote down.
"""

from __future__ import annotations

import random
import socket
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from chaos.lab import manager
from chaos.lab import topology as topo
from chaos.lab.hosts import Lab

HEALTH_TIMEOUT_S = 1.5
E2E_TIMEOUT_S = 3.0
E2E_REQUESTS = 8
E2E_MIN_SUCCESS = 0.95
E2E_MAX_P50_MS = 250.0
LOAD_MAX_REQUESTS = 5000
LOAD_MAX_DURATION_S = 120.0
LOAD_MAX_CONCURRENCY = 8


@dataclass(frozen=True)
class Health:
    service: str
    ok: bool
    latency_ms: float
    detail: str


@dataclass
class E2EStats:
    requests: int = 0
    ok: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return self.ok / self.requests if self.requests else 0.0

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0

    @property
    def p95_ms(self) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]

    def summary(self) -> dict[str, float | int | list[str]]:
        return {
            "requests": self.requests, "ok": self.ok, "success_rate": round(self.success_rate, 3),
            "p50_ms": round(self.p50_ms, 1), "p95_ms": round(self.p95_ms, 1),
            "errors": self.errors[:5],
        }  # fmt: skip


@dataclass(frozen=True)
class SteadyState:
    ok: bool
    health: list[Health]
    e2e: dict[str, float | int | list[str]]
    detail: str


def http_get(url: str, timeout_s: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, resp.read(2000).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(2000).decode(errors="replace")


def service_health(name: str, timeout_s: float = HEALTH_TIMEOUT_S) -> Health:
    svc = topo.service(name)
    started = time.monotonic()
    try:
        if svc.health == "http":
            status, body = http_get(svc.health_url, timeout_s)
            ok, detail = status == 200, f"HTTP {status} {body.strip()[:200]}"
        elif svc.health in ("redis", "memcached"):
            ask, want = (b"PING\r\n", b"+PONG") if svc.health == "redis" else (
                b"version\r\n", b"VERSION")  # fmt: skip
            with socket.create_connection((svc.address, svc.port), timeout=timeout_s) as sock:
                sock.settimeout(timeout_s)
                sock.sendall(ask)
                reply = sock.recv(64)
            ok, detail = reply.startswith(want), reply.decode(errors="replace").strip()
        else:
            result = subprocess.run(
                ["pg_isready", "-h", svc.address, "-p", str(svc.port), "-t", "1"],
                capture_output=True, text=True, timeout=timeout_s + 2,
            )  # fmt: skip
            ok, detail = result.returncode == 0, result.stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    return Health(name, ok, (time.monotonic() - started) * 1000, detail)


def all_health() -> list[Health]:
    with ThreadPoolExecutor(len(topo.SERVICES)) as pool:
        return list(pool.map(service_health, topo.SERVICES))


def e2e_request(stats: E2EStats, lock: threading.Lock, timeout_s: float = E2E_TIMEOUT_S) -> None:
    item = random.choice(topo.ITEMS)[0]
    entry = topo.service(topo.E2E_SERVICE)
    url = topo.http_base(entry) + topo.E2E_PATH.format(user="probe", item=item)
    started = time.monotonic()
    try:
        status, body = http_get(url, timeout_s)
        ok, error = status == 200, "" if status == 200 else f"HTTP {status} {body[:160]}"
    except (OSError, ValueError) as exc:
        ok, error = False, f"{type(exc).__name__}: {exc}"
    elapsed_ms = (time.monotonic() - started) * 1000
    with lock:
        stats.requests += 1
        if ok:
            stats.ok += 1
            stats.latencies_ms.append(elapsed_ms)
        else:
            stats.errors.append(error)


def e2e(requests: int = E2E_REQUESTS, concurrency: int = 4) -> E2EStats:
    stats, lock = E2EStats(), threading.Lock()
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(requests):
            pool.submit(e2e_request, stats, lock)
    return stats


def steady_state(requests: int = E2E_REQUESTS) -> SteadyState:
    """Every service healthy, and end-to-end orders succeed fast enough."""
    health = all_health()
    stats = e2e(requests)
    bad = [f"{h.service}: {h.detail}" for h in health if not h.ok]
    if stats.success_rate < E2E_MIN_SUCCESS:
        bad.append(f"e2e success {stats.success_rate:.0%} < {E2E_MIN_SUCCESS:.0%}")
    elif stats.p50_ms > E2E_MAX_P50_MS:
        bad.append(f"e2e p50 {stats.p50_ms:.0f}ms > {E2E_MAX_P50_MS:.0f}ms")
    return SteadyState(not bad, health, stats.summary(), "; ".join(bad) or "steady")


def wait_healthy(timeout_s: float, interval_s: float = 0.3) -> SteadyState:
    deadline = time.monotonic() + timeout_s
    while True:
        state = steady_state(requests=4)
        if state.ok or time.monotonic() > deadline:
            if not state.ok:
                raise RuntimeError(
                    f"{topo.SYSTEM.name} not healthy after {timeout_s}s: {state.detail}"
                )
            return state
        time.sleep(interval_s)


def load(rps: float, duration_s: float, concurrency: int = 4) -> E2EStats:
    """Orders at about `rps` for `duration_s`, bounded in count, time and concurrency."""
    duration_s = min(duration_s, LOAD_MAX_DURATION_S)
    total = min(int(rps * duration_s), LOAD_MAX_REQUESTS)
    stats, lock = E2EStats(), threading.Lock()
    started = time.monotonic()
    with ThreadPoolExecutor(min(concurrency, LOAD_MAX_CONCURRENCY)) as pool:
        for i in range(total):
            delay = started + i / rps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(e2e_request, stats, lock)
    return stats


FINGERPRINT_SCRIPT = """\
# processes, less the sessions of sshd (the sampler's own and Ansible's, kept open a while by
# ControlPersist): what a fault leaks is a process of its own
echo "processes $(for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done \\
  | grep -cvE '^sshd: [^ ]+ \\[priv\\]|^sshd: [^ ]+@')"
echo "nft_tables $(nft list tables 2>/dev/null | wc -l)"
echo "chaos_helpers $({{ pgrep -f /run/remed-chaos/; grep -lzx 'REMED_CHAOS_FAULT=.*' \\
  /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3; }} | sort -u | grep -c . || true)"
echo "stress_ng $(pgrep -c stress-ng || true)"
for d in {disk_dirs} /var/log; do
  [ -d $d ] && echo "used_kb:$d $(du -sk $d 2>/dev/null | cut -f1)"
done
echo "not_running $({not_running})"
"""


def fingerprint_script(host: str) -> str:
    """The fingerprint of one host: its tmpfs mounts' disk use, its services' manager."""
    return FINGERPRINT_SCRIPT.format(
        disk_dirs=" ".join(topo.tmpfs_of(host)),
        not_running=manager.not_running_command(topo.on_host(host)),
    )


def fingerprint(lab: Lab) -> dict[str, dict[str, int]]:
    """Per host: process count, nftables tables, chaos helpers, disk use, programs not running.
    Taken at the start and the end of a bench run, it shows whether cases leaked anything."""
    out: dict[str, dict[str, int]] = {}
    for host in topo.HOST_ADDRESSES:
        values: dict[str, int] = {}
        for line in lab.sh(host, fingerprint_script(host), check=False).stdout.splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                values[key] = int(value)
        out[host] = values
    return out
