"""remed_planner's decode engine and scheduler against transformers' own greedy `generate`.

The engine is a hand-written Llama forward pass; these tests hold it to HF's output token for
token, one request at a time, with several requests batched in one decode step, and with the
prompt's prefix taken from the prefix cache. Needs the base model (`make setup`).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from remed_stack.paths import REPO_ROOT

pytestmark = pytest.mark.unit

VERSION_DIR = REPO_ROOT / "model_repo" / "remed_planner" / "1"
PROMPTS = (
    "Which command restarts the nginx service on a Linux host?",
    "Write an Ansible task that restarts redis on host db.",
    "Disk /var is full on host app. What do you check first?",
    "Name three Linux log files.",
)
MAX_NEW_TOKENS = 16
EOS = 2


@pytest.fixture(scope="module")
def modules() -> Iterator[tuple[Any, Any]]:
    sys.path.insert(0, str(VERSION_DIR))
    try:
        import engine
        import scheduler

        yield engine, scheduler
    finally:
        sys.path.remove(str(VERSION_DIR))


@pytest.fixture(scope="module")
def engine(modules: Any, hf: Any) -> Any:
    """One engine for the module (building one copies the weights); schedulers are per test."""
    return modules[0].Engine(hf[1], slots=len(PROMPTS) + 1)


@pytest.fixture(scope="module")
def cases(hf: Any) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, HF greedy completion ids) per prompt."""
    tokenizer, model = hf
    out = []
    for text in PROMPTS:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, return_dict=True
        )["input_ids"]
        with torch.inference_mode():
            generated = model.generate(
                torch.tensor([ids]),
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False,
                eos_token_id=EOS,
                pad_token_id=EOS,
            )
        out.append((list(ids), generated[0, len(ids) :].tolist()))
    return out


def _run(
    modules: tuple[Any, Any], engine: Any, prompts: list[list[int]], *, together: bool, prefix: bool
) -> list[list[int] | None]:
    sched_mod = modules[1]
    sched = sched_mod.Scheduler(engine, {EOS}, prefix_cache=prefix)
    results: list[list[int] | None] = [None] * len(prompts)

    def done(i: int) -> Any:
        def finish(tokens: list[int] | None, error: BaseException | None) -> None:
            assert error is None, error
            results[i] = tokens

        return finish

    for i, ids in enumerate(prompts):
        sched.submit(sched_mod.Job(ids, MAX_NEW_TOKENS, 0.0, None, done(i)))
        if not together:
            sched.run_until_idle()
    sched.run_until_idle()
    return results


def test_one_at_a_time_matches_hf_greedy(modules: Any, engine: Any, cases: Any) -> None:
    got = _run(modules, engine, [ids for ids, _ in cases], together=False, prefix=False)
    assert got == [ref for _, ref in cases]


def test_batched_with_prefix_cache_matches_hf_greedy(modules: Any, engine: Any, cases: Any) -> None:
    # Submitted together: prefilled one by one (the 2nd..nth reuse the system prompt's cached
    # keys/values), then decoded in shared steps whose rows finish at different lengths.
    got = _run(modules, engine, [ids for ids, _ in cases], together=True, prefix=True)
    assert got == [ref for _, ref in cases]


def test_a_failed_job_does_not_stop_the_others(modules: Any, engine: Any, cases: Any) -> None:
    sched_mod = modules[1]
    sched = sched_mod.Scheduler(engine, {EOS})
    outcomes: dict[str, Any] = {}
    too_long = [1] * (engine.shape.max_positions + 1)
    for name, ids in (("bad", too_long), ("good", cases[0][0])):
        sched.submit(
            sched_mod.Job(
                ids, MAX_NEW_TOKENS, 0.0, None, lambda t, e, n=name: outcomes.__setitem__(n, (t, e))
            )
        )
    sched.run_until_idle()
    assert isinstance(outcomes["bad"][1], ValueError)
    assert outcomes["good"] == (cases[0][1], None)
    assert sorted(sched.free) == list(range(engine.slots - 1))


def test_cancelled_job_stops_and_frees_its_slot(
    modules: Any, engine: Any, cases: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sched_mod = modules[1]
    monkeypatch.setattr(sched_mod, "CANCEL_POLL_S", 0.0)  # poll at every step
    sched = sched_mod.Scheduler(engine, {EOS}, prefix_cache=False)
    outcome: list[Any] = []
    steps = {"n": 0}

    def cancelled() -> bool:
        steps["n"] += 1
        return steps["n"] > 3

    sched.submit(
        sched_mod.Job(cases[1][0], 500, 0.0, None, lambda t, e: outcome.append(e), cancelled)
    )
    sched.run_until_idle()
    assert len(outcome) == 1 and isinstance(outcome[0], sched_mod.Cancelled)
    assert sched.free == list(range(engine.slots)) and not sched.active


def test_served_scheduler_watches_cancellation_off_the_decode_thread(
    modules: Any, engine: Any, cases: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sched_mod = modules[1]
    monkeypatch.setattr(sched_mod, "CANCEL_POLL_S", 0.01)
    sched = sched_mod.Scheduler(engine, {EOS}, prefix_cache=False)
    finished = threading.Event()
    outcome: list[Any] = []
    asked_from: set[str] = set()
    asked_after_done: list[bool] = []
    flag = {"cancel": False}

    def cancelled() -> bool:
        asked_from.add(threading.current_thread().name)
        asked_after_done.append(finished.is_set())
        return flag["cancel"]

    def finish(tokens: Any, error: Any) -> None:
        outcome.append(error)
        finished.set()

    sched.start()
    try:
        sched.submit(sched_mod.Job(cases[1][0], 2000, 0.0, None, finish, cancelled))
        time.sleep(0.3)
        flag["cancel"] = True
        assert finished.wait(10), "a cancelled request must end"
        time.sleep(0.1)  # the watcher keeps running; it must not ask about a finished job
    finally:
        sched.stop()
    assert len(outcome) == 1 and isinstance(outcome[0], sched_mod.Cancelled)
    assert "remed-planner-cancel-watch" in asked_from
    assert not any(asked_after_done)
    assert sched.free == list(range(engine.slots)) and not sched.active


def test_seeded_sampling_is_reproducible(modules: Any, engine: Any, cases: Any) -> None:
    sched_mod = modules[1]
    sched = sched_mod.Scheduler(engine, {EOS}, prefix_cache=False)
    runs: list[Any] = []
    for _ in range(2):
        sched.submit(sched_mod.Job(cases[3][0], 12, 0.9, 1234, lambda t, e: runs.append(t)))
        sched.run_until_idle()
    assert runs[0] == runs[1] and len(runs[0]) > 0
