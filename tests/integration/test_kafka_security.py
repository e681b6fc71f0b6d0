"""remed's Kafka clients over TLS and SASL/SCRAM against the stack's real broker.

The module starts a broker of its own (the stack's Kafka jars, `remed_stack.kafka.Kafka` with
extra listeners) beside the shared one: PLAINTEXT for its own traffic and for creating topics,
SSL with client certificates required (mutual TLS), and SASL_SSL with a SCRAM-SHA-512 user made
when its storage is formatted and a PLAIN user. The CA and the certificates are made by the test
with the `openssl` CLI (PEM stores: Kafka 4 needs no JKS). All ports come from the OS; the broker
is stopped when the module ends.

What it proves: the daemon's consumer and outcome producer (and the helper a producer of
reports uses) connect over SSL and over SASL_SSL and a report round-trips to an outcome; a wrong
password makes `remed serve` stop once with exit status 78 and a message that names
kafka.sasl_password and quotes the broker, instead of retrying; a broker certificate from
another CA is refused naming kafka.ssl_cafile.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from tls_certs import Pem, issue, make_ca

from remed_daemon.app import Daemon
from remed_daemon.config import KafkaConfig, load
from remed_daemon.kafka_security import (
    EXIT_KAFKA_AUTH,
    KafkaAuthError,
    check_credentials,
    kafka_client_options,
)
from remed_daemon.schemas import iter_errors
from remed_stack.kafka import Kafka, ScramUser, create_private_topics
from remed_stack.paths import StackPaths

pytestmark = pytest.mark.integration

SCRAM_USER = ScramUser("remed", "scram-" + uuid.uuid4().hex, "SCRAM-SHA-512")
PLAIN_USER, PLAIN_PASSWORD = "remed-plain", "plain-" + uuid.uuid4().hex
SERVE_EXIT_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class SecureBroker:
    kafka: Kafka
    ca: Pem
    client: Pem
    other_ca: Pem
    dir: Path


@pytest.fixture(scope="module")
def secure_broker(
    stack_paths: StackPaths, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecureBroker]:
    pki = tmp_path_factory.mktemp("pki")
    ca = make_ca(pki, "kafka-test-ca")
    server = issue(ca, pki, "broker", san="IP:127.0.0.1,DNS:localhost")
    client = issue(ca, pki, "remed-client", client=True)
    other_ca = make_ca(pki / "other", "not-the-brokers-ca")
    # A PEM key store is one file: the (unencrypted PKCS#8) key, then the certificate chain.
    keystore = pki / "broker-keystore.pem"
    keystore.write_text(server.key.read_text() + server.cert.read_text())
    scram_jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    plain_jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'user_{PLAIN_USER}="{PLAIN_PASSWORD}";'
    )
    run = tmp_path_factory.mktemp("secure-kafka")
    paths = StackPaths(repo=stack_paths.repo, cache=stack_paths.cache, run=run)
    kafka = Kafka(
        paths,
        extra_listeners=("SSL", "SASL_SSL"),
        extra_config={
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(ca.cert),
            "listener.name.ssl.ssl.client.auth": "required",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512,PLAIN",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram_jaas,
            "listener.name.sasl_ssl.plain.sasl.jaas.config": plain_jaas,
        },
        scram_users=(SCRAM_USER,),
    )
    kafka.up()
    try:
        yield SecureBroker(kafka, ca, client, other_ca, run)
    finally:
        kafka.down()


def ssl_env(broker: SecureBroker) -> dict[str, str]:
    return {
        "REMED_KAFKA_BOOTSTRAP": broker.kafka.listener_bootstrap("SSL"),
        "REMED_KAFKA_SECURITY_PROTOCOL": "SSL",
        "REMED_KAFKA_SSL_CAFILE": str(broker.ca.cert),
        "REMED_KAFKA_SSL_CERTFILE": str(broker.client.cert),
        "REMED_KAFKA_SSL_KEYFILE": str(broker.client.key),
    }


def sasl_env(
    broker: SecureBroker, tmp_path: Path, mechanism: str, user: str, password: str
) -> dict[str, str]:
    # the password travels the way systemd's LoadCredential= hands it over: in a file
    secret = tmp_path / f"kafka-password-{uuid.uuid4().hex[:6]}"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    return {
        "REMED_KAFKA_BOOTSTRAP": broker.kafka.listener_bootstrap("SASL_SSL"),
        "REMED_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "REMED_KAFKA_SSL_CAFILE": str(broker.ca.cert),
        "REMED_KAFKA_SASL_MECHANISM": mechanism,
        "REMED_KAFKA_SASL_USERNAME": user,
        "REMED_KAFKA_SASL_PASSWORD_FILE": str(secret),
    }


def report() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "report_id": f"sec-{uuid.uuid4().hex[:10]}",
        "source": "kafka",
        "target": {"service": "cart", "host": "app"},
        "severity": "critical",
        "summary": "cart is down",
    }


@asynccontextmanager
async def secure_daemon(
    broker: SecureBroker, state_dir: Path, security: Mapping[str, str]
) -> AsyncIterator[tuple[Daemon, dict[str, str], KafkaConfig]]:
    """A shadow-mode daemon (HTTP off) on private topics, connected with `security`."""
    topics = await create_private_topics(broker.kafka.bootstrap, "sec")
    env = {
        "REMED_STATE_DIR": str(state_dir),
        "REMED_HTTP_ENABLED": "false",
        "REMED_KAFKA_GROUP_ID": f"g-{uuid.uuid4().hex[:8]}",
        **{f"REMED_KAFKA_{k.upper()}": v for k, v in topics.items()},
        **security,
    }
    cfg = load(None, env)
    daemon = Daemon(cfg)
    task = asyncio.create_task(daemon.run())
    try:
        yield daemon, topics, cfg.kafka
    finally:
        daemon.request_stop()
        async with asyncio.timeout(60):
            await task


async def round_trip(cfg: KafkaConfig, topics: dict[str, str]) -> dict[str, Any]:
    """Produce a report and read its outcome, both with the daemon's own security options."""
    rep = report()
    producer = AIOKafkaProducer(
        bootstrap_servers=cfg.bootstrap, acks="all", **kafka_client_options(cfg)
    )
    await producer.start()
    try:
        await producer.send_and_wait(
            topics["diagnoses_topic"], value=json.dumps(rep).encode(), key=b"cart@app"
        )
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topics["outcomes_topic"],
        bootstrap_servers=cfg.bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **kafka_client_options(cfg),
    )
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for msgs in batch.values():
                    for msg in msgs:
                        doc: dict[str, Any] = json.loads(msg.value)
                        if doc["report_id"] == rep["report_id"]:
                            return doc
    finally:
        await consumer.stop()


