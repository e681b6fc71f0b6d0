"""Resource faults on the service's host: a runaway CPU burner, a memory hog, an I/O storm.

Each hog is stress-ng started inside the target host (its own PID namespace), detached, with a
hard `--timeout` so that nothing outlives a forgotten cleanup for long. The checks sample the
host's own /proc: CPU %, resident memory and write rate per process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import structlog

from chaos.faults.base import CHAOS_DIR, Check, Fault, sample_processes, top
from chaos.lab.hosts import HostCommandError

log = structlog.get_logger("remed.chaos")
HOG_TIMEOUT_S = 300
HOG_START_WAIT_S = 3.0


def _spawn(stressor: str, options: str) -> str:
    """Start `stress-ng --<stressor> <options>` detached, with a hard timeout, then wait until it
    runs; exit 1 with its output when it does not. (Started blind, a hog that exited at once
    left only a confusing "not confirmed: 0 MB/s" behind.)"""
    output = f"{CHAOS_DIR}/stress-ng-{stressor}.log"
    polls = int(HOG_START_WAIT_S / 0.1)
    command = f"stress-ng --{stressor} {options} --timeout {HOG_TIMEOUT_S}s --quiet"
    return (
        f"mkdir -p {CHAOS_DIR}\n"
        f"setsid nohup {command} </dev/null >{output} 2>&1 &\n"
        f"running() {{ pgrep -f -- 'stress-ng --{stressor} ' >/dev/null; }}\n"
        # still there 0.3 s after it was first seen: not just parsing its options on the way out
        f"for _ in $(seq {polls}); do\n"
        "  if running; then sleep 0.3; running && exit 0; fi\n"
        "  sleep 0.1\n"
        "done\n"
        f"echo 'stress-ng --{stressor} is not running; its output:' >&2\n"
        f"cat {output} >&2\n"
        "exit 1\n"
    )


def _start_hog(fault: Fault, stressor: str, options: str) -> None:
    """Start the hog; once more if it did not come up (a lab hiccup, not the system under test)."""
    try:
        fault.sh(_spawn(stressor, options))
    except HostCommandError as exc:
        log.warning("hog did not start; trying once more", category=fault.category, error=str(exc))
        fault.sh(_spawn(stressor, options))


@dataclass
class CpuStress(Fault):
    category: ClassVar[str] = "cpu-stress"
    summary: ClassVar[str] = "a runaway process burns CPU on the service's host"
    workers: int = 1
    load_pct: int = 100
    # Low enough that a burner squeezed by a busy machine (2 shared cores) still shows.
    max_host_cpu_pct: float = 25.0

    def inject(self) -> None:
        _start_hog(self, "cpu", f"{self.workers} --cpu-load {self.load_pct}")

    def check(self) -> Check:
        rows = sample_processes(self.lab, self.target.host)
        total = sum(r["cpu_pct"] for r in rows)
        return Check(
            total < self.max_host_cpu_pct,
            f"host {self.target.host} CPU {total:.0f}% (limit {self.max_host_cpu_pct:.0f}%)",
            top(rows, "cpu_pct"),
        )

    def cleanup(self) -> None:
        self.sh("pkill -KILL -f stress-ng || true")


@dataclass
class MemoryStress(Fault):
    category: ClassVar[str] = "memory-stress"
    summary: ClassVar[str] = "a process hogs memory on the service's host"
    size_mb: int = 600
    max_host_rss_mb: float = 400.0

    def inject(self) -> None:
        _start_hog(self, "vm", f"1 --vm-bytes {self.size_mb}M --vm-keep --vm-hang 0")
        time.sleep(0.7)  # let it touch its memory before the first check

    def check(self) -> Check:
        rows = sample_processes(self.lab, self.target.host, interval_s=0.1)
        total = sum(r["rss_mb"] for r in rows)
        return Check(
            total < self.max_host_rss_mb,
            f"host {self.target.host} resident memory {total:.0f} MiB "
            f"(limit {self.max_host_rss_mb:.0f} MiB)",
            top(rows, "rss_mb"),
        )

    def cleanup(self) -> None:
        self.sh("pkill -KILL -f stress-ng || true")


@dataclass
class DiskIo(Fault):
    category: ClassVar[str] = "disk-io"
    summary: ClassVar[str] = "a process saturates writes on the service's data path"
    services: ClassVar[tuple[str, ...]] = ("catalog", "cart", "checkout")
    max_write_mb_s: float = 50.0

    def inject(self) -> None:
        path = self.target.svc.data
        _start_hog(self, "hdd", f"1 --hdd-bytes 48M --temp-path {path}")

    def check(self) -> Check:
        rows = sample_processes(self.lab, self.target.host)
        total = sum(r["write_mb_s"] for r in rows)
        return Check(
            total < self.max_write_mb_s,
            f"host {self.target.host} writes {total:.0f} MB/s "
            f"(limit {self.max_write_mb_s:.0f} MB/s)",
            top(rows, "write_mb_s"),
        )

    def cleanup(self) -> None:
        # stress-ng names its scratch directories tmp-stress-ng-<stressor>-<pid>-<n>
        self.sh(f"pkill -KILL -f stress-ng || true\nrm -rf {self.target.svc.data}/tmp-stress-ng-*")
