"""`remed approve` against a real `remed serve` whose listener speaks HTTPS (`http.tls_*`, a CA
and certificate made with the `openssl` CLI, `http.port = 0`): the command finds the port the
daemon wrote, uses https because the config sets `http.tls_certfile`, verifies the daemon
against `http.tls_server_cafile`, and gets the daemon's own answer; without the CA it stops at
verification and says what to set."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tls_certs import issue, make_ca

pytestmark = pytest.mark.integration
APPROVAL_TOKEN = "approver-cli-tls"


def remed(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "remed_daemon", *argv],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def wait_ready(
    proc: subprocess.Popen[bytes], state: Path, ctx: ssl.SSLContext, tmp_path: Path
) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (tmp_path / "remed.log").read_text()
        assert time.monotonic() < deadline, "remed did not answer /readyz over https"
        try:
            port = int((state / "http.port").read_text())
            with urllib.request.urlopen(
                f"https://127.0.0.1:{port}/readyz", timeout=5, context=ctx
            ) as r:
                if r.status == 200:
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)


def test_remed_approve_reaches_a_tls_daemon(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki", "remed-ca")
    server = issue(ca, tmp_path / "pki", "remed", san="IP:127.0.0.1")
    state = tmp_path / "state"
    common = (
        f'state_dir = "{state}"\n[kafka]\nenabled = false\n'
        f'[agents]\napproval_token = "{APPROVAL_TOKEN}"\n'
        f'[http]\nport = 0\nbearer_token = "hook"\n'
        f'tls_certfile = "{server.cert}"\ntls_keyfile = "{server.key}"\n'
    )
    daemon_cfg, operator_cfg = tmp_path / "remed.toml", tmp_path / "operator.toml"
    daemon_cfg.write_text(common)
    operator_cfg.write_text(common + f'tls_server_cafile = "{ca.cert}"\n')
    log = open(tmp_path / "remed.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "remed_daemon", "serve", "--config", str(daemon_cfg)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_ready(proc, state, ssl.create_default_context(cafile=str(ca.cert)), tmp_path)

        # Through TLS, authenticated: the daemon itself answers that nothing is waiting.
        done = remed("approve", "inc-none", "--config", str(operator_cfg), "--by", "oncall")
        assert done.returncode == 1, done
        assert "404: incident 'inc-none' is not waiting for approval" in done.stderr, done.stderr

        # The same without the CA: verification fails before any token is sent.
        done = remed("approve", "inc-none", "--config", str(daemon_cfg))
        assert done.returncode == 1, done
        assert "does not verify against the system CA store" in done.stderr, done.stderr
        assert "http.tls_server_cafile" in done.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
