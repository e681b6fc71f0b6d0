#!/usr/bin/python3
"""The lab's HTTP services (the shop's catalog, cart, checkout, and any system's `http`
services): one stdlib file, deployed per service.

Run by Debian's /usr/bin/python3 under the host's supervisord or systemd, never by remed's venv:

    /usr/bin/python3 <deploy>/current/shop.py --service <name> --config <config>

The config (INI) names the service's role, its stores ([postgres], [redis], [memcached]) and the
HTTP services it calls ([upstreams] name = URL). GET /health checks every store and upstream it
has. What the other endpoints do is the role's:

- catalog  GET /items, GET /items/<id>                            (PostgreSQL)
- cart     GET /cart/<user>, POST|GET /cart/<user>/add?item=<id>  (Redis)
- checkout GET|POST /order?user=<u>&item=<id>   (catalog + cart over HTTP, the order row into
           PostgreSQL)
- generic  GET|POST /request?user=<u>&item=<id>: a row into PostgreSQL, a counter in Redis
           and in memcached (those it has), then the same request to every upstream

Every request appends a line to the service's log file; a log that cannot be written (disk
full, wrong permissions) makes the request fail with 507, as a service that cannot audit its
writes should. A missing or unreadable config file stops the service at start.
"""

from __future__ import annotations

import argparse
import configparser
import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

VERSION = "1.4.2"
UPSTREAM_TIMEOUT_S = 2.0
DB_CONNECT_TIMEOUT_S = 2
REDIS_TIMEOUT_S = 1.0
MEMCACHED_TIMEOUT_S = 1.0
SHOP_ROLES = ("catalog", "cart", "checkout")


class Unavailable(Exception):
    """A dependency failed; the request answers 503 with the reason."""


