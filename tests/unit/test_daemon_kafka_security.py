"""Kafka transport security: `[kafka]` validation, the one client-options helper, and how a
broker's refusal is told apart from an outage. (The real broker: tests/integration/
test_kafka_security.py.)"""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from tls_certs import Pem, issue, make_ca

from remed_daemon.app import Daemon
from remed_daemon.config import KafkaConfig, Secret, load
from remed_daemon.errors import ConfigError
from remed_daemon.kafka_security import (
    KafkaAuthError,
    check_credentials,
    describe_refusal,
    kafka_client_options,
)

pytestmark = pytest.mark.unit

BASE = {"REMED_HTTP_ENABLED": "false"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pem, Pem]:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "ca")
    return ca, issue(ca, d, "client", client=True)


def env(**kw: str) -> dict[str, str]:
    return {**BASE, **{f"REMED_KAFKA_{k.upper()}": v for k, v in kw.items()}}


def test_default_is_plaintext_and_the_options_say_so() -> None:
    cfg = load(None, BASE)
    assert cfg.kafka.security_protocol == "PLAINTEXT"
    assert kafka_client_options(cfg.kafka) == {"security_protocol": "PLAINTEXT"}


def test_unknown_protocol_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"REMED_KAFKA_SECURITY_PROTOCOL.*'SASL_SSL'"):
        load(None, env(security_protocol="TLS"))


