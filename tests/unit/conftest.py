"""Fixtures the planner engine tests share."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from remed_stack.paths import StackPaths


@pytest.fixture(scope="module")
def hf() -> Any:
    """(tokenizer, model): the base model in fp32 as transformers loads it, once per module."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = StackPaths.from_env().base_model
    if not (base / "config.json").is_file():
        pytest.fail(f"no base model at {base}: run `make setup`")
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    return tokenizer, model
