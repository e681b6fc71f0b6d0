"""The easy / medium / hard / all suites of any lab system, generated from its system file.

easy 23 / medium 49 / hard 80 mirror MicroRemed's composition (easy: cpu, memory, delay, loss;
medium: + disk-io, service-down; hard: all seven, config errors and service failures weighted
up); `all` covers every category of the catalog that applies to the system, two cases each
(config-error six). Which services a category targets is the fault catalog's own rule
(`Fault.services`: e.g. dependency-down on the http services with a store, tls-cert on nginx
with TLS), taken in one order: http services, then nginx, then the stores, each in file order.
Network faults leave PostgreSQL out, and config-error goes round the services variant by
variant (every service's first broken key, then every second one).

The shop's suites are chaos/scenarios/*.yaml, another bundled system's
chaos/scenarios/<name>/*.yaml (`python chaos/scenarios/make_suites.py [--system FILE]`); a
system file from elsewhere gets its suites generated when `--suite easy|medium|hard|all` is
asked for.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import yaml

SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"
COUNTS: dict[str, dict[str, int]] = {
    "easy": {"cpu-stress": 6, "memory-stress": 6, "network-delay": 6, "network-loss": 5},
    "medium": {"cpu-stress": 8, "memory-stress": 8, "network-delay": 8, "network-loss": 8,
               "disk-io": 8, "service-down": 9},
    "hard": {"cpu-stress": 8, "memory-stress": 8, "network-delay": 8, "network-loss": 8,
             "disk-io": 8, "service-down": 20, "config-error": 20},
}  # fmt: skip
ALL_PER_CATEGORY = 2
ALL_CONFIG_ERRORS = 6
KIND_ORDER = ("http", "nginx", "redis", "postgresql", "memcached")
# the order of the categories in `all` (any other the catalog has comes after them)
CATEGORY_ORDER = (
    "cpu-stress", "memory-stress", "network-delay", "network-loss", "disk-io", "service-down",
    "config-error", "dependency-down", "port-conflict", "log-flood", "wrong-permissions",
    "bad-deploy", "tls-cert", "connection-exhaustion",
)  # fmt: skip
STORES = ("redis", "postgresql", "memcached")


def ordered_services() -> list[str]:
    """The active system's services: http, then nginx, then stores, each in file order."""
    from chaos.lab import topology as topo

    def rank(kind: str) -> int:
        return 2 if kind in STORES else KIND_ORDER.index(kind)

    return [s.name for s in sorted(topo.SERVICES.values(), key=lambda s: rank(s.kind))]


def targets() -> dict[str, tuple[Any, ...]]:
    """Per category, the targets its cases cycle through (config-error: (service, variant))."""
    from chaos.faults import CATALOG
    from chaos.faults.service import CONFIG_ERRORS
    from chaos.lab import topology as topo

    order = ordered_services()
    out: dict[str, tuple[Any, ...]] = {}
    categories = [*CATEGORY_ORDER, *(c for c in CATALOG if c not in CATEGORY_ORDER)]
    for category in categories:
        cls = CATALOG[category]
        applies = [s for s in order if s in cls.services]
        if category in ("network-delay", "network-loss"):
            applies = [s for s in applies if topo.service(s).kind != "postgresql"]
        if category == "config-error":
            keys = {s: list(CONFIG_ERRORS.get(s, {})) for s in applies}
            rounds = max((len(k) for k in keys.values()), default=0)
            out[category] = tuple((s, keys[s][i]) for i in range(rounds) for s in applies
                                  if i < len(keys[s]))  # fmt: skip
        else:
            out[category] = tuple(applies)
    return {category: t for category, t in out.items() if t}


def cases(prefix: str, category: str, n: int, table: dict[str, tuple[Any, ...]]) -> list[Any]:
    from chaos.lab import topology as topo

    out = []
    for i, target in zip(range(n), itertools.cycle(table[category]), strict=False):
        service, variant = target if isinstance(target, tuple) else (target, None)
        case: dict[str, Any] = {
            "id": f"{prefix}-{category}-{service}-{i + 1:02d}",
            "category": category,
            "target": {"host": topo.service(service).host, "service": service},
        }
        if variant:
            case["fault"] = {"variant": variant}
        out.append(case)
    return out


def counts(name: str, table: dict[str, tuple[Any, ...]]) -> dict[str, int]:
    if name == "all":
        return {c: ALL_CONFIG_ERRORS if c == "config-error" else ALL_PER_CATEGORY for c in table}
    return {c: n for c, n in COUNTS[name].items() if c in table}


def suite(name: str) -> list[dict[str, Any]]:
    """Suite `name` (easy, medium, hard, all) of the active system, as scenario mappings."""
    table = targets()
    return [c for category, n in counts(name, table).items()
            for c in cases(name, category, n, table)]  # fmt: skip


def suites_dir() -> Path | None:
    """Where the active system's generated suites are kept: the shop's chaos/scenarios/,
    another bundled system's chaos/scenarios/<name>/; None for a system from elsewhere."""
    from chaos.lab import topology as topo
    from chaos.system import DEFAULT_SYSTEM, SYSTEMS_DIR

    path = topo.SYSTEM.path
    if path == DEFAULT_SYSTEM.resolve():
        return SCENARIOS_DIR
    if path.parent == SYSTEMS_DIR.resolve():
        return SCENARIOS_DIR / topo.SYSTEM.name
    return None


def write(out: Path, system_arg: str = "") -> dict[str, int]:
    """Write every suite of the active system into `out`; returns the case counts."""
    from chaos.lab import topology as topo

    out.mkdir(parents=True, exist_ok=True)
    written = {}
    how = "make_suites.py" + (f" --system {system_arg}" if system_arg else "")
    of = "" if topo.SYSTEM.name == "shop" else f" of the {topo.SYSTEM.name} system"
    for name in (*COUNTS, "all"):
        scenarios = suite(name)
        header = f"# suite {name}{of}: {len(scenarios)} scenarios; generated by {how}\n"
        (out / f"{name}.yaml").write_text(header + yaml.safe_dump(scenarios, sort_keys=False))
        written[name] = len(scenarios)
    return written
