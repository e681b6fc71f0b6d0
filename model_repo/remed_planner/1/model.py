"""remed_planner: Triton Python backend model that turns one prompt into one completion.

Contract (DESIGN.md): input `text_input` (BYTES), optional `max_tokens` (INT32), `temperature`
(FP32), `seed` (UINT64); outputs `text_output` (BYTES), `prompt_tokens` and `completion_tokens`
(INT32). The same knobs may come as request parameters (what the generate extension's
`"parameters": {...}` object becomes); when both are given, the input wins. The request
parameter `raw: true` sends `text_input` to the model as is instead of wrapping it in the chat
template as one user message.

Decoding is greedy when `temperature` is 0 or absent, and plain temperature sampling (no top-k
or top-p cut) otherwise, seeded with `seed` so that a seeded request is reproducible.

Weights are loaded once, in `initialize`, from the first of:
  1. `<version>/weights/`  a full checkpoint (`save_pretrained` output: config.json +
                           *.safetensors, tokenizer optional) that the trainer wrote;
  2. `<version>/adapter/`  a PEFT adapter (adapter_config.json) that the trainer wrote, applied
                           to the base model and merged;
  3. the base model:       $REMED_BASE_MODEL_DIR, else the config parameter `base_model_dir`,
                           else `<repo>/.cache/models/SmolLM2-135M-Instruct` (`make setup`).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

MAX_TOKENS_LIMIT = 1024
DEFAULT_MAX_TOKENS = 256
DEFAULT_TORCH_THREADS = 2
BASE_MODEL_NAME = "SmolLM2-135M-Instruct"
FINETUNED_WEIGHTS_DIR = "weights"
ADAPTER_DIR = "adapter"
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


def _error_response(message: str, *, invalid: bool) -> Any:
    code = getattr(pb_utils.TritonError, "INVALID_ARG" if invalid else "INTERNAL", None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


class TritonPythonModel:
    """Loaded once per instance; `execute` answers every request with exactly one response."""

    def initialize(self, args: dict[str, str]) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        threads = int(params.get("torch_threads") or DEFAULT_TORCH_THREADS)
        torch.set_num_threads(threads)
        self.default_max_tokens = int(params.get("default_max_tokens") or DEFAULT_MAX_TOKENS)

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
        self.tokenizer, self.model = self._load(source)
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 8192))
        self.eos_token_id = self.model.generation_config.eos_token_id
        self.pad_token_id = self.tokenizer.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = self.tokenizer.eos_token_id
        # One tiny generation so the first real request does not pay for lazy initialisation.
        self._generate(GenerationRequest("ping", 1, 0.0, None, raw=False))
        pb_utils.Logger.log_info(
            f"remed_planner v{args['model_version']}: loaded {source.label} in "
            f"{time.monotonic() - started:.1f} s ({threads} torch threads)"
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

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._respond(request))
            except BadRequest as exc:
                responses.append(_error_response(str(exc), invalid=True))
            except Exception as exc:  # one failed request must not fail the others
                pb_utils.Logger.log_error(f"remed_planner: generation failed: {exc!r}")
                responses.append(_error_response(f"generation failed: {exc}", invalid=False))
        return responses

    def _respond(self, request: Any) -> Any:
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

        req = parse_request(
            texts[0], inputs, parameters, default_max_tokens=self.default_max_tokens
        )
        started = time.monotonic()
        completion, prompt_tokens, completion_tokens = self._generate(req)
        pb_utils.Logger.log_verbose(
            f"remed_planner: prompt_tokens={prompt_tokens} completion_tokens={completion_tokens} "
            f"temperature={req.temperature} ms={(time.monotonic() - started) * 1000:.0f}"
        )
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor(
                    "text_output", np.array([completion.encode("utf-8")], dtype=np.object_)
                ),
                pb_utils.Tensor("prompt_tokens", np.array([prompt_tokens], dtype=np.int32)),
                pb_utils.Tensor("completion_tokens", np.array([completion_tokens], dtype=np.int32)),
            ]
        )

    def _generate(self, req: GenerationRequest) -> tuple[str, int, int]:
        if req.raw:
            enc = self.tokenizer(req.text, return_tensors="pt", add_special_tokens=False)
        else:
            enc = self.tokenizer.apply_chat_template(
                chat_messages(req.text),
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )
        prompt_tokens = int(enc["input_ids"].shape[1])
        if prompt_tokens + req.max_tokens > self.max_positions:
            raise BadRequest(
                f"prompt ({prompt_tokens} tokens) + max_tokens ({req.max_tokens}) exceeds the "
                f"model's context of {self.max_positions} tokens: shorten the prompt"
            )

        sampling: dict[str, Any]
        if req.temperature > 0:
            seed = req.seed if req.seed is not None else random.getrandbits(63)
            torch.manual_seed(seed)
            sampling = {"do_sample": True, "temperature": req.temperature, "top_k": 0, "top_p": 1.0}
        else:
            sampling = {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}

        with torch.inference_mode():
            output = self.model.generate(
                **enc,
                max_new_tokens=req.max_tokens,
                eos_token_id=self.eos_token_id,
                pad_token_id=self.pad_token_id,
                **sampling,
            )
        new_tokens = output[0, prompt_tokens:]
        completion = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        return completion, prompt_tokens, int(new_tokens.shape[0])

    def finalize(self) -> None:
        self.model = None
        self.tokenizer = None
