"""remed_planner through Triton: greedy output equals transformers' own, alone and concurrently.

Uses the session's `triton` fixture (tests/conftest.py). The reference is the naive HF greedy
`generate` on the same base model, run in this process.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
import torch

from remed_stack.paths import StackPaths
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


@pytest.fixture(scope="module")
def hf_greedy() -> list[str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = StackPaths.from_env().base_model
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
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


async def test_concurrent_greedy_equals_transformers(triton: Any, hf_greedy: list[str]) -> None:
    # All prompts at once: they share decode steps inside the model (continuous batching).
    assert await _generate_all(triton.http_url, PROMPTS) == hf_greedy


async def test_single_greedy_equals_transformers(triton: Any, hf_greedy: list[str]) -> None:
    for prompt, expected in zip(PROMPTS[:2], hf_greedy[:2], strict=True):
        assert await _generate_all(triton.http_url, (prompt,)) == [expected]
