"""The check run: `ansible-playbook --check --diff` of a plan before it may be applied.

Medium-risk plans (config edits, targeted kills, log truncation) and every plan in shadow mode
get one. Nothing changes on the host; the diff (redacted, truncated) goes into the outcome so a
person — and the reward model — can see what the plan would have changed. A check run that fails
(a task that cannot even dry-run) stops the plan: its evidence goes to reflection instead.
It runs through `execute.run_playbook`, so with the same hermetic ansible-core settings as the
apply (no user `ansible.cfg`, no inherited `ANSIBLE_*`): what the check shows is what the apply
would do.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import trace

from remed_daemon.agents.execute import PlaybookRun, RunnerSettings, run_playbook
from remed_daemon.remediation import TaskResult


@dataclass(frozen=True)
class CheckRun:
    ok: bool
    status: str
    diff: str
    tasks: list[TaskResult] = field(default_factory=list)

    def evidence(self) -> str:
        failed = [t for t in self.tasks if t.failed or t.unreachable]
        lines = [f"check run (--check --diff) {self.status}"]
        lines += [f"- task {t.task!r} ({t.module}) on {t.host} failed: {t.msg}" for t in failed]
        return "\n".join(lines)


async def check_run(
    settings: RunnerSettings,
    playbook: str,
    *,
    run_dir: Path,
    hosts: Sequence[str],
    extravars: Mapping[str, Any],
    tracer: trace.Tracer,
    cancel: threading.Event,
) -> CheckRun:
    run: PlaybookRun = await run_playbook(
        settings, playbook, run_dir=run_dir, hosts=hosts, extravars=extravars,
        tracer=tracer, cancel=cancel, check=True,
    )  # fmt: skip
    return CheckRun(
        ok=run.status == "successful" and not run.failed_tasks,
        status=run.status,
        diff=run.diff,
        tasks=run.tasks,
    )
