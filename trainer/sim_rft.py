"""`remed train sim-rft`: GRPO with rewards from fixing faults in the live chaos lab.

Read top to bottom, one run is:

1. **Policy.** Start from a model version (`from_version`; by default the newest one whose
   MODEL_CARD.md says `stage: sft`, else version 1, the base). An `adapter/` version keeps
   training that LoRA adapter and trl copies it as the frozen `ref` adapter; a `weights/` or
   base version gets a fresh LoRA, and "adapters disabled" is the reference. Either way the
   **anchor is a KL penalty to the starting (SFT) policy** (`beta`, trl's k3 estimator), with
   PPO-style ratio clipping (`epsilon`) on top.
2. **Tasks.** Prompts come from the SFT dataset's *train* split (the daemon's own prompts:
   one-shot, probed, after-probes and re-plan turns; category-blind and misleading reports),
   only those on the shop's own names, since a renamed topology cannot be executed on the lab;
   without a dataset, from a chaos suite (one-shot, plain and category-blind). Scenarios of
   the held-out suites (`held_out_suites`, by category, target and fault) are never used.
3. **Curriculum.** Each candidate prompt gets `curriculum_samples` rollouts from the starting
   policy through the very executor training uses; prompts whose pass rate is inside
   [`pass_rate_low`, `pass_rate_high`] are kept (a group that always or never recovers has no
   gradient). `calibration.jsonl` holds those rollouts, so a stopped calibration resumes.
4. **GRPO** with trl's `GRPOTrainer` and a `rollout_func` (`LabRollouts`): for each group of
   `num_generations` completions of one prompt, sampled by the served engine rebuilt from the
   current policy (`trainer.sampling`), every completion is judged (extraction, guard, syntax)
   and, if it may run, executed in the live lab (`trainer.rollout`). The next group is sampled
   while the lab runs this one. Rewards are `trainer.rewards`' plain functions of the rollout
   record; a dropped rollout (unconfirmed injection) gets `None`, which trl leaves out of the
   group baseline with zero advantage.
5. **Logs.** `rollouts.jsonl` (every rollout, replayable), `metrics.jsonl` (per step: reward,
   recovered, fraction of zero-variance groups, where the time went; and trl's own losses),
   `reward_curve.png`, `signal_fraction.png`, `summary.json` (rollouts per hour, lab and
   training time). Checkpoints (policy, optimizer, scheduler, RNG and the data sampler's
   position, by HF Trainer) every `save_steps`; the same command resumes from the last one and
   first drops the rollouts of steps after it, so none is counted twice.

Where this deviates from textbook GRPO: sampling is done by the quantised serving engine
rather than by the policy itself (q4/q8: slightly off-policy, and trl's importance correction
only applies to vLLM; `sampling_weights = "fp32"` makes it on-policy at ~6x the decode cost);
one optimisation pass per generation (`num_iterations = 1`), so the clipping only bites
through the q4/fp32 mismatch and the KL term is the real anchor; the curriculum is fixed after
calibration (no re-estimation during the run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import sys
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.lab.hosts import Lab
from chaos.scenario import Scenario, load_suite
from remed_stack.paths import REPO_ROOT
from trainer import rewards
from trainer.rollout import (
    ExecutorSettings,
    LabExecutor,
    RolloutLog,
    RolloutRecord,
    Task,
    prompt_hash,
)

PLANNER_DIR = REPO_ROOT / "model_repo" / "remed_planner"
TURNS = ("oneshot", "probed", "after-probes", "replan")


@dataclass
class SimRftConfig:
    """Every setting of a Sim-RFT run (`trainer/configs/sim-rft.toml` documents each)."""

    run_dir: str = "runs/sim-rft"
    from_version: str = "latest-sft"  # a version number, or the newest `stage: sft` version
    prompt_source: str = "auto"  # dataset | suite | auto (the dataset when there is one)
    dataset: str = ""  # SFT dataset dir; "" = the newest under trainer/data/
    suite: str = "all"  # without a dataset: the chaos suite the prompts come from
    held_out_suites: list[str] = field(default_factory=lambda: ["hard"])
    turns: list[str] = field(default_factory=lambda: list(TURNS))
    max_tasks: int = 0  # 0 = every candidate
    num_generations: int = 4
    groups_per_step: int = 2
    max_steps: int = 40
    max_tokens: int = 256
    temperature: float = 1.0
    learning_rate: float = 1e-5
    beta: float = 0.04
    epsilon: float = 0.2
    lora_r: int = 16
    lora_alpha: int = 32
    sampling_weights: str = ""  # q4 | q8 | fp32; "" = the served format (config.pbtxt)
    kernel_threads: int = 2
    torch_threads: int = 2
    save_steps: int = 5
    seed: int = 0
    bf16: bool = False
    curriculum_samples: int = 4  # 0: no calibration, every candidate is kept
    curriculum_candidates: int = 24
    pass_rate_low: float = 0.1
    pass_rate_high: float = 0.9
    min_tasks: int = 2
    confirm_window_s: float = 6.0
    verify_window_s: float = 4.0
    check_timeout_s: float = 60.0
    playbook_timeout_s: float = 60.0
    syntax_check: bool = True

    def __post_init__(self) -> None:
        if self.num_generations < 4:
            raise ValueError(
                f"num_generations = {self.num_generations}: GRPO needs groups of at least 4 "
                "completions per prompt for a useful baseline; set 4 or more"
            )
        if self.groups_per_step < 1 or self.max_steps < 1 or self.max_tokens < 1:
            raise ValueError("groups_per_step, max_steps and max_tokens must be at least 1")
        if not 0.0 <= self.pass_rate_low < self.pass_rate_high <= 1.0:
            raise ValueError(
                f"pass rate band [{self.pass_rate_low}, {self.pass_rate_high}] is empty: "
                "use 0 <= pass_rate_low < pass_rate_high <= 1 (e.g. 0.1 and 0.9)"
            )
        if self.sampling_weights not in ("", "q4", "q8", "fp32"):
            raise ValueError(
                f"sampling_weights = {self.sampling_weights!r}: use q4, q8, fp32, or '' for the "
                "served format"
            )
        if self.beta < 0 or self.epsilon <= 0:
            raise ValueError("beta must be >= 0 and epsilon > 0 (the KL and clipping anchors)")
        if self.beta == 0:
            raise ValueError(
                "beta = 0 leaves no anchor to the SFT reference (one pass per generation makes "
                "the clip inactive): set beta > 0, e.g. 0.04"
            )
        if self.prompt_source not in ("auto", "dataset", "suite"):
            raise ValueError(f"prompt_source = {self.prompt_source!r}: use auto, dataset or suite")
        unknown = set(self.turns) - set(TURNS)
        if unknown:
            raise ValueError(f"turns {sorted(unknown)} are not trainable turns: {TURNS}")

    @classmethod
    def load(cls, path: Path | None, **overrides: Any) -> SimRftConfig:
        data: dict[str, Any] = {}
        if path is not None:
            with path.open("rb") as fh:
                data = dict(tomllib.load(fh).get("sim_rft", {}))
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{path}: unknown [sim_rft] keys {sorted(unknown)}; known: "
                             f"{sorted(names)}")  # fmt: skip
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)


# -- the starting policy ----------------------------------------------------------------------


def start_version(spec: str) -> int:
    if spec != "latest-sft":
        return int(spec)
    found = [1]
    for card in PLANNER_DIR.glob("*/MODEL_CARD.md"):
        if card.parent.name.isdigit() and re.search(r"^stage:\s*sft\b", card.read_text(), re.M):
            found.append(int(card.parent.name))
    return max(found)


def served_weights() -> str:
    text = (PLANNER_DIR / "config.pbtxt").read_text()
    m = re.search(r'key:\s*"weights"\s*value:\s*\{\s*string_value:\s*"(\w+)"', text)
    return m.group(1) if m else "q4"


def load_policy(version: int, cfg: SimRftConfig) -> tuple[Any, Any, Any]:
    """(model, tokenizer, peft_config or None) for the version's weights, as serving loads
    them (model_repo/remed_planner/1/model.py: weights/, else adapter/, else the base)."""
    import torch
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from remed_stack.paths import StackPaths

    base = StackPaths.from_env().base_model
    vdir = PLANNER_DIR / str(version)
    weights, adapter = vdir / "weights", vdir / "adapter"
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")  # fmt: skip
    if (weights / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32)
        tok_dir = weights if (weights / "tokenizer_config.json").is_file() else base
        return model, AutoTokenizer.from_pretrained(tok_dir), lora
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if (adapter / "adapter_config.json").is_file():
        return PeftModel.from_pretrained(model, adapter, is_trainable=True), tokenizer, None
    return model, tokenizer, lora


# -- tasks --------------------------------------------------------------------------------------


def _key(s: Scenario) -> tuple[str, str, str, str]:
    return (s.category, s.target.host, s.target.service, json.dumps(s.fault, sort_keys=True))


def newest_dataset() -> Path | None:
    root = Path(__file__).resolve().parent / "data"
    found = [m.parent for m in root.glob("*/manifest.json")]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def tasks_from_dataset(dataset: Path, turns: Sequence[str]) -> list[Task]:
    """The SFT train split's prompts that the shop can execute (its own names)."""
    from trainer.data import DATA_DIR, read_split

    evidence: dict[str, dict[str, Any]] = {}
    tasks = []
    for ex in read_split(dataset, "train"):
        if json.loads(ex["renaming"]).get("pool") != "none" or ex["turn"] not in turns:
            continue
        name, sid = str(ex["evidence"]).split("#", 1)
        if name not in evidence:
            path = DATA_DIR / "evidence" / name
            evidence[name] = {
                json.loads(line)["scenario"]["id"]: json.loads(line)["scenario"]
                for line in path.read_text().splitlines() if line.strip()
            }  # fmt: skip
        scenario = Scenario.parse(evidence[name][sid], f"{name}#{sid}")
        tasks.append(Task(id=str(ex["id"]), scenario=scenario, prompt=str(ex["prompt"]),
                          turn=str(ex["turn"]), blind=bool(ex["blind"]),
                          misleading=bool(ex["misleading"])))  # fmt: skip
    return tasks


