"""Network faults inside the target host's own network namespace.

- network-loss: an nftables rule in the host's netns drops a share of the packets arriving on
  the service's port.
- network-delay: this kernel has no netem, so latency is injected at the transport level: an
  nftables `redirect` in the host's netns sends new connections for the service's port to a
  small TCP proxy on port+10000 in the same host, which forwards to the service on loopback and
  holds every chunk it relays for `delay_ms`. Clients (nginx, other services, probes) see the
  service answer `delay_ms` or more later; remove the redirect rule (and the proxy) to fix.

Both checks measure from outside: repeated short requests to the service's port; when they
fail, the evidence is what `nft list ruleset` on the host says about that port (the table and
chain holding the rule), read from the host, not remembered from the injection. With variants
(chaos/variants.py) the table, the chain, the proxy's path and its port are drawn per case.
"""

from __future__ import annotations

import random
import re
import shlex
import socket
import statistics
import time
import urllib.error
from dataclasses import dataclass
from typing import Any, ClassVar

from chaos import variants
from chaos.faults.base import CHAOS_DIR, Check, Fault, Target
from chaos.lab import probes

PROBE_TIMEOUT_S = 0.5
DELAY_PROXY_PORT_OFFSET = 10000
LOSS_TABLE = "chaos_loss"  # inet table holding the drop rule (without variants)
LOSS_CHAIN = "input"
DELAY_TABLE = "chaos_delay"  # ip nat table holding the redirect to the proxy (without variants)
DELAY_CHAIN = "prerouting"
DELAY_PROXY_PATH = f"{CHAOS_DIR}/delay_proxy.py"

