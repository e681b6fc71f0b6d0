"""Chaos scenarios (ARCHITECTURE.md contract) and the diagnosis reports a remediator receives.

A scenario file is YAML holding one scenario mapping or a list of them:

    id: cart-config-redis-port
    category: config-error
    target: {host: app, service: cart}
    fault: {variant: redis-port}      # optional, the fault class's parameters
    report: "cart fails ..."          # optional; generated from the category's templates
    seed: cart-7                      # optional: draw the fault's names from this seed
    variants: true                    # optional: on (seed = id when no seed) or off

Variants (chaos/variants.py): with them on, the names a fix must use (the hog's path, the
nftables table, the dumper, the leaking client, the bad release's version, the config key...)
are drawn from the seed; off, every injection uses today's fixed names. A scenario with a
`seed` has them on unless it says `variants: false`; `remed bench --variants` turns them on
for every scenario that does not say otherwise (seed: its id).

`load_suite("hard")` reads the active system's hard suite (the shop's chaos/scenarios/hard.yaml,
chaos/suites.py); any other name is a path to a file or a directory of `*.yaml`/`*.yml` files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chaos.faults import CATEGORIES, FaultError, Target
from chaos.lab import manager
from chaos.lab import topology as topo

SUITES_DIR = Path(__file__).resolve().parent / "scenarios"
SUITES = ("easy", "medium", "hard", "all")


@dataclass(frozen=True)
class Scenario:
    id: str
    category: str
    target: Target
    fault: dict[str, Any] = field(default_factory=dict)
    report: str | None = None
    source: str = ""
    seed: str | None = None
    variants: bool | None = None  # None: on when `seed` is set or the bench asks for them

    def variant_seed(self, default: bool = False) -> str | None:
        """The seed the fault's names are drawn from, or None for today's fixed names.
        `default`: whether variants are on for a scenario that says nothing (`--variants`)."""
        on = self.variants if self.variants is not None else (self.seed is not None or default)
        return (self.seed or self.id) if on else None

    @classmethod
    def parse(cls, data: Any, source: str = "") -> Scenario:
        where = f"{source}: " if source else ""
        if not isinstance(data, dict):
            raise FaultError(f"{where}a scenario is a mapping with id, category and target")
        missing = {"id", "category", "target"} - set(data)
        if missing:
            raise FaultError(f"{where}scenario lacks {sorted(missing)}")
        unknown = set(data) - {"id", "category", "target", "fault", "report", "seed", "variants"}
        if unknown:
            raise FaultError(f"{where}scenario {data['id']}: unknown fields {sorted(unknown)}")
        if data["category"] not in CATEGORIES:
            raise FaultError(
                f"{where}scenario {data['id']}: unknown category {data['category']!r}; "
                f"the catalog has {list(CATEGORIES)}"
            )
        target = data["target"]
        if not isinstance(target, dict) or not {"host", "service"} <= set(target):
            raise FaultError(f"{where}scenario {data['id']}: target needs host and service")
        fault = data.get("fault") or {}
        if not isinstance(fault, dict):
            raise FaultError(f"{where}scenario {data['id']}: fault must be a mapping of params")
        report = data.get("report")
        variants = data.get("variants")
        if variants is not None and not isinstance(variants, bool):
            raise FaultError(f"{where}scenario {data['id']}: variants must be true or false")
        seed = data.get("seed")
        if seed is not None and not isinstance(seed, str | int):
            raise FaultError(f"{where}scenario {data['id']}: seed must be a string or number")
        return cls(
            id=str(data["id"]),
            category=str(data["category"]),
            target=Target(str(target["host"]), str(target["service"])),
            fault=dict(fault),
            report=str(report) if report else None,
            source=source,
            seed=None if seed is None else str(seed),
            variants=variants,
        )

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "category": self.category,
            "target": {"host": self.target.host, "service": self.target.service},
        }
        if self.fault:
            out["fault"] = self.fault
        if self.report:
            out["report"] = self.report
        if self.seed is not None:
            out["seed"] = self.seed
        if self.variants is not None:
            out["variants"] = self.variants
        return out


def load_file(path: Path) -> list[Scenario]:
    data = yaml.safe_load(path.read_text())
    items = data if isinstance(data, list) else [data]
    return [Scenario.parse(item, str(path)) for item in items if item is not None]


def load_suite(name_or_path: str) -> list[Scenario]:
    """A suite of the active system (easy, medium, hard, all: its generated files, or for a
    system file from outside the repository generated now, chaos/suites.py), or a file or
    directory of scenarios."""
    if name_or_path in SUITES:
        from chaos import suites

        directory = suites.suites_dir()
        if directory is None:
            where = f"generated for {topo.SYSTEM.path}"
            return [Scenario.parse(c, where) for c in suites.suite(name_or_path)]
        path = directory / f"{name_or_path}.yaml"
    else:
        path = Path(name_or_path)
    if path.is_dir():
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        scenarios = [s for f in files for s in load_file(f)]
    elif path.is_file():
        scenarios = load_file(path)
    else:
        raise FaultError(f"no suite {name_or_path!r}: use one of {SUITES} or a file/directory")
    seen: set[str] = set()
    for s in scenarios:
        if s.id in seen:
            raise FaultError(f"duplicate scenario id {s.id!r} in {name_or_path}")
        seen.add(s.id)
    return scenarios


# -- reports ---------------------------------------------------------------------------------

# Per category: (summary, RCA paragraph). Three styles are built from them: a terse alert, a
# verbose RCA and an alert with evidence lines; the scenario id picks one, so a suite varies.
TEMPLATES: dict[str, tuple[str, str]] = {
    "cpu-stress": (
        "High CPU on {host}: {service} latency degraded",
        "{service} on {host} answers slowly. CPU on {host} has been saturated for several "
        "minutes; the busiest process is not one of the services {manager} manages there. "
        "Suspected root cause: a runaway process on {host} starving {service}.",
    ),
    "memory-stress": (
        "Memory pressure on {host} ({service})",
        "Resident memory on {host} grew far beyond the usual footprint of {service} and its "
        "neighbours. The growth is in a process that {manager} does not manage. Suspected "
        "root cause: a memory hog on {host}; {service} risks being OOM-killed.",
    ),
    "disk-io": (
        "Disk I/O saturation on {host} affecting {service}",
        "Write throughput on {host} is pegged; {service}'s data path {data} sees heavy writes "
        "from a process outside the {system}. Suspected root cause: an I/O storm on {host}.",
    ),
    "network-loss": (
        "Packet loss to {service} on {host}:{port}",
        "Clients of {service} ({host}:{port}) see timeouts and retransmissions; the host is up "
        "and the process is running. Suspected root cause: packets to port {port} are being "
        "dropped on {host} (firewall rules in the host's network namespace).",
    ),
    "network-delay": (
        "Latency spike on {service} ({host}:{port})",
        "Requests to {service} on {host}:{port} take hundreds of milliseconds more than usual "
        "while the service itself reports fast handling times. Suspected root cause: traffic "
        "to port {port} on {host} is being diverted through something slow on the network path "
        "(NAT redirect rule in the host's namespace).",
    ),
    "service-down": (
        "{service} on {host} is down",
        "{service} ({managed} on {host}, port {port}) is not running and "
        "was not restarted; its health check fails and dependents report connection refused.",
    ),
    "config-error": (
        "{service} on {host} failing after a config change",
        "{service} on {host} fails its health check since its configuration {config} was "
        "changed: {what} looks wrong. The process may be running but cannot do its job. "
        "Suspected root cause: a bad setting in {config}.",
    ),
    "dependency-down": (
        "{service} on {host} cannot reach its data store",
        "{service} on {host} answers 503: its dependency ({dependency}) refuses connections. "
        "{service} itself is running. Suspected root cause: {dependency} is down.",
    ),
    "port-conflict": (
        "{service} on {host} cannot start: port {port} in use",
        "{manager} cannot keep {service} on {host} running: it exits at start because "
        "port {port} is already bound, and whatever answers on {port} is not {service}. "
        "Suspected root cause: another process holds port {port} on {host}.",
    ),
    "log-flood": (
        "Log disk full on {host}: {service} failing writes",
        "{service} on {host} answers 507: it cannot write its log {log}. The log file system "
        "on {host} is full; a debug log is growing fast. Suspected root cause: a log flood.",
    ),
    "wrong-permissions": (
        "{service} on {host} cannot read its config",
        "{service} on {host} exits at start: its config file {config} is not readable by the "
        "service user {user}. Suspected root cause: wrong ownership or mode on {config}.",
    ),
    "bad-deploy": (
        "{service} on {host} crash-looping after a deploy",
        "{service} on {host} keeps exiting right after start since the last deploy switched "
        "{current} to a new release. Suspected root cause: a broken release; the previous "
        "release {version} worked.",
    ),
    "tls-cert": (
        "TLS certificate problem on {host}: HTTPS clients refuse {service}",
        "HTTPS clients of the {system} fail certificate validation on {host}:{tls_port}: the "
        "certificate "
        "nginx serves ({cert}) has expired. HTTP still works. Suspected root cause: the "
        "certificate was not renewed.",
    ),
    "connection-exhaustion": (
        "{service} on {host}: PostgreSQL connection slots exhausted",
        "{service} on {host} answers 503: PostgreSQL on {pg_host} refuses new connections (too "
        "many clients; max_connections {max_conn}). Most connections come from one client process "
        "on {host} that is not part of the {system}. Suspected root cause: a connection leak.",
    ),
}


def _fields(scenario: Scenario, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    svc = topo.service(scenario.target.service)
    pg = topo.pg_of(svc.name)
    max_conn = (pg.max_connections if pg else 0) or topo.PG_MAX_CONNECTIONS
    fault = {**scenario.fault, **dict(params or {})}
    what = fault.get("variant", "a setting")
    if scenario.category == "config-error":
        from chaos.faults.service import CONFIG_ERRORS

        variants = CONFIG_ERRORS.get(svc.name, {})
        key = fault.get("variant") or next(iter(variants), "")
        what = variants[key].what if key in variants else "a setting"
    return {
        "host": svc.host, "service": svc.name, "port": svc.port, "config": svc.config,
        "log": svc.log, "data": svc.data, "program": svc.program, "user": topo.SHOP_USER,
        "current": topo.current_link(svc.name), "version": topo.SHOP_VERSION, "what": what,
        "dependency": (f"{store.name}@{store.host}" if (store := topo.store_of(svc.name))
                       else "a dependency"),
        "cert": topo.TLS_CERT, "max_conn": max_conn,
        "manager": svc.manager, "managed": manager.describe(svc), "system": topo.SYSTEM.name,
        "tls_port": topo.HTTPS_PORT, "pg_host": pg.host if pg else "its host",
    }  # fmt: skip


def style_of(scenario: Scenario) -> str:
    return ("terse", "rca", "evidence")[int(hashlib.sha1(scenario.id.encode()).hexdigest(), 16) % 3]


def diagnosis(
    scenario: Scenario, evidence: tuple[str, ...] = (), *,
    params: Mapping[str, Any] | None = None, blind: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """The DiagnosisReport (schema `diagnosis-report`) for a scenario. `params`: the injected
    fault's parameters (`Fault.params()`), so a report about a drawn variant (the config key
    broken) says what was injected; the names a fix needs are never in the report text, only
    in `evidence` as the confirm check read them from the host. `blind`: no `category` field
    and no category word in the text, as an Alertmanager alert arrives; the planner must infer
    the fault from the symptoms and its probes."""
    summary_t, rca_t = TEMPLATES[scenario.category]
    values = _fields(scenario, params)
    summary = summary_t.format(**values)
    style = style_of(scenario)
    if scenario.report:
        text = scenario.report
    elif style == "terse":
        label = "" if blind else f"{scenario.category} "
        text = f"ALERT {label}{scenario.target.service}@{scenario.target.host}: {summary}"
    else:
        text = rca_t.format(**values) + " " + topo.facts(scenario.target.service)
    report: dict[str, Any] = {
        "schema_version": 1,
        "report_id": f"bench-{scenario.id}"[:128],
        "source": "bench",
        "target": {"host": scenario.target.host, "service": scenario.target.service},
        "severity": "critical",
        "summary": summary[:1000],
        "report": text[:16000],
    }
    if not blind:
        report["category"] = scenario.category
    if style == "evidence" or scenario.report:
        report["evidence"] = [e[:2000] for e in evidence[:20]]
    return report
