"""The daemon's one configuration: frozen, typed, loaded from TOML plus `REMED_*` overrides.

Every key has a default except what cannot have one (nothing, today), so an empty file runs a
safe daemon: shadow mode, Kafka and webhook intakes on localhost, no playbook ever applied.

Environment overrides are `REMED_<SECTION>_<KEY>` (upper case), e.g. `REMED_HTTP_BEARER_TOKEN`,
`REMED_KAFKA_BOOTSTRAP`; top-level keys are `REMED_<KEY>` (`REMED_STATE_DIR`). They win over the
file. For secrets, `REMED_<SECTION>_<KEY>_FILE` names a file holding the value (systemd's
`LoadCredential=`), which keeps secrets out of both the TOML and the environment.

Errors name the key, where its value came from (file or variable) and what to write instead.
Secrets are `Secret` values: their repr is `***`, so a config can be logged whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from remed_daemon.errors import ConfigError

ENV_PREFIX = "REMED_"


class Secret:
    """A string that never shows itself in repr/str/logs; `reveal()` is the only way in."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class KafkaConfig:
    enabled: bool = True
    bootstrap: str = "127.0.0.1:9092"
    group_id: str = "remed"
    # Static group membership (KIP-345): a restarted instance with the same id takes its
    # partitions back at once instead of waiting session_timeout_ms for a rebalance. Give
    # each instance its own stable value (e.g. the host name); empty = dynamic membership.
    group_instance_id: str = ""
    diagnoses_topic: str = "remed.diagnoses"
    outcomes_topic: str = "remed.outcomes"
    # Operators' verdicts on outcomes (`remed feedback`, POST /feedback/{id}); Real-RFT reads it.
    feedback_topic: str = "remed.feedback"
    dlt_topic: str = "remed.diagnoses.DLT"
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    # Remediations never run inside the poll loop, so this only bounds a stalled event loop.
    max_poll_interval_ms: int = 300_000
    request_timeout_ms: int = 15_000
    # In-memory reports not yet finished: above this the consumer pauses, below half it resumes.
    queue_max_items: int = 1_000
    commit_interval_s: float = 1.0
    outbox_retry_initial_s: float = 0.5
    outbox_retry_max_s: float = 30.0
    producer_linger_ms: int = 5
    # A report older than this (its `observed_at`, else the Kafka record's timestamp) is not
    # remediated: its outcome is `expired`. A consumer that fell behind, or a new consumer
    # group reading from the start, must not replay yesterday's alerts against today's hosts.
    max_report_age_s: float = 3600.0
    # Transport security of every Kafka client (kafka_security.py). SSL: TLS, the broker
    # verified against ssl_cafile (empty = the system CA store), ssl_certfile/ssl_keyfile for
    # mutual TLS; SASL_SSL: TLS plus a SASL login (PLAIN or SCRAM) with sasl_username and
    # sasl_password (prefer REMED_KAFKA_SASL_PASSWORD_FILE).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_key_password: Secret = field(default_factory=lambda: Secret(""))
    sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = ""
    sasl_username: str = ""
    sasl_password: Secret = field(default_factory=lambda: Secret(""))

    def __post_init__(self) -> None:
        _positive(self, "session_timeout_ms", "queue_max_items", "request_timeout_ms",
                  "max_report_age_s")  # fmt: skip
        self._check_security()
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ConfigError(
                "kafka.heartbeat_interval_ms must be at most a third of kafka.session_timeout_ms "
                f"(got {self.heartbeat_interval_ms} and {self.session_timeout_ms}): lower the "
                "heartbeat or raise the session timeout"
            )

    def _check_security(self) -> None:
        proto = self.security_protocol
        tls, sasl = proto in ("SSL", "SASL_SSL"), proto in ("SASL_PLAINTEXT", "SASL_SSL")
        ssl_keys = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password")
        set_ssl = [k for k in ssl_keys if getattr(self, k)]
        if set_ssl and not tls:
            raise ConfigError(
                f"kafka.{set_ssl[0]} is set but kafka.security_protocol = {proto!r} does not "
                "use TLS: set security_protocol = 'SSL' or 'SASL_SSL', or remove the ssl_ keys"
            )
        set_sasl = [k for k in ("sasl_mechanism", "sasl_username", "sasl_password")
                    if getattr(self, k)]  # fmt: skip
        if set_sasl and not sasl:
            raise ConfigError(
                f"kafka.{set_sasl[0]} is set but kafka.security_protocol = {proto!r} has no "
                "SASL login: set security_protocol = 'SASL_SSL', or remove the sasl_ keys"
            )
        if sasl:
            missing = [k for k in ("sasl_mechanism", "sasl_username", "sasl_password")
                       if not getattr(self, k)]  # fmt: skip
            if missing:
                raise ConfigError(
                    f"kafka.security_protocol = {proto!r} needs "
                    + ", ".join(f"kafka.{k}" for k in missing)
                    + " (mechanism PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; the password best "
                    "from REMED_KAFKA_SASL_PASSWORD_FILE)"
                )
            if proto == "SASL_PLAINTEXT" and self.sasl_mechanism == "PLAIN":
                raise ConfigError(
                    "kafka.sasl_mechanism = 'PLAIN' over security_protocol = 'SASL_PLAINTEXT' "
                    "sends the password in clear text: use 'SASL_SSL', or a SCRAM mechanism"
                )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ConfigError(
                "kafka.ssl_keyfile is set without kafka.ssl_certfile: mutual TLS needs the "
                "client certificate too"
            )
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, key)
            if path and not Path(path).is_file():
                raise ConfigError(
                    f"kafka.{key} {path!r} is not a file: give the path of a PEM file that "
                    "the remed user may read"
                )
        # The files are loaded when the daemon starts (kafka_security.py), not here: operator
        # commands read this config too and need not be able to read the daemon's key.


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9095
    bearer_token: Secret = field(default_factory=lambda: Secret(""))
    basic_user: str = ""
    basic_password: Secret = field(default_factory=lambda: Secret(""))
    # Alertmanager's default group batches are small; 1 MiB leaves room for 100s of alerts.
    max_body_bytes: int = 1_048_576
    # At least Alertmanager's repeat_interval (default 4h): a repeat of a delivered alert is a
    # duplicate for this long.
    dedup_window_s: float = 4 * 3600.0
    # Non-finished incidents above which the webhook answers 503 (Alertmanager retries 5xx).
    max_pending_incidents: int = 5_000
    service_labels: tuple[str, ...] = ("service", "job", "app")
    host_labels: tuple[str, ...] = ("host", "instance", "node")
    # HTTPS for the webhook and the approval endpoint (one listener): the server's certificate
    # chain and its unencrypted private key, PEM; both or neither (empty = plain HTTP). The
    # files are loaded when the daemon starts (remed_daemon/http.py), not here: an operator's
    # `remed approve` reads this config too and need not be able to read the daemon's key.
    tls_certfile: str = ""
    tls_keyfile: str = ""
    # mTLS: clients must present a certificate signed by a CA in this PEM file; empty = any
    # client that has the webhook's credentials.
    tls_client_cafile: str = ""
    # The CA (PEM) that signed tls_certfile: what `remed approve|reject` verifies the daemon's
    # certificate against, only that CA; empty = the system CA store. Client side only.
    tls_server_cafile: str = ""
    # The feedback endpoint's own token (POST /feedback/{incident_id}; never the webhook's or
    # the approval endpoint's); empty = the endpoint answers 503.
    feedback_token: Secret = field(default_factory=lambda: Secret(""))
    # The read-only operator API's own token (GET /incidents, /incidents/{id}, /events; what
    # `remed incidents|show|tail` send): a dashboard or an observer reads what the daemon did
    # without being able to decide a plan. agents.approval_token reads too (whoever may decide
    # may read). Empty, and no approval token either = the API answers 503.
    operator_token: Secret = field(default_factory=lambda: Secret(""))

    def __post_init__(self) -> None:
        _positive(self, "max_body_bytes", "max_pending_incidents")
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            given, missing = ("tls_certfile", "tls_keyfile")
            if not self.tls_certfile:
                given, missing = missing, given
            raise ConfigError(
                f"http.{given} is set but http.{missing} is not: HTTPS needs both the "
                "certificate chain and its private key (PEM files); set both, or neither for "
                "plain HTTP"
            )
        if self.tls_client_cafile and not self.tls_certfile:
            raise ConfigError(
                "http.tls_client_cafile (client certificates) needs HTTPS: set http.tls_certfile "
                "and http.tls_keyfile too, or leave http.tls_client_cafile empty"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"http.port must be 0..65535 (0 = any free port), got {self.port}")
        if self.enabled and not self.bearer_token and not (self.basic_user and self.basic_password):
            raise ConfigError(
                "http is enabled without credentials: set http.bearer_token (or "
                "REMED_HTTP_BEARER_TOKEN), or http.basic_user and http.basic_password, or set "
                "http.enabled = false"
            )
        if bool(self.basic_user) != bool(self.basic_password):
            raise ConfigError("http.basic_user and http.basic_password must be set together")


