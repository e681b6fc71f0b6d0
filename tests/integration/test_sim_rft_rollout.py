"""Sim-RFT rollouts in the live lab (trainer/rollout.py): a completion goes the daemon's way
(extraction, guard, syntax, inject + confirm, apply with ansible-runner, verify, cleanup); a
plan refused before the lab never costs an injection; the log resumes without double counts.

The expert's playbook stands in for a completion here because what is tested is the executor,
not a policy (the training loop's own test samples from the real model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chaos.faults import make_fault
from chaos.lab.hosts import Lab
from chaos.playbooks import oracle_playbook
from chaos.scenario import load_suite
from trainer.rollout import LabExecutor, RolloutLog, RolloutRecord, Task, prompt_hash

pytestmark = pytest.mark.integration

REFUSED = "```yaml\n- hosts: app\n  tasks:\n    - ansible.builtin.shell: rm -rf /\n```\n"
# the guard allows it; ansible-core cannot load it (a handler's `listen` must be a string/list)
BROKEN = (
    "```yaml\n- hosts: app\n  tasks:\n    - ansible.builtin.service: {name: cart, state: restarted}"
    "\n  handlers:\n    - ansible.builtin.debug: {msg: hi}\n      listen: 3\n```\n"
)


def _record(task: Task, completion: str, index: int) -> RolloutRecord:
    return RolloutRecord(task_id=task.id, prompt_hash=prompt_hash(task.prompt),
                         prompt=task.prompt, completion=completion, index=index)  # fmt: skip


def test_a_group_runs_the_daemons_path_and_only_runnable_plans_touch_the_lab(lab: Any) -> None:
    chaos_lab = Lab.from_paths()
    scenario = next(s for s in load_suite("all") if s.category == "service-down")
    task = Task.from_scenario(scenario)
    fault = make_fault(scenario.category, scenario.target, scenario.fault, chaos_lab)
    expert = oracle_playbook(scenario.category, scenario.target.host, scenario.target.service,
                             fault.params())  # fmt: skip
    executor = LabExecutor(chaos_lab)
    records = [
        _record(task, f"Here is the fix:\n```yaml\n{expert}```\n", 0),
        _record(task, "Restart the service, it usually helps.", 1),
        _record(task, REFUSED, 2),
        _record(task, BROKEN, 3),
    ]
    for r in records:
        executor.judge(task, r)
    assert [r.outcome for r in records] == ["", "no_playbook", "rejected", "syntax_error"]
    assert records[2].guard is not None and not records[2].guard["allowed"]
    executor.run_group(task, records, "test_sim_rft_rollout")
    good = records[0]
    assert good.outcome == "applied" and good.injected is True, good.error
    assert good.recovered and good.ttr_s is not None and good.reward is not None
    assert 0.8 <= good.reward <= 1.0
    assert good.tasks and good.run_status == "successful"
    assert {"inject_s", "confirm_s", "apply_s", "verify_s", "cleanup_s", "reset_s"} <= set(
        good.timings
    )
    for r in records[1:]:  # decided before the lab: never injected
        assert r.injected is None and r.reward == -1.0 and "inject_s" not in r.timings


def test_the_log_drops_rollouts_after_the_checkpoint(tmp_path: Path) -> None:
    log = RolloutLog(tmp_path / "rollouts.jsonl")
    task_prompt = "p"
    for step in range(3):
        log.append([RolloutRecord(task_id="t", prompt_hash=prompt_hash(task_prompt),
                                  prompt=task_prompt, completion="c", step=step, index=i)
                    for i in range(4)])  # fmt: skip
    with log.path.open("a") as fh:
        fh.write('{"step": 3, "cut short')  # a kill -9 mid-line
    assert log.truncate_to(2) == 8
    assert sorted({d["step"] for d in log.read()}) == [0, 1]
    replayed = [RolloutRecord.from_doc(d) for d in log.read()]
    assert all(r.completion == "c" for r in replayed)
