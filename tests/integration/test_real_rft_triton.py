"""A Real-RFT round's candidate in a real Triton (its own, on a private copy of the model
repository, never the shared stack's): one real KTO step over the base planner, the round's
training.json written by the RoundRunner's own step, staged by trainer/promote.py as stage
real-rft with serving.json (q8); `evaluate_version` (what `remed train eval` and the gate run)
serves it for an offline measurement and serves version 1 again; a trainer killed while the
candidate was loaded for its evaluation is undone by `recover` at the next start (version 1
served again, the ungated version out of the repository).

The live half of the gate (`remed bench` on the held-out suite) needs the lab:
benchmarks/real_rft.py runs the whole round against the stack."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import planner_repo
import pytest
from real_rft_fakes import GENTLE, KILL, feedback, outcome

from remed_stack.paths import REPO_ROOT
from trainer import evaluate, promote
from trainer.real_rft.config import RealRftConfig
from trainer.real_rft.gating import STAGE, evaluating_marker, recover
from trainer.real_rft.kto import train_candidate
from trainer.real_rft.store import Store
from trainer.sft import artifact_digest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATASET = REPO_ROOT / "trainer" / "data" / "sft-v1"


def test_a_kto_candidate_is_served_measured_and_taken_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3", feedback_grace_s=0)
    for n in range(2):
        store.add_outcome(outcome(f"i{n}", [(KILL, "passed")]), ("o", 0, n), now=1)
        store.add_feedback(feedback(f"i{n}", "bad", "alice", GENTLE), ("f", 0, n), now=1)
    with planner_repo.own_triton(tmp_path / "triton") as (triton, versions):
        assert versions.model_dir is not None
        model_dir = versions.model_dir
        cfg = RealRftConfig(state_dir=tmp_path / "state", model_repo=model_dir.parent,
                            triton_url=triton.http_url, batch_size=2, max_steps=1,
                            max_length=768, lora_r=4, lora_alpha=8)  # fmt: skip
        run_dir = cfg.runs_dir / "round-1"
        summary = train_candidate(store.examples(), model_dir / "1", run_dir, cfg,
                                  threading.Event())  # fmt: skip
        assert summary["steps"] == 1
        doc = {**json.loads((run_dir / "training.json").read_text()), "data_window": "round 1",
               "artifact_sha256": artifact_digest(run_dir / "adapter")}  # fmt: skip
        (run_dir / "training.json").write_text(json.dumps(doc))

        version = promote.stage(run_dir, model_dir=model_dir, parent=1, stage_name=STAGE)
        assert version == 2
        assert json.loads((model_dir / "2" / "serving.json").read_text()) == {"weights": "q8"}
        assert "stage: candidate (real-rft)" in (model_dir / "2" / "MODEL_CARD.md").read_text()

        measured = evaluate.evaluate_version(
            2, versions, url=triton.http_url, out=tmp_path / "eval", dataset=DATASET,
            limit=1, concurrency=1, progress=False,
        )  # fmt: skip
        assert measured["version"] == 2 and measured["served_before"] == [1]
        assert measured["offline"]["total"] == 1
        assert versions.served() == [1]  # served again after the measurement
        log = triton.logfile.read_text(errors="replace")
        loaded = log.split("remed_planner v2: loaded", 1)[1].splitlines()[0]
        assert "+ adapter" in loaded and "(q8 weights" in loaded

        # kill -9 while the candidate is loaded for its evaluation, then the next start
        versions.load(2)
        evaluating_marker(cfg).write_text(
            json.dumps({"run": str(run_dir), "served": 1, "candidate": 2})
        )
        assert recover(cfg, versions, run_dir) is None
        assert versions.served() == [1] and not evaluating_marker(cfg).exists()
        assert not (model_dir / "2").exists()
        assert (cfg.runs_dir / "round-1-unfinished-v2" / "adapter").is_dir()
