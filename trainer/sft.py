"""Stage 1: expert-guided SFT of the planner on the data builder's traces.

    remed train sft --config trainer/configs/sft.toml          # CPU, this host
    accelerate launch -m trainer.sft --config trainer/configs/sft.toml   # GPUs (same run dir)

It is trl's `SFTTrainer` (so transformers' `Trainer` and accelerate underneath: `accelerate
launch` runs the same code data-parallel on GPUs; only CPU is tested here), with four choices
made on purpose:

- **The tokens serving sees.** The served model (`model_repo/remed_planner/1/model.py`,
  `_encode`) puts the daemon's text_input into the tokenizer's chat template as one user
  message with `add_generation_prompt=True`; an example here is exactly those prompt ids,
  followed by the completion text plus `<|im_end|>` tokenised on its own (what the model must
  generate, and then stop). We tokenise ourselves and hand trl `input_ids` and `labels`
  (-100 on the prompt), so the loss is on the completion only and no chat-template rendering
  of an assistant turn (which appends a newline after `<|im_end|>`) can differ from serving.
- **Packing.** Examples are packed best-fit-decreasing into rows of `max_length` tokens and a
  micro-batch is one padding-free sequence (trl's `bfd` packing); `position_ids` restart for
  each example. Attention is `trainer/packing.py`'s `remed_packed_sdpa`: causal SDPA per
  example, so nothing attends across examples and no L x L mask of the whole packed sequence
  is built (transformers' own `sdpa` is also correct here but computes the full masked
  attention). An example longer than `max_length` is dropped and counted, never cut.
- **Precision.** bf16 autocast (fp32 master weights) when the device has bf16 (CPU flags
  `avx512_bf16`/`amx_bf16`, or a CUDA GPU that supports it), else fp32.
- **Resumable run directory** `<runs_dir>/<name>/`: `config.toml` (the config, checked again on
  resume), `manifest.json` (the dataset's, checked against the data's hashes),
  `metrics.jsonl`, `loss.png`, `checkpoints/checkpoint-N/` (model or adapter, optimizer,
  scheduler, RNG: a run killed at any point continues from the newest complete one when the
  same command runs again), then the final `adapter/` (LoRA, saved in `adapter_dtype`) or
  `weights/` (full), and `result.json` last (a finished run's second invocation does nothing).

LoRA (peft) is the default: an adapter of rank 16 on every linear layer is 4.9 M parameters,
9.8 MB in fp16 (fp32 would be 19.5 MB), and it is what `remed train promote` ships;
`method = "full"` trains every weight and writes `weights/` (540 MB, not committed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.config import ConfigError, SFTConfig, load
from trainer.torch_import import import_torch

END_OF_TURN = "<|im_end|>"
SPLITS = ("train", "validation")
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
ARTIFACTS = ("adapter", "weights")


class SFTError(RuntimeError):
    """The run cannot go on as asked; the message says what to change."""


# -- tokenisation: equal to serving -----------------------------------------------------------


def chat_messages(text: str) -> list[dict[str, str]]:
    """The conversation the served planner builds for one prompt (model.py `chat_messages`)."""
    return [{"role": "user", "content": text}]


def encode(tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one example: the served prompt's ids, then the completion's ids
    and `<|im_end|>`; labels are -100 on the prompt."""
    prompt_ids = tokenizer.apply_chat_template(
        chat_messages(prompt), add_generation_prompt=True, return_dict=True
    )["input_ids"]
    completion_ids = tokenizer(completion + END_OF_TURN, add_special_tokens=False)["input_ids"]
    prompt_ids = [int(i) for i in prompt_ids]
    completion_ids = [int(i) for i in completion_ids]
    return prompt_ids + completion_ids, [-100] * len(prompt_ids) + completion_ids


