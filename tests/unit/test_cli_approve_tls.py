"""`remed approve|reject` against an approval endpoint served over TLS by the daemon's own
listener code (`http.server_ssl_context`, `approvals.register_routes`): https when
`http.tls_certfile` is set, the certificate verified against `--cafile` or
`http.tls_server_cafile` (only that CA) and for the URL's host, a client certificate for mTLS,
and each failure said with what to do. Certificates from the `openssl` CLI; no fakes."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from tls_certs import Pem, issue, make_ca

import remed_cli
from remed_cli import daemon as daemon_cli
from remed_daemon.agents.approvals import ApprovalBook, register_routes
from remed_daemon.config import HttpConfig, Secret, load
from remed_daemon.http import server_ssl_context

pytestmark = pytest.mark.unit
APPROVAL_TOKEN = "approver-tok"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pem]:
    d = tmp_path_factory.mktemp("pki")
    ca, rogue = make_ca(d, "remed-ca"), make_ca(d, "rogue-ca")
    return {
        "ca": ca,
        "rogue_ca": rogue,
        "server": issue(ca, d, "remed", san="IP:127.0.0.1"),
        "client": issue(ca, d, "oncall", client=True),
    }


@dataclass
class Daemon:
    port: int
    book: ApprovalBook
    config: Callable[..., Path]  # config(**http_keys) -> a TOML file for `remed approve`


async def serve(tmp_path: Path, pki: dict[str, Pem], mtls: bool) -> AsyncIterator[Daemon]:
    s = pki["server"]
    keys = {"tls_certfile": str(s.cert), "tls_keyfile": str(s.key)}
    if mtls:
        keys["tls_client_cafile"] = str(pki["ca"].cert)
    ctx = server_ssl_context(HttpConfig(bearer_token=Secret("hook"), **keys))  # type: ignore[arg-type]
    book = ApprovalBook()
    app = web.Application()
    register_routes(app, book, Secret(APPROVAL_TOKEN))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    port = runner.addresses[0][1]

    def config(**http: str) -> Path:
        table = {"port": str(port), "bearer_token": '"hook"'} | {
            k: f'"{v}"' for k, v in {**keys, **http}.items()
        }
        path = tmp_path / f"remed-{len(list(tmp_path.glob('remed-*.toml')))}.toml"
        path.write_text(
            f'state_dir = "{tmp_path / "state"}"\n[kafka]\nenabled = false\n'
            f'[agents]\napproval_token = "{APPROVAL_TOKEN}"\n[http]\n'
            + "".join(f"{k} = {v}\n" for k, v in table.items())
        )
        return path

    try:
        yield Daemon(port, book, config)
    finally:
        await runner.cleanup()


@pytest.fixture
async def daemon(tmp_path: Path, pki: dict[str, Pem]) -> AsyncIterator[Daemon]:
    async for d in serve(tmp_path, pki, mtls=False):
        yield d


@pytest.fixture
async def mtls_daemon(tmp_path: Path, pki: dict[str, Pem]) -> AsyncIterator[Daemon]:
    async for d in serve(tmp_path, pki, mtls=True):
        yield d


async def remed(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(remed_cli.main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def waiting(book: ApprovalBook, incident_id: str) -> asyncio.Task[object]:
    return asyncio.create_task(
        book.wait(incident_id, "- hosts: db\n", target="db@db", risk="high", timeout_s=30)
    )


async def test_approve_over_https_trusting_the_configured_ca(
    daemon: Daemon, pki: dict[str, Pem], capsys: pytest.CaptureFixture[str]
) -> None:
    decision = waiting(daemon.book, "inc-1")
    await asyncio.sleep(0)
    cfg = daemon.config(tls_server_cafile=str(pki["ca"].cert))
    code, out, err = await remed(capsys, "approve", "inc-1", "--config", str(cfg), "--by", "carol")
    assert (code, out.strip()) == (0, "inc-1: approved by carol"), err
    assert (await decision).decision == "approved"  # type: ignore[attr-defined]

    # --cafile, given on the command line, does the same for a config that names no CA
    decision = waiting(daemon.book, "inc-2")
    await asyncio.sleep(0)
    code, out, err = await remed(
        capsys, "reject", "inc-2", "--config", str(daemon.config()), "--cafile",
        str(pki["ca"].cert), "--by", "carol",
    )  # fmt: skip
    assert (code, out.strip()) == (0, "inc-2: rejected by carol"), err
    assert (await decision).decision == "rejected"  # type: ignore[attr-defined]


async def test_an_untrusted_or_misnamed_certificate_is_refused_with_what_to_do(
    daemon: Daemon, pki: dict[str, Pem], capsys: pytest.CaptureFixture[str]
) -> None:
    decision = waiting(daemon.book, "inc-3")
    await asyncio.sleep(0)
    # no CA configured: the system store does not know the daemon's CA
    code, _, err = await remed(capsys, "approve", "inc-3", "--config", str(daemon.config()))
    assert code == 1
    assert "does not verify against the system CA store" in err and "--cafile" in err, err
    # another CA
    code, _, err = await remed(
        capsys, "approve", "inc-3", "--config", str(daemon.config()),
        "--cafile", str(pki["rogue_ca"].cert),
    )  # fmt: skip
    assert code == 1 and "does not verify against" in err and "rogue-ca.crt" in err, err
    # the right CA, but a host name the certificate (IP:127.0.0.1 only) does not hold
    cfg = daemon.config(tls_server_cafile=str(pki["ca"].cert))
    code, _, err = await remed(
        capsys, "approve", "inc-3", "--config", str(cfg), "--url",
        f"https://localhost:{daemon.port}",
    )  # fmt: skip
    assert code == 1 and "not valid for that host" in err and "--url" in err, err
    # plain HTTP to the HTTPS listener
    code, _, err = await remed(
        capsys, "approve", "inc-3", "--config", str(cfg), "--url", f"http://127.0.0.1:{daemon.port}"
    )
    assert code == 1 and "use --url https://" in err, err
    # a CA file that is not one
    code, _, err = await remed(
        capsys, "approve", "inc-3", "--config", str(cfg), "--cafile", str(cfg)
    )
    assert code == 2 and "--cafile" in err and "PEM CA certificate" in err, err
    assert not decision.done()  # nothing got through
    decision.cancel()


async def test_mtls_needs_the_client_certificate(
    mtls_daemon: Daemon, pki: dict[str, Pem], capsys: pytest.CaptureFixture[str]
) -> None:
    decision = waiting(mtls_daemon.book, "inc-4")
    await asyncio.sleep(0)
    cfg = str(mtls_daemon.config(tls_server_cafile=str(pki["ca"].cert)))
    code, _, err = await remed(capsys, "approve", "inc-4", "--config", cfg)
    assert code == 1 and "--certfile and --keyfile" in err, err
    client = pki["client"]
    code, out, err = await remed(
        capsys, "approve", "inc-4", "--config", cfg, "--certfile", str(client.cert),
        "--keyfile", str(client.key), "--by", "carol",
    )  # fmt: skip
    assert (code, out.strip()) == (0, "inc-4: approved by carol"), err
    assert (await decision).decision == "approved"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("host", "tls", "url"),
    [
        ("127.0.0.1", False, "http://127.0.0.1:9"),
        ("0.0.0.0", True, "https://127.0.0.1:9"),
        ("::", True, "https://[::1]:9"),
        ("fd00::5", False, "http://[fd00::5]:9"),
        ("remed.example.net", True, "https://remed.example.net:9"),
    ],
)
def test_daemon_url_from_the_http_keys(host: str, tls: bool, url: str, tmp_path: Path) -> None:
    env = {"REMED_HTTP_BEARER_TOKEN": "t", "REMED_HTTP_HOST": host}
    if tls:
        env |= {"REMED_HTTP_TLS_CERTFILE": "/c.pem", "REMED_HTTP_TLS_KEYFILE": "/k.pem"}
    assert daemon_cli._daemon_url(load(None, env), 9) == url


def test_keyfile_without_certfile_is_a_usage_error() -> None:
    args = argparse.Namespace(cafile=None, certfile=None, keyfile="/k.pem")
    with pytest.raises(ValueError, match="--keyfile needs --certfile"):
        daemon_cli._client_tls(args, load(None, {"REMED_HTTP_BEARER_TOKEN": "t"}))
