"""`remed train sim-rft` end to end, tiny: the real base model samples groups of 4 with the
served engine (8 tokens, so no playbook and no lab run), trl's GRPOTrainer takes two steps,
checkpoints, and a rerun of the same command resumes without counting a rollout twice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from trainer.sim_rft import SimRftConfig, train

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_tiny_run_trains_logs_and_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = SimRftConfig(
        run_dir=str(run_dir), from_version="1", prompt_source="suite", max_tasks=2,
        curriculum_samples=0, num_generations=4, groups_per_step=1, max_steps=2,
        max_tokens=8, save_steps=1,
    )  # fmt: skip
    summary = train(cfg)
    assert summary["steps"] == 2 and summary["rollouts"] == 8
    assert summary["zero_variance_fraction"] == 1.0  # 8 tokens: never a playbook
    for name in ("reward_curve.png", "signal_fraction.png", "summary.json", "curriculum.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    docs = [json.loads(x) for x in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    assert {d["outcome"] for d in docs} == {"no_playbook"}
    assert all(d["reward"] == -1.0 and d["injected"] is None for d in docs)
    assert sorted({d["step"] for d in docs}) == [0, 1]
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(m["kind"] == "train" and "kl" in m for m in metrics)

    # killed after step 2's rollouts, before its checkpoint: the rerun resumes from step 1
    shutil.rmtree(run_dir / "checkpoints" / "checkpoint-2")
    summary = train(cfg)
    docs = [json.loads(x) for x in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    keys = [(d["step"], d["group"], d["index"]) for d in docs]
    assert len(keys) == len(set(keys)) == 8
    assert (run_dir / "checkpoints" / "checkpoint-2").is_dir()