def candidate_tasks(cfg: SimRftConfig) -> tuple[list[Task], str]:
    held = {_key(s) for name in cfg.held_out_suites for s in load_suite(name)}
    dataset = Path(cfg.dataset) if cfg.dataset else newest_dataset()
    if cfg.prompt_source == "dataset" and dataset is None:
        raise ValueError("prompt_source = 'dataset' but there is no SFT dataset: run "
                         "`remed train data build` or set dataset")  # fmt: skip
    if dataset is not None and cfg.prompt_source != "suite":
        tasks, source = tasks_from_dataset(dataset, cfg.turns), f"dataset {dataset}"
    else:
        scenarios = load_suite(cfg.suite)
        tasks = [Task.from_scenario(s, blind=b) for s in scenarios for b in (False, True)]
        source = f"suite {cfg.suite}"
    tasks = [t for t in tasks if _key(t.scenario) not in held]
    seen: set[str] = set()
    unique = []
    for t in tasks:  # one task per prompt: the rollout function finds a task by its prompt
        if t.prompt not in seen:
            seen.add(t.prompt)
            unique.append(t)
    # round-robin over categories, so a cut keeps every category
    rng = random.Random(cfg.seed)
    by_cat: dict[str, list[Task]] = defaultdict(list)
    for t in unique:
        by_cat[t.scenario.category].append(t)
    for items in by_cat.values():
        rng.shuffle(items)
    ordered = []
    while any(by_cat.values()):
        for cat in sorted(by_cat):
            if by_cat[cat]:
                ordered.append(by_cat[cat].pop())
    if cfg.max_tasks:
        ordered = ordered[: cfg.max_tasks]
    return ordered, source