@dataclass(frozen=True)
class SchedulerConfig:
    max_concurrency: int = 4
    per_target_budget_per_hour: int = 6
    breaker_failures: int = 3
    breaker_open_s: float = 900.0
    kill_switch: bool = False
    # When this file exists, automation stops at once (touch it; remove it to resume).
    kill_switch_file: str = ""

    def __post_init__(self) -> None:
        _positive(self, "max_concurrency", "per_target_budget_per_hour", "breaker_failures")


@dataclass(frozen=True)
class RemediationConfig:
    """How incidents are remediated: by ThinkRemed (probe, plan, guard, check, snapshot, apply,
    verify, reflect, undo; its knobs are `[agents]`), with one of the planners."""

    # shadow: probe, plan, guard and check, apply nothing (outcome `shadow`); ansible: apply
    # with ansible-runner.
    mode: Literal["shadow", "ansible"] = "shadow"
    # Only "thinkremed": the one engine (the older "pipeline" engine is now planner = "static").
    engine: str = "thinkremed"
    # static: a fixed playbook (static_playbook); triton: the model; oracle: expert playbooks
    # from agents.oracle_playbook_dir. Every plan meets the guard.
    planner: Literal["static", "triton", "oracle"] = "static"
    # The playbook the static planner returns (a restart of the target service by default);
    # `{{ remed_host }}` and `{{ remed_service }}` in it are replaced by the target's names.
    static_playbook: str = ""
    triton_url: str = "127.0.0.1:8000"
    triton_model: str = "remed_planner"
    planner_timeout_s: float = 120.0
    planner_max_tokens: int = 384
    planner_retry_initial_s: float = 1.0
    planner_retry_max_s: float = 60.0
    planner_max_attempts: int = 5
    inventory: str = ""
    ssh_private_key: str = ""
    ssh_user: str = ""
    known_hosts: str = ""
    playbook_timeout_s: float = 600.0
    # Read-only command run on the target host over SSH after apply; exit 0 = recovered.
    verify_command: str = ""
    verify_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        _positive(self, "planner_timeout_s", "playbook_timeout_s", "planner_max_attempts")
        if self.mode == "ansible" and not self.inventory:
            raise ConfigError(
                "remediation.mode = 'ansible' needs remediation.inventory (an Ansible inventory "
                "file naming the target hosts); use mode = 'shadow' to plan without applying"
            )
        if self.engine != "thinkremed":
            close = difflib.get_close_matches(self.engine, ["thinkremed"], n=1)
            hint = "did you mean 'thinkremed'? " if close else ""
            raise ConfigError(
                f"remediation.engine = {self.engine!r} is not an engine: {hint}ThinkRemed is "
                "the only one. The former 'pipeline' engine's fixed playbook is planner = "
                "'static' (with static_playbook), its plan-only mode is mode = 'shadow'; "
                "delete the engine line or write engine = 'thinkremed'"
            )
        if self.static_playbook:
            if not Path(self.static_playbook).is_file():
                raise ConfigError(
                    f"remediation.static_playbook {self.static_playbook!r} is not a file: "
                    "give the path of a playbook, or leave it empty for the built-in restart"
                )


