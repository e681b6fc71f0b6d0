"""The shape of a fault: inject → confirm → (remediation) → verify, and cleanup that always runs.

A fault is a dataclass: the target plus its typed parameters (the scenario's `fault:` mapping).
`check()` is the category's health check, read from the system (processes, sockets, files,
HTTP answers); it passes when the category's symptom is absent. `confirm()` wants it to fail
after injection, `verify()` wants it to pass again together with the shop's steady-state probe.
Neither ever reads what `inject()` remembered: deleting a marker cannot count as a fix.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shlex
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from chaos.lab import manager, probes
from chaos.lab import topology as topo
from chaos.lab.hosts import Lab

CONFIRM_WINDOW_S = 6.0
VERIFY_WINDOW_S = 8.0
POLL_INTERVAL_S = 0.3
CHAOS_DIR = "/run/remed-chaos"
# Every process a fault starts carries this in its environment (inherited by its children), so
# a reset finds them whatever name a variant gave them, and a probe's `ps` does not show it.
CHAOS_ENV = "REMED_CHAOS_FAULT"


class Targets:
    """A category's `services`: those of the active system it applies to, chosen by `pick`
    (a service kind, or a property the topology knows), computed when read, so the catalog
    follows `topology.use(FILE)`."""

    def __init__(self, pick: Callable[[topo.Service], bool], *, order: tuple[str, ...] = ()):
        self.pick = pick
        self.order = order  # kinds listed first, in this order

    def __get__(self, obj: object, owner: type | None = None) -> tuple[str, ...]:
        chosen = [s for s in topo.SERVICES.values() if self.pick(s)]
        rank = {kind: i for i, kind in enumerate(self.order)}
        chosen.sort(key=lambda s: rank.get(s.kind, len(rank)))
        return tuple(s.name for s in chosen)


class FaultError(ValueError):
    """A scenario asks for a fault that cannot be built (unknown category, bad target/params)."""


@dataclass(frozen=True)
class Target:
    host: str
    service: str

    @property
    def svc(self) -> topo.Service:
        return topo.service(self.service)


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str
    evidence: tuple[str, ...] = ()
    elapsed_s: float = 0.0


@dataclass
class Fault(ABC):
    """One injected failure on one target. Subclasses add their parameters as fields."""

    category: ClassVar[str]
    summary: ClassVar[str]
    services: ClassVar[Targets] = Targets(lambda s: True)

    target: Target
    lab: Lab = field(repr=False, compare=False)

    # -- subclass API ----------------------------------------------------------------------

    @abstractmethod
    def inject(self) -> None: ...

    @abstractmethod
    def check(self) -> Check: ...

    @abstractmethod
    def cleanup(self) -> None: ...

    @classmethod
    def draw_variants(cls, r: random.Random, target: Target) -> dict[str, Any]:
        """The names this category's injection uses, drawn from `r` (chaos/variants.py).
        Categories with nothing to vary keep the default."""
        return {}

    # -- shared ------------------------------------------------------------------------------

    def spawn(self, command: str) -> str:
        """A shell line starting `command` detached, marked as chaos (CHAOS_ENV)."""
        return (
            f"setsid nohup env {CHAOS_ENV}={self.category} {command} "
            "</dev/null >/dev/null 2>&1 &\n"
        )

    def params(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("target", "lab")
        }

    def confirm(self, window_s: float = CONFIRM_WINDOW_S) -> Check:
        """The category check must fail after injection (else the case leaves the denominator)."""
        started = time.monotonic()
        while True:
            result = self.check()
            if not result.ok or time.monotonic() - started > window_s:
                return dataclasses.replace(
                    result, ok=not result.ok, elapsed_s=time.monotonic() - started
                )
            time.sleep(POLL_INTERVAL_S)

    def verify(self, window_s: float = VERIFY_WINDOW_S) -> Check:
        """Recovered: the category check passes and the system's steady state holds."""
        started = time.monotonic()
        while True:
            result = self.check()
            state = probes.steady_state() if result.ok else None
            if result.ok and state is not None and state.ok:
                detail = f"{result.detail}; {topo.SYSTEM.name} {state.detail}"
                return Check(True, detail, result.evidence, time.monotonic() - started)
            if time.monotonic() - started > window_s:
                detail = result.detail
                if state is not None:
                    detail = f"{topo.SYSTEM.name} not steady: {state.detail}"
                return Check(False, detail, result.evidence, time.monotonic() - started)
            time.sleep(POLL_INTERVAL_S)

    # -- helpers for subclasses ---------------------------------------------------------------

    def sh(self, script: str, *, host: str | None = None, check: bool = True) -> str:
        return self.lab.sh(host or self.target.host, script, check=check).stdout

    def program_state(self, svc: topo.Service | None = None) -> str:
        """The service's state in supervisord's words (RUNNING, STOPPED, FATAL, ...), whatever
        its manager (chaos/lab/manager.py)."""
        svc = svc or self.target.svc
        return manager.state(svc, self.sh(manager.state_command(svc), host=svc.host))

    def ctl(self, action: str, svc: topo.Service | None = None) -> str:
        """The shell line for `action` (start, stop, restart) of a service by its manager."""
        return manager.ctl(svc or self.target.svc, action)

    def write_helper(
        self, name: str, content: str | bytes, host: str | None = None
    ) -> str:
        """Put a helper into the host: `name` is a file in /run/remed-chaos or, for a variant,
        an absolute path (in a directory each host has its own copy of); returns its path."""
        host = host or self.target.host
        path = name if name.startswith("/") else f"{CHAOS_DIR}/{name}"
        if not path.startswith(CHAOS_DIR + "/"):
            self.lab.remember_leftover(host, "file", helper_root(path))
        local = self.lab.host_root(host) / path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            local.write_bytes(content)
        else:
            local.write_text(content)
        local.chmod(0o755)
        return path

    def remove_helper(self, path: str, host: str | None = None) -> str:
        """Shell lines removing a variant helper and the directory drawn for it."""
        if path.startswith(CHAOS_DIR + "/") or not path.startswith("/"):
            return ""
        return f"rm -rf -- {shlex.quote(helper_root(path))}\n"

    def functional(self, name: str | None = None) -> Check:
        """The service does its job: health for the shop services and stores, a proxied
        request for nginx."""
        name = name or self.target.service
        svc = topo.service(name)
        if svc.kind == "nginx":
            first = next(iter(svc.depends_on), "")
            url = topo.http_base(svc) + (f"/api/{first}/health" if first else "/health")
            try:
                status, body = probes.http_get(url, probes.HEALTH_TIMEOUT_S)
            except OSError as exc:
                return Check(False, f"{name}: {url}: {exc}")
            return Check(status == 200, f"{name}: GET {url} → {status} {body[:160]}")
        health = probes.service_health(name)
        return Check(health.ok, f"{name}: {health.detail}")

    def running_and_functional(self) -> Check:
        state = self.program_state()
        if state != "RUNNING":
            svc = self.target.svc
            return Check(False, f"{manager.unit(svc)} is {state} under {svc.manager}")
        return self.functional()