# -- groups: sample, judge, run in the lab -------------------------------------------------------


@dataclass
class Groups:
    records: list[list[RolloutRecord]]
    samples: list[list[Any]]  # trainer.sampling.Sample per record: the token ids trl trains on
    prompt_ids: list[list[int]]
    timing: dict[str, float]


class GroupRunner:
    """Samples each group with the engine and runs it in the lab on one worker thread, so the
    next group is decoded while the lab executes this one."""

    def __init__(self, cfg: SimRftConfig, sampler: Any, executor: LabExecutor) -> None:
        self.cfg = cfg
        self.sampler = sampler
        self.executor = executor
        self.lab_pool = ThreadPoolExecutor(1, thread_name_prefix="sim-rft-lab")

    def seeds(self, step: int, group: int, n: int) -> list[int]:
        return [
            (self.cfg.seed * 1_000_003 + (step + 2) * 10_007 + group * 101 + i) % 2**63
            for i in range(n)
        ]

    def _lab(self, task: Task, records: list[RolloutRecord]) -> list[RolloutRecord]:
        for r in records:
            self.executor.judge(task, r)
        self.executor.run_group(task, records, f"remed train sim-rft ({task.id})")
        return records

    def run(self, tasks: Sequence[Task], step: int, n: int = 0) -> Groups:
        """`n` completions (default `num_generations`) for each task, sampled at `step`."""
        n = n or self.cfg.num_generations
        timing: dict[str, float] = {"generate_s": 0.0, "wait_lab_s": 0.0}
        futures: list[Future[list[RolloutRecord]]] = []
        prompt_ids: list[list[int]] = []
        all_samples: list[list[Any]] = []
        for g, task in enumerate(tasks):
            started = time.monotonic()
            ids = self.sampler.prompt_ids(task.prompt)
            seeds = self.seeds(step, g, n)
            samples = self.sampler.sample(ids, seeds, max_tokens=self.cfg.max_tokens,
                                          temperature=self.cfg.temperature)  # fmt: skip
            timing["generate_s"] += time.monotonic() - started
            records = []
            for i, (s, seed) in enumerate(zip(samples, seeds, strict=True)):
                r = RolloutRecord(
                    task_id=task.id, prompt_hash=prompt_hash(task.prompt), prompt=task.prompt,
                    completion=self.sampler.decode(s.token_ids), step=step, group=g, index=i,
                    seed=seed, completion_tokens=len(s.token_ids),
                )  # fmt: skip
                r.timings["sample_logprob_mean"] = round(
                    sum(s.logprobs) / max(1, len(s.logprobs)), 4
                )
                records.append(r)
            all_samples.append(samples)
            prompt_ids.append(ids)
            futures.append(self.lab_pool.submit(self._lab, task, records))
        waited = time.monotonic()
        groups = [f.result() for f in futures]
        timing["wait_lab_s"] = time.monotonic() - waited
        return Groups(groups, all_samples, prompt_ids, timing)


