"""Network faults inside the target host's own network namespace.

- network-loss: an nftables rule in the host's netns drops a share of the packets arriving on
  the service's port.
- network-delay: this kernel has no netem, so latency is injected at the transport level: an
  nftables `redirect` in the host's netns sends new connections for the service's port to a
  small TCP proxy on port+10000 in the same host, which forwards to the service on loopback and
  holds every chunk it relays for `delay_ms`. Clients (nginx, other services, probes) see the
  service answer `delay_ms` or more later; remove the redirect rule (and the proxy) to fix.

Both checks measure from outside: repeated short requests to the service's port.
"""

from __future__ import annotations

import socket
import statistics
import time
import urllib.error
from dataclasses import dataclass
from typing import ClassVar

from chaos.faults.base import Check, Fault
from chaos.lab import probes

PROBE_TIMEOUT_S = 0.5
DELAY_PROXY_PORT_OFFSET = 10000
LOSS_TABLE = "chaos_loss"  # inet table holding the drop rule
DELAY_TABLE = "chaos_delay"  # ip nat table holding the redirect to the proxy

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
                else:  # postgres: an SSLRequest gets a one-byte answer
                    sock.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
                    if not sock.recv(1):
                        return None
    except (OSError, urllib.error.URLError):
        return None
    return (time.monotonic() - started) * 1000


@dataclass
class NetworkLoss(Fault):
    category: ClassVar[str] = "network-loss"
    summary: ClassVar[str] = "packets to the service's port are dropped on its host"
    loss_pct: int = 60
    probes: int = 10

    def inject(self) -> None:
        port = self.target.svc.port
        self.sh(
            f"nft add table inet {LOSS_TABLE}\n"
            f"nft add chain inet {LOSS_TABLE} input '{{ type filter hook input priority 0; }}'\n"
            f"nft add rule inet {LOSS_TABLE} input tcp dport {port} "
            f"numgen random mod 100 lt {self.loss_pct} drop\n"
        )

    def check(self) -> Check:
        svc = self.target.svc
        sent = failed = 0
        while sent < self.probes and failed < 2:  # two losses are proof enough
            sent += 1
            failed += _probe_once(svc.address, svc.port, svc.health, PROBE_TIMEOUT_S) is None
        return Check(
            failed == 0,
            f"{failed}/{sent} requests to {svc.address}:{svc.port} failed "
            f"(timeout {PROBE_TIMEOUT_S}s)",
        )

    def cleanup(self) -> None:
        self.sh(f"nft delete table inet {LOSS_TABLE} 2>/dev/null || true")


@dataclass
class NetworkDelay(Fault):
    category: ClassVar[str] = "network-delay"
    summary: ClassVar[str] = "requests to the service are delayed on its host"
    delay_ms: int = 300
    max_p50_ms: float = 120.0
    probes: int = 5

    def inject(self) -> None:
        port = self.target.svc.port
        proxy_port = port + DELAY_PROXY_PORT_OFFSET
        path = self.write_helper("delay_proxy.py", DELAY_PROXY)
        self.sh(
            f"setsid nohup /usr/bin/python3 {path} {proxy_port} {port} {self.delay_ms} "
            "</dev/null >/dev/null 2>&1 &\n"
            f"for i in $(seq 50); do ss -ltnH 'sport = :{proxy_port}' | grep -q . && break; "
            "sleep 0.05; done\n"
            f"nft add table ip {DELAY_TABLE}\n"
            f"nft add chain ip {DELAY_TABLE} prerouting "
            "'{ type nat hook prerouting priority dstnat; }'\n"
            f"nft add rule ip {DELAY_TABLE} prerouting tcp dport {port} redirect to :{proxy_port}\n"
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
        return Check(
            p50 < self.max_p50_ms,
            f"median latency of {svc.address}:{svc.port} is {p50:.0f} ms "
            f"(limit {self.max_p50_ms:.0f} ms)",
        )

    def cleanup(self) -> None:
        self.sh(
            f"nft delete table ip {DELAY_TABLE} 2>/dev/null || true\n"
            "pkill -KILL -f /run/remed-chaos/delay_proxy.py || true\n"
        )
