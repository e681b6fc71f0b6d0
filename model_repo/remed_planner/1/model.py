"""remed_planner: Triton Python backend model that turns one prompt into one completion.

Contract (ARCHITECTURE.md): input `text_input` (BYTES), optional `max_tokens` (INT32), `temperature`
(FP32), `seed` (UINT64); outputs `text_output` (BYTES), `prompt_tokens` and `completion_tokens`
(INT32). The same knobs may come as request parameters (what the generate extension's
`"parameters": {...}` object becomes); when both are given, the input wins. The request
parameter `raw: true` sends `text_input` to the model as is instead of wrapping it in the chat
template as one user message.

Decoding is greedy when `temperature` is 0 or absent, and plain temperature sampling (no top-k
or top-p cut) otherwise, seeded with `seed` so that a seeded request is reproducible.

Generation does not use `transformers.generate`: `qengine.py` (the default, config parameter
`weights: q4 | q8`) runs the model on block-quantised weights through native AVX2 kernels
(`../native/`), one call per decode step; `engine.py` (`weights: fp32`) is a lean fp32 Llama
forward pass whose greedy output equals HF's. Both keep a slot-based KV cache (their docstrings
say how they deviate from HF), and `scheduler.py` batches all
in-flight requests into each decode step (continuous batching). `execute` only parses requests
and hands them over; each response goes out through the request's response sender when its
generation ends, so Triton keeps passing new requests in while others decode. A request the
client cancels stops generating at the next step.

Weights are loaded once, in `initialize`, from the first of:
  1. `<version>/weights/`  a full checkpoint (`save_pretrained` output: config.json +
                           *.safetensors, tokenizer optional) that the trainer wrote;
  2. `<version>/adapter/`  a PEFT adapter (adapter_config.json) that the trainer wrote, applied
                           to the base model and merged;
  3. the base model:       $REMED_BASE_MODEL_DIR, else the config parameter `base_model_dir`,
                           else `<repo>/.cache/models/SmolLM2-135M-Instruct` (`make setup`).

The weight format is the config parameter `weights`, unless the version directory pins its own
in `serving.json` (`{"weights": "q8"}`, see `read_serving`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

# engine.py and scheduler.py live next to this file, in the same version directory, so a new
# version ships the code that serves it.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import Engine
from qengine import FORMATS, QuantEngine, kernel_isa, load_kernels
from scheduler import Cancelled, Job, Scheduler

MAX_TOKENS_LIMIT = 1024
DEFAULT_MAX_TOKENS = 256
DEFAULT_TORCH_THREADS = 2
DEFAULT_MAX_BATCH = 8
DEFAULT_WEIGHTS = "q4"
DEFAULT_KERNEL_THREADS = 2
NATIVE_DIR = "native"  # model_repo/remed_planner/native: the kernels' source and build script
BASE_MODEL_NAME = "SmolLM2-135M-Instruct"
FINETUNED_WEIGHTS_DIR = "weights"
ADAPTER_DIR = "adapter"
SERVING_FILE = "serving.json"  # a version's pinned serving settings (read_serving)
SERVING_KEYS = frozenset({"weights"})
KNOBS = ("max_tokens", "temperature", "seed")


class BadRequest(ValueError):
    """The request cannot be served as sent; the message tells the caller what to change."""


@dataclass(frozen=True)
class GenerationRequest:
    text: str
    max_tokens: int
    temperature: float
    seed: int | None
    raw: bool


@dataclass(frozen=True)
class WeightsSource:
    model_dir: Path
    tokenizer_dir: Path
    adapter_dir: Path | None
    label: str


# -- request parsing (pure; unit-tested without Triton) ---------------------------------------


def parse_request(
    text: Any,
    inputs: dict[str, Any],
    parameters: dict[str, Any],
    *,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
) -> GenerationRequest:
    """Validate one request. `inputs` holds the optional input tensors' single values."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest("text_input is not valid UTF-8") from exc
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("text_input is empty: send the prompt text")

    knobs = {k: parameters[k] for k in KNOBS if k in parameters}
    knobs.update({k: v for k, v in inputs.items() if v is not None})

    max_tokens = _as_int("max_tokens", knobs.get("max_tokens", default_max_tokens))
    if not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise BadRequest(f"max_tokens must be between 1 and {MAX_TOKENS_LIMIT}, got {max_tokens}")

    temperature = _as_float("temperature", knobs.get("temperature", 0.0))
    if not math.isfinite(temperature) or temperature < 0:
        raise BadRequest(f"temperature must be a finite number >= 0, got {temperature}")

    seed = knobs.get("seed")
    if seed is not None:
        seed = _as_int("seed", seed)
        if seed < 0:
            raise BadRequest(f"seed must be >= 0, got {seed}")

    raw = parameters.get("raw", False)
    if isinstance(raw, str) and raw.lower() in ("true", "false"):
        raw = raw.lower() == "true"
    if not isinstance(raw, bool):
        raise BadRequest(f"parameter raw must be true or false, got {raw!r}")

    return GenerationRequest(
        text=text, max_tokens=max_tokens, temperature=temperature, seed=seed, raw=raw
    )


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer, got {value!r}")
    return value


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{name} must be a number, got {value!r}")
    return float(value)


