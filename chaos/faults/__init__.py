"""The fault catalog: one typed class per category, each with inject/check/confirm/verify/cleanup.

    fault = make_fault("config-error", Target("app", "cart"), {"variant": "redis-port"}, lab)
    fault.inject(); fault.confirm(); ...; fault.verify(); fault.cleanup()
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos.faults.base import Check, Fault, FaultError, Target, build
from chaos.faults.network import NetworkDelay, NetworkLoss
from chaos.faults.resources import CpuStress, DiskIo, MemoryStress
from chaos.faults.service import (
    BadDeploy,
    ConfigError,
    ConnectionExhaustion,
    DependencyDown,
    LogFlood,
    PortConflict,
    ServiceDown,
    TlsCertExpired,
    WrongPermissions,
)
from chaos.lab.hosts import Lab

CATALOG: dict[str, type[Fault]] = {
    cls.category: cls
    for cls in (
        CpuStress, MemoryStress, DiskIo, NetworkLoss, NetworkDelay, ServiceDown, ConfigError,
        DependencyDown, PortConflict, LogFlood, WrongPermissions, BadDeploy, TlsCertExpired,
        ConnectionExhaustion,
    )
}  # fmt: skip
CATEGORIES = tuple(CATALOG)


def make_fault(
    category: str, target: Target, params: Mapping[str, Any] | None, lab: Lab,
    *, seed: str | None = None,
) -> Fault:  # fmt: skip
    """The fault of `category` on `target`; with `seed`, its names are variants drawn from it
    (chaos/variants.py), without, today's fixed names."""
    try:
        cls = CATALOG[category]
    except KeyError:
        raise FaultError(
            f"unknown fault category {category!r}; the catalog has {list(CATEGORIES)}"
        ) from None
    try:
        return build(cls, target, params, lab, seed=seed)
    except (TypeError, ValueError) as exc:
        raise FaultError(str(exc)) from exc


__all__ = ["CATALOG", "CATEGORIES", "Check", "Fault", "FaultError", "Target", "make_fault"]
