"""The trainer's stage configs: one dataclass per stage, loaded from a TOML file under
`trainer/configs/` (`remed train sft --config trainer/configs/sft.toml`).

Shaped like trl's `*Config` classes: every field has its help text in `metadata["help"]`, and
`__post_init__` rejects a bad value or a bad combination with a sentence that says what to do
instead. A file holds one table per stage (`[sft]`); every key is optional, an unknown key is an
error with a did-you-mean, and the file a run was started with is copied into its run directory
(`config.toml`), where a resumed run checks it is still the same.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = REPO_ROOT / "trainer" / "data"
BASE_MODEL_DIR = REPO_ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct"

METHODS = ("lora", "full")
PRECISIONS = ("auto", "bf16", "fp32")
ADAPTER_DTYPES = ("fp16", "bf16", "fp32")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")


class ConfigError(ValueError):
    """A config file or value the stage cannot run with; the message names the key and the fix."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class SFTConfig:
    """Stage 1, expert-guided SFT (`trainer/sft.py`). Defaults are the shipped run's."""

    name: str = field(
        default="sft", metadata=_help("run name: the run directory is <runs_dir>/<name>")
    )
    runs_dir: str = field(
        default="runs/sft",
        metadata=_help("where run directories go; relative to the repository root"),
    )
    dataset: str = field(
        default="sft-v1",
        metadata=_help(
            "the dataset: a name under trainer/data/ or a directory with train.jsonl, "
            "validation.jsonl and manifest.json (`remed train data build`)"
        ),
    )
    base_model: str = field(
        default="",
        metadata=_help("base checkpoint directory; empty: .cache/models/SmolLM2-135M-Instruct"),
    )
    method: str = field(
        default="lora",
        metadata=_help("lora (peft adapter, the shipped kind) or full (every weight trained)"),
    )
    lora_r: int = field(default=16, metadata=_help("LoRA rank"))
    lora_alpha: int = field(default=32, metadata=_help("LoRA scale numerator (scale = alpha/r)"))
    lora_dropout: float = field(default=0.05, metadata=_help("dropout on the LoRA input"))
    lora_target: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata=_help(
            'modules that get an adapter: ["all-linear"] (every projection, not lm_head) or '
            "names such as q_proj, v_proj"
        ),
    )
    lora_layers_from: int = field(
        default=0,
        metadata=_help(
            "adapters only on decoder layers >= this (0: all): the backward pass then stops at "
            "that layer, e.g. 15 of SmolLM2's 30 makes a CPU step ~1.4x cheaper"
        ),
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata=_help(
            "recompute activations in the backward pass: saves memory, costs ~30% more compute "
            "(a 135M model fits without it), and makes the backward run through every layer"
        ),
    )
    adapter_dtype: str = field(
        default="fp16",
        metadata=_help(
            "dtype the final adapter is saved in: fp16 halves fp32's size and changes the merged "
            "weights by < 1e-3 of their scale; serving upcasts it to fp32"
        ),
    )
    epochs: float = field(default=3.0, metadata=_help("passes over the training split"))
    max_steps: int = field(
        default=-1, metadata=_help("optimizer steps; > 0 overrides epochs (tests, smoke runs)")
    )
    batch_size: int = field(
        default=2,
        metadata=_help("packed rows per micro-batch (concatenated into one padding-free sequence)"),
    )
    gradient_accumulation_steps: int = field(
        default=4, metadata=_help("micro-batches per optimizer step")
    )
    max_length: int = field(
        default=3072,
        metadata=_help(
            "tokens per packed row; an example longer than this is dropped (and counted), never "
            "truncated, since a cut completion teaches the model to stop mid-playbook"
        ),
    )
    learning_rate: float = field(default=2e-4, metadata=_help("peak learning rate"))
    lr_scheduler: str = field(default="cosine", metadata=_help("cosine, linear, constant, ..."))
    warmup_ratio: float = field(default=0.05, metadata=_help("share of steps warming up"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    max_grad_norm: float = field(default=1.0, metadata=_help("gradient clipping"))
    precision: str = field(
        default="auto",
        metadata=_help(
            "auto: bf16 autocast where the device has bf16 (CPU flags avx512_bf16 or amx_bf16, "
            "or a CUDA GPU that supports it), fp32 otherwise; bf16 or fp32 force it"
        ),
    )
    seed: int = field(default=42, metadata=_help("seed of the adapter init, data order, dropout"))
    logging_steps: int = field(default=1, metadata=_help("optimizer steps between metrics lines"))
    save_steps: int = field(default=10, metadata=_help("optimizer steps between checkpoints"))
    save_total_limit: int = field(default=2, metadata=_help("checkpoints kept (the newest)"))
    eval_steps: int = field(
        default=40,
        metadata=_help("steps between validation losses; 0: only at the end; -1: never"),
    )
    torch_threads: int = field(default=0, metadata=_help("torch CPU threads; 0: torch's default"))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f, getattr(self, f.name))
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ConfigError(f"name {self.name!r} must be a plain directory name, e.g. sft-v1")
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.adapter_dtype not in ADAPTER_DTYPES:
            raise ConfigError(
                f"adapter_dtype must be one of {', '.join(ADAPTER_DTYPES)}, "
                f"got {self.adapter_dtype!r}"
            )
        if self.lr_scheduler not in SCHEDULERS:
            raise ConfigError(
                f"lr_scheduler must be one of {', '.join(SCHEDULERS)}, got {self.lr_scheduler!r}"
            )
        if self.method == "lora":
            if self.lora_r < 1 or self.lora_alpha < 1:
                raise ConfigError(
                    "lora_r and lora_alpha must be >= 1 (rank 16, alpha 32 is a start)"
                )
            if not self.lora_target:
                raise ConfigError('lora_target is empty: use ["all-linear"] or module names')
        elif self.learning_rate > 1e-4:
            raise ConfigError(
                f"learning_rate {self.learning_rate} is a LoRA rate: full fine-tuning of a 135M "
                'model diverges above ~1e-4; use 2e-5..5e-5 with method = "full"'
            )
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ConfigError("set epochs > 0, or max_steps > 0 to stop after that many steps")
        for key in ("batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.save_total_limit < 1:
            raise ConfigError("save_total_limit must be >= 1: resuming needs a checkpoint")
        if self.max_length < 64:
            raise ConfigError(f"max_length {self.max_length} cannot hold a prompt; use >= 1024")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.lora_layers_from < 0:
            raise ConfigError(f"lora_layers_from must be >= 0, got {self.lora_layers_from}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.eval_steps < -1:
            raise ConfigError("eval_steps: N > 0 every N steps, 0 at the end, -1 never")

    # -- paths ------------------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        return _repo_path(self.runs_dir) / self.name

    @property
    def data_dir(self) -> Path:
        path = Path(self.dataset)
        if path.is_absolute() or "/" in self.dataset:
            return _repo_path(self.dataset)
        return DATA_ROOT / self.dataset

    @property
    def base_model_dir(self) -> Path:
        return _repo_path(self.base_model) if self.base_model else BASE_MODEL_DIR

    # -- files ------------------------------------------------------------------------------

    def to_toml(self) -> str:
        """The `[sft]` table with every key, as `load` reads it back."""
        lines = ["[sft]"]
        for f in dataclasses.fields(self):
            lines.append(f"{f.name} = {_toml_value(getattr(self, f.name))}")
        return "\n".join(lines) + "\n"


def _check_type(f: dataclasses.Field[Any], value: Any) -> None:
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    kind = type(default)
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if kind is list:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    if not ok:
        raise ConfigError(f"{f.name} must be {kind.__name__}, got {value!r}")


def _repo_path(text: str) -> Path:
    path = Path(text)
    return path if path.is_absolute() else REPO_ROOT / path


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def load(path: Path, table: str = "sft", **overrides: Any) -> SFTConfig:
    """The `[table]` of the TOML file at `path`, with `overrides` (None: keep) on top."""
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    others = sorted(set(doc) - {table})
    if others:
        raise ConfigError(
            f"{path}: unexpected top-level key(s) {others}; put the keys under [{table}]"
        )
    data = dict(doc.get(table, {}))
    known = {f.name: f for f in dataclasses.fields(SFTConfig)}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path}: unknown key [{table}].{key}{hint}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return SFTConfig(**data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: [{table}] {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"{path}: [{table}] {exc}") from None


def help_text() -> str:
    """Every key with its default and help, for `remed train sft --help-config`."""
    out = []
    for f in dataclasses.fields(SFTConfig):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out.append(f"{f.name} = {_toml_value(default)}\n    {f.metadata.get('help', '')}")
    return "\n".join(out)
