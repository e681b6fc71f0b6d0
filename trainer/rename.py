"""Synthetic renamings of a system: the same incident on a fleet whose services, hosts, ports
and paths have other names, applied to the prompt and the expert's playbook alike.

A model that has only seen `catalog` on `app` at port 8081 can learn those names by heart; one
that has seen the same faults on `ledger` at `node-c:9412` under `/srv/acme` must read the
target's facts and the probes to write the fix. The renaming is a whole-token substitution
(never inside a longer word; a host name not inside `db-port`-style compounds either), so
every occurrence in report, facts, probe output, reflection and playbook moves together.

The third-party services (nginx, redis, postgresql) keep their names: their programs, config
files and client tools are the same on every fleet. The service manager is not swapped:
supervisord's and systemd's probe output differ in form, and inventing the other's output would
be evidence that was never recorded.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Disjoint pools: training renames draw from TRAIN, the test split's from TEST, so a renamed
# test prompt names services, hosts and paths the model never saw.
POOLS: dict[str, dict[str, Sequence[str]]] = {
    "train": {
        "service": ("orders", "billing", "search", "ledger", "profile", "basket", "pricing",
                    "media", "reviews", "wallet", "booking", "quotes"),
        "host": ("node-a", "node-b", "svc1", "svc2", "apphost", "worker3", "east1", "blue"),
        "system": ("acme", "storefront", "market", "bazaar"),
    },
    "test": {
        "service": ("shipping", "tickets", "loyalty", "payments", "catalogue2", "invoices"),
        "host": ("gamma", "node-z", "prod7", "green"),
        "system": ("retailco", "agora"),
    },
}  # fmt: skip

APP_SERVICES = ("catalog", "cart", "checkout")
HOSTS = ("web", "app", "db")
APP_PORTS = {"catalog": 8081, "cart": 8082, "checkout": 8083}
SYSTEM_WORD = "shop"


def _token(word: str, *, in_compounds: bool) -> re.Pattern[str]:
    """`word` as a whole token; `in_compounds` also inside `hog-catalog`-style names (the
    shop's own words are nobody else's, unlike a host called `db` beside a `db-port` key)."""
    edge = r"\w" if in_compounds else r"\w-"
    return re.compile(rf"(?<![{edge}]){re.escape(word)}(?![{edge}])")


def _number(value: int) -> re.Pattern[str]:
    return re.compile(rf"(?<![\d.]){value}(?![\d])")


@dataclass
class Renaming:
    """One consistent renaming; `apply` maps any text, `facts` any topology entry."""

    pool: str
    words: dict[str, str] = field(default_factory=dict)
    ports: dict[int, int] = field(default_factory=dict)

    @classmethod
    def draw(cls, pool: str, rng: random.Random) -> Renaming:
        p = POOLS[pool]
        services = rng.sample(list(p["service"]), len(APP_SERVICES))
        hosts = rng.sample(list(p["host"]), len(HOSTS))
        words = dict(zip(APP_SERVICES, services, strict=True))
        words |= dict(zip(HOSTS, hosts, strict=True))
        words[SYSTEM_WORD] = rng.choice(list(p["system"]))
        ports = {}
        taken: set[int] = set()
        for old in APP_PORTS.values():
            new = rng.randrange(9001, 9899)
            while new in taken:
                new = rng.randrange(9001, 9899)
            taken.add(new)
            ports[old] = new
        return cls(pool, words, ports)

    def apply(self, text: str) -> str:
        for old, new in self.words.items():
            text = _token(old, in_compounds=old not in HOSTS).sub(new, text)
        for old_port, new_port in self.ports.items():
            text = _number(old_port).sub(str(new_port), text)
        return text

    def value(self, value: Any) -> Any:
        """Rename inside any JSON-like value (strings, numbers that are ports, containers)."""
        if isinstance(value, str):
            return self.apply(value)
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return self.ports.get(value, value)
        if isinstance(value, Mapping):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def describe(self) -> dict[str, Any]:
        return {"pool": self.pool, "words": self.words, "ports": self.ports}


IDENTITY = Renaming("none")