class Shop:
    def __init__(self, service: str, config: configparser.ConfigParser) -> None:
        self.service = service
        self.config = config
        default_role = service if service in SHOP_ROLES else "generic"
        self.role = config.get("service", "role", fallback=default_role)
        self.log_path = config.get("log", "path")
        self._log_lock = threading.Lock()
        self._redis: Any = None

    # -- dependencies -------------------------------------------------------------------------

    def pg(self) -> Any:
        import psycopg2

        section = self.config["postgres"]
        try:
            return psycopg2.connect(
                host=section["host"],
                port=int(section["port"]),
                user=section["user"],
                password=section["password"],
                dbname=section["dbname"],
                connect_timeout=DB_CONNECT_TIMEOUT_S,
                application_name=self.service,
            )
        except psycopg2.Error as exc:
            raise Unavailable(f"postgresql: {str(exc).strip()}") from exc

    def redis(self) -> Any:
        import redis

        if self._redis is None:
            section = self.config["redis"]
            self._redis = redis.Redis(
                host=section["host"],
                port=int(section["port"]),
                socket_timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S,
                decode_responses=True,
            )
        return self._redis

    def memcached(self, command: bytes) -> bytes:
        """One memcached text-protocol command; its reply line(s)."""
        section = self.config["memcached"]
        address = (section["host"], int(section["port"]))
        try:
            with socket.create_connection(address, timeout=MEMCACHED_TIMEOUT_S) as sock:
                sock.settimeout(MEMCACHED_TIMEOUT_S)
                sock.sendall(command)
                reply = b""
                while not reply.endswith(b"\r\n"):
                    chunk = sock.recv(1024)
                    if not chunk:
                        break
                    reply += chunk
        except OSError as exc:
            raise Unavailable(f"memcached ({address[0]}:{address[1]}): {exc}") from exc
        if not reply:
            raise Unavailable(f"memcached ({address[0]}:{address[1]}): closed the connection")
        return reply

    def upstream_names(self) -> list[str]:
        if not self.config.has_section("upstreams"):
            return []
        return [name for name in self.config["upstreams"] if name != self.service]

    def upstream(self, name: str, path: str) -> Any:
        url = self.config.get("upstreams", name).rstrip("/") + path
        try:
            with urllib.request.urlopen(url, timeout=UPSTREAM_TIMEOUT_S) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise Unavailable(f"{name} ({url}): {exc}") from exc

    def log(self, line: str) -> None:
        with self._log_lock, open(self.log_path, "a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {self.service} {line}\n")
            fh.flush()

    # -- endpoints ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Every store and upstream the config names answers."""
        checks: dict[str, str] = {}
        if self.config.has_section("postgres"):
            conn = self.pg()
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
            finally:
                conn.close()
            checks["postgresql"] = "ok"
        if self.config.has_section("redis"):
            try:
                self.redis().ping()
            except Exception as exc:
                raise Unavailable(f"redis: {exc}") from exc
            checks["redis"] = "ok"
        if self.config.has_section("memcached"):
            reply = self.memcached(b"version\r\n")
            if not reply.startswith(b"VERSION"):
                raise Unavailable(f"memcached: {reply[:80]!r}")
            checks["memcached"] = "ok"
        for upstream in self.each_upstream("/health"):
            checks[upstream] = "ok"
        return {"status": "ok", "service": self.service, "version": VERSION, "checks": checks}

    def each_upstream(self, path: str) -> dict[str, Any]:
        """GET `path` of every upstream at once; the first failure raises."""
        names = self.upstream_names()
        if len(names) < 2:
            return {name: self.upstream(name, path) for name in names}
        with ThreadPoolExecutor(len(names)) as pool:
            futures = {name: pool.submit(self.upstream, name, path) for name in names}
            return {name: future.result() for name, future in futures.items()}

    def request(self, user: str, item_id: int) -> dict[str, Any]:
        """The generic role's work: each store touched, then each upstream asked the same."""
        done: dict[str, Any] = {}
        if self.config.has_section("postgres"):
            conn = self.pg()
            try:
                with conn, conn.cursor() as cur:
                    cur.execute(
                        "INSERT INTO requests (service, username, item) VALUES (%s, %s, %s)"
                        " RETURNING id",
                        (self.service, user, item_id),
                    )
                    done["postgresql"] = cur.fetchone()[0]
            finally:
                conn.close()
        if self.config.has_section("redis"):
            try:
                done["redis"] = self.redis().hincrby(f"{self.service}:{user}", str(item_id), 1)
            except Exception as exc:
                raise Unavailable(f"redis: {exc}") from exc
        if self.config.has_section("memcached"):
            key = f"{self.service}:{user}:{item_id}".encode()
            reply = self.memcached(b"incr " + key + b" 1\r\n")
            if reply.startswith(b"NOT_FOUND"):
                reply = self.memcached(b"add " + key + b" 0 600 1\r\n1\r\n")
            if reply.split(b"\r\n")[0] not in (b"STORED", b"NOT_STORED") and not (
                reply[:1].isdigit()
            ):
                raise Unavailable(f"memcached: {reply[:80]!r}")
            done["memcached"] = reply.split(b"\r\n")[0].decode(errors="replace")
        done.update(self.each_upstream(f"/request?user={user}&item={item_id}"))
        return {"service": self.service, "version": VERSION, "user": user, "item": item_id,
                "done": done}

    def item(self, item_id: int) -> dict[str, Any]:
        conn = self.pg()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT id, name, price_cents FROM items WHERE id = %s", (item_id,))
                row = cur.fetchone()
        finally:
            conn.close()
        if row is None:
            raise KeyError(item_id)
        return {"id": row[0], "name": row[1], "price_cents": row[2]}

    def items(self) -> list[dict[str, Any]]:
        conn = self.pg()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT id, name, price_cents FROM items ORDER BY id")
                rows = cur.fetchall()
        finally:
            conn.close()
        return [{"id": r[0], "name": r[1], "price_cents": r[2]} for r in rows]

    def cart_add(self, user: str, item_id: int) -> dict[str, Any]:
        try:
            count = self.redis().hincrby(f"cart:{user}", str(item_id), 1)
        except Exception as exc:
            raise Unavailable(f"redis: {exc}") from exc
        return {"user": user, "item": item_id, "count": count}

    def cart(self, user: str) -> dict[str, Any]:
        try:
            return {"user": user, "items": self.redis().hgetall(f"cart:{user}")}
        except Exception as exc:
            raise Unavailable(f"redis: {exc}") from exc

    def order(self, user: str, item_id: int) -> dict[str, Any]:
        item = self.upstream("catalog", f"/items/{item_id}")
        self.upstream("cart", f"/cart/{user}/add?item={item_id}")
        conn = self.pg()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO orders (username, item_id, total_cents) VALUES (%s, %s, %s)"
                    " RETURNING id",
                    (user, item_id, item["price_cents"]),
                )
                order_id = cur.fetchone()[0]
        finally:
            conn.close()
        return {"order": order_id, "user": user, "item": item, "total_cents": item["price_cents"]}


