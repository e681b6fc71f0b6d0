"""A single-node Apache Kafka 4 broker in KRaft mode on 127.0.0.1, for development and tests.

The jars come from Maven Central (`make setup` resolves `kafka_runtime/pom.xml` into
`.cache/kafka/libs`); this module formats the storage on first start, runs `kafka.Kafka` with a
bounded heap, waits until the broker answers metadata requests, and creates remed's topics.

The stack's broker has one PLAINTEXT listener. Tests of remed's transport security start a
broker of their own with extra listeners beside it (`Kafka(paths, extra_listeners=("SSL",
"SASL_SSL"), extra_config=..., scram_users=...)`): each is named after its security protocol and
gets a port from the OS; the PLAINTEXT listener stays for the broker's own traffic and for
creating topics, and SCRAM users are written into the metadata log when the storage is
formatted (`kafka-storage format --add-scram`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remed_stack import procs
from remed_stack.paths import StackPaths

RUNTIME_DIR = Path(__file__).resolve().parent / "kafka_runtime"
HEAP = ("-Xms128m", "-Xmx512m")
READY_TIMEOUT_S = 90.0
ADMIN_TIMEOUT_MS = 15_000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int


# contract (ARCHITECTURE.md): the daemon's topics. Diagnoses are keyed by target, so more than one
# partition lets several daemons share the work while each target stays ordered.
TOPICS = (
    TopicSpec("remed.diagnoses", partitions=6),
    TopicSpec("remed.outcomes", partitions=3),
    TopicSpec("remed.feedback", partitions=1),
    TopicSpec("remed.diagnoses.DLT", partitions=1),
)


@dataclass(frozen=True)
class ScramUser:
    """A SASL/SCRAM login created with the broker's storage (first start only)."""

    name: str
    password: str
    mechanism: str = "SCRAM-SHA-512"

    def format_arg(self) -> str:
        return f"--add-scram={self.mechanism}=[name={self.name},password={self.password}]"


LISTENER_PROTOCOLS = ("SSL", "SASL_PLAINTEXT", "SASL_SSL")


