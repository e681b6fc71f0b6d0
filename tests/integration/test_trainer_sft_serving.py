"""A tiny SFT end to end: it trains (the loss falls), is killed with SIGKILL after a
checkpoint and continues from it with the same command, saves a small fp16 adapter, is
promoted through the gate into its own Triton (a private copy of the model repository,
never the shared stack's), and Triton generates the trained answer with it in the format the
version pins (serving.json: q8)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import planner_repo
import pytest
import sft_fixture

from remed_stack.paths import REPO_ROOT
from trainer import promote
from trainer.sft import read_metrics

pytestmark = pytest.mark.integration

TINY = REPO_ROOT / "trainer" / "configs" / "sft-tiny.toml"
TRAIN_TIMEOUT_S = 600


def _sft(data: Path, runs: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "remed_cli", "train", "sft", "--config", str(TINY),
           "--dataset", str(data), "--runs-dir", str(runs), "--no-progress"]  # fmt: skip
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _complete_checkpoint(checkpoints: Path) -> Path | None:
    for path in sorted(checkpoints.glob("checkpoint-*")):
        if (path / "trainer_state.json").is_file():
            return path
    return None


def _generate(url: str, prompt: str) -> dict[str, object]:
    body = json.dumps({"text_input": prompt, "parameters": {"max_tokens": 96}}).encode()
    req = urllib.request.Request(
        f"{url}/v2/models/remed_planner/generate", data=body, method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=120) as resp:
        return dict(json.loads(resp.read()))


def test_tiny_sft_resumes_after_kill_and_serves_in_triton(tmp_path: Path) -> None:
    data = sft_fixture.write_dataset(tmp_path / "data")
    runs = tmp_path / "runs"
    run_dir = runs / "tiny"

    # Killed with SIGKILL once the first checkpoint is complete, mid-way through the next step.
    first = _sft(data, runs)
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while _complete_checkpoint(run_dir / "checkpoints") is None:
        assert first.poll() is None, first.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    assert not (run_dir / "result.json").exists()

    second = _sft(data, runs)
    out, err = second.communicate(timeout=TRAIN_TIMEOUT_S)
    assert second.returncode == 0, err[-3000:]
    assert "resuming from checkpoint-" in err
    result = json.loads(out.strip().splitlines()[-1])

    metrics = read_metrics(run_dir / "metrics.jsonl")
    steps = [m["step"] for m in metrics if "loss" in m]
    assert steps == list(range(1, 7)), steps  # every step once: none lost, none logged twice
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert losses[-1] < losses[0] / 5, losses
    assert result["steps"] == 6 and result["eval_loss"] is not None
    assert (run_dir / "loss.png").stat().st_size > 1000
    assert json.loads((run_dir / "manifest.json").read_text()) == json.loads(
        (data / "manifest.json").read_text()
    )
    assert not (run_dir / "checkpoints").exists()

    from safetensors import safe_open

    adapter = run_dir / "adapter" / "adapter_model.safetensors"
    with safe_open(str(adapter), "pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    assert {str(t.dtype) for t in tensors.values()} == {"torch.float16"}
    lora_b = [t for k, t in tensors.items() if "lora_B" in k]
    assert lora_b and all(t.abs().max() > 0 for t in lora_b)  # B starts at zero: it trained
    assert result["artifact_bytes"] < 6_000_000  # r8 on every linear layer, fp16

    # A second run of the same command finds the run finished.
    again = _sft(data, runs)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0 and "finished already" in err

    with planner_repo.own_triton(tmp_path / "triton") as (triton, versions):
        assert versions.model_dir is not None
        version = promote.stage(run_dir, model_dir=versions.model_dir, parent=1)
        assert version == 2
        for who, v, rate in (("candidate", 2, 1.0), ("served", 1, 0.0)):
            (run_dir / "eval" / who).mkdir(parents=True)
            row = {"success_rate": rate, "injected": 4, "guard_rejected": 0, "guard_dangerous": 0}
            doc = {"version": v, "live": {"oneshot/gate": row}}
            (run_dir / "eval" / who / "evaluation.json").write_text(json.dumps(doc))
        outcome = promote.promote(run_dir, versions, model_dir=versions.model_dir)
        assert outcome.promoted, outcome.message
        assert versions.served() == [2]

        example = json.loads((data / "train.jsonl").read_text().splitlines()[0])
        answer = _generate(triton.http_url, example["prompt"])
        assert answer["model_version"] == "2"
        assert answer["text_output"] == example["completion"]
        log = triton.logfile.read_text(errors="replace")
        assert "remed_planner v2: loaded base" in log and "+ adapter" in log
        assert "(q8 weights" in log.split("remed_planner v2: loaded", 1)[1].splitlines()[0]