@dataclass(frozen=True)
class AgentsConfig:
    """ThinkRemed's knobs (the engine of `[remediation]`)."""

    max_attempts: int = 3
    probe_timeout_s: float = 10.0
    probe_output_max_chars: int = 2000
    # How often per attempt the model may ask for more (allowlisted) probes before planning.
    probe_rounds: int = 1
    ssh_connect_timeout_s: float = 10.0
    check_timeout_s: float = 120.0
    verify_window_s: float = 30.0
    verify_stable_s: float = 3.0
    verify_interval_s: float = 1.0
    verify_timeout_s: float = 10.0
    snapshot_max_file_bytes: int = 8 * 1_048_576
    snapshot_timeout_s: float = 30.0
    # The approval endpoint's own token (never the webhook's); empty = approvals disabled, so
    # high-risk plans expire unanswered and are rejected.
    approval_token: Secret = field(default_factory=lambda: Secret(""))
    approval_timeout_s: float = 3600.0
    planner_retries: int = 2
    planner_breaker_failures: int = 3
    planner_breaker_open_s: float = 60.0
    planner_temperature: float = 0.0
    # Expert playbooks for planner = "oracle": <dir>/<category>/<service>.yml, <category>.yml
    # or <service>.yml (the chaos lab writes its own: `python -m chaos.playbooks DIR`); empty =
    # the oracle has no playbook for anything.
    oracle_playbook_dir: str = ""
    # Topology YAML (hosts and services, the chaos/README.md shape); empty = the chaos lab's.
    topology_file: str = ""
    # Let a report's `labels.remed_planner` pick another of the configured planners (how
    # `remed bench --planner` chooses one). Off by default: alert labels are untrusted text.
    planner_from_label: bool = False

    def __post_init__(self) -> None:
        _positive(self, "max_attempts", "probe_timeout_s", "verify_window_s",
                  "approval_timeout_s", "probe_output_max_chars")  # fmt: skip
        if self.max_attempts > 20:
            raise ConfigError(
                f"agents.max_attempts = {self.max_attempts} is more than an outcome can "
                "record (20); use at most 20"
            )
        if self.verify_stable_s > self.verify_window_s:
            raise ConfigError(
                "agents.verify_stable_s must not exceed agents.verify_window_s: a check can "
                "only be held stable within the window"
            )
        if self.topology_file and not Path(self.topology_file).is_file():
            raise ConfigError(f"agents.topology_file {self.topology_file!r} is not a file")
        if self.oracle_playbook_dir and not Path(self.oracle_playbook_dir).is_dir():
            raise ConfigError(
                f"agents.oracle_playbook_dir {self.oracle_playbook_dir!r} is not a directory"
            )