def new_cluster_id() -> str:
    """16 random bytes, URL-safe base64 without padding, as `kafka-storage random-uuid` makes.

    Like Kafka's own Uuid.randomUuid, this draws again when the text starts with "-" (1 in 64):
    command-line tools would take such an id for an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class Kafka:
    """The stack's broker: `up()` is idempotent, `down()` stops what `up()` started."""

    name = "kafka"

    def __init__(
        self,
        paths: StackPaths,
        *,
        extra_listeners: Sequence[str] = (),
        extra_config: Mapping[str, str] | None = None,
        scram_users: Sequence[ScramUser] = (),
    ) -> None:
        """`extra_listeners`: security protocols (SSL, SASL_PLAINTEXT, SASL_SSL), one listener
        each beside PLAINTEXT; `extra_config`: more server.properties lines (TLS stores, SASL
        mechanisms, per-listener settings); `scram_users`: logins to create at format time."""
        unknown = [p for p in extra_listeners if p not in LISTENER_PROTOCOLS]
        if unknown:
            raise ValueError(f"unknown listener protocol(s) {unknown}: use {LISTENER_PROTOCOLS}")
        self.paths = paths
        self.extra_listeners = tuple(extra_listeners)
        self.extra_config = dict(extra_config or {})
        self.scram_users = tuple(scram_users)
        self.dir = paths.component_dir(self.name)
        self.pidfile = self.dir / "kafka.pid"
        self.logfile = self.dir / "kafka.log"
        self.statefile = self.dir / "state.json"
        self.data_dir = self.dir / "data"

    # -- public -----------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self._state()['port']}"

    def listener_bootstrap(self, protocol: str) -> str:
        """The address of the extra listener for `protocol` (e.g. "SASL_SSL")."""
        if protocol not in self.extra_listeners:
            raise KeyError(f"this broker has no {protocol} listener: {self.extra_listeners}")
        return f"127.0.0.1:{self._state()['listener_ports'][protocol]}"

    def up(self) -> None:
        if procs.live_process(self.pidfile) is None:
            self._start()
        proc = procs.live_process(self.pidfile)
        procs.wait_until(
            self._answers_metadata,
            what="Kafka broker",
            timeout_s=READY_TIMEOUT_S,
            proc=proc,
            logfile=self.logfile,
            interval_s=0.5,
        )
        asyncio.run(self._ensure_topics())

    def down(self) -> None:
        procs.stop(self.pidfile, timeout_s=30.0)

    def status(self) -> dict[str, Any]:
        if not self.statefile.exists():
            return {"bootstrap": None, "ok": False}
        ok = procs.live_process(self.pidfile) is not None and self._answers_metadata()
        return {"bootstrap": self.bootstrap, "ok": ok}

    # -- internals --------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        if self.statefile.exists():
            state: dict[str, Any] = json.loads(self.statefile.read_text())
        else:
            state = {
                "port": procs.free_port(),
                "controller_port": procs.free_port(),
                "cluster_id": new_cluster_id(),
            }
        ports: dict[str, int] = state.setdefault("listener_ports", {})
        missing = [p for p in self.extra_listeners if p not in ports]
        for protocol in missing:
            ports[protocol] = procs.free_port()
        if missing or not self.statefile.exists():
            self.statefile.write_text(json.dumps(state))
        return state

    def _java(self) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise procs.StackError("java not found: install a JDK 17+ (make setup does)")
        libs = self.paths.kafka_libs
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise procs.StackError(f"no Kafka jars in {libs}: run `make setup`")
        return [
            java,
            *HEAP,
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={RUNTIME_DIR / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
        ]

    def _write_config(self) -> Path:
        state = self._state()
        port, cport = state["port"], state["controller_port"]
        extra = [(p, state["listener_ports"][p]) for p in self.extra_listeners]
        listeners = ",".join(f"{p}://127.0.0.1:{n}" for p, n in extra)
        protocol_map = "".join(f",{p}:{p}" for p, _ in extra)
        config = self.dir / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{cport}",
                    f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}"
                    + (f",{listeners}" if listeners else ""),
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}"
                    + (f",{listeners}" if listeners else ""),
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
                    + protocol_map,
                    f"log.dirs={self.data_dir}",
                    "num.partitions=1",
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=6",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "log.retention.hours=24",
                    *(f"{k}={v}" for k, v in self.extra_config.items()),
                    "",
                ]
            )
        )
        return config

    def _start(self) -> None:
        config = self._write_config()
        if not (self.data_dir / "meta.properties").exists():
            # First start: KRaft needs its storage formatted with the cluster id.
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fmt = subprocess.run(
                [
                    *self._java(),
                    "kafka.tools.StorageTool",
                    "format",
                    "--ignore-formatted",
                    # One token with "=": an id is free to start with "-", and as a separate
                    # argument the option parser would read it as an option.
                    f"--cluster-id={self._state()['cluster_id']}",
                    f"--config={config}",
                    *(u.format_arg() for u in self.scram_users),
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if fmt.returncode != 0:
                raise procs.StackError(f"formatting Kafka storage failed:\n{fmt.stderr[-2000:]}")
        procs.spawn(
            [*self._java(), "kafka.Kafka", str(config)],
            pidfile=self.pidfile,
            logfile=self.logfile,
        )

    def _answers_metadata(self) -> bool:
        if not procs.port_open("127.0.0.1", self._state()["port"]):
            return False
        try:
            return asyncio.run(self._cluster_has_broker())
        except Exception:
            return False

    async def _cluster_has_broker(self) -> bool:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, request_timeout_ms=ADMIN_TIMEOUT_MS
        )
        await admin.start()
        try:
            cluster = await admin.describe_cluster()
            return bool(cluster.get("brokers"))
        finally:
            await admin.close()

    async def _ensure_topics(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, request_timeout_ms=ADMIN_TIMEOUT_MS
        )
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(t.name, num_partitions=t.partitions, replication_factor=1)
                for t in TOPICS
                if t.name not in existing
            ]
            if missing:
                await admin.create_topics(missing, timeout_ms=ADMIN_TIMEOUT_MS)
        finally:
            await admin.close()


async def create_private_topics(bootstrap: str, tag: str) -> dict[str, str]:
    """Diagnoses, outcomes and DLT topics under a fresh `remed.<tag><random>` prefix.

    Tests and benchmarks that start their own daemons use these so that they never read one
    another's messages; the dict's keys are the daemon's `[kafka]` config names.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    base = f"remed.{tag}{uuid.uuid4().hex[:10]}"
    names = {
        "diagnoses_topic": f"{base}.diagnoses",
        "outcomes_topic": f"{base}.outcomes",
        "dlt_topic": f"{base}.diagnoses.DLT",
    }
    partitions = {"diagnoses_topic": 6, "outcomes_topic": 3, "dlt_topic": 1}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=ADMIN_TIMEOUT_MS)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(names[key], partitions[key], 1) for key in names],
            timeout_ms=ADMIN_TIMEOUT_MS,
        )
    finally:
        await admin.close()
    return names
