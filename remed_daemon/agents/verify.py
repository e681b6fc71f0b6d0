"""Did the fix work? Category-aware checks over SSH plus the service's own health probe, held
for a stabilisation window.

A verification passes only when every check passes and keeps passing for `stable_s`; it fails
when that has not happened within `window_s`. The checks (each becomes one entry of the
outcome's `verification.checks`, and their details are the evidence reflection gives the next
plan):
- `service-running`: supervisord (or systemd) says the program is running;
- `port-listening`: something listens on the service's port on its host;
- `health`: the service's health endpoint answers from outside (HTTP 200 on `/health`, Redis
  PONG, a PostgreSQL TCP accept), timed by the daemon, not by the host;
- the category's own check, read from the host's /proc and file systems (CPU, resident memory,
  write rate, log volume, dependency reachability);
- `verify-command`: the operator's read-only command, when configured.

The chaos lab's verifier (fault-specific, with the shop's steady state) plugs in through
`CallableVerifier` where a fault object is at hand (the benchmark's in-process runs).
"""

from __future__ import annotations

import asyncio
import json
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from remed_daemon.agents.redact import scrub
from remed_daemon.agents.ssh import HostAccess, HostUnreachable
from remed_daemon.agents.topology import ServiceFacts

DETAIL_CHARS = 600

# The host-wide thresholds a category's symptom must be below (the chaos lab's defaults).
MAX_HOST_CPU_PCT = 50.0
MAX_HOST_RSS_MB = 400.0
MAX_HOST_WRITE_MB_S = 50.0
MAX_LOG_FS_USED_PCT = 90