def make_handler(shop: Shop) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"shop-{shop.service}/{VERSION}"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the per-request line goes to the service log in _reply

        def do_GET(self) -> None:
            self._dispatch()

        def do_POST(self) -> None:
            self._dispatch()

        def _dispatch(self) -> None:
            started = time.monotonic()
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            parts = [p for p in url.path.split("/") if p]
            try:
                status, body = 200, self._route(parts, query)
            except KeyError:
                status, body = 404, {"error": "not found"}
            except (ValueError, TypeError):
                status, body = 400, {"error": "bad request"}
            except Unavailable as exc:
                status, body = 503, {"error": str(exc)[:500]}
            except Exception as exc:
                status, body = 500, {"error": f"{type(exc).__name__}: {exc}"[:500]}
            elapsed_ms = (time.monotonic() - started) * 1000
            try:
                shop.log(f'"{self.command} {url.path}" {status} {elapsed_ms:.1f}ms')
            except OSError as exc:
                status, body = 507, {"error": f"cannot write log {shop.log_path}: {exc}"}
            self._reply(status, body)

        def _route(self, parts: list[str], query: dict[str, str]) -> Any:
            svc = shop.role
            if parts == ["health"]:
                return shop.health()
            if svc == "generic" and parts == ["request"]:
                return shop.request(query.get("user", "guest"), int(query.get("item", "1")))
            if svc == "catalog" and parts == ["items"]:
                return shop.items()
            if svc == "catalog" and len(parts) == 2 and parts[0] == "items":
                return shop.item(int(parts[1]))
            if svc == "cart" and len(parts) == 2 and parts[0] == "cart":
                return shop.cart(parts[1])
            if svc == "cart" and len(parts) == 3 and parts[0] == "cart" and parts[2] == "add":
                return shop.cart_add(parts[1], int(query["item"]))
            if svc == "checkout" and parts == ["order"]:
                return shop.order(query.get("user", "guest"), int(query["item"]))
            raise KeyError(self.path)

        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser(description="lab http service")
    parser.add_argument("--service", required=True, help="the service's name")
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    config = configparser.ConfigParser()
    try:
        with open(args.config) as fh:
            config.read_file(fh)
    except OSError as exc:
        print(f"shop {args.service}: cannot read config {args.config}: {exc}", file=sys.stderr)
        return 78  # EX_CONFIG
    listen = config.get("service", "listen", fallback="0.0.0.0")
    port = config.getint("service", "port")
    shop = Shop(args.service, config)
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    try:
        server = ThreadingHTTPServer((listen, port), make_handler(shop))
    except OSError as exc:
        print(f"shop {args.service}: cannot listen on {listen}:{port}: {exc}", file=sys.stderr)
        return 1
    print(f"shop {args.service} {VERSION} listening on {listen}:{port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