def helper_root(path: str) -> str:
    """What to remove for a variant helper: the directory drawn for it (`/srv/ops/bin/x` →
    `/srv/ops`), or the file itself when it lies straight in a shared directory."""
    from chaos.variants import helper_root as root

    return root(path)


def sample_processes(lab: Lab, host: str, interval_s: float = 0.5) -> list[dict[str, Any]]:
    """Per-process CPU %, RSS and write rate on `host`, from its own /proc, over `interval_s`."""
    script = f"""/usr/bin/python3 - <<'PY'
import json, os, time
def snap():
    out = {{}}
    for pid in os.listdir('/proc'):
        if not pid.isdigit() or int(pid) == os.getpid():  # not the sampler itself
            continue
        try:
            stat = open(f'/proc/{{pid}}/stat').read().rsplit(')', 1)[1].split()
            io = dict(l.split(': ') for l in open(f'/proc/{{pid}}/io').read().splitlines())
            cmd = open(f'/proc/{{pid}}/cmdline').read().replace('\\0', ' ').strip()
            rss = int(stat[21]) * os.sysconf('SC_PAGE_SIZE') // 1024
            out[pid] = (int(stat[11]) + int(stat[12]), int(io['wchar']), rss, cmd)
        except (OSError, ValueError, IndexError, KeyError):
            pass
    return out
a = snap(); time.sleep({interval_s}); b = snap()
hz = os.sysconf('SC_CLK_TCK')
rows = []
for pid, (ticks, wchar, rss, cmd) in b.items():
    t0, w0 = a.get(pid, (ticks, wchar, 0, ''))[:2]
    rows.append({{'pid': int(pid), 'cmd': cmd[:120], 'rss_mb': rss / 1024,
                 'cpu_pct': 100.0 * (ticks - t0) / hz / {interval_s},
                 'write_mb_s': (wchar - w0) / 1048576 / {interval_s}}})
print(json.dumps(rows))
PY
"""
    rows: list[dict[str, Any]] = json.loads(lab.sh(host, script).stdout)
    return rows


def top(rows: list[dict[str, Any]], key: str, n: int = 3) -> tuple[str, ...]:
    ordered = sorted(rows, key=lambda r: r[key], reverse=True)[:n]
    return tuple(f"pid {r['pid']} {key}={r[key]:.1f} {r['cmd']}" for r in ordered)


def build(
    cls: type[Fault], target: Target, params: Mapping[str, Any] | None, lab: Lab,
    *, seed: str | None = None,
) -> Fault:  # fmt: skip
    """The fault for `target`. With a `seed`, the names its injection uses are drawn from it
    (`cls.draw_variants`); parameters given in `params` win over drawn ones."""
    names = {f.name for f in dataclasses.fields(cls)} - {"target", "lab"}
    unknown = set(params or {}) - names
    if unknown:
        raise FaultError(
            f"{cls.category}: unknown fault parameter(s) {sorted(unknown)}; "
            f"known: {sorted(names)}"
        )
    if target.service not in cls.services:
        raise FaultError(
            f"{cls.category} cannot target {target.service}; it applies to {list(cls.services)}"
        )
    if topo.service(target.service).host != target.host:
        raise FaultError(
            f"{target.service} runs on host {topo.service(target.service).host}, "
            f"not {target.host} (see chaos/README.md)"
        )
    values = dict(params or {})
    if seed is not None:
        from chaos import variants

        drawn = cls.draw_variants(variants.rng(seed, cls.category, target.service), target)
        values = variants.merge(drawn, values)
    return cls(target=target, lab=lab, **values)
