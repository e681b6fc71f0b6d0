"""One Real-RFT round's training for real: trl's KTOTrainer on a LoRA adapter over the base
planner (SmolLM2-135M-Instruct from `make setup`), a handful of labelled examples from outcome
documents, two steps on CPU. The adapter it saves differs from its initialisation: the
parameters actually changed (trl's own test habit)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from real_rft_fakes import GENTLE, KILL, feedback, outcome

from trainer.real_rft.config import RealRftConfig
from trainer.real_rft.kto import train_candidate
from trainer.real_rft.store import Store

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_kto_round_changes_the_adapter(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    store = Store(tmp_path / "s.sqlite3", feedback_grace_s=0)
    for n in range(2):
        store.add_outcome(outcome(f"i{n}", [(KILL, "passed")]), ("o", 0, n), now=1)
        store.add_feedback(feedback(f"i{n}", "bad", "alice", GENTLE), ("f", 0, n), now=1)
    examples = store.examples()
    assert {e.label for e in examples} == {True, False}
    cfg = RealRftConfig(state_dir=tmp_path, batch_size=2, max_steps=2, max_length=768,
                        learning_rate=1e-3, lora_r=4, lora_alpha=8)  # fmt: skip
    version_1 = Path(__file__).resolve().parents[2] / "model_repo" / "remed_planner" / "1"
    summary = train_candidate(examples, version_1, tmp_path / "run", cfg, threading.Event())
    assert summary["steps"] == 2 and summary["method"] == "kto"
    weights = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    lora_b = [t for k, t in weights.items() if "lora_B" in k]
    assert lora_b and any(float(t.abs().sum()) > 0 for t in lora_b)  # B starts at zero