def test_sasl_ssl_needs_mechanism_user_and_password() -> None:
    with pytest.raises(ConfigError) as caught:
        load(None, env(security_protocol="SASL_SSL"))
    msg = str(caught.value)
    for key in ("kafka.sasl_mechanism", "kafka.sasl_username", "kafka.sasl_password"):
        assert key in msg
    with pytest.raises(ConfigError, match=r"needs kafka\.sasl_password"):
        load(None, env(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u"))


def test_unknown_mechanism_is_refused() -> None:
    with pytest.raises(ConfigError, match="GSSAPI"):
        load(None, env(security_protocol="SASL_SSL", sasl_mechanism="GSSAPI"))


def test_security_keys_that_the_protocol_would_ignore_are_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(ConfigError, match=r"kafka\.ssl_cafile is set but .*'PLAINTEXT'"):
        load(None, env(ssl_cafile=str(ca)))
    with pytest.raises(ConfigError, match=r"kafka\.sasl_username is set but .*'SSL'"):
        load(None, env(security_protocol="SSL", sasl_username="u"))


def test_plain_password_in_clear_text_is_refused_scram_is_not() -> None:
    common = {"sasl_username": "u", "sasl_password": "p", "security_protocol": "SASL_PLAINTEXT"}
    with pytest.raises(ConfigError, match="clear text"):
        load(None, env(sasl_mechanism="PLAIN", **common))
    cfg = load(None, env(sasl_mechanism="SCRAM-SHA-256", **common))
    opts = kafka_client_options(cfg.kafka)
    assert "ssl_context" not in opts and opts["sasl_mechanism"] == "SCRAM-SHA-256"


def test_missing_files_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kafka\.ssl_cafile '.*nope\.pem' is not a file"):
        load(None, env(security_protocol="SSL", ssl_cafile=str(tmp_path / "nope.pem")))
    key = tmp_path / "k.pem"
    key.write_text("x")
    with pytest.raises(ConfigError, match=r"kafka\.ssl_keyfile is set without kafka\.ssl_certfile"):
        load(None, env(security_protocol="SSL", ssl_keyfile=str(key)))


def test_password_file_secret_never_prints(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t-pw\n")
    cfg = load(
        None,
        {
            **env(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="r"),
            "REMED_KAFKA_SASL_PASSWORD_FILE": str(secret),
        },
    )
    assert cfg.kafka.sasl_password == Secret("s3cr3t-pw")
    assert "s3cr3t-pw" not in repr(cfg) and "s3cr3t-pw" not in str(cfg.kafka)
    opts = kafka_client_options(cfg.kafka)
    assert opts["sasl_plain_password"] == "s3cr3t-pw" and opts["sasl_plain_username"] == "r"
    assert opts["security_protocol"] == "SASL_SSL"
    assert isinstance(opts["ssl_context"], ssl.SSLContext)  # SASL_SSL is TLS too


def test_ssl_context_verifies_the_broker_and_presents_the_client_cert(
    pki: tuple[Pem, Pem],
) -> None:
    ca, client = pki
    cfg = load(
        None,
        env(
            security_protocol="SSL",
            ssl_cafile=str(ca.cert),
            ssl_certfile=str(client.cert),
            ssl_keyfile=str(client.key),
        ),
    )
    ctx = kafka_client_options(cfg.kafka)["ssl_context"]
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.get_ca_certs()[0]["subject"] == ((("commonName", "ca"),),)


def test_a_bad_certificate_stops_the_daemon_before_it_starts(
    tmp_path: Path, pki: tuple[Pem, Pem]
) -> None:
    ca, _ = pki
    junk = tmp_path / "client.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    cfg = load(
        None,
        {
            **env(security_protocol="SSL", ssl_cafile=str(ca.cert), ssl_certfile=str(junk)),
            "REMED_STATE_DIR": str(tmp_path / "state"),
        },
    )
    with pytest.raises(ConfigError, match=r"kafka\.ssl_certfile"):
        Daemon(cfg)


def test_encrypted_key_needs_its_password_and_never_prompts(
    tmp_path: Path, pki: tuple[Pem, Pem]
) -> None:
    ca, client = pki
    enc = tmp_path / "enc.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(client.key), "-aes256", "-passout", "pass:kpw",
         "-out", str(enc)],
        check=True, capture_output=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    files = {"ssl_cafile": str(ca.cert), "ssl_certfile": str(client.cert), "ssl_keyfile": str(enc)}
    cfg = load(None, env(security_protocol="SSL", **files))
    with pytest.raises(ConfigError, match=r"kafka\.ssl_key_password"):
        kafka_client_options(cfg.kafka)
    ok = load(None, env(security_protocol="SSL", ssl_key_password="kpw", **files))
    assert isinstance(kafka_client_options(ok.kafka)["ssl_context"], ssl.SSLContext)


# --- refusal or outage ----------------------------------------------------------------------

SASL = KafkaConfig(
    bootstrap="127.0.0.1:1",
    security_protocol="SASL_PLAINTEXT",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_username="remed",
    sasl_password=Secret("hunter2"),
)


def test_refused_password_names_the_keys_and_quotes_the_broker() -> None:
    exc = SaslAuthenticationFailed(
        "Authentication failed during authentication due to invalid credentials with SASL "
        "mechanism SCRAM-SHA-512"
    )
    refusal = describe_refusal(SASL, exc)
    assert isinstance(refusal, KafkaAuthError) and not refusal.retriable
    msg = str(refusal)
    assert "kafka.sasl_password" in msg and "'remed'" in msg
    assert "the broker said 'Authentication failed during authentication" in msg
    assert "hunter2" not in msg


def test_a_tls_alert_behind_connection_closed_is_a_refusal() -> None:
    closed = KafkaConnectionError("Connection at 127.0.0.1:1 closed")
    closed.__cause__ = ssl.SSLError(1, "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert")
    refusal = describe_refusal(SASL, closed)
    assert refusal is not None and "kafka.ssl_certfile" in str(refusal)


def test_outages_are_not_refusals() -> None:
    assert describe_refusal(SASL, ConnectionRefusedError(111, "refused")) is None
    assert describe_refusal(SASL, KafkaConnectionError("Unable to bootstrap")) is None
    assert describe_refusal(SASL, ssl.SSLEOFError(8, "EOF occurred")) is None
    assert describe_refusal(SASL, TimeoutError()) is None


async def test_check_credentials_leaves_an_absent_broker_to_the_backoff() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = KafkaConfig(
        bootstrap=f"127.0.0.1:{port}",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="remed",
        sasl_password=Secret("x"),
    )
    await check_credentials(cfg)  # returns: an outage, not a refusal
    await check_credentials(KafkaConfig())  # PLAINTEXT: nothing to check