DELAY_PROXY = """\
#!/usr/bin/python3
# TCP proxy that delays each relayed chunk (chaos lab network-delay fault).
import asyncio, sys

listen_port, target_port, delay_s = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) / 1000


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            await asyncio.sleep(delay_s)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def handle(client_r, client_w):
    try:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))


async def main():
    server = await asyncio.start_server(handle, "0.0.0.0", listen_port)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


def _probe_once(address: str, port: int, kind: str, timeout_s: float) -> float | None:
    """One request to the service; its latency in ms, or None when it failed."""
    started = time.monotonic()
    try:
        if kind == "http":
            probes.http_get(f"http://{address}:{port}/health", timeout_s)  # any answer counts
        else:
            with socket.create_connection((address, port), timeout=timeout_s) as sock:
                sock.settimeout(timeout_s)
                if kind == "redis":
                    sock.sendall(b"PING\r\n")
                    if not sock.recv(16):
                        return None
                elif kind == "memcached":
                    sock.sendall(b"version\r\n")
                    if not sock.recv(64):
                        return None
                else:  # postgres: an SSLRequest gets a one-byte answer
                    sock.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
                    if not sock.recv(1):
                        return None
    except (OSError, urllib.error.URLError):
        return None
    return (time.monotonic() - started) * 1000


def ruleset_evidence(fault: Fault, port: int) -> tuple[str, ...]:
    """The rules on the host that mention `port`, each with its table and chain, as
    `nft list ruleset` shows them."""
    out = fault.sh("nft list ruleset 2>&1 || true", check=False)
    found, table, chain = [], "", ""
    for line in out.splitlines():
        text = line.strip()
        if m := re.match(r"table (\S+ \S+) \{", text):
            table = m.group(1)
        elif m := re.match(r"chain (\S+) \{", text):
            chain = m.group(1)
        elif re.search(rf"\bdport {port}\b", text):
            found.append(f"nft: table {table} chain {chain}: {text}")
    return tuple(found[:6]) or (f"nft list ruleset: no rule mentions port {port}",)


def _nft_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,30}", text):
        raise ValueError(f"not an nftables table/chain name: {text!r}")
    return text


@dataclass
class NetworkLoss(Fault):
    category: ClassVar[str] = "network-loss"
    summary: ClassVar[str] = "packets to the service's port are dropped on its host"
    loss_pct: int = 60
    probes: int = 10
    table: str = LOSS_TABLE
    chain: str = LOSS_CHAIN

    def __post_init__(self) -> None:
        _nft_name(self.table), _nft_name(self.chain)

    @classmethod
    def draw_variants(cls, r: random.Random, target: Target) -> dict[str, Any]:
        return {"table": variants.table_name(r), "chain": variants.chain_name(r)}

    def inject(self) -> None:
        port, table, chain = self.target.svc.port, self.table, self.chain
        if table != LOSS_TABLE:
            self.lab.remember_leftover(self.target.host, "nft", f"inet {table}")
        self.sh(
            f"nft add table inet {table}\n"
            f"nft add chain inet {table} {chain} '{{ type filter hook input priority 0; }}'\n"
            f"nft add rule inet {table} {chain} tcp dport {port} "
            f"numgen random mod 100 lt {self.loss_pct} drop\n"
        )

    def check(self) -> Check:
        svc = self.target.svc
        sent = failed = 0
        while sent < self.probes and failed < 2:  # two losses are proof enough
            sent += 1
            failed += _probe_once(svc.address, svc.port, svc.health, PROBE_TIMEOUT_S) is None
        evidence = ruleset_evidence(self, svc.port) if failed else ()
        return Check(
            failed == 0,
            f"{failed}/{sent} requests to {svc.address}:{svc.port} failed "
            f"(timeout {PROBE_TIMEOUT_S}s)",
            evidence,
        )

    def cleanup(self) -> None:
        self.sh(f"nft delete table inet {self.table} 2>/dev/null || true")


@dataclass
class NetworkDelay(Fault):
    category: ClassVar[str] = "network-delay"
    summary: ClassVar[str] = "requests to the service are delayed on its host"
    delay_ms: int = 300
    max_p50_ms: float = 120.0
    probes: int = 5
    table: str = DELAY_TABLE
    chain: str = DELAY_CHAIN
    proxy: str = DELAY_PROXY_PATH
    proxy_port: int = 0  # 0: the service's port + DELAY_PROXY_PORT_OFFSET

    def __post_init__(self) -> None:
        _nft_name(self.table), _nft_name(self.chain)
        if not self.proxy_port:
            self.proxy_port = self.target.svc.port + DELAY_PROXY_PORT_OFFSET

    @classmethod
    def draw_variants(cls, r: random.Random, target: Target) -> dict[str, Any]:
        from chaos.lab import topology as topo

        taken = {s.port for s in topo.SERVICES.values() if s.host == target.host}
        return {
            "table": variants.table_name(r), "chain": variants.chain_name(r),
            "proxy": variants.script_path(r, r.choice((".py", ""))),
            "proxy_port": variants.port(r, taken),
        }  # fmt: skip

    def inject(self) -> None:
        port, proxy_port, table, chain = (
            self.target.svc.port, self.proxy_port, self.table, self.chain
        )
        if table != DELAY_TABLE:
            self.lab.remember_leftover(self.target.host, "nft", f"ip {table}")
        path = self.write_helper(self.proxy, DELAY_PROXY)
        self.sh(
            self.spawn(f"/usr/bin/python3 {shlex.quote(path)} {proxy_port} {port} {self.delay_ms}")
            + f"for i in $(seq 50); do ss -ltnH 'sport = :{proxy_port}' | grep -q . && break; "
            "sleep 0.05; done\n"
            f"nft add table ip {table}\n"
            f"nft add chain ip {table} {chain} "
            "'{ type nat hook prerouting priority dstnat; }'\n"
            f"nft add rule ip {table} {chain} tcp dport {port} redirect to :{proxy_port}\n"
        )

    def check(self) -> Check:
        svc = self.target.svc
        results = [
            _probe_once(svc.address, svc.port, svc.health, 3.0) for _ in range(self.probes)
        ]
        ok = [r for r in results if r is not None]
        if not ok:
            return Check(False, f"no answer from {svc.address}:{svc.port}")
        p50 = statistics.median(ok)
        slow = p50 >= self.max_p50_ms
        evidence: tuple[str, ...] = ()
        if slow:
            evidence = ruleset_evidence(self, svc.port)
            redirected = re.findall(r"redirect to :(\d+)", " ".join(evidence))
            for to in redirected[:2]:
                listener = self.sh(f"ss -ltnpH 'sport = :{to}' || true", check=False).strip()
                evidence += (f"ss: port {to}: {listener or 'nothing listens'}",)
                for pid in re.findall(r"pid=(\d+)", listener)[:1]:
                    args = self.sh(f"ps -o args= -p {pid} || true", check=False).strip()
                    evidence += (f"ps: pid {pid}: {args}",)
        return Check(
            not slow,
            f"median latency of {svc.address}:{svc.port} is {p50:.0f} ms "
            f"(limit {self.max_p50_ms:.0f} ms)",
            evidence,
        )

    def cleanup(self) -> None:
        self.sh(
            f"nft delete table ip {self.table} 2>/dev/null || true\n"
            f"pkill -KILL -f -- {shlex.quote(self.proxy)} || true\n"
            + self.remove_helper(self.proxy)
        )