# -- data ---------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_dataset(data_dir: Path) -> dict[str, Any]:
    """The dataset's manifest, after checking each split file used here against its sha256."""
    manifest_path = data_dir / "manifest.json"
    if not manifest_path.is_file():
        raise SFTError(
            f"no dataset at {data_dir} (manifest.json missing): build it with "
            "`remed train data build`, or set dataset in the config"
        )
    manifest = json.loads(manifest_path.read_text())
    files = manifest.get("files", {})
    for split in SPLITS:
        path = data_dir / f"{split}.jsonl"
        if split == "validation" and not path.exists():
            continue
        expected = (files.get(split) or {}).get("sha256")
        if not expected:
            raise SFTError(f"{manifest_path} has no sha256 for {split}.jsonl")
        actual = sha256_file(path)
        if actual != expected:
            raise SFTError(
                f"{path} does not match its manifest (sha256 {actual[:12]}, manifest says "
                f"{expected[:12]}): rebuild the dataset with `remed train data build`"
            )
    return dict(manifest)


def read_split(data_dir: Path, split: str) -> list[dict[str, Any]]:
    path = data_dir / f"{split}.jsonl"
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        example = json.loads(line)
        for key in ("id", "prompt", "completion"):
            if not isinstance(example.get(key), str):
                raise SFTError(f"{path}:{n}: field {key!r} missing or not a string")
        out.append(example)
    return out


def tokenize_split(
    tokenizer: Any, examples: Sequence[Mapping[str, Any]], max_length: int
) -> tuple[dict[str, list[list[int]]], list[str]]:
    """Columns input_ids/labels for `examples`, and the ids of those dropped as too long."""
    columns: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
    dropped = []
    for example in examples:
        ids, labels = encode(tokenizer, str(example["prompt"]), str(example["completion"]))
        if len(ids) > max_length:
            dropped.append(str(example["id"]))
            continue
        columns["input_ids"].append(ids)
        columns["labels"].append(labels)
    return columns, dropped


# -- the run directory --------------------------------------------------------------------------


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def loss_png(self) -> Path:
        return self.root / "loss.png"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    def artifact(self) -> Path | None:
        """The finished run's adapter/ or weights/, if there is one."""
        for name in ARTIFACTS:
            if (self.root / name).is_dir():
                return self.root / name
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def prepare_run(cfg: SFTConfig, manifest_path: Path) -> RunDir:
    """Create the run directory, or check that an existing one is this same run."""
    run = RunDir(cfg.run_dir)
    run.root.mkdir(parents=True, exist_ok=True)
    text = cfg.to_toml()
    if run.config.exists() and run.config.read_text() != text:
        raise SFTError(
            f"{run.root} is a run with another config ({run.config}); resume it with that "
            "config, or give this one a new name"
        )
    manifest = manifest_path.read_bytes()
    if run.manifest.exists() and run.manifest.read_bytes() != manifest:
        raise SFTError(
            f"the dataset changed since {run.root} started ({run.manifest} differs from "
            f"{manifest_path}): give this run a new name"
        )
    _write_atomic(run.config, text)
    if not run.manifest.exists():
        shutil.copyfile(manifest_path, run.manifest)
    return run


def last_checkpoint(checkpoints: Path) -> Path | None:
    """The newest complete checkpoint. `trainer_state.json` is written last (transformers'
    `_save_checkpoint`), so a checkpoint without a parseable one was cut short: it is removed."""
    if not checkpoints.is_dir():
        return None
    found = sorted(
        (int(m.group(1)), p)
        for p in checkpoints.iterdir()
        if p.is_dir() and (m := CHECKPOINT.match(p.name))
    )
    for _, path in reversed(found):
        try:
            json.loads((path / "trainer_state.json").read_text())
            return path
        except (OSError, ValueError):
            shutil.rmtree(path, ignore_errors=True)
    return None


def checkpoint_step(path: Path | None) -> int:
    return int(path.name.split("-")[1]) if path is not None else 0


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line cut by kill -9
            continue
    return rows


def plot_loss(metrics: Sequence[Mapping[str, Any]], out: Path, title: str) -> None:
    """loss.png: training loss per step, validation loss where measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    evals = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train", linewidth=1.2)
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label="validation", linewidth=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (completion tokens, nats)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)


# -- precision --------------------------------------------------------------------------------


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def use_bf16(precision: str) -> bool:
    import torch

    if precision != "auto":
        return precision == "bf16"
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    return cpu_has_bf16()


# -- artifacts --------------------------------------------------------------------------------


def artifact_digest(path: Path) -> str:
    """sha256 over an adapter/ or weights/ directory (names and contents, sorted): what the
    evaluation and the model card name the trained model by."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(sha256_file(file).encode() + b"\n")
    return digest.hexdigest()


