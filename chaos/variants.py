"""Fault variants: the names a fix must use, drawn from a seed, so a fix has to be read from the
evidence instead of remembered.

Without variants every injection uses the same names (the hog is `stress-ng`, the firewall
table `chaos_loss`, the dumper `debug_dump.sh`...), and a model can learn them by heart. With a
seed (the scenario's `seed`, by default its id), each fault class draws its own names here: the
hog's program name and path (a renamed copy of stress-ng), the nftables table and chain, the
dumper's and the leaking client's names and paths, the bad release's version, the config key
that is broken, the port squatter. What was drawn is the fault's parameters
(`Fault.params()`): the expert reads them from there, the case journal records them, and the
confirm check's evidence and the daemon's probes show them on the host.

Every path lies in a directory each lab host has its own copy of (`/run`, `/tmp`, `/var/tmp`,
`/srv`), so a variant can never touch the machine or another host.
"""

from __future__ import annotations

import random
from typing import Any

# Plausible program names of things left running on a host. None is a data store, a critical
# process the guard protects (sshd, supervisord, python3...), or a substring of the lab's own
# services, so a kill by name reaches only the variant.
PROGRAM_NAMES = (
    "kcompactd-helper", "metrics-agent", "logshipper", "backup-agent", "indexer", "thumbnailer",
    "cron-reaper", "etl-worker", "cache-warmer", "scanner", "node-probe", "sync-daemon",
    "reportd", "batchd", "uploader", "compactor", "ledger-export", "vacuumer", "geo-import",
    "feed-builder", "audit-collector", "blob-gc", "stats-rollup", "mailer-queue",
)  # fmt: skip
# (not the fixed names debug_dump, report_batch, legacy_admin, delay_proxy)
SCRIPT_STEMS = (
    "trace_capture", "verbose_profiler", "dump_state", "heap_logger", "cache_dumper",
    "nightly_export", "invoice_sync", "admin_console", "migrate_helper", "tcp_relay",
    "adhoc_query", "stats_pull", "orphan_sweeper", "warmup", "replay_tool", "bulk_loader",
)  # fmt: skip
# Directories every lab host has its own copy of (remed_stack/lab.py BIND_PATHS).
DIR_PATTERNS = ("/var/tmp/.{d}", "/srv/{d}/bin", "/run/{d}", "/tmp/.{d}", "/srv/tools/{d}")
# The shared parents of those directories, longest first: a reset removes what lies below them.
DIR_BASES = ("/var/tmp", "/srv/tools", "/srv", "/run", "/tmp")
DIR_WORDS = ("cache", "ops", "tools", "jobs", "maint", "support", "local", "vendor", "adm")
TABLE_WORDS = (
    "filter", "edge", "guard", "acl", "fw", "ratelimit", "ingress", "shaper", "mangle_app",
    "tenant", "ops", "policy", "qos", "hotfix", "block",
)  # fmt: skip
TABLE_SUFFIXES = ("", "_v2", "_tmp", "_app", "_test", "_legacy", "_2024", "_ops")
CHAIN_WORDS = ("input", "inbound", "in_tcp", "ingress", "pre", "early", "hook_in", "traffic")
LOG_NAMES = ("{svc}-debug.out", "{svc}.trace", "debug-{svc}.out", "{svc}-dump.log",
             "{svc}.verbose.log", "core-{svc}.txt")  # fmt: skip
APP_NAMES = ("report-batch", "nightly-etl", "bi-export", "audit-sync", "adhoc-notebook",
             "billing-recon", "stats-puller", "migration-job")  # fmt: skip


def rng(seed: str, category: str, service: str) -> random.Random:
    """The draw for one fault: the same seed, category and target always give the same names."""
    return random.Random(f"remed-variants:{seed}:{category}:{service}")


def directory(r: random.Random) -> str:
    return r.choice(DIR_PATTERNS).format(d=r.choice(DIR_WORDS) + r.choice(("", "d", "-1", "2")))


def program_path(r: random.Random) -> str:
    return f"{directory(r)}/{r.choice(PROGRAM_NAMES)}"


def script_path(r: random.Random, suffix: str) -> str:
    return f"{directory(r)}/{r.choice(SCRIPT_STEMS)}{r.choice(('', '_v2', '-old', '2'))}{suffix}"


def helper_root(path: str) -> str:
    """The directory a variant created for a helper (`/srv/ops/bin/x` → `/srv/ops`), or the
    helper itself when it lies straight in one of DIR_BASES. Anything else is refused."""
    for base in DIR_BASES:
        if path.startswith(base + "/"):
            first = path[len(base) + 1 :].split("/", 1)[0]
            if not first or first in ("shop", "remed-chaos", "sshd") or first.startswith("."*2):
                break
            return f"{base}/{first}"
    raise ValueError(f"{path!r} is not a variant helper path (under {DIR_BASES})")


def table_name(r: random.Random) -> str:
    return r.choice(TABLE_WORDS) + r.choice(TABLE_SUFFIXES)


def chain_name(r: random.Random) -> str:
    return r.choice(CHAIN_WORDS)


def version(r: random.Random, baseline: str) -> str:
    """A release version other than the baseline, as a deploy pipeline would name one."""
    while True:
        major, minor, patch = r.randint(1, 3), r.randint(0, 12), r.randint(0, 20)
        tag = r.choice(("", "", "-rc1", "-rc2", "-beta", "-hotfix1", f"+build{r.randint(10, 999)}"))
        candidate = f"{major}.{minor}.{patch}{tag}"
        if candidate != baseline:
            return candidate


def log_name(r: random.Random, service: str) -> str:
    return r.choice(LOG_NAMES).format(svc=service)


def app_name(r: random.Random) -> str:
    return r.choice(APP_NAMES)


def port(r: random.Random, avoid: set[int]) -> int:
    while True:
        candidate = r.randint(20000, 29999)
        if candidate not in avoid:
            return candidate


def merge(drawn: dict[str, Any], explicit: dict[str, Any] | None) -> dict[str, Any]:
    """The scenario's own `fault:` parameters win over what the seed drew."""
    return {**drawn, **dict(explicit or {})}