def chat_messages(text: str) -> list[dict[str, str]]:
    """The conversation the planner sees for one prompt: a single user turn."""
    return [{"role": "user", "content": text}]


# -- weights --------------------------------------------------------------------------------


def resolve_base_dir(configured: str, model_dir: Path) -> Path:
    env = os.environ.get("REMED_BASE_MODEL_DIR", "").strip()
    if env:
        return Path(env)
    if configured.strip():
        path = Path(configured.strip())
        return path if path.is_absolute() else (model_dir / path)
    # model_dir is <repo>/model_repo/remed_planner.
    return model_dir.parent.parent / ".cache" / "models" / BASE_MODEL_NAME


def resolve_weights(version_dir: Path, base_dir: Path) -> WeightsSource:
    """Where this model version's weights are. Hook for the trainer's output (see module doc)."""
    weights = version_dir / FINETUNED_WEIGHTS_DIR
    if (weights / "config.json").is_file() and any(weights.glob("*.safetensors")):
        tokenizer = weights if (weights / "tokenizer_config.json").is_file() else base_dir
        return WeightsSource(weights, tokenizer, None, f"fine-tuned {weights}")
    adapter = version_dir / ADAPTER_DIR
    if (adapter / "adapter_config.json").is_file():
        tokenizer = adapter if (adapter / "tokenizer_config.json").is_file() else base_dir
        return WeightsSource(base_dir, tokenizer, adapter, f"base {base_dir} + adapter {adapter}")
    return WeightsSource(base_dir, base_dir, None, f"base {base_dir}")


def read_serving(version_dir: Path) -> dict[str, str]:
    """`<version>/serving.json`: what this version pins of how it is served, over config.pbtxt.

    `{"weights": "q8"}` serves the version in that format whatever the model's `weights`
    parameter says: the trainer writes it for a model measured in that format (a fine-tuned
    model can lose under q4 what fp32 and q8 keep). No file: the config decides. A file that
    cannot be read as such fails the version's load, so the served version keeps serving.
    """
    path = version_dir / SERVING_FILE
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise pb_utils.TritonModelException(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) - SERVING_KEYS:
        raise pb_utils.TritonModelException(
            f"{path} must be an object with only {sorted(SERVING_KEYS)}, got {doc!r}"
        )
    weights = doc.get("weights", DEFAULT_WEIGHTS)
    if weights not in ("fp32", *FORMATS):
        raise pb_utils.TritonModelException(
            f"{path}: weights must be fp32, {' or '.join(FORMATS)}; got {weights!r}"
        )
    return {"weights": str(weights)} if "weights" in doc else {}