async def test_mutual_tls_round_trip(secure_broker: SecureBroker, tmp_path: Path) -> None:
    async with secure_daemon(secure_broker, tmp_path / "state", ssl_env(secure_broker)) as (
        daemon,
        topics,
        cfg,
    ):
        doc = await round_trip(cfg, topics)
        assert daemon.fatal is None
    assert doc["status"] == "shadow" and iter_errors("outcome", doc) == []


@pytest.mark.parametrize(
    ("mechanism", "user", "password"),
    [
        (SCRAM_USER.mechanism, SCRAM_USER.name, SCRAM_USER.password),
        ("PLAIN", PLAIN_USER, PLAIN_PASSWORD),
    ],
    ids=["scram-sha-512", "plain"],
)
async def test_sasl_ssl_round_trip(
    secure_broker: SecureBroker, tmp_path: Path, mechanism: str, user: str, password: str
) -> None:
    env = sasl_env(secure_broker, tmp_path, mechanism, user, password)
    async with secure_daemon(secure_broker, tmp_path / "state", env) as (daemon, topics, cfg):
        doc = await round_trip(cfg, topics)
        assert daemon.fatal is None
    assert doc["status"] == "shadow" and iter_errors("outcome", doc) == []


def test_wrong_password_stops_serve_once_with_a_clear_error(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    env = {
        **os.environ,
        "REMED_STATE_DIR": str(tmp_path / "state"),
        "REMED_HTTP_ENABLED": "false",
        "REMED_TELEMETRY_LOG_FORMAT": "json",
        **sasl_env(secure_broker, tmp_path, SCRAM_USER.mechanism, SCRAM_USER.name, wrong),
    }
    config = tmp_path / "remed.toml"
    config.write_text("[kafka]\ngroup_id = 'remed-wrong-password'\n")
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "remed_daemon", "serve", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=SERVE_EXIT_TIMEOUT_S,
        check=False,
    )
    elapsed = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    # One exit with EX_CONFIG, not a process that keeps reconnecting: systemd's
    # RestartPreventExitStatus=78 (systemd/remed.service) then leaves it stopped.
    assert proc.returncode == EXIT_KAFKA_AUTH, out[-3000:]
    assert elapsed < SERVE_EXIT_TIMEOUT_S
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("remed serve: ") and "kafka.sasl_password" in last, last
    assert "SCRAM-SHA-512" in last and "Authentication failed" in last, last  # the broker's answer
    assert wrong not in out and SCRAM_USER.password not in out  # no credential in any output
    assert out.count("Kafka refused remed's credentials") == 1, out[-3000:]


async def test_wrong_password_in_process_stops_the_daemon(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    env = sasl_env(secure_broker, tmp_path, SCRAM_USER.mechanism, SCRAM_USER.name, "nope")
    cfg = load(
        None,
        {"REMED_STATE_DIR": str(tmp_path / "state"), "REMED_HTTP_ENABLED": "false", **env},
    )
    with pytest.raises(KafkaAuthError, match=r"kafka\.sasl_password"):
        async with asyncio.timeout(60):
            await Daemon(cfg).run()


async def test_broker_certificate_from_another_ca_is_refused(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    env = {**ssl_env(secure_broker), "REMED_KAFKA_SSL_CAFILE": str(secure_broker.other_ca.cert)}
    cfg = load(None, {"REMED_STATE_DIR": str(tmp_path), "REMED_HTTP_ENABLED": "false", **env})
    with pytest.raises(KafkaAuthError, match=r"kafka\.ssl_cafile"):
        await check_credentials(cfg.kafka)
    # the right CA passes the same check
    good = load(
        None,
        {"REMED_STATE_DIR": str(tmp_path), "REMED_HTTP_ENABLED": "false", **ssl_env(secure_broker)},
    )
    await check_credentials(good.kafka)


async def test_missing_client_certificate_is_refused(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    # the SSL listener requires mutual TLS; TLS 1.3 reports that after the handshake
    env = {
        k: v
        for k, v in ssl_env(secure_broker).items()
        if k not in ("REMED_KAFKA_SSL_CERTFILE", "REMED_KAFKA_SSL_KEYFILE")
    }
    cfg = load(None, {"REMED_STATE_DIR": str(tmp_path), "REMED_HTTP_ENABLED": "false", **env})
    with pytest.raises(KafkaAuthError, match=r"kafka\.ssl_certfile"):
        await check_credentials(cfg.kafka)
