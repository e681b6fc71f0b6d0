"""What every planner takes and gives: one `PlanRequest` in, one `PlanDraft` out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from remed_daemon.agents.prompt import build_plan_prompt


@dataclass(frozen=True)
class PlanRequest:
    """What a planner gets for one attempt. `previous` is the evidence of earlier attempts."""

    report: Mapping[str, Any]
    service: str
    host: str
    category: str = ""
    facts: str = ""
    probes: Sequence[str] = ()
    previous: Sequence[str] = ()
    probe_names: Sequence[str] = ()
    attempt: int = 1

    def prompt(self) -> str:
        return build_plan_prompt(
            self.report,
            self.probes,
            facts=self.facts,
            previous=self.previous,
            probe_names=self.probe_names,
        )


@dataclass(frozen=True)
class PlanDraft:
    playbook: str  # "" when none could be extracted
    planner: str
    completion: str = ""
    prompt: str = ""
    model_name: str = ""
    model_version: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    probe_requests: tuple[str, ...] = ()


class Planner(Protocol):
    name: str

    async def plan(self, request: PlanRequest) -> PlanDraft: ...