@dataclass(frozen=True)
class LifecycleConfig:
    # SIGTERM: in-flight work gets this long to finish, then it is cancelled.
    drain_budget_s: float = 30.0
    # A stalled loop stops sending WATCHDOG=1 after this long without progress.
    watchdog_stall_s: float = 30.0

    def __post_init__(self) -> None:
        _positive(self, "watchdog_stall_s")


@dataclass(frozen=True)
class TelemetryConfig:
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces; empty = no export.
    otlp_endpoint: str = ""
    # Append finished spans as JSON lines to this file (for hosts without a collector);
    # empty = off.
    spans_file: str = ""
    service_name: str = "remed"


@dataclass(frozen=True)
class Config:
    state_dir: Path = Path("/var/lib/remed")
    # Finished incidents whose outcome was delivered are deleted after this long. They are the
    # idempotency record, so this must cover http.dedup_window_s (Alertmanager repeats).
    journal_retention_s: float = 7 * 86400.0
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    remediation: RemediationConfig = field(default_factory=RemediationConfig)
    agents: AgentsConfig = field(default_factory=AgentsConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)

    def __post_init__(self) -> None:
        if self.journal_retention_s < self.http.dedup_window_s:
            raise ConfigError(
                f"journal_retention_s ({self.journal_retention_s}) is shorter than "
                f"http.dedup_window_s ({self.http.dedup_window_s}): a repeated alert would be "
                "remediated again; raise journal_retention_s"
            )
        if not self.kafka.enabled and not self.http.enabled:
            raise ConfigError(
                "both intakes are disabled: enable kafka.enabled or http.enabled, or there is "
                "nothing to serve"
            )

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "journal.sqlite3"

    @property
    def kill_switch_path(self) -> Path:
        k = self.scheduler.kill_switch_file
        return Path(k) if k else self.state_dir / "KILL"


SECTIONS: dict[str, type[Any]] = {
    name: typ
    for name, typ in get_type_hints(Config).items()
    if isinstance(typ, type) and dataclasses.is_dataclass(typ)
}


