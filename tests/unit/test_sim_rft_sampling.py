"""Sim-RFT's sampler (trainer/sampling.py): the served engine rebuilt from a LoRA policy.

The fp32 engine over the merged weights must give the policy's own log-probabilities (so the
merge is right), and a seeded group must be reproducible."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from trainer.sampling import EngineSampler, merged_state

pytestmark = pytest.mark.unit

PROMPT = "Write an Ansible playbook that restarts nginx on host web."


@pytest.fixture(scope="module")
def policy(hf: Any) -> tuple[Any, Any]:
    from peft import LoraConfig, get_peft_model

    tokenizer, model = hf
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"],
                          task_type="CAUSAL_LM"),
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.no_grad():  # a trained adapter: B is no longer zero
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return tokenizer, peft_model


def test_merged_weights_carry_the_adapter(policy: tuple[Any, Any]) -> None:
    _, model = policy
    state = merged_state(model).state_dict()
    assert not any("lora_" in k or "base_layer" in k for k in state)
    base = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    assert not torch.equal(state["model.layers.0.self_attn.q_proj.weight"], base)
    assert torch.equal(state["model.layers.0.self_attn.k_proj.weight"],
                       model.get_base_model().model.layers[0].self_attn.k_proj.weight)  # fmt: skip


def test_fp32_engine_samples_with_the_policys_logprobs(policy: tuple[Any, Any]) -> None:
    tokenizer, model = policy
    sampler = EngineSampler(tokenizer, weights="fp32", slots=4)
    sampler.rebuild(model, step=0)
    ids = sampler.prompt_ids(PROMPT)
    samples = sampler.sample(ids, [1, 2, 3, 4], max_tokens=12, temperature=1.0)
    assert len(samples) == 4 and all(0 < len(s.token_ids) <= 12 for s in samples)
    again = sampler.sample(ids, [1, 2, 3, 4], max_tokens=12, temperature=1.0)
    assert [s.token_ids for s in again] == [s.token_ids for s in samples]
    with torch.no_grad():
        seq = torch.tensor([ids + samples[0].token_ids])
        logits = model(seq).logits[0, len(ids) - 1 : -1].float()
    logp = torch.log_softmax(logits, -1).gather(1, torch.tensor(samples[0].token_ids)[:, None])
    assert torch.allclose(logp[:, 0], torch.tensor(samples[0].logprobs), atol=1e-3)


def test_quantised_engine_rebuilds_from_the_policy(policy: tuple[Any, Any]) -> None:
    tokenizer, model = policy
    sampler = EngineSampler(tokenizer, weights="q4", slots=4)
    assert sampler.rebuild(model, step=3) > 0 and sampler.built_at_step == 3
    out = sampler.sample(sampler.prompt_ids(PROMPT), [7] * 4, max_tokens=6, temperature=0.8)
    assert len({tuple(s.token_ids) for s in out}) == 1  # same seed, same tokens, batched
    with pytest.raises(ValueError, match="slots"):
        sampler.sample(sampler.prompt_ids(PROMPT), list(range(5)), max_tokens=2, temperature=1)
