"""One round's training: KTO (trl's `KTOTrainer`) on a LoRA adapter, from the served version.

Prompts and completions go in conversational form (one user turn, one assistant turn), so the
chat template serving applies (model_repo/remed_planner/1/model.py `chat_messages`) is the one
trained on. The policy starts from the served version: its `adapter/` keeps training (the
reference is a frozen, merged copy of the same version), a `weights/` or base version gets a
fresh LoRA (the reference is the same model with the adapter disabled); over `weights/` the
candidate is saved merged as `weights/`, since serving applies an adapter to the base model
only (model.py `resolve_weights`). Class weights follow
the KTO paper's advice: desirable_weight * n_desirable ~ undesirable_weight * n_undesirable
within [1, 4/3], here by scaling the smaller class up.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.real_rft.config import RealRftConfig
from trainer.real_rft.examples import Example


class Cancelled(Exception):
    """The round was asked to stop (SIGTERM); it runs again at the next start."""


def class_weights(examples: Sequence[Example]) -> tuple[float, float]:
    pos = sum(1 for e in examples if e.label)
    neg = len(examples) - pos
    if not pos or not neg:
        return 1.0, 1.0
    if pos < neg:
        return min(neg / pos, 4.0), 1.0
    return 1.0, min(pos / neg, 4.0)


def load_policy(version_dir: Path, cfg: RealRftConfig) -> tuple[Any, Any, Any, Any]:
    """(model, ref_model or None, tokenizer, peft_config or None) for `version_dir`."""
    import torch
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from remed_stack.paths import StackPaths

    base = StackPaths.from_env().base_model
    weights, adapter = version_dir / "weights", version_dir / "adapter"
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")  # fmt: skip
    src = weights if (weights / "config.json").is_file() else base
    tok_dir = src if (Path(src) / "tokenizer_config.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    if src == base and (adapter / "adapter_config.json").is_file():
        policy = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        ref_base = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        ref = PeftModel.from_pretrained(ref_base, adapter).merge_and_unload()
        ref.eval()
        return policy, ref, tokenizer, None
    return model, None, tokenizer, lora


def train_candidate(
    examples: Sequence[Example],
    version_dir: Path,
    out_dir: Path,
    cfg: RealRftConfig,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Train on `examples`; the adapter lands in `out_dir/adapter`. Returns the run's summary."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import KTOConfig, KTOTrainer

    stop = cancel or threading.Event()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.torch_threads)
    model, ref, tokenizer, peft_config = load_policy(version_dir, cfg)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    data = Dataset.from_dict({
        "prompt": [[{"role": "user", "content": e.prompt}] for e in examples],
        "completion": [[{"role": "assistant", "content": e.completion}] for e in examples],
        "label": [e.label for e in examples],
    })  # fmt: skip
    desirable, undesirable = class_weights(examples)
    args = KTOConfig(
        output_dir=str(out_dir / "checkpoints"), per_device_train_batch_size=cfg.batch_size,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1,
        learning_rate=cfg.learning_rate, beta=cfg.beta, desirable_weight=desirable,
        undesirable_weight=undesirable, max_length=cfg.max_length, use_cpu=True,
        report_to=[], save_strategy="no", logging_steps=1, seed=cfg.seed,
        dataloader_num_workers=0, lr_scheduler_type="constant", disable_dropout=True,
    )  # fmt: skip
    losses: list[dict[str, Any]] = []

    class Watch(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            if stop.is_set():
                control.should_training_stop = True
            return control

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs:
                losses.append({"step": state.global_step, **logs})

    trainer = KTOTrainer(
        model=model, ref_model=ref, args=args, train_dataset=data, processing_class=tokenizer,
        peft_config=peft_config, callbacks=[Watch()],
    )  # fmt: skip
    trainer.train()
    if stop.is_set():
        raise Cancelled("round cancelled during training")
    policy: Any = trainer.model
    if (version_dir / "weights" / "config.json").is_file():
        # A fresh LoRA over a full checkpoint: serving applies adapters to the base model only
        # (model.py `resolve_weights`), so the candidate ships merged weights.
        merged = policy.merge_and_unload()
        merged.save_pretrained(str(out_dir / "weights"))
        tokenizer.save_pretrained(str(out_dir / "weights"))
    else:
        policy.save_pretrained(str(out_dir / "adapter"))
    summary = {
        "method": "kto",
        "examples": len(examples),
        "desirable": sum(1 for e in examples if e.label),
        "undesirable": sum(1 for e in examples if not e.label),
        "desirable_weight": desirable,
        "undesirable_weight": undesirable,
        "beta": cfg.beta,
        "steps": trainer.state.global_step,
        "from": str(version_dir),
        "log": losses,
    }
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
