"""The webhook and approval listener over HTTPS: a real Alertmanager (Debian's
prometheus-alertmanager) with `tls_config` delivers to a real `remed serve` whose `http.tls_*`
keys name a certificate from a CA the test makes with the `openssl` CLI.

Proven: an alert posted to Alertmanager becomes an incident in the daemon's journal over
https://127.0.0.1; an Alertmanager that trusts another CA delivers nothing; plain HTTP and
clients that do not trust the CA get no answer; a renewed certificate is served after SIGHUP;
with `http.tls_client_cafile` (mTLS) a client needs a certificate from that CA, and
Alertmanager's `cert_file`/`key_file` is one."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from alerting import journal_incidents, post_alert, wait_for
from tls_certs import Pem, issue, make_ca

from remed_stack.procs import free_port

pytestmark = pytest.mark.integration
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
TOKEN = "am-tls-token"
APPROVAL_TOKEN = "approver-tls-token"
ANNOTATIONS = {"summary": "cart returns 503"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pem]:
    d = tmp_path_factory.mktemp("pki")
    ca, rogue_ca = make_ca(d, "remed-ca"), make_ca(d, "rogue-ca")
    return {
        "ca": ca,
        "rogue_ca": rogue_ca,
        "server": issue(ca, d, "remed", san="IP:127.0.0.1"),
        "client": issue(ca, d, "alertmanager", client=True),
        "rogue_client": issue(rogue_ca, d, "intruder", client=True),
    }


def client_ctx(cafile: Path, cert: Pem | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


def get(url: str, ctx: ssl.SSLContext | None = None, token: str = "") -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def refused(url: str, ctx: ssl.SSLContext | None = None) -> str:
    """The error a client meets; fails the test if the server answered at all."""
    try:
        status, _ = get(url, ctx, TOKEN)
    except (OSError, http.client.HTTPException) as exc:
        return repr(exc)
    raise AssertionError(f"{url} answered {status}; expected the connection to fail")


@dataclass(frozen=True)
class Remed:
    port: int
    state: Path
    proc: subprocess.Popen[bytes]


def start_remed(tmp_path: Path, pki: dict[str, Pem], mtls: bool) -> Iterator[Remed]:
    state = tmp_path / "state"
    # the daemon's own copies, so that a test may renew them in place
    s = Pem(tmp_path / "remed.crt", tmp_path / "remed.key")
    s.cert.write_bytes(pki["server"].cert.read_bytes())
    s.key.write_bytes(pki["server"].key.read_bytes())
    cfg = tmp_path / "remed.toml"
    cfg.write_text(
        f'state_dir = "{state}"\n[kafka]\nenabled = false\n'
        f'[agents]\napproval_token = "{APPROVAL_TOKEN}"\n'
        f'[http]\nport = 0\nbearer_token = "{TOKEN}"\n'
        f'tls_certfile = "{s.cert}"\ntls_keyfile = "{s.key}"\n'
        + (f'tls_client_cafile = "{pki["ca"].cert}"\n' if mtls else "")
    )
    log = open(tmp_path / "remed.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "remed_daemon", "serve", "--config", str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    ctx = client_ctx(pki["ca"].cert, pki["client"] if mtls else None)
    try:
        port_file = state / "http.port"
        wait_for(lambda: port_file.exists() or proc.poll() is not None, 60, "remed to listen")
        assert proc.poll() is None, (tmp_path / "remed.log").read_text()
        port = int(port_file.read_text())

        def ready() -> bool:
            try:
                return get(f"https://127.0.0.1:{port}/readyz", ctx)[0] == 200
            except OSError:
                return False

        wait_for(ready, 30, "readyz over https")
        yield Remed(port, state, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


@pytest.fixture
def remed_https(tmp_path: Path, pki: dict[str, Pem]) -> Iterator[Remed]:
    yield from start_remed(tmp_path, pki, mtls=False)


@pytest.fixture
def remed_mtls(tmp_path: Path, pki: dict[str, Pem]) -> Iterator[Remed]:
    yield from start_remed(tmp_path, pki, mtls=True)


def start_alertmanager(
    tmp_path: Path, remed_port: int, tls_config: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    receiver = {
        "name": "remed",
        "webhook_configs": [
            {
                "url": f"https://127.0.0.1:{remed_port}/webhook/alertmanager",
                "send_resolved": True,
                "http_config": {
                    "authorization": {"type": "Bearer", "credentials": TOKEN},
                    "tls_config": tls_config,
                },
            }
        ],
    }
    route = {"receiver": "remed", "group_by": ["alertname", "instance"], "group_wait": "0s",
             "group_interval": "1s", "repeat_interval": "1h"}  # fmt: skip
    conf = tmp_path / f"am-{port}.yml"
    conf.write_text(json.dumps({"route": route, "receivers": [receiver]}))  # JSON is YAML
    log = tmp_path / f"am-{port}.log"
    proc = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={conf}",
            f"--storage.path={tmp_path / f'am-data-{port}'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=debug",
        ],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )

    def ready() -> bool:
        try:
            return get(f"http://127.0.0.1:{port}/-/ready")[0] == 200
        except OSError:
            return False

    wait_for(ready, 30, "alertmanager ready")
    return proc, port, log


def served_common_name(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # only reading the name
        with ctx.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    pem = ssl.DER_cert_to_PEM_cert(der)
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-nameopt", "multiline"],
        input=pem, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.split("commonName", 1)[1].split("=", 1)[1].strip()


def test_alertmanager_delivers_over_https(
    tmp_path: Path, pki: dict[str, Pem], remed_https: Remed
) -> None:
    port, state = remed_https.port, remed_https.state
    base = f"https://127.0.0.1:{port}"
    trusting = client_ctx(pki["ca"].cert)
    am, am_port, _ = start_alertmanager(tmp_path, port, {"ca_file": str(pki["ca"].cert)})
    wrong, wrong_port, wrong_log = start_alertmanager(
        tmp_path, port, {"ca_file": str(pki["rogue_ca"].cert)}
    )
    try:
        post_alert(
            wrong_port,
            {"alertname": "CartDown", "service": "cart", "instance": "bad:1"},
            ANNOTATIONS,
        )
        post_alert(
            am_port,
            {"alertname": "CartDown", "service": "cart", "instance": "app:9100"},
            ANNOTATIONS,
        )
        wait_for(lambda: journal_incidents(state), 30, "an incident from alertmanager over https")
        wait_for(
            lambda: journal_incidents(state)[0][2] == "shadow", 30, "the remediation to finish"
        )
        # the Alertmanager that trusts another CA refuses the daemon's certificate
        wait_for(
            lambda: "certificate signed by unknown authority" in wrong_log.read_text(),
            30,
            "the wrong-CA Alertmanager to fail verification",
        )
        assert journal_incidents(state) == [("alertmanager", "cart@app", "shadow")]

        # the same listener serves the approval endpoint, over TLS only
        assert get(f"{base}/approvals", trusting, APPROVAL_TOKEN)[0] == 200
        assert get(f"{base}/approvals", trusting, TOKEN)[0] == 401  # the webhook's is not it
        for path in ("/webhook/alertmanager", "/approvals", "/healthz"):
            refused(f"http://127.0.0.1:{port}{path}")  # plain HTTP on the HTTPS port
        err = refused(f"{base}/healthz", client_ctx(pki["rogue_ca"].cert))
        assert "CERTIFICATE_VERIFY_FAILED" in err, err

        # a renewed certificate written over the files is served after SIGHUP, no restart
        assert served_common_name(port) == "remed"
        renewed = issue(pki["ca"], tmp_path, "remed-renewed", san="IP:127.0.0.1")
        for src, dst in ((renewed.cert, "remed.crt"), (renewed.key, "remed.key")):
            (tmp_path / f"{dst}.new").write_bytes(src.read_bytes())
            (tmp_path / f"{dst}.new").rename(tmp_path / dst)
        remed_https.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: served_common_name(port) == "remed-renewed", 30, "the renewed cert")
        assert get(f"{base}/readyz", trusting)[0] == 200
    finally:
        for proc in (am, wrong):
            proc.terminate()
            proc.wait(timeout=30)


def test_mtls_needs_a_client_certificate_from_the_ca(
    tmp_path: Path, pki: dict[str, Pem], remed_mtls: Remed
) -> None:
    port, state = remed_mtls.port, remed_mtls.state
    base = f"https://127.0.0.1:{port}"
    ca = str(pki["ca"].cert)
    am, am_port, _ = start_alertmanager(
        tmp_path,
        port,
        {"ca_file": ca, "cert_file": str(pki["client"].cert), "key_file": str(pki["client"].key)},
    )
    anonymous, anon_port, anon_log = start_alertmanager(tmp_path, port, {"ca_file": ca})
    try:
        post_alert(
            anon_port,
            {"alertname": "CartDown", "service": "cart", "instance": "anon:1"},
            ANNOTATIONS,
        )
        post_alert(
            am_port,
            {"alertname": "CartDown", "service": "cart", "instance": "app:9100"},
            ANNOTATIONS,
        )
        wait_for(lambda: journal_incidents(state), 30, "an incident from alertmanager over mTLS")
        wait_for(
            lambda: "Notify attempt failed" in anon_log.read_text(),
            30,
            "the Alertmanager without a client certificate to fail",
        )
        assert [r[:2] for r in journal_incidents(state)] == [("alertmanager", "cart@app")]

        good = client_ctx(pki["ca"].cert, pki["client"])
        assert get(f"{base}/healthz", good)[0] == 200
        refused(f"{base}/healthz", client_ctx(pki["ca"].cert))  # no client certificate
        refused(f"{base}/healthz", client_ctx(pki["ca"].cert, pki["rogue_client"]))
        refused(f"http://127.0.0.1:{port}/healthz")
    finally:
        for proc in (am, anonymous):
            proc.terminate()
            proc.wait(timeout=30)
