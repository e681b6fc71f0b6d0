"""Resource faults on the service's host: a runaway CPU burner, a memory hog, an I/O storm.

Each hog is stress-ng started inside the target host (its own PID namespace), detached, with a
hard `--timeout` so that nothing outlives a forgotten cleanup for long. The checks sample the
host's own /proc: CPU %, resident memory and write rate per process.

With variants (chaos/variants.py) the hog is a renamed copy of stress-ng at a drawn path
(`hog`), run with `--keep-name` so its workers carry that name too: `ps` shows e.g.
`/srv/ops/bin/indexer --cpu 1 ...`, and the fix must kill that, not "stress-ng".
"""

from __future__ import annotations

import random
import shlex
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog

from chaos import variants
from chaos.faults.base import (
    CHAOS_DIR,
    CHAOS_ENV,
    Check,
    Fault,
    Target,
    Targets,
    sample_processes,
    top,
)
from chaos.lab.hosts import HostCommandError

log = structlog.get_logger("remed.chaos")
HOG_TIMEOUT_S = 300
HOG_START_WAIT_S = 3.0
STRESS_NG = "stress-ng"  # the hog without variants: Debian's binary on the PATH


def _spawn(stressor: str, options: str, hog: str = STRESS_NG, category: str = "hog") -> str:
    """Start `<hog> --<stressor> <options>` detached, with a hard timeout, then wait until it
    runs; exit 1 with its output when it does not. (Started blind, a hog that exited at once
    left only a confusing "not confirmed: 0 MB/s" behind.) A `hog` other than stress-ng is a
    copy of it at that path, made here, keeping its own name (`--keep-name`)."""
    name = hog.rsplit("/", 1)[-1]
    output = f"{CHAOS_DIR}/{name}-{stressor}.log"
    polls = int(HOG_START_WAIT_S / 0.1)
    keep = "" if hog == STRESS_NG else " --keep-name"
    command = f"{hog}{keep} --{stressor} {options} --timeout {HOG_TIMEOUT_S}s --quiet"
    copy = "" if hog == STRESS_NG else f"install -D -m 0755 /usr/bin/stress-ng {shlex.quote(hog)}\n"
    return (
        f"mkdir -p {CHAOS_DIR}\n{copy}"
        f"setsid nohup env {CHAOS_ENV}={category} {command} </dev/null >{output} 2>&1 &\n"
        f"running() {{ pgrep -f -- '{hog}{keep} --{stressor} ' >/dev/null; }}\n"
        # still there 0.3 s after it was first seen: not just parsing its options on the way out
        f"for _ in $(seq {polls}); do\n"
        "  if running; then sleep 0.3; running && exit 0; fi\n"
        "  sleep 0.1\n"
        "done\n"
        f"echo '{name} --{stressor} is not running; its output:' >&2\n"
        f"cat {output} >&2\n"
        "exit 1\n"
    )


def _start_hog(fault: _Hog, stressor: str, options: str) -> None:
    """Start the hog; once more if it did not come up (a lab hiccup, not the system under test)."""
    if fault.hog != STRESS_NG:
        fault.lab.remember_leftover(fault.target.host, "file", variants.helper_root(fault.hog))
    script = _spawn(stressor, options, fault.hog, fault.category)
    try:
        fault.sh(script)
    except HostCommandError as exc:
        log.warning("hog did not start; trying once more", category=fault.category, error=str(exc))
        fault.sh(script)


@dataclass
class _Hog(Fault):
    """A fault whose injection is a stress-ng hog; `hog` is the program it runs as."""

    hog: str = STRESS_NG

    def __post_init__(self) -> None:
        if self.hog != STRESS_NG:
            variants.helper_root(self.hog)  # a path in a directory of the host's own, or refused

    @classmethod
    def draw_variants(cls, r: random.Random, target: Target) -> dict[str, Any]:
        return {"hog": variants.program_path(r)}

    def kill_hog(self) -> str:
        """Kill the hog whatever its name, and remove its copy."""
        script = f"pkill -KILL -f -- {shlex.quote(self.hog)} || true\n"
        if self.hog != STRESS_NG:
            script += f"rm -rf -- {shlex.quote(variants.helper_root(self.hog))}\n"
        return script


@dataclass
class CpuStress(_Hog):
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
        self.sh(self.kill_hog())


@dataclass
class MemoryStress(_Hog):
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
        self.sh(self.kill_hog())


@dataclass
class DiskIo(_Hog):
    category: ClassVar[str] = "disk-io"
    summary: ClassVar[str] = "a process saturates writes on the service's data path"
    services: ClassVar[Targets] = Targets(lambda s: s.kind == "http")
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
        self.sh(f"{self.kill_hog()}rm -rf {self.target.svc.data}/tmp-stress-ng-*")