def group_metrics(groups: Sequence[Sequence[RolloutRecord]]) -> dict[str, Any]:
    flat = [r for g in groups for r in g]
    scored = [r for r in flat if r.reward is not None]
    zero_var = 0
    for g in groups:
        values = {round(r.reward, 4) for r in g if r.reward is not None}
        zero_var += len(values) <= 1
    lab = [r for r in flat if r.injected is not None]
    phases: dict[str, float] = defaultdict(float)
    for r in flat:
        for k, v in r.timings.items():
            if k.endswith("_s"):
                phases[k] += v
    return {
        "rollouts": len(flat),
        "scored": len(scored),
        "dropped": len(flat) - len(scored),
        "lab_runs": len(lab),
        "reward_mean": round(sum(r.reward or 0.0 for r in scored) / len(scored), 4)
        if scored else None,
        "recovered": sum(r.recovered for r in scored),
        "outcomes": dict(Counter(r.outcome for r in flat)),
        "groups": len(groups),
        "zero_variance_groups": zero_var,
        "zero_variance_fraction": round(zero_var / len(groups), 4) if groups else None,
        "phase_s": {k: round(v, 3) for k, v in sorted(phases.items())},
    }  # fmt: skip


# -- the run directory ------------------------------------------------------------------------


class RunDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.rollouts = RolloutLog(root / "rollouts.jsonl")
        self.calibration = RolloutLog(root / "calibration.jsonl")
        self.metrics = root / "metrics.jsonl"
        self.checkpoints = root / "checkpoints"

    def log_metrics(self, doc: dict[str, Any]) -> None:
        with self.metrics.open("a") as fh:
            fh.write(json.dumps(doc, default=str) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        out = []
        for line in self.metrics.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def truncate_metrics(self, step: int) -> None:
        kept = [m for m in self.read_metrics() if int(m.get("step", 0)) < step]
        tmp = self.metrics.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(m, default=str) + "\n" for m in kept))
        tmp.replace(self.metrics)

    def last_checkpoint(self) -> tuple[str | None, int]:
        from transformers.trainer_utils import get_last_checkpoint

        if not self.checkpoints.is_dir():
            return None, 0
        last = get_last_checkpoint(str(self.checkpoints))
        if last is None:
            return None, 0
        state = json.loads((Path(last) / "trainer_state.json").read_text())
        return last, int(state.get("global_step", 0))


