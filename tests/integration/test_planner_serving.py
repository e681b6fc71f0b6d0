"""remed_planner through Triton: greedy output equals the in-process reference, alone and
concurrently.

Uses the session's `triton` fixture (tests/conftest.py). The reference depends on the weights
config.pbtxt serves: for `fp32`, the naive HF greedy `generate` on the same base model; for the
quantised formats, the same engine (qengine.QuantEngine, same kernels) run in this process,
one request at a time, which Triton's batched, prefix-cached decoding must reproduce exactly.
"""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Any

import aiohttp
import pytest
import torch

from remed_stack.paths import REPO_ROOT, StackPaths
from remed_stack.triton import MODEL_NAME

pytestmark = pytest.mark.integration

PROMPTS = (
    "Write an Ansible task that restarts nginx on host web.",
    "The cart service on host app returns HTTP 502. What do you check first?",
    "Which file holds the PostgreSQL connection limit?",
    "Name three Linux log files.",
)
MAX_TOKENS = 20
REQUEST_TIMEOUT_S = 300
PLANNER_DIR = REPO_ROOT / "model_repo" / MODEL_NAME


def served_weights() -> str:
    """The `weights` parameter of the model's config.pbtxt (fp32 when absent)."""
    config = (PLANNER_DIR / "config.pbtxt").read_text()
    match = re.search(r'key:\s*"weights"\s*value:\s*{\s*string_value:\s*"(\w+)"', config)
    return match.group(1) if match else "fp32"


@pytest.fixture(scope="module")
def reference() -> list[str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = StackPaths.from_env().base_model
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    weights = served_weights()
    if weights != "fp32":
        return _quantised_greedy(tokenizer, model, weights)
    texts = []
    for prompt in PROMPTS:
        enc: Any = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=MAX_TOKENS, do_sample=False)
        new = out[0, enc["input_ids"].shape[1] :]
        texts.append(str(tokenizer.decode(new, skip_special_tokens=True)))
    return texts


def _quantised_greedy(tokenizer: Any, model: Any, weights: str) -> list[str]:
    paths = [str(PLANNER_DIR / "1"), str(PLANNER_DIR / "native")]
    sys.path[:0] = paths
    try:
        import build
        import qengine
        import scheduler
    finally:
        for path in paths:
            sys.path.remove(path)
    lib = qengine.load_kernels(build.ensure_built())
    engine = qengine.QuantEngine(model, 2, lib=lib, weights=weights, threads=2)
    sched = scheduler.Scheduler(engine, {tokenizer.eos_token_id}, prefix_cache=False)
    texts = []
    for prompt in PROMPTS:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=True
        )["input_ids"]
        out: list[Any] = []
        job = scheduler.Job(list(ids), MAX_TOKENS, 0.0, None, lambda t, e, o=out: o.append(t))
        sched.submit(job)
        sched.run_until_idle()
        texts.append(str(tokenizer.decode(out[0], skip_special_tokens=True)))
    return texts


async def _generate_all(http_url: str, prompts: tuple[str, ...]) -> list[str]:
    url = f"{http_url}/v2/models/{MODEL_NAME}/generate"
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(prompt: str) -> str:
            body = {"text_input": prompt, "parameters": {"max_tokens": MAX_TOKENS}}
            async with session.post(url, json=body) as resp:
                data: dict[str, Any] = await resp.json()
                assert resp.status == 200, data
                return str(data["text_output"])

        return list(await asyncio.gather(*(one(p) for p in prompts)))


async def test_concurrent_greedy_equals_reference(triton: Any, reference: list[str]) -> None:
    # All prompts at once: they share decode steps inside the model (continuous batching).
    assert await _generate_all(triton.http_url, PROMPTS) == reference


async def test_single_greedy_equals_reference(triton: Any, reference: list[str]) -> None:
    for prompt, expected in zip(PROMPTS[:2], reference[:2], strict=True):
        assert await _generate_all(triton.http_url, (prompt,)) == [expected]