def _positive(obj: Any, *names: str) -> None:
    section = type(obj).__name__.removesuffix("Config").lower()
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise ConfigError(f"{section}.{name} must be > 0, got {value!r}")


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Turn a TOML value or an environment string into `typ`, or say what was expected."""
    from_env = isinstance(value, str) and where.startswith("$")
    origin = get_origin(typ)
    if typ is Secret:
        if isinstance(value, Secret):
            return value
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string secret, got {type(value).__name__}")
        return Secret(value)
    if origin is Literal:
        allowed = get_args(typ)
        if value not in allowed:
            raise ConfigError(
                f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}"
            )
        return value
    if origin in (Union, types.UnionType):
        raise ConfigError(f"{where}: unions are not supported in config")
    if origin is tuple:
        if from_env:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    if typ is bool:
        if from_env:
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if typ is int:
        if from_env:
            with contextlib.suppress(ValueError):
                return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if typ is float:
        if from_env:
            with contextlib.suppress(ValueError):
                return float(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if typ is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        return Path(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {typ!r}")  # a bug in this module


def _build(cls: type[Any], table: Mapping[str, Any], section: str, origin: str) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        label = f"{section}.{key}" if section else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{origin}: unknown key {label!r}{hint}")
        if isinstance(value, tuple) and value and value[0] == "$env":
            _, var, raw = value
            kwargs[key] = _coerce(raw, hints[key], f"${var}")
        else:
            kwargs[key] = _coerce(value, hints[key], f"{origin}: {label}")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """`REMED_HTTP_PORT=9` → {"http": {"port": ("$env", "REMED_HTTP_PORT", "9")}}."""
    out: dict[str, dict[str, Any]] = {"": {}}
    top = {f.name for f in dataclasses.fields(Config)} - set(SECTIONS)
    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        if rest in top:
            out[""][rest] = ("$env", var, raw)
            continue
        for section, cls in SECTIONS.items():
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1 :]
                hints = get_type_hints(cls)
                if key in hints:
                    out.setdefault(section, {})[key] = ("$env", var, raw)
                elif key.endswith("_file") and hints.get(key[:-5]) is Secret:
                    out.setdefault(section, {})[key[:-5]] = ("$env", var, _read_secret(var, raw))
                break
    return out


def _read_secret(var: str, path: str) -> str:
    try:
        return Path(path).read_text().rstrip("\n")
    except OSError as exc:
        raise ConfigError(
            f"${var}: cannot read the secret file {path!r} ({exc.strerror}); check the path "
            "and that the remed user may read it"
        ) from None


def load(path: Path | None, env: Mapping[str, str] | None = None) -> Config:
    """Read `path` (TOML; None = defaults only), apply `REMED_*` overrides, validate."""
    env = os.environ if env is None else env
    doc: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(
                f"config file {path} does not exist: copy systemd/remed.toml.example there "
                "and edit it"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    overrides = _env_overrides(env)
    top: dict[str, Any] = {}
    for key, value in doc.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: [{key}] must be a table")
            continue
        top[key] = value
    top.update(overrides.get("", {}))
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        table = dict(doc.get(name, {}))
        table.update(overrides.get(name, {}))
        sections[name] = _build(cls, table, name, origin)
    hints = get_type_hints(Config)
    kwargs = dict(sections)
    for key, value in top.items():
        if key not in hints or key in SECTIONS:
            close = difflib.get_close_matches(key, list(hints), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{origin}: unknown key {key!r}{hint}")
        if isinstance(value, tuple) and value and value[0] == "$env":
            kwargs[key] = _coerce(value[2], hints[key], f"${value[1]}")
        else:
            kwargs[key] = _coerce(value, hints[key], f"{origin}: {key}")
    try:
        return Config(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def reloadable_changes(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """(applied, ignored) keys between two configs; SIGHUP applies only scheduler/telemetry
    level settings — the rest needs a restart and is reported as ignored."""
    applied: list[str] = []
    ignored: list[str] = []
    for name in SECTIONS:
        a, b = getattr(old, name), getattr(new, name)
        for f in dataclasses.fields(a):
            if getattr(a, f.name) != getattr(b, f.name):
                key = f"{name}.{f.name}"
                if name == "scheduler" or key == "telemetry.log_level":
                    applied.append(key)
                else:
                    ignored.append(key)
    if old.state_dir != new.state_dir:
        ignored.append("state_dir")
    return applied, ignored
