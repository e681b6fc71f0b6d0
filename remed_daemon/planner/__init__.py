"""Planners: a `PlanRequest` (the report, the target's facts, probe output, earlier attempts)
in, exactly one playbook (or probe requests) out, as a `PlanDraft`.

- `triton`: the one client of Triton's `remed_planner` (timeout, retries, breaker, the version
  that answered), used by the daemon, `remed bench` and the demo;
- `extract`: exactly one playbook out of free model text;
- `static`: a fixed playbook (the operator's, or a restart of the target service);
- `oracle`: expert playbooks from a directory.

Whichever planner wrote it, a playbook meets the guard before anything runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from remed_daemon.planner.base import PlanDraft, Planner, PlanRequest
from remed_daemon.planner.extract import extract_playbook
from remed_daemon.planner.oracle import OraclePlanner
from remed_daemon.planner.static import StaticPlanner
from remed_daemon.planner.triton import TritonPlanner, TritonSettings

if TYPE_CHECKING:
    from remed_daemon.config import Config

__all__ = [
    "OraclePlanner", "PlanDraft", "PlanRequest", "Planner", "StaticPlanner", "TritonPlanner",
    "TritonSettings", "configured_planners", "extract_playbook",
]  # fmt: skip


def configured_planners(cfg: Config) -> dict[str, Planner]:
    """Every planner the config can name, by name (`remediation.planner` picks the default)."""
    r, a = cfg.remediation, cfg.agents
    triton = TritonPlanner(
        TritonSettings(
            url=r.triton_url,
            model=r.triton_model,
            timeout_s=r.planner_timeout_s,
            max_tokens=r.planner_max_tokens,
            temperature=a.planner_temperature,
            retries=a.planner_retries,
            backoff_initial_s=r.planner_retry_initial_s,
            backoff_max_s=r.planner_retry_max_s,
            breaker_failures=a.planner_breaker_failures,
            breaker_open_s=a.planner_breaker_open_s,
        )
    )
    static = StaticPlanner(r.static_playbook)
    oracle = OraclePlanner(a.oracle_playbook_dir)
    return {p.name: p for p in (triton, static, oracle)}