SAMPLE = r"""
import json, os, sys, time
def snap():
    out = {}
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            stat = open('/proc/%s/stat' % pid).read().rsplit(')', 1)[1].split()
            io = dict(l.split(': ') for l in open('/proc/%s/io' % pid).read().splitlines())
            cmd = open('/proc/%s/cmdline' % pid).read().replace('\0', ' ').strip()[:80]
            out[pid] = (int(stat[11]) + int(stat[12]), int(io['wchar']),
                        int(stat[21]) * os.sysconf('SC_PAGE_SIZE') / 1048576.0, cmd)
        except (OSError, ValueError, IndexError, KeyError):
            pass
    return out
iv = 0.5
a = snap(); time.sleep(iv); b = snap(); hz = os.sysconf('SC_CLK_TCK')
rows = []
for pid, (t, w, rss, cmd) in b.items():
    t0, w0 = a.get(pid, (t, w))[:2]
    rows.append((100.0 * (t - t0) / hz / iv, (w - w0) / 1048576.0 / iv, rss, pid, cmd))
def top(i):
    return ['pid %s %.1f %s' % (r[3], r[i], r[4]) for r in sorted(rows, key=lambda r: -r[i])[:3]]
print(json.dumps({'cpu': sum(r[0] for r in rows), 'write': sum(r[1] for r in rows),
                  'rss': sum(r[2] for r in rows), 'top_cpu': top(0), 'top_write': top(1),
                  'top_rss': top(2)}))
"""


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str

    def doc(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": scrub(self.detail, 4000)}


class Verifier(Protocol):
    async def verify(self, facts: ServiceFacts, category: str) -> dict[str, Any]: ...


class HostVerifier:
    def __init__(
        self,
        hosts: HostAccess,
        *,
        window_s: float = 30.0,
        stable_s: float = 3.0,
        interval_s: float = 1.0,
        timeout_s: float = 10.0,
        verify_command: str = "",
    ) -> None:
        self.hosts = hosts
        self.window_s = window_s
        self.stable_s = stable_s
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.verify_command = verify_command

    async def verify(self, facts: ServiceFacts, category: str) -> dict[str, Any]:
        started = time.monotonic()
        passing_since: float | None = None
        while True:
            checks = await self.round(facts, category)
            now = time.monotonic()
            ok = all(c.passed for c in checks)
            passing_since = (passing_since or now) if ok else None
            if passing_since is not None and now - passing_since >= self.stable_s:
                return {"passed": True, "checks": [c.doc() for c in checks]}
            if now - started >= self.window_s:
                if ok:  # passing, but not yet for stable_s
                    held = now - (passing_since or now)
                    detail = f"passing for {held:.1f}s of the {self.stable_s:.1f}s required"
                    checks.append(CheckResult("stable", False, detail))
                return {"passed": False, "checks": [c.doc() for c in checks]}
            await asyncio.sleep(self.interval_s)

    async def round(self, facts: ServiceFacts, category: str) -> list[CheckResult]:
        jobs: list[Awaitable[CheckResult]] = [self._running(facts)]
        if facts.port:
            jobs.append(self._listening(facts))
        if facts.health:
            jobs.append(self._health(facts))
        jobs.extend(self._category(facts, category))
        if self.verify_command:
            jobs.append(self._command(facts))
        return list(await asyncio.gather(*jobs))

    async def _sh(self, facts: ServiceFacts, command: str) -> tuple[int, str]:
        try:
            res = await self.hosts.run(facts.host, command, timeout_s=self.timeout_s)
        except HostUnreachable as exc:
            return 255, str(exc)
        return res.exit_status, (res.text + res.err).strip()

    async def _running(self, facts: ServiceFacts) -> CheckResult:
        _code, out = await self._sh(
            facts,
            f"sudo -n supervisorctl status {shlex.quote(facts.program)} 2>&1 || "
            f"systemctl is-active -- {shlex.quote(facts.name)} 2>&1",
        )
        words = out.split()
        ok = (len(words) > 1 and words[1] == "RUNNING") or out.strip() == "active"
        return CheckResult("service-running", ok, out[:DETAIL_CHARS])

    async def _listening(self, facts: ServiceFacts) -> CheckResult:
        port = int(facts.port or 0)
        _code, out = await self._sh(facts, "ss -ltnH 2>&1")
        ok = any(
            line.split()[3].rsplit(":", 1)[-1] == str(port)
            for line in out.splitlines()
            if len(line.split()) > 3
        )
        return CheckResult("port-listening", ok, f"port {port} {'is' if ok else 'is not'} "
                           "listening on " + facts.host)  # fmt: skip

    async def _health(self, facts: ServiceFacts) -> CheckResult:
        t0 = time.monotonic()
        try:
            if facts.health == "http":
                timeout = aiohttp.ClientTimeout(total=self.timeout_s / 2)
                async with (
                    aiohttp.ClientSession(timeout=timeout) as session,
                    session.get(facts.health_url) as resp,
                ):
                    body = (await resp.content.read(300)).decode("utf-8", "replace")
                    ok = resp.status == 200
                    detail = f"GET {facts.health_url} → {resp.status} {body}"
            else:
                async with asyncio.timeout(self.timeout_s / 2):
                    reader, writer = await asyncio.open_connection(
                        facts.address, int(facts.port or 0)
                    )
                try:
                    if facts.health == "redis":
                        writer.write(b"PING\r\n")
                        await writer.drain()
                        async with asyncio.timeout(self.timeout_s / 2):
                            reply = await reader.read(64)
                        ok, detail = reply.startswith(b"+PONG"), f"redis PING → {reply!r}"
                    else:
                        ok, detail = True, f"{facts.address}:{facts.port} accepts connections"
                finally:
                    writer.close()
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            ok, detail = False, f"{facts.name} health: {type(exc).__name__}: {exc}"
        ms = (time.monotonic() - t0) * 1000
        return CheckResult("health", ok, f"{detail[:DETAIL_CHARS]} ({ms:.0f} ms)")

    def _category(self, facts: ServiceFacts, category: str) -> list[Awaitable[CheckResult]]:
        if category in ("cpu-stress", "memory-stress", "disk-io"):
            return [self._resources(facts, category)]
        if category == "log-flood" and facts.log:
            return [self._log_fs(facts)]
        if category in ("dependency-down", "network-loss", "network-delay") and facts.depends_on:
            return [self._deps(facts)]
        return []

    async def _resources(self, facts: ServiceFacts, category: str) -> CheckResult:
        _code, out = await self._sh(facts, f"python3 -c {shlex.quote(SAMPLE)}")
        try:
            s = json.loads(out.splitlines()[-1])
        except (ValueError, IndexError):
            return CheckResult(category, False, f"could not sample the host: {out[:300]}")
        key, limit, unit, top = {
            "cpu-stress": ("cpu", MAX_HOST_CPU_PCT, "% CPU", "top_cpu"),
            "memory-stress": ("rss", MAX_HOST_RSS_MB, " MiB resident", "top_rss"),
            "disk-io": ("write", MAX_HOST_WRITE_MB_S, " MB/s written", "top_write"),
        }[category]
        value = float(s[key])
        return CheckResult(
            f"{category}-below-limit",
            value < limit,
            f"host {facts.host}: {value:.0f}{unit} (limit {limit:.0f}); top: "
            + "; ".join(s[top]),
        )

    async def _log_fs(self, facts: ServiceFacts) -> CheckResult:
        log_dir = facts.log.rsplit("/", 1)[0] or "/"
        _code, out = await self._sh(
            facts, f"df --output=pcent -- {shlex.quote(log_dir)} | tail -n 1"
        )
        try:
            used = int(out.strip().rstrip("%"))
        except ValueError:
            return CheckResult("log-space", False, out[:300])
        ok = used < MAX_LOG_FS_USED_PCT
        return CheckResult("log-space", ok, f"{log_dir} is {used}% full")

    async def _deps(self, facts: ServiceFacts) -> CheckResult:
        script = "; ".join(
            f"timeout 2 bash -c {shlex.quote(f'</dev/tcp/{d.address}/{int(d.port)}')} "
            f"2>/dev/null && echo {shlex.quote(f'{d.name} ok')} "
            f"|| echo {shlex.quote(f'{d.name} UNREACHABLE')}"
            for d in facts.depends_on
        )
        code, out = await self._sh(facts, script)
        return CheckResult("dependencies-reachable", "UNREACHABLE" not in out and code == 0,
                           out[:DETAIL_CHARS])  # fmt: skip

    async def _command(self, facts: ServiceFacts) -> CheckResult:
        code, out = await self._sh(facts, self.verify_command)
        return CheckResult("verify-command", code == 0, f"exit {code}: {out[-DETAIL_CHARS:]}")


class CallableVerifier:
    """Wraps a blocking `fn(facts, category) -> (ok, detail)` (e.g. a chaos fault's
    `verify()`), run in a worker thread, as one check named `name`."""

    def __init__(
        self, fn: Callable[[ServiceFacts, str], tuple[bool, str]], name: str = "chaos-verify"
    ) -> None:
        self.fn = fn
        self.name = name

    async def verify(self, facts: ServiceFacts, category: str) -> dict[str, Any]:
        ok, detail = await asyncio.to_thread(self.fn, facts, category)
        return {"passed": ok, "checks": [CheckResult(self.name, ok, detail).doc()]}
