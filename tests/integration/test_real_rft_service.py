"""The Real-RFT trainer service on the real broker, in a child process: it consumes private
outcome and feedback topics in its own group, and kill -9 in the middle of a round loses no
feedback and counts none twice; the round runs again on restart and nothing is served without
a gate (`gate = "none"` here, and a private model repository)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from alerting import wait_for
from real_rft_fakes import GENTLE, KILL, WIPE, feedback, outcome
from reports import produce

pytestmark = pytest.mark.integration
TESTS = Path(__file__).resolve().parents[1]


async def topics(bootstrap: str) -> tuple[str, str]:
    base = f"remed.rft{uuid.uuid4().hex[:10]}"
    names = (f"{base}.outcomes", f"{base}.feedback")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, 2, 1) for n in names], timeout_ms=15_000)
    finally:
        await admin.close()
    return names


def send(bootstrap: str, topic: str, docs: list[dict[str, Any]]) -> None:
    items = [(d["incident_id"].encode(), json.dumps(d).encode(), []) for d in docs]
    asyncio.run(produce(bootstrap, topic, items))


def status(state: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((state / "status.json").read_text()))
    except (OSError, ValueError):
        return {}


def test_kill_9_during_a_round_loses_and_doubles_nothing(
    kafka: Any, triton: Any, tmp_path: Path
) -> None:
    outcomes_topic, feedback_topic = asyncio.run(topics(kafka.bootstrap))
    state, model_repo = tmp_path / "state", tmp_path / "model_repo"
    (model_repo / "remed_planner" / "1").mkdir(parents=True)
    (model_repo / "remed_planner" / "1" / "model.py").write_text("# serving code\n")
    cfg = tmp_path / "trainer.toml"
    cfg.write_text(
        f'[real_rft]\nstate_dir = "{state}"\ngroup_id = "rft-{uuid.uuid4().hex[:8]}"\n'
        f'outcomes_topic = "{outcomes_topic}"\nfeedback_topic = "{feedback_topic}"\n'
        f'model_repo = "{model_repo}"\ngate = "none"\nfeedback_grace_s = 0\n'
        "round_min_examples = 6\nround_min_examples_on_age = 1\nround_check_interval_s = 0.5\n"
        'train_entry = "real_rft_fakes:slow_train"\ndrain_budget_s = 5\n'
        f'triton_url = "{triton.http_url}"\n'
        f'[kafka]\nbootstrap = "{kafka.bootstrap}"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(TESTS), "REAL_RFT_TRAIN_S": "600"}

    def start() -> subprocess.Popen[bytes]:
        log = open(tmp_path / "trainer.log", "ab")  # the child owns it
        return subprocess.Popen(
            [sys.executable, "-m", "trainer.real_rft", "--config", str(cfg)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip

    docs = [outcome(f"i{n}", [(KILL, "failed"), (GENTLE, "passed")]) for n in range(4)]
    send(kafka.bootstrap, outcomes_topic, docs + docs[:2])  # the daemon repeats some
    first = [feedback(f"i{n}", "good", f"op{n % 2}", fid=f"fb-a{n}") for n in range(4)]
    first.append(feedback("i0", "bad", "mallory", WIPE, fid="fb-poison"))  # refused in there
    send(kafka.bootstrap, feedback_topic, first + first[:3])  # and resent ones
    proc = start()
    try:
        marker = state / "training.started"
        wait_for(marker.exists, 90, "the first round to start training")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # feedback keeps coming while the trainer is down
        later = [feedback(f"i{n}", "bad", "op9", GENTLE, fid=f"fb-b{n}") for n in range(2)]
        send(kafka.bootstrap, feedback_topic, later + later)
        env["REAL_RFT_TRAIN_S"] = "1"
        proc = start()
        wait_for(lambda: marker.read_text() == "2", 90, "the interrupted round to run again")
        wait_for(lambda: status(state).get("feedback") == 7, 60, "all feedback stored")
        wait_for(
            lambda: any(r["status"] != "running" for r in status(state).get("rounds", [])),
            60, "the round to end",
        )  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    doc = status(state)
    assert (doc["outcomes"], doc["feedback"]) == (4, 7)  # 4 incidents; 5 + 2 distinct feedback
    cat = doc["categories"]["process-killed"]
    assert cat["verdicts"] == {"good": 4, "bad": 3}
    assert cat["authors"] == {"op0": 2, "op1": 2, "mallory": 1, "op9": 2}
    assert (cat["corrections_refused"], cat["corrections_accepted"]) == (1, 2)
    first_round = doc["rounds"][0]
    assert first_round["attempts"] == 2 and first_round["status"] == "refused"
    assert "never promoted" in first_round["reason"]
    assert sorted(p.name for p in (model_repo / "remed_planner").iterdir()) == ["1"]
    stored = (state / "rounds" / "round-1" / "examples.jsonl").read_text()
    assert "rm -rf" not in stored