# -- curriculum ---------------------------------------------------------------------------------


def calibrate(
    tasks: Sequence[Task], runner: GroupRunner, run: RunDir, cfg: SimRftConfig
) -> dict[str, dict[str, Any]]:
    """Pass rate of each candidate under the starting policy (resumes from calibration.jsonl)."""
    done: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in run.calibration.read():
        done[doc["task_id"]].append(doc)
    todo = [t for t in tasks if len(done.get(t.id, [])) < cfg.curriculum_samples]
    for n, task in enumerate(todo):
        records = runner.run([task], step=-1 - n, n=cfg.curriculum_samples).records[0]
        for r in records:
            r.step = -1
        run.calibration.append(records)
        done[task.id] = [dataclasses.asdict(r) for r in records]
        print(f"calibration {n + 1}/{len(todo)} {task.id}: "
              f"{[r.outcome + ('+' if r.recovered else '') for r in records]}",
              file=sys.stderr)  # fmt: skip
    rates = {}
    for t in tasks:
        docs = done.get(t.id, [])
        scored = [d for d in docs if rewards.total_reward(d) is not None]
        rec = sum(bool(d.get("recovered")) and d["outcome"] == rewards.APPLIED for d in scored)
        rates[t.id] = {"scored": len(scored), "recovered": rec,
                       "pass_rate": rec / len(scored) if scored else None}  # fmt: skip
    return rates


def select(
    tasks: Sequence[Task], rates: dict[str, dict[str, Any]], cfg: SimRftConfig
) -> tuple[list[Task], str]:
    inside = [t for t in tasks if rates[t.id]["pass_rate"] is not None
              and cfg.pass_rate_low <= rates[t.id]["pass_rate"] <= cfg.pass_rate_high]  # fmt: skip
    note = f"{len(inside)} of {len(tasks)} prompts inside [{cfg.pass_rate_low}, " \
           f"{cfg.pass_rate_high}]"  # fmt: skip
    if len(inside) >= cfg.min_tasks:
        return inside, note
    rest = sorted((t for t in tasks if t not in inside and rates[t.id]["pass_rate"] is not None),
                  key=lambda t: abs(rates[t.id]["pass_rate"] - 0.5))  # fmt: skip
    filled = inside + rest[: cfg.min_tasks - len(inside)]
    return filled, note + f"; filled to {len(filled)} with the nearest to 50% (little signal)"


# -- trl ----------------------------------------------------------------------------------------


class LabRollouts:
    """trl's `rollout_func`: the engine samples each group, the lab scores it."""

    def __init__(self, cfg: SimRftConfig, tasks: Sequence[Task], runner: GroupRunner,
                 run: RunDir) -> None:  # fmt: skip
        self.cfg = cfg
        self.by_prompt = {t.prompt: t for t in tasks}
        self.runner = runner
        self.run = run
        self.started = time.monotonic()

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        step = int(trainer.state.global_step)
        started = time.monotonic()
        rebuild_s = 0.0
        if self.runner.sampler.built_at_step != step:
            rebuild_s = self.runner.sampler.rebuild(trainer.model, step)
        g = self.cfg.num_generations
        tasks = [self.by_prompt[str(prompts[i])] for i in range(0, len(prompts), g)]
        result = self.runner.run(tasks, step)
        groups, timing = result.records, result.timing
        self.run.rollouts.append([r for grp in groups for r in grp])
        metrics = group_metrics(groups)
        metrics.update({
            "kind": "rollouts", "step": step, "rebuild_s": round(rebuild_s, 3),
            "generate_s": round(timing["generate_s"], 3),
            "wait_lab_s": round(timing["wait_lab_s"], 3),
            "rollout_wall_s": round(time.monotonic() - started, 3),
            "completion_tokens": sum(r.completion_tokens for grp in groups for r in grp),
            "time": time.time(),
        })  # fmt: skip
        self.run.log_metrics(metrics)
        out: dict[str, Any] = {"prompt_ids": [], "completion_ids": [], "logprobs": [],
                               "rollout": []}  # fmt: skip
        for ids, grp, samples in zip(result.prompt_ids, groups, result.samples, strict=True):
            for r, sample in zip(grp, samples, strict=True):
                out["prompt_ids"].append(list(ids))
                out["completion_ids"].append(list(sample.token_ids))
                out["logprobs"].append(list(sample.logprobs))
                out["rollout"].append(dataclasses.asdict(r))
        return out


