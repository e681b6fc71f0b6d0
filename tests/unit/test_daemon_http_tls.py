"""HTTPS for the webhook and approval listener: `http.tls_*` keys are checked in pairs when the
config loads, and the files when the daemon starts, each error naming the key at fault."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tls_certs import Pem, issue, make_ca

from remed_daemon.config import HttpConfig, Secret, load
from remed_daemon.errors import ConfigError
from remed_daemon.http import load_cert_chain, server_ssl_context

pytestmark = pytest.mark.unit

TOKEN = {"REMED_HTTP_BEARER_TOKEN": "tok"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pem]:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "ca")
    return {
        "ca": ca,
        "server": issue(ca, d, "server", san="IP:127.0.0.1"),
        "other": issue(ca, d, "other", san="IP:127.0.0.1"),
    }


def http(**kw: str) -> HttpConfig:
    return HttpConfig(bearer_token=Secret("tok"), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REMED_HTTP_TLS_CERTFILE": "/c.pem"}, "http.tls_certfile is set but http.tls_keyfile"),
        ({"REMED_HTTP_TLS_KEYFILE": "/k.pem"}, "http.tls_keyfile is set but http.tls_certfile"),
        ({"REMED_HTTP_TLS_CLIENT_CAFILE": "/ca.pem"}, "http.tls_client_cafile (client"),
    ],
)
def test_tls_keys_come_in_pairs(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(None, {**TOKEN, **env})
    assert message in str(err.value)


def test_config_load_does_not_read_the_key(tmp_path: Path) -> None:
    # `remed approve` loads the same config as an operator who may not read the daemon's key
    cfg = load(
        None,
        {
            **TOKEN,
            "REMED_HTTP_TLS_CERTFILE": str(tmp_path / "absent.crt"),
            "REMED_HTTP_TLS_KEYFILE": str(tmp_path / "absent.key"),
        },
    )
    assert cfg.http.tls_certfile.endswith("absent.crt")


def test_plain_http_without_tls_keys() -> None:
    assert server_ssl_context(http()) is None


def test_context_is_tls12_or_later_and_client_certs_only_with_a_ca(pki: dict[str, Pem]) -> None:
    s = pki["server"]
    ctx = server_ssl_context(http(tls_certfile=str(s.cert), tls_keyfile=str(s.key)))
    assert ctx is not None
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_NONE
    ca = str(pki["ca"].cert)
    mtls = server_ssl_context(
        http(tls_certfile=str(s.cert), tls_keyfile=str(s.key), tls_client_cafile=ca)
    )
    assert mtls is not None and mtls.verify_mode == ssl.CERT_REQUIRED
    # only the given CA, never the system store
    assert [c["subject"] for c in mtls.get_ca_certs()] == [((("commonName", "ca"),),)]


def test_file_errors_name_the_key(pki: dict[str, Pem], tmp_path: Path) -> None:
    s, o = pki["server"], pki["other"]
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(s.key), "-aes256", "-passout", "pass:x", "-out",
         str(encrypted)],
        check=True,
    )  # fmt: skip
    cases = [
        ({"tls_certfile": str(tmp_path / "none.crt"), "tls_keyfile": str(s.key)},
         "http.tls_certfile", "cannot be read"),
        ({"tls_certfile": str(s.cert), "tls_keyfile": str(tmp_path / "none.key")},
         "http.tls_keyfile", "cannot be read"),
        ({"tls_certfile": str(s.key), "tls_keyfile": str(s.key)},
         "http.tls_certfile", "holds no PEM certificate"),
        ({"tls_certfile": str(s.cert), "tls_keyfile": str(o.key)},
         "http.tls_keyfile", "not a PEM private key for the certificate"),
        ({"tls_certfile": str(s.cert), "tls_keyfile": str(s.cert)},
         "http.tls_keyfile", "not a PEM private key"),
        ({"tls_certfile": str(s.cert), "tls_keyfile": str(encrypted)},
         "http.tls_keyfile", "is encrypted"),
        ({"tls_certfile": str(s.cert), "tls_keyfile": str(s.key),
          "tls_client_cafile": str(s.key)},
         "http.tls_client_cafile", "holds no PEM CA certificate"),
        ({"tls_certfile": str(s.cert), "tls_keyfile": str(s.key),
          "tls_client_cafile": str(tmp_path / "none-ca.crt")},
         "http.tls_client_cafile", "cannot be read"),
    ]  # fmt: skip
    for kw, key, what in cases:
        with pytest.raises(ConfigError) as err:
            server_ssl_context(http(**kw))
        text = str(err.value)
        assert text.startswith(key) and what in text, (kw, text)


def peer_common_name(server: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """A TLS handshake through memory; the common name of the certificate the server sent."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    done: set[str] = set()
    for _ in range(10):
        for name, end in (("client", cli), ("server", srv)):
            try:
                end.do_handshake()
                done.add(name)
            except ssl.SSLWantReadError:
                pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())
        if len(done) == 2:
            break
    cert = cli.getpeercert()
    assert cert, "no handshake"
    subject: Any = cert["subject"]  # ((("commonName", "server"),),)
    return next(str(v) for rdn in subject for k, v in rdn if k == "commonName")


def test_reload_swaps_the_certificate(pki: dict[str, Pem]) -> None:
    s, o = pki["server"], pki["other"]
    ctx = server_ssl_context(http(tls_certfile=str(s.cert), tls_keyfile=str(s.key)))
    assert ctx is not None
    client = ssl.create_default_context(cafile=str(pki["ca"].cert))
    assert peer_common_name(ctx, client) == "server"
    load_cert_chain(ctx, http(tls_certfile=str(o.cert), tls_keyfile=str(o.key)))
    assert peer_common_name(ctx, client) == "other"


def test_serve_refuses_to_start_with_a_bad_key(pki: dict[str, Pem], tmp_path: Path) -> None:
    cfg = tmp_path / "remed.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[kafka]\nenabled = false\n'
        f'[http]\nbearer_token = "t"\nport = 0\ntls_certfile = "{pki["server"].cert}"\n'
        f'tls_keyfile = "{pki["other"].key}"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "remed_daemon", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "http.tls_keyfile" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "state" / "http.port").exists()
