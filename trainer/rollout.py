"""Sim-RFT rollouts: one completion executed in the live chaos lab the way the daemon executes a
plan, and the record of what happened (`rollouts.jsonl`, replayable offline by
`trainer.rewards`).

A rollout, step by step (the daemon's order, `remed_daemon.agents.loop`):
1. **extract** exactly one playbook from the completion (`remed_daemon.planner.extract_playbook`);
2. **guard** it for the incident's hosts (`remed_daemon.agents.loop.default_guard`): refused, or
   high risk (the daemon would wait for a person), ends the rollout here;
3. **syntax**: `ansible-playbook --syntax-check`, hermetic like every ansible-core child of
   remed; a playbook ansible cannot parse ends here too.
   Steps 1-3 need no lab: a plan refused there never costs an injection (`judge`).
4. **inject** the scenario's fault afresh and **confirm** it (the category check must fail);
   an unconfirmed injection is dropped, not scored;
5. medium risk: the daemon's **check run** (`--check --diff`, `remed_daemon.agents.check`); a
   failing one stops the plan, as in the daemon;
6. **apply** with the daemon's ansible-runner execution (`remed_daemon.agents.execute`), with
   the extra vars the loop passes;
7. **verify** with the fault's own verifier (category check + the shop's steady state), within
   a short window (`verify_window_s`, the bench uses 8 s);
8. **cleanup** always: the fault's cleanup, then the shop back to its baseline
   (`chaos.lab.provision.ensure`).

Deviations from the daemon, on purpose: no probes (the prompt is the one-shot plan request
`remed bench --remediator model` sends), one attempt, no snapshot/undo (the lab's reset restores
the baseline after every rollout), and the verdict on recovery is the lab's ground truth (the
fault's verifier), not the daemon's own verifier.

The lab is shared: `run_group` holds `Lab.exclusive` for one group of rollouts (a few tens of
seconds), never for a whole training run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chaos.faults import Fault, make_fault
from chaos.lab import probes, provision
from chaos.lab.hosts import Lab
from chaos.scenario import Scenario
from trainer import rewards

LAB_SSH_USER = "remedops"


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Task:
    """One training prompt and the scenario whose fault is injected for each of its rollouts.
    The prompt is fixed text (a group shares it): the daemon's plan request for the incident,
    from the SFT dataset (one-shot, probed, re-plan turns; blind and misleading reports) or
    built here from a chaos scenario (`from_scenario`)."""

    id: str
    scenario: Scenario
    prompt: str
    turn: str = "oneshot"
    blind: bool = False
    misleading: bool = False

    @classmethod
    def from_scenario(cls, scenario: Scenario, *, blind: bool = False) -> Task:
        """`remed bench --remediator model`'s prompt for the scenario's report; `blind`
        drops the category, as Alertmanager alerts arrive."""
        from chaos.remediators import ModelRemediator
        from chaos.scenario import diagnosis

        report = diagnosis(scenario)
        if blind:
            report.pop("category", None)
            report["report"] = str(report.get("report", "")).replace(
                f"ALERT {scenario.category} ", "ALERT "
            )
        prompt = ModelRemediator.request(scenario, report).prompt()
        suffix = ":blind" if blind else ""
        return cls(id=f"{scenario.id}:oneshot{suffix}", scenario=scenario, prompt=prompt,
                   blind=blind)  # fmt: skip

    def doc(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["scenario"] = self.scenario.as_dict()
        return out

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Task:
        return cls(**{**doc, "scenario": Scenario.parse(doc["scenario"])})


@dataclass
class RolloutRecord:
    """One completion and what happened to it: a line of `rollouts.jsonl`."""

    task_id: str
    prompt_hash: str
    prompt: str
    completion: str
    step: int = 0  # the optimizer step whose policy sampled it
    group: int = 0
    index: int = 0
    seed: int = 0
    completion_tokens: int = 0
    playbook: str = ""
    playbook_tasks: int = 0
    outcome: str = ""  # one of trainer.rewards.OUTCOMES
    guard: dict[str, Any] | None = None
    check: dict[str, Any] | None = None
    run_status: str = ""
    tasks: list[dict[str, Any]] = field(default_factory=list)
    injected: bool | None = None  # None: never injected (decided before the lab)
    confirmation: str = ""
    verification: dict[str, Any] = field(default_factory=dict)
    recovered: bool = False
    ttr_s: float | None = None
    reward: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), default=str)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> RolloutRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})

    def score(self) -> float | None:
        self.reward = rewards.total_reward(self)
        return self.reward


def count_tasks(playbook: str) -> int:
    try:
        plays = yaml.safe_load(playbook)
    except yaml.YAMLError:
        return 0
    if not isinstance(plays, list):
        return 0
    total = 0
    for play in plays:
        if isinstance(play, dict):
            for key in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                items = play.get(key)
                total += len(items) if isinstance(items, list) else 0
    return total


@dataclass(frozen=True)
class ExecutorSettings:
    confirm_window_s: float = 6.0
    verify_window_s: float = 4.0
    check_timeout_s: float = 60.0
    playbook_timeout_s: float = 60.0
    syntax_check: bool = True
    syntax_timeout_s: float = 60.0


def _timed(timings: dict[str, float], name: str, fn: Any) -> Any:
    started = time.monotonic()
    try:
        return fn()
    finally:
        timings[f"{name}_s"] = round(timings.get(f"{name}_s", 0.0) + time.monotonic() - started, 3)


class LabExecutor:
    """Runs rollouts on the lab (`chaos.lab.hosts.Lab`) through the daemon's path."""

    def __init__(self, lab: Lab, settings: ExecutorSettings | None = None) -> None:
        from chaos.lab.topology import daemon_topology

        self.lab = lab
        self.s = settings or ExecutorSettings()
        self.topology = daemon_topology()
        self._syntax_cache: dict[str, str] = {}
        self.cancel = threading.Event()

    # -- before the lab ------------------------------------------------------------------------

    def facts(self, task: Task) -> Any:
        from chaos.remediators import target_facts

        return target_facts(task.scenario, self.topology)

    def judge(self, task: Task, record: RolloutRecord) -> RolloutRecord:
        """Extraction, guard and syntax check: everything that needs no lab. Sets `outcome`
        when the rollout ends here (and its reward)."""
        from remed_daemon.agents.loop import default_guard, verdict_doc
        from remed_daemon.planner import extract_playbook

        t = record.timings
        record.playbook = extract_playbook(record.completion)
        if not record.playbook:
            record.outcome = rewards.NO_PLAYBOOK
            record.score()
            return record
        record.playbook_tasks = count_tasks(record.playbook)
        hosts = self.facts(task).incident_hosts
        verdict = _timed(t, "guard", lambda: default_guard(record.playbook, hosts))
        record.guard = verdict_doc(verdict)
        record.guard["check_first"] = verdict.check_first
        if not verdict.allowed:
            record.outcome = rewards.REJECTED
        elif verdict.needs_approval or verdict.risk == "high":
            record.outcome = rewards.NEEDS_APPROVAL
        elif self.s.syntax_check:
            problem = _timed(t, "syntax", lambda: self.syntax_problem(record.playbook))
            if problem:
                record.outcome = rewards.SYNTAX_ERROR
                record.error = problem
        if record.outcome:
            record.score()
        return record

    def syntax_problem(self, playbook: str) -> str:
        """'' when `ansible-playbook --syntax-check` accepts the playbook, else its complaint.
        Identical playbooks (common within a group) are checked once."""
        key = hashlib.sha256(playbook.encode()).hexdigest()
        if key in self._syntax_cache:
            return self._syntax_cache[key]
        from remed_daemon.agents import ansible_env
        from remed_daemon.agents.execute import ansible_path

        work = Path(tempfile.mkdtemp(prefix="syntax-", dir=self.lab.chaos_dir))
        try:
            (work / "remed.yml").write_text(playbook)
            env = ansible_env.environ(work / "ansible", {"PATH": ansible_path(),
                                                          "ANSIBLE_NOCOLOR": "1"})  # fmt: skip
            try:
                proc = subprocess.run(
                    ["ansible-playbook", "--syntax-check", "-i", str(self.lab.inventory),
                     str(work / "remed.yml")],
                    capture_output=True, text=True, env=env, timeout=self.s.syntax_timeout_s,
                    cwd=work,
                )  # fmt: skip
                text = "\n".join(line for line in (proc.stderr or proc.stdout).splitlines()
                                 if not line.startswith("[WARNING]"))  # fmt: skip
                problem = "" if proc.returncode == 0 else (text or f"exit {proc.returncode}")[-800:]
            except subprocess.TimeoutExpired:
                problem = f"syntax check timed out after {self.s.syntax_timeout_s}s"
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self._syntax_cache[key] = problem.strip()
        return self._syntax_cache[key]

    # -- in the lab ---------------------------------------------------------------------------

    def run_group(self, task: Task, records: Sequence[RolloutRecord], who: str) -> None:
        """Execute every judged-but-undecided record of one group, holding the lab for the
        group only."""
        pending = [r for r in records if not r.outcome]
        if not pending:
            return
        with self.lab.exclusive(who):
            state = probes.steady_state()
            if not state.ok:
                provision.ensure(self.lab, bootstrap_db=False)
            for record in pending:
                self.execute(task, record)

    def execute(self, task: Task, record: RolloutRecord) -> RolloutRecord:
        """Inject, confirm, (check,) apply, verify, clean up. The caller holds the lab."""
        t = record.timings
        scenario = task.scenario
        fault: Fault | None = None
        try:
            fault = make_fault(scenario.category, scenario.target, scenario.fault, self.lab)
            _timed(t, "inject", fault.inject)
            confirm = _timed(t, "confirm", lambda: fault.confirm(self.s.confirm_window_s))
            record.injected = bool(confirm.ok)
            record.confirmation = str(confirm.detail)[:1000]
            if not confirm.ok:
                record.outcome = rewards.UNCONFIRMED
                return record
            self._apply_and_verify(task, record, fault)
        except Exception as exc:  # the lab failed, not the policy: the rollout is dropped
            record.outcome = rewards.LAB_ERROR
            record.error = f"{type(exc).__name__}: {exc}"[:2000]
        finally:
            if fault is not None:
                try:
                    _timed(t, "cleanup", fault.cleanup)
                except Exception as exc:
                    record.error = (record.error + f"; cleanup: {exc}")[:2000]
            try:
                _timed(t, "reset", lambda: provision.ensure(self.lab, bootstrap_db=False))
            except Exception as exc:
                record.error = (record.error + f"; reset: {exc}")[:2000]
            record.score()
        return record

    def _runner(self, timeout_s: float) -> Any:
        from remed_daemon.agents.execute import RunnerSettings

        return RunnerSettings(
            inventory=str(self.lab.inventory), ssh_private_key=str(self.lab.key),
            ssh_user=LAB_SSH_USER, known_hosts=str(self.lab.known_hosts), timeout_s=timeout_s,
        )  # fmt: skip

    def _apply_and_verify(self, task: Task, record: RolloutRecord, fault: Fault) -> None:
        from opentelemetry import trace

        from remed_daemon.agents.check import check_run
        from remed_daemon.agents.execute import run_playbook

        t = record.timings
        facts = self.facts(task)
        hosts = facts.incident_hosts
        incident = f"sim-rft-{record.prompt_hash}-{record.step}-{record.group}-{record.index}"
        extravars = {
            "remed_incident_id": incident, "remed_report_id": f"sim-rft-{task.id}"[:128],
            "remed_host": facts.host, "remed_service": facts.name,
        }  # fmt: skip
        tracer = trace.get_tracer("remed.sim-rft")
        run_dir = Path(tempfile.mkdtemp(prefix="rollout-", dir=self.lab.chaos_dir))
        try:
            if record.guard and record.guard.get("check_first"):
                check = _timed(t, "check", lambda: asyncio.run(check_run(
                    self._runner(self.s.check_timeout_s), record.playbook,
                    run_dir=run_dir / "check", hosts=hosts, extravars=extravars,
                    tracer=tracer, cancel=self.cancel,
                )))  # fmt: skip
                failed = [x for x in check.tasks if x.failed or x.unreachable]
                record.check = {
                    "ok": check.ok, "status": check.status, "diff": check.diff[:4000],
                    "failed": [{"host": x.host, "task": x.task, "msg": x.msg} for x in failed],
                }  # fmt: skip
                if not check.ok:
                    record.outcome = rewards.CHECK_FAILED
                    return
            started = time.monotonic()
            run = _timed(t, "apply", lambda: asyncio.run(run_playbook(
                self._runner(self.s.playbook_timeout_s), record.playbook,
                run_dir=run_dir / "apply", hosts=hosts, extravars=extravars, tracer=tracer,
                cancel=self.cancel,
            )))  # fmt: skip
            record.outcome = rewards.APPLIED
            record.run_status = run.status
            record.tasks = [dataclasses.asdict(x) for x in run.tasks]
            verify = _timed(t, "verify", lambda: fault.verify(self.s.verify_window_s))
            record.verification = {"ok": verify.ok, "detail": str(verify.detail)[:1000],
                                   "elapsed_s": round(verify.elapsed_s, 3)}  # fmt: skip
            record.recovered = bool(verify.ok)
            if verify.ok:
                record.ttr_s = round(time.monotonic() - started, 3)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)


# -- the log --------------------------------------------------------------------------------


class RolloutLog:
    """`rollouts.jsonl`: one JSON line per rollout, appended and flushed as each group ends.
    `truncate_to(step)` keeps only the rollouts of steps before `step` (what a checkpoint at
    `step` has trained on), so a resumed run never counts a rollout twice."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, records: Iterable[RolloutRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            for r in records:
                fh.write(r.to_json() + "\n")
            fh.flush()

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # a line cut short by a kill -9
                continue
        return out

    def truncate_to(self, step: int) -> int:
        """Drop rollouts of step >= `step` (and any partial line); returns how many were kept."""
        kept = [d for d in self.read() if int(d.get("step", 0)) < step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(d, default=str) + "\n" for d in kept))
        tmp.replace(self.path)
        return len(kept)