def _metrics_callback(run: RunDir) -> Any:
    from transformers import TrainerCallback

    class Log(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kw: Any) -> None:  # fmt: skip
            if logs:
                run.log_metrics({"kind": "train", "step": int(state.global_step) - 1,
                                 "time": time.time(), **logs})  # fmt: skip

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            plot(run)

    return Log()


def plot(run: RunDir) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [m for m in run.read_metrics() if m.get("kind") == "rollouts"]
    if not rows:
        return
    steps = [m["step"] for m in rows]
    reward = [m["reward_mean"] if m["reward_mean"] is not None else float("nan") for m in rows]
    rec = [m["recovered"] / m["scored"] if m["scored"] else float("nan") for m in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, reward, marker="o", label="mean reward")
    ax.plot(steps, rec, marker="s", label="recovered (of scored)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("reward / fraction")
    ax.set_ylim(-1.05, 1.05)
    ax.set_title("Sim-RFT: reward per step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run.root / "reward_curve.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    signal = [1 - (m["zero_variance_fraction"] or 0.0) for m in rows]
    ax.bar(steps, signal)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("groups with signal")
    ax.set_ylim(0, 1.05)
    ax.set_title("Sim-RFT: fraction of groups with reward variance")
    fig.tight_layout()
    fig.savefig(run.root / "signal_fraction.png", dpi=100)
    plt.close(fig)


def summarise(run: RunDir, wall_s: float) -> dict[str, Any]:
    rows = [m for m in run.read_metrics() if m.get("kind") == "rollouts"]
    docs = run.rollouts.read()
    phases: dict[str, float] = defaultdict(float)
    for m in rows:
        for k, v in m.get("phase_s", {}).items():
            phases[k] += v
        for k in ("rebuild_s", "generate_s", "wait_lab_s", "rollout_wall_s"):
            phases[k] += m.get(k, 0.0)
    scored = [d for d in docs if d.get("reward") is not None]
    lab = [d for d in docs if d.get("injected") is not None]
    groups = sum(m["groups"] for m in rows)
    zero = sum(m["zero_variance_groups"] for m in rows)
    lab_s = sum(phases.get(k, 0.0) for k in ("inject_s", "confirm_s", "check_s", "apply_s",
                                              "verify_s", "cleanup_s", "reset_s"))  # fmt: skip
    hours = max(wall_s, 1e-9) / 3600
    return {
        "steps": len(rows),
        "rollouts": len(docs), "scored": len(scored), "lab_runs": len(lab),
        "recovered": sum(bool(d.get("recovered")) for d in scored),
        "rollouts_per_hour": round(len(docs) / hours, 1),
        "lab_rollouts_per_hour": round(len(lab) / hours, 1),
        "zero_variance_fraction": round(zero / groups, 4) if groups else None,
        "wall_s_this_session": round(wall_s, 1),
        "lab_s": round(lab_s, 1),
        "train_s": round(wall_s - phases.get("rollout_wall_s", 0.0), 1),
        "time_s": {k: round(v, 1) for k, v in sorted(phases.items())},
    }  # fmt: skip


# -- the command ----------------------------------------------------------------------------


def train(cfg: SimRftConfig, *, lab: Lab | None = None) -> dict[str, Any]:
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from trainer.sampling import EngineSampler

    wall = time.monotonic()
    torch.set_num_threads(cfg.torch_threads)
    run = RunDir(Path(cfg.run_dir))
    (run.root / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    version = start_version(cfg.from_version)
    model, tokenizer, peft_config = load_policy(version, cfg)
    weights = cfg.sampling_weights or served_weights()
    vdir = PLANNER_DIR / str(version)
    sampler = EngineSampler(
        tokenizer, weights=weights, slots=max(cfg.num_generations, cfg.curriculum_samples),
        threads=cfg.kernel_threads, version_dir=vdir if (vdir / "engine.py").is_file() else None,
    )  # fmt: skip
    executor = LabExecutor(lab or Lab.from_paths(), ExecutorSettings(
        confirm_window_s=cfg.confirm_window_s, verify_window_s=cfg.verify_window_s,
        check_timeout_s=cfg.check_timeout_s, playbook_timeout_s=cfg.playbook_timeout_s,
        syntax_check=cfg.syntax_check,
    ))  # fmt: skip
    runner = GroupRunner(cfg, sampler, executor)

    candidates, source = candidate_tasks(cfg)
    if not candidates:
        raise ValueError(f"no training prompts from {source} outside {cfg.held_out_suites}")
    candidates = candidates[: cfg.curriculum_candidates] if cfg.curriculum_samples else candidates
    if cfg.curriculum_samples:
        sampler.rebuild(model, step=-1)
        rates = calibrate(candidates, runner, run, cfg)
        tasks, note = select(candidates, rates, cfg)
    else:
        rates, tasks, note = {}, list(candidates), "no calibration: every candidate kept"
    (run.root / "curriculum.json").write_text(json.dumps({
        "source": source, "note": note, "start_version": version, "rates": rates,
        "tasks": [t.doc() for t in tasks],
    }, indent=2) + "\n")  # fmt: skip
    print(f"sim-rft: version {version}, {weights} sampling, {note}", file=sys.stderr)

    from datasets import Dataset

    dataset = Dataset.from_dict({"prompt": [t.prompt for t in tasks],
                                 "task_id": [t.id for t in tasks]})  # fmt: skip
    g = cfg.num_generations
    args = GRPOConfig(
        output_dir=str(run.checkpoints), per_device_train_batch_size=g,
        gradient_accumulation_steps=cfg.groups_per_step, num_generations=g,
        max_completion_length=cfg.max_tokens, temperature=cfg.temperature,
        beta=cfg.beta, epsilon=cfg.epsilon, num_iterations=1, learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant", max_steps=cfg.max_steps, save_steps=cfg.save_steps,
        save_total_limit=2, logging_steps=1, report_to=[], use_cpu=True, bf16=cfg.bf16,
        seed=cfg.seed, remove_unused_columns=False, dataloader_num_workers=0,
        reward_weights=[1.0, 1.0], disable_dropout=True,
        # 135M parameters fit in memory many times over; recomputing activations only costs CPU
        gradient_checkpointing=False,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=model, reward_funcs=list(rewards.REWARD_FUNCS), args=args, train_dataset=dataset,
        processing_class=tokenizer, peft_config=peft_config,
        rollout_func=LabRollouts(cfg, tasks, runner, run), callbacks=[_metrics_callback(run)],
    )  # fmt: skip
    last, step = run.last_checkpoint()
    if last is not None:
        kept = run.rollouts.truncate_to(step)
        run.truncate_metrics(step)
        print(f"sim-rft: resuming from {last} (step {step}, {kept} rollouts kept)",
              file=sys.stderr)  # fmt: skip
    else:
        run.rollouts.truncate_to(0)
        run.truncate_metrics(0)
    trainer.train(resume_from_checkpoint=last)
    policy: Any = trainer.model
    policy.save_pretrained(str(run.root / "adapter"))
    plot(run)
    summary = summarise(run, time.monotonic() - wall)
    summary.update({"start_version": version, "sampling_weights": weights, "curriculum": note,
                    "anchor": f"KL to the starting policy, beta {cfg.beta}; clip {cfg.epsilon}"})
    (run.root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    runner.lab_pool.shutdown()
    return summary


def run_command(args: argparse.Namespace) -> int:
    try:
        cfg = SimRftConfig.load(
            args.config, run_dir=args.run_dir, max_steps=args.max_steps,
            from_version=args.from_version, dataset=args.dataset,
        )  # fmt: skip
    except (OSError, ValueError, TypeError) as exc:
        print(f"remed train sim-rft: {exc}", file=sys.stderr)
        return 2
    summary = train(cfg)
    print(json.dumps(summary))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from trainer.torch_import import import_torch

    import_torch()  # before remed_cli imports the guard (Ansible): trainer/torch_import.py
    from remed_cli.sim_rft import add_arguments

    parser = argparse.ArgumentParser(prog="remed train sim-rft", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
