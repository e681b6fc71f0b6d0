"""Transport security for every Kafka client the daemon makes (TLS, SASL) and what a refusal means.

`kafka_client_options(cfg)` is the one place that turns `[kafka]` into aiokafka's keyword
arguments (`security_protocol`, `ssl_context`, `sasl_*`); the diagnoses consumer, the DLT
producer and the outcomes producer all pass `**kafka_client_options(cfg)`, so none of them can
connect with less than the configured protection.

Refused credentials are a configuration problem, not an outage. aiokafka's bootstrap swallows
the broker's answer (it logs it and raises "Unable to bootstrap"), which would make a wrong
password look like a broker that is away and be retried for ever. `check_credentials(cfg)`
therefore opens one connection with the same options first and turns a SASL refusal, an
unsupported mechanism or a TLS failure into `KafkaAuthError`, whose message names the keys to
fix and quotes the broker. The daemon does not retry it: it stops (exit status 78, EX_CONFIG)
and the systemd unit's `RestartPreventExitStatus=` keeps it from being restarted in a loop.
A broker that simply does not answer is left to the callers' usual backoff.

Credentials never reach a log line: the password is a `Secret` until the moment it is handed to
aiokafka, and the error messages name the keys, never the values.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from aiokafka.errors import (
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from remed_daemon.errors import ConfigError, RemedError

if TYPE_CHECKING:
    from remed_daemon.config import KafkaConfig

TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
# sysexits.h EX_CONFIG: what `remed serve` exits with when the broker refuses the credentials.
EXIT_KAFKA_AUTH = 78


class KafkaAuthError(RemedError):
    """The broker refused remed's TLS or SASL credentials: fix the config, retrying cannot help."""

    retriable = False


def load_ssl_context(
    cafile: str = "", certfile: str = "", keyfile: str = "", key_password: str = ""
) -> ssl.SSLContext:
    """A client TLS context that verifies the broker (hostname included) against `cafile`
    (empty: the system's CA store) and presents `certfile`/`keyfile` when given. ConfigError
    names the key whose file OpenSSL refused."""
    from aiokafka.helpers import create_ssl_context

    try:
        ctx = create_ssl_context(cafile=cafile or None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"kafka.ssl_cafile {cafile!r} is not a PEM CA bundle OpenSSL can read ({exc}); "
            "give the CA certificate(s) that signed the broker's certificate"
        ) from None
    if certfile:
        try:
            # A callable password: an encrypted key without kafka.ssl_key_password then fails
            # here instead of OpenSSL prompting on a terminal the daemon does not have.
            ctx.load_cert_chain(certfile, keyfile or None, password=lambda: key_password)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"kafka.ssl_certfile {certfile!r} / kafka.ssl_keyfile {keyfile!r}: cannot load "
                f"the client certificate and key ({exc}); the key must match the certificate, "
                "and an encrypted key needs kafka.ssl_key_password"
            ) from None
    return ctx


def kafka_client_options(cfg: KafkaConfig) -> dict[str, Any]:
    """aiokafka keyword arguments for `cfg`'s security settings (every client uses these)."""
    opts: dict[str, Any] = {"security_protocol": cfg.security_protocol}
    if cfg.security_protocol in TLS_PROTOCOLS:
        opts["ssl_context"] = load_ssl_context(
            cfg.ssl_cafile, cfg.ssl_certfile, cfg.ssl_keyfile, cfg.ssl_key_password.reveal()
        )
    if cfg.security_protocol in SASL_PROTOCOLS:
        opts["sasl_mechanism"] = cfg.sasl_mechanism
        opts["sasl_plain_username"] = cfg.sasl_username
        opts["sasl_plain_password"] = cfg.sasl_password.reveal()
    return opts


def _bootstrap_hosts(bootstrap: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for item in bootstrap.split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":")
        if not host:
            host, port = item, "9092"
        out.append((host.strip("[]"), int(port)))
    return out


def describe_refusal(cfg: KafkaConfig, exc: BaseException) -> KafkaAuthError | None:
    """The KafkaAuthError an exception from connecting to the broker stands for, if any.

    A TLS alert that arrives after the handshake (TLS 1.3 reports a refused client certificate
    on the first read) reaches us as aiokafka's "Connection closed" caused by the SSLError, so
    the chain of causes is searched too.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        refusal = _describe_one(cfg, cause)
        if refusal is not None:
            return refusal
        cause = cause.__cause__ or cause.__context__
    return None


def _describe_one(cfg: KafkaConfig, exc: BaseException) -> KafkaAuthError | None:
    where = f"Kafka at {cfg.bootstrap} ({cfg.security_protocol})"
    if isinstance(exc, SaslAuthenticationFailed):
        return KafkaAuthError(
            f"{where} refused the SASL credentials of kafka.sasl_username "
            f"{cfg.sasl_username!r} with kafka.sasl_mechanism {cfg.sasl_mechanism}: the broker "
            f"said {_broker_text(exc)!r}. Fix kafka.sasl_username / kafka.sasl_password (or the "
            "file REMED_KAFKA_SASL_PASSWORD_FILE names); remed does not retry refused "
            "credentials"
        )
    if isinstance(exc, UnsupportedSaslMechanismError):
        return KafkaAuthError(
            f"{where} does not offer kafka.sasl_mechanism {cfg.sasl_mechanism}: the broker said "
            f"{_broker_text(exc)!r}. Set kafka.sasl_mechanism to one it enables"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return KafkaAuthError(
            f"{where}: the broker's certificate does not verify against kafka.ssl_cafile "
            f"{cfg.ssl_cafile or '(system CA store)'!r}: {exc.verify_message or exc}. Give the "
            "CA that signed it, and make sure the certificate names the host in "
            "kafka.bootstrap"
        )
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError):
        return None  # the peer went away mid-handshake: an outage, retried like one
    if isinstance(exc, ssl.SSLError):
        return KafkaAuthError(
            f"{where}: the TLS handshake failed ({exc}). Check that the listener speaks TLS, "
            "and kafka.ssl_certfile / kafka.ssl_keyfile if it requires a client certificate"
        )
    return None


def _broker_text(exc: BaseException) -> str:
    # aiokafka's error str is "[Error 58] SaslAuthenticationFailed: <broker's message>"
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text else text


async def check_credentials(cfg: KafkaConfig) -> None:
    """Raise KafkaAuthError if the first reachable bootstrap broker refuses `cfg`'s TLS/SASL
    settings. Returns quietly when they are accepted, when there is nothing to check
    (PLAINTEXT) or when no broker answers (an outage: the caller's backoff deals with it)."""
    if cfg.security_protocol == "PLAINTEXT":
        return
    from aiokafka.conn import create_conn

    opts = kafka_client_options(cfg)
    for host, port in _bootstrap_hosts(cfg.bootstrap):
        try:
            conn = await create_conn(
                host,
                port,
                client_id="remed-credentials-check",
                request_timeout_ms=cfg.request_timeout_ms,
                **opts,
            )
        except (KafkaError, OSError, TimeoutError) as exc:
            refusal = describe_refusal(cfg, exc)
            if refusal is not None:
                raise refusal from None
            continue
        conn.close()
        return