def save_adapter(model: Any, out: Path, dtype: str) -> None:
    """The LoRA adapter in `dtype` (safetensors + adapter_config.json), atomically."""
    import torch
    from safetensors.torch import load_file, save_file

    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    target = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    weights = tmp / "adapter_model.safetensors"
    tensors = {k: v.to(target).contiguous() for k, v in load_file(weights).items()}
    save_file(tensors, weights, metadata={"format": "pt"})
    (tmp / "README.md").unlink(missing_ok=True)  # peft's hub card template, not ours
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)


def save_weights(trainer: Any, tokenizer: Any, out: Path) -> None:
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)


# -- training ---------------------------------------------------------------------------------


def _metrics_callback(run: RunDir, resumed_step: int, title: str) -> Any:
    from transformers import TrainerCallback

    class MetricsLog(TrainerCallback):
        """One JSON line per log to metrics.jsonl (lines after the resumed step are dropped,
        since those steps run again), tok/s over each interval, loss.png at every save."""

        def __init__(self) -> None:
            self.started = time.monotonic()
            self.last = (self.started, 0)
            self.tokens_before = 0
            if os.environ.get("RANK", "0") != "0":
                return
            kept = [m for m in read_metrics(run.metrics) if int(m.get("step", 0)) <= resumed_step]
            _write_atomic(run.metrics, "".join(json.dumps(m) + "\n" for m in kept))
            self.tokens_before = max((int(m.get("tokens", 0)) for m in kept), default=0)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
            if not state.is_world_process_zero:
                return
            logs = dict(logs or {})
            row: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch}
            for key, value in logs.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    row[key] = value
            if "num_tokens" in logs:  # trl's count of this process's training tokens
                now, seen = time.monotonic(), int(logs["num_tokens"])
                row["tokens"] = self.tokens_before + seen
                if seen > self.last[1] and now > self.last[0]:
                    row["tok_per_s"] = round((seen - self.last[1]) / (now - self.last[0]), 1)
                self.last = (now, seen)
                row.pop("num_tokens", None)
            row["elapsed_s"] = round(time.monotonic() - self.started, 1)
            with run.metrics.open("a") as fh:
                fh.write(json.dumps(row) + "\n")

        def on_save(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            if state.is_world_process_zero:
                plot_loss(read_metrics(run.metrics), run.loss_png, title)

    return MetricsLog()


def run_sft(cfg: SFTConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train (or resume, or find finished) the run `cfg` describes; its result.json."""
    if cfg.torch_threads:
        import torch

        torch.set_num_threads(cfg.torch_threads)
    data_dir = cfg.data_dir
    manifest = check_dataset(data_dir)
    run = prepare_run(cfg, data_dir / "manifest.json")
    if run.result.exists():
        result: dict[str, Any] = json.loads(run.result.read_text())
        print(f"{run.root}: finished already ({run.result}); nothing to do", file=sys.stderr)
        return result

    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig as TrlSFTConfig
    from trl import SFTTrainer

    from trainer import packing

    set_seed(cfg.seed)
    base = cfg.base_model_dir
    if not (base / "config.json").is_file():
        raise SFTError(f"no base model at {base}: run `make setup` or set base_model")
    tokenizer = AutoTokenizer.from_pretrained(base)
    train_examples = read_split(data_dir, "train")
    if not train_examples:
        raise SFTError(f"{data_dir / 'train.jsonl'} has no examples")
    train_cols, dropped = tokenize_split(tokenizer, train_examples, cfg.max_length)
    if not train_cols["input_ids"]:
        raise SFTError(f"every training example is longer than max_length {cfg.max_length}")
    eval_cols: dict[str, list[list[int]]] | None = None
    if cfg.eval_steps >= 0:
        val = read_split(data_dir, "validation")
        if val:
            eval_cols, _ = tokenize_split(tokenizer, val, cfg.max_length)

    bf16 = use_bf16(cfg.precision)
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype="float32", attn_implementation=packing.register()
    )
    peft_config = None
    if cfg.method == "lora":
        target = "all-linear" if cfg.lora_target == ["all-linear"] else list(cfg.lora_target)
        layers = model.config.num_hidden_layers
        if cfg.lora_layers_from >= layers:
            raise SFTError(f"lora_layers_from {cfg.lora_layers_from}: the model has {layers}")
        peft_config = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=target,
            layers_to_transform=list(range(cfg.lora_layers_from, layers))
            if cfg.lora_layers_from
            else None,
            task_type="CAUSAL_LM",
        )
    has_eval = bool(eval_cols and eval_cols["input_ids"])
    args = TrlSFTConfig(
        output_dir=str(run.checkpoints),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        gradient_checkpointing=cfg.gradient_checkpointing,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # < 1: a share of the steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        bf16=bf16,
        fp16=False,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if has_eval and cfg.eval_steps > 0 else "no",
        eval_steps=cfg.eval_steps if cfg.eval_steps > 0 else None,
        report_to="none",
        disable_tqdm=not progress,
        max_length=cfg.max_length,
        packing=True,
        packing_strategy="bfd",
        padding_free=True,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    resume = last_checkpoint(run.checkpoints)
    title = f"{cfg.name}: {cfg.method}" + (f" r{cfg.lora_r}" if cfg.method == "lora" else "")
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_dict(train_cols),
        eval_dataset=datasets.Dataset.from_dict(eval_cols) if has_eval and eval_cols else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_metrics_callback(run, checkpoint_step(resume), title)],
    )
    if resume is not None:
        print(f"{run.root}: resuming from {resume.name}", file=sys.stderr)
    started = time.monotonic()
    out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_s = time.monotonic() - started
    eval_loss = None
    if has_eval:
        eval_loss = float(trainer.evaluate()["eval_loss"])
    if not trainer.is_world_process_zero():
        return {"steps": int(out.global_step)}  # the main process writes the run's files

    if cfg.method == "lora":
        save_adapter(trainer.model, run.root / "adapter", cfg.adapter_dtype)
        artifact = run.root / "adapter"
    else:
        save_weights(trainer, tokenizer, run.root / "weights")
        artifact = run.root / "weights"
    metrics = read_metrics(run.metrics)
    plot_loss(metrics, run.loss_png, title)
    losses = [m["loss"] for m in metrics if "loss" in m]
    rates = [m["tok_per_s"] for m in metrics if "tok_per_s" in m]
    result = {
        "name": cfg.name,
        "method": cfg.method,
        "steps": int(out.global_step),
        "epochs": trainer.state.epoch,
        "tokens": max((int(m.get("tokens", 0)) for m in metrics), default=0),
        "train_examples": len(train_cols["input_ids"]),
        "dropped_too_long": dropped,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "eval_loss": eval_loss,
        "train_s_this_process": round(train_s, 1),
        "median_tok_per_s": sorted(rates)[len(rates) // 2] if rates else None,
        "precision": "bf16 autocast" if bf16 else "fp32",
        "artifact": artifact.name,
        "artifact_bytes": sum(p.stat().st_size for p in artifact.rglob("*") if p.is_file()),
        "artifact_sha256": artifact_digest(artifact),
        "data_manifest_sha256": sha256_file(run.manifest),
        "dataset": str(cfg.dataset),
        "dataset_counts": {k: v.get("examples") for k, v in manifest.get("files", {}).items()},
    }
    _write_atomic(run.result, json.dumps(result, indent=2) + "\n")
    shutil.rmtree(run.checkpoints, ignore_errors=True)  # the artifact is the run's output now
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m trainer.sft` / `accelerate launch -m trainer.sft`: same as `remed train sft`."""
    import_torch()
    parser = argparse.ArgumentParser(prog="trainer.sft", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run_command(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="TOML file with an [sft] table")
    parser.add_argument("--name", help="override the config's run name")
    parser.add_argument("--dataset", help="override the config's dataset (name or directory)")
    parser.add_argument("--runs-dir", help="override the config's runs_dir")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")


def run_command(args: argparse.Namespace) -> int:
    try:
        cfg = load(Path(args.config), name=args.name, dataset=args.dataset, runs_dir=args.runs_dir)
        result = run_sft(cfg, progress=not args.no_progress)
    except (ConfigError, SFTError) as exc:
        print(f"remed train sft: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