def _error_response(message: str, *, invalid: bool) -> Any:
    code = getattr(pb_utils.TritonError, "INVALID_ARG" if invalid else "INTERNAL", None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


def _cancelled_response() -> Any:
    code = getattr(pb_utils.TritonError, "CANCELLED", None)
    message = "request cancelled by the client"
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


class TritonPythonModel:
    """Loaded once per instance; every request gets exactly one response, sent when it is done."""

    def initialize(self, args: dict[str, str]) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        threads = int(params.get("torch_threads") or DEFAULT_TORCH_THREADS)
        torch.set_num_threads(threads)
        self.default_max_tokens = int(params.get("default_max_tokens") or DEFAULT_MAX_TOKENS)
        max_batch = int(params.get("max_batch") or DEFAULT_MAX_BATCH)
        prefix_cache = (params.get("prefix_cache") or "true").lower() == "true"
        self.version = args["model_version"]

        model_dir = Path(args["model_repository"])
        version_dir = model_dir / args["model_version"]
        base_dir = resolve_base_dir(params.get("base_model_dir", ""), model_dir)
        source = resolve_weights(version_dir, base_dir)
        if not (source.model_dir / "config.json").is_file():
            raise pb_utils.TritonModelException(
                f"no model at {source.model_dir}: run `make setup` "
                "(python -m remed_stack.base_model) or set REMED_BASE_MODEL_DIR"
            )

        started = time.monotonic()
        self.tokenizer, hf_model = self._load(source)
        # execute() encodes on Triton's thread while the scheduler decodes on its own.
        self.tokenizer_lock = threading.Lock()
        eos = hf_model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        # The engine copies the weights into its own layout; the HF modules go away.
        weights = (params.get("weights") or DEFAULT_WEIGHTS).strip().lower()
        weights = read_serving(version_dir).get("weights", weights)  # the version's own pin
        kernel_threads = int(params.get("kernel_threads") or DEFAULT_KERNEL_THREADS)
        slots = max_batch + (1 if prefix_cache else 0)
        engine, weights = _make_engine(hf_model, slots, weights, kernel_threads, model_dir)
        del hf_model
        _release_freed_memory()
        self.max_positions = engine.shape.max_positions
        self.scheduler = Scheduler(engine, self.eos_ids, prefix_cache=prefix_cache)
        # One tiny generation so the first real request does not pay for lazy initialisation.
        self.scheduler.submit(Job([1, 2, 3], 2, 0.0, None, lambda tokens, error: None))
        self.scheduler.run_until_idle()
        self.scheduler.start()
        kernels = (
            f"{kernel_isa(engine.lib)} kernels" if isinstance(engine, QuantEngine) else "torch"
        )
        pb_utils.Logger.log_info(
            f"remed_planner v{self.version}: loaded {source.label} in "
            f"{time.monotonic() - started:.1f} s ({weights} weights on {kernels}, "
            f"{threads} torch threads, {kernel_threads} kernel threads, batch {max_batch}, "
            f"prefix cache {'on' if prefix_cache else 'off'})"
        )

    @staticmethod
    def _load(source: WeightsSource) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source.tokenizer_dir)
        model = AutoModelForCausalLM.from_pretrained(source.model_dir, dtype=torch.float32)
        if source.adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, source.adapter_dir).merge_and_unload()
        model.eval()
        return tokenizer, model

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                self._submit(request, sender)
            except BadRequest as exc:
                _send(sender, _error_response(str(exc), invalid=True))
            except Exception as exc:  # one failed request must not fail the others
                pb_utils.Logger.log_error(f"remed_planner: request failed: {exc!r}")
                _send(sender, _error_response(f"generation failed: {exc}", invalid=False))
        return None

    def _submit(self, request: Any, sender: Any) -> None:
        req = self._parse(request)
        prompt = self._tokenize(req)
        if len(prompt) + req.max_tokens > self.max_positions:
            raise BadRequest(
                f"prompt ({len(prompt)} tokens) + max_tokens ({req.max_tokens}) exceeds the "
                f"model's context of {self.max_positions} tokens: shorten the prompt"
            )
        started = time.monotonic()

        def finish(tokens: list[int] | None, error: BaseException | None) -> None:
            if isinstance(error, Cancelled):
                _send(sender, _cancelled_response())
                return
            if error is not None or tokens is None:
                pb_utils.Logger.log_error(f"remed_planner: generation failed: {error!r}")
                _send(sender, _error_response(f"generation failed: {error}", invalid=False))
                return
            with self.tokenizer_lock:
                completion = self.tokenizer.decode(tokens, skip_special_tokens=True)
            pb_utils.Logger.log_verbose(
                f"remed_planner v{self.version}: prompt_tokens={len(prompt)} "
                f"completion_tokens={len(tokens)} temperature={req.temperature} "
                f"ms={(time.monotonic() - started) * 1000:.0f}"
            )
            _send(sender, _completion_response(completion, len(prompt), len(tokens)))

        self.scheduler.submit(
            Job(
                prompt=prompt,
                max_tokens=req.max_tokens,
                temperature=req.temperature,
                seed=req.seed,
                finish=finish,
                cancelled=_cancel_check(request, sender),
            )
        )

    def _parse(self, request: Any) -> GenerationRequest:
        text_tensor = pb_utils.get_input_tensor_by_name(request, "text_input")
        if text_tensor is None:
            raise BadRequest("text_input is required")
        texts = text_tensor.as_numpy().reshape(-1)
        if texts.size != 1:
            raise BadRequest(f"text_input must hold exactly one string, got {texts.size}")
        inputs = {}
        for name in KNOBS:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                values = tensor.as_numpy().reshape(-1)
                if values.size != 1:
                    raise BadRequest(f"{name} must hold exactly one value, got {values.size}")
                inputs[name] = values[0]
        try:
            parameters = json.loads(request.parameters() or "{}")
        except ValueError as exc:
            raise BadRequest("request parameters are not valid JSON") from exc
        return parse_request(
            texts[0], inputs, parameters, default_max_tokens=self.default_max_tokens
        )

    def _tokenize(self, req: GenerationRequest) -> list[int]:
        with self.tokenizer_lock:
            return self._encode(req)

    def _encode(self, req: GenerationRequest) -> list[int]:
        if req.raw:
            ids = self.tokenizer(req.text, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer.apply_chat_template(
                chat_messages(req.text), add_generation_prompt=True, return_dict=True
            )["input_ids"]
        if not ids:
            raise BadRequest("text_input tokenizes to nothing: send some text")
        return [int(i) for i in ids]

    def finalize(self) -> None:
        self.scheduler.stop()


def _make_engine(
    hf_model: Any, slots: int, weights: str, kernel_threads: int, model_dir: Path
) -> tuple[Engine | QuantEngine, str]:
    """The engine for `weights` (fp32 | q8 | q4), and the format it ended up serving.

    The quantised formats need the native kernels (`make setup` builds them into
    .cache/native/; if they are missing they are compiled here, which takes seconds). When they
    cannot be built or loaded, the model serves fp32 (about 6x slower) and logs why, rather
    than failing to load.
    """
    if weights == "fp32":
        return Engine(hf_model, slots=slots), weights
    if weights not in FORMATS:
        raise pb_utils.TritonModelException(
            f"parameter weights must be fp32, {' or '.join(FORMATS)}; got {weights!r}"
        )
    try:
        build = _native_build_module(model_dir / NATIVE_DIR)
        lib = load_kernels(build.ensure_built())
    except Exception as exc:
        pb_utils.Logger.log_warn(
            f"remed_planner: the native {weights} kernels are unavailable ({exc}); serving fp32 "
            "instead, much slower. Fix: install gcc (scripts/setup-debian.sh) and run "
            "`make native`, then reload the model."
        )
        return Engine(hf_model, slots=slots), "fp32"
    engine = QuantEngine(hf_model, slots, lib=lib, weights=weights, threads=kernel_threads)
    return engine, weights


def _native_build_module(native_dir: Path) -> Any:
    """native/build.py, imported from the model repository (it is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "remed_planner_native_build", native_dir / "build.py"
    )
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"{native_dir / 'build.py'} is missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _completion_response(completion: str, prompt_tokens: int, completion_tokens: int) -> Any:
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor(
                "text_output", np.array([completion.encode("utf-8")], dtype=np.object_)
            ),
            pb_utils.Tensor("prompt_tokens", np.array([prompt_tokens], dtype=np.int32)),
            pb_utils.Tensor("completion_tokens", np.array([completion_tokens], dtype=np.int32)),
        ]
    )


def _release_freed_memory() -> None:
    """Unmap the checkpoint and hand freed heap pages back, so RSS reflects the engine only."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: the memory is still reused, just not returned
        pass


def _send(sender: Any, response: Any) -> None:
    try:
        sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    except Exception as exc:  # the client may be gone; nothing else to tell it
        pb_utils.Logger.log_warn(f"remed_planner: could not send a response: {exc!r}")


def _cancel_check(request: Any, sender: Any) -> Any:
    """`is_cancelled` of the request (Triton >= 2.44) or of its response sender."""
    for owner in (request, sender):
        check = getattr(owner, "is_cancelled", None)
        if callable(check):
            return check
    return lambda: False
