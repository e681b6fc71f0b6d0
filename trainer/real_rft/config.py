"""`RealRftConfig`: the `[real_rft]` table of the trainer service's TOML file.

Every key has a default; `__post_init__` refuses combinations that cannot work with a sentence
that says what to write instead. Kafka transport security comes from an optional `[kafka]`
table read exactly as the daemon reads its own (`remed_daemon.config`), so the trainer uses the
same TLS/SASL settings and `REMED_KAFKA_*` overrides.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remed_daemon.config import KafkaConfig

ROOT = Path(__file__).resolve().parents[2]


class RealRftConfigError(ValueError):
    """The config cannot work; the message names the key and the fix."""


@dataclass(frozen=True)
class RealRftConfig:
    state_dir: Path = Path("/var/lib/remed-trainer")
    # Kafka: its own consumer group, never the daemon's.
    group_id: str = "remed-trainer"
    outcomes_topic: str = "remed.outcomes"
    feedback_topic: str = "remed.feedback"
    poll_timeout_ms: int = 1000
    max_poll_records: int = 200
    # A verified recovery without feedback becomes a desirable example after this long (a
    # `bad` that arrives earlier makes it undesirable instead).
    feedback_grace_s: float = 3600.0
    # A round starts when this many new examples are ready ...
    round_min_examples: int = 64
    # ... or when the oldest ready one has waited this long, if at least this many are ready.
    round_max_age_s: float = 7 * 86400.0
    round_min_examples_on_age: int = 8
    round_check_interval_s: float = 30.0
    # One author's feedback-derived examples per category and round, at most.
    max_examples_per_author_per_category: int = 16
    # Where the served planner lives and how to switch it.
    model_repo: Path = ROOT / "model_repo"
    model_name: str = "remed_planner"
    triton_url: str = "http://127.0.0.1:8000"
    triton_timeout_s: float = 600.0
    # The gate: "stage1" is trainer/gate.py's benchmark gate in the lab; "none" refuses every
    # candidate (train and record, never serve), for a trainer without a lab.
    gate: str = "stage1"
    gate_timeout_s: float = 3 * 3600.0
    # What the stage-1 gate measures (gating.py), candidate and served alike, as `remed train
    # eval` does: offline on this dataset's split (relative to the checkout; "" for none) ...
    gate_dataset: str = "trainer/data/sft-v1"
    gate_split: str = "test"
    gate_offline_limit: int = 0  # 0 = the whole split
    gate_concurrency: int = 4
    # ... and live: `remed bench` one-shot on this suite (the held-out one; "" for none) and the
    # ThinkRemed loop on `gate_loop_suite` ("" for none), with `gate_bench_args` passed to both
    # (e.g. ["--limit", "12"]). The gate compares the row `gate_row` (default: the one-shot
    # suite's, else the loop suite's).
    gate_suite: str = "hard"
    gate_loop_suite: str = ""
    gate_bench_args: list[str] = field(default_factory=list)
    gate_row: str = ""
    # The weight format a promoted version pins in serving.json (and is evaluated in).
    weights: str = "q8"
    # What trains a candidate, as module:function (kto.train_candidate's signature); tests
    # and experiments swap it.
    train_entry: str = "trainer.real_rft.kto:train_candidate"
    # KTO (kto.py).
    beta: float = 0.1
    learning_rate: float = 5e-5
    epochs: int = 2
    max_steps: int = 0  # 0 = epochs decide
    batch_size: int = 4
    max_length: int = 2048
    lora_r: int = 16
    lora_alpha: int = 32
    torch_threads: int = 2
    seed: int = 1
    # SIGTERM: the consumer commits and a running round gets this long before it is cancelled
    # (it runs again from the same examples at the next start).
    drain_budget_s: float = 30.0
    watchdog_stall_s: float = 120.0
    kafka: KafkaConfig = field(default_factory=KafkaConfig)

    def __post_init__(self) -> None:
        for name in ("round_min_examples", "round_min_examples_on_age", "batch_size", "epochs",
                     "max_examples_per_author_per_category", "max_length", "lora_r"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise RealRftConfigError(f"real_rft.{name} must be > 0, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise RealRftConfigError(
                "real_rft.batch_size must be at least 2: KTO estimates its KL baseline from "
                "mismatched prompt/completion pairs inside a batch"
            )
        if self.gate not in ("stage1", "none"):
            raise RealRftConfigError(
                f"real_rft.gate = {self.gate!r}: use 'stage1' (the benchmark gate) or 'none' "
                "(never promote)"
            )
        if self.weights not in ("q8", "fp32", "q4"):
            raise RealRftConfigError(
                f"real_rft.weights = {self.weights!r}: use 'q8' (the default), 'fp32' or 'q4'"
            )
        if self.gate == "stage1" and not self.gate_row_name:
            raise RealRftConfigError(
                "real_rft.gate = 'stage1' needs a live row to compare: set real_rft.gate_suite "
                "(a `remed bench` suite, e.g. 'hard') or real_rft.gate_loop_suite"
            )
        if self.round_min_examples_on_age > self.round_min_examples:
            raise RealRftConfigError(
                "real_rft.round_min_examples_on_age must not exceed round_min_examples"
            )
        if self.group_id in ("remed", ""):
            raise RealRftConfigError(
                f"real_rft.group_id = {self.group_id!r} would share the daemon's consumer "
                "group: give the trainer its own (default 'remed-trainer')"
            )

    @property
    def gate_row_name(self) -> str:
        """The evaluation row the gate compares, `<oneshot|loop>/<suite>`."""
        if self.gate_row:
            return self.gate_row
        if self.gate_suite:
            return f"oneshot/{self.gate_suite}"
        return f"loop/{self.gate_loop_suite}" if self.gate_loop_suite else ""

    @property
    def store_path(self) -> Path:
        return self.state_dir / "real_rft.sqlite3"

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "rounds"

    @classmethod
    def load(
        cls, path: Path | None, env: Mapping[str, str] | None = None, **overrides: Any
    ) -> RealRftConfig:
        """`[real_rft]` (and `[kafka]`) of `path`, then `overrides` (None values ignored)."""
        from remed_daemon import config as daemon_config

        env = os.environ if env is None else env
        doc: dict[str, Any] = {}
        if path is not None:
            try:
                doc = tomllib.loads(Path(path).read_text())
            except FileNotFoundError:
                raise RealRftConfigError(f"config file {path} does not exist") from None
            except tomllib.TOMLDecodeError as exc:
                raise RealRftConfigError(f"{path} is not valid TOML: {exc}") from None
        table = dict(doc.get("real_rft", {}))
        names = {f.name for f in dataclasses.fields(cls)} - {"kafka"}
        for key in table:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise RealRftConfigError(f"{path}: unknown key real_rft.{key!r}{hint}")
        table.update({k: v for k, v in overrides.items() if v is not None})
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
        for key in ("state_dir", "model_repo"):
            if key in table:
                table[key] = Path(table[key])
        for key, value in table.items():
            if hints.get(key) in ("float", float) and isinstance(value, int):
                table[key] = float(value)
        # [kafka] as the daemon reads it (its REMED_KAFKA_* overrides included)
        kafka_doc = {"kafka": doc.get("kafka", {}), "http": {"enabled": False}}
        try:
            kafka = daemon_config._build(
                KafkaConfig,
                {**kafka_doc["kafka"], **daemon_config._env_overrides(env).get("kafka", {})},
                "kafka",
                str(path or "defaults"),
            )
        except ValueError as exc:
            raise RealRftConfigError(str(exc)) from None
        try:
            return cls(**table, kafka=kafka)
        except TypeError as exc:
            raise RealRftConfigError(f"{path}: {exc}") from None
