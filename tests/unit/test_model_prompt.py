"""remed_planner's request parsing and weight resolution, without a Triton server.

`model.py` imports `triton_python_backend_utils`, which exists only inside Triton's Python
backend stub; a bare module stands in for it here since these tests never touch its API.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from remed_stack.paths import REPO_ROOT

pytestmark = pytest.mark.unit

MODEL_PY = REPO_ROOT / "model_repo" / "remed_planner" / "1" / "model.py"


@pytest.fixture(scope="module")
def model() -> Any:
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("pb_utils_stand_in"))
    spec = importlib.util.spec_from_file_location("remed_planner_model", MODEL_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_defaults_are_greedy_and_chat_wrapped(model: Any) -> None:
    req = model.parse_request(b"restart nginx", {}, {}, default_max_tokens=64)
    assert req == model.GenerationRequest(
        text="restart nginx", max_tokens=64, temperature=0.0, seed=None, raw=False
    )


def test_inputs_win_over_request_parameters(model: Any) -> None:
    inputs = {"max_tokens": np.int32(8), "temperature": np.float32(0.5), "seed": np.uint64(3)}
    params = {"max_tokens": 100, "temperature": 0.0, "seed": 9, "raw": True}
    req = model.parse_request("x", inputs, params)
    assert (req.max_tokens, req.temperature, req.seed, req.raw) == (8, 0.5, 3, True)


def test_request_parameters_apply_without_inputs(model: Any) -> None:
    req = model.parse_request("x", {}, {"max_tokens": 5, "temperature": "0.7", "raw": "true"})
    assert (req.max_tokens, req.temperature, req.raw) == (5, 0.7, True)


@pytest.mark.parametrize(
    ("text", "inputs", "params", "message"),
    [
        ("", {}, {}, "text_input is empty"),
        ("   \n", {}, {}, "text_input is empty"),
        (b"\xff\xfe", {}, {}, "UTF-8"),
        ("x", {"max_tokens": np.int32(0)}, {}, "between 1 and 1024"),
        ("x", {}, {"max_tokens": 1025}, "between 1 and 1024"),
        ("x", {}, {"max_tokens": "many"}, "must be an integer"),
        ("x", {}, {"max_tokens": True}, "must be an integer"),
        ("x", {"temperature": np.float32(-0.1)}, {}, "temperature"),
        ("x", {}, {"temperature": float("nan")}, "temperature"),
        ("x", {}, {"seed": -1}, "seed"),
        ("x", {}, {"raw": "maybe"}, "raw"),
    ],
)
def test_bad_requests_say_what_to_change(
    model: Any, text: Any, inputs: dict[str, Any], params: dict[str, Any], message: str
) -> None:
    with pytest.raises(model.BadRequest, match=message):
        model.parse_request(text, inputs, params)


def test_prompt_is_one_user_message(model: Any) -> None:
    assert model.chat_messages("disk full on app") == [
        {"role": "user", "content": "disk full on app"}
    ]


def test_base_dir_resolution_order(
    model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = tmp_path / "model_repo" / "remed_planner"
    monkeypatch.delenv("REMED_BASE_MODEL_DIR", raising=False)
    default = tmp_path / ".cache" / "models" / "SmolLM2-135M-Instruct"
    assert model.resolve_base_dir("", model_dir) == default
    assert model.resolve_base_dir("/opt/base", model_dir) == Path("/opt/base")
    monkeypatch.setenv("REMED_BASE_MODEL_DIR", "/env/base")
    assert model.resolve_base_dir("/opt/base", model_dir) == Path("/env/base")


def test_version_weights_take_precedence(model: Any, tmp_path: Path) -> None:
    base = tmp_path / "base"
    version = tmp_path / "1"
    version.mkdir()
    assert model.resolve_weights(version, base).model_dir == base

    adapter = version / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    source = model.resolve_weights(version, base)
    assert (source.model_dir, source.adapter_dir, source.tokenizer_dir) == (base, adapter, base)

    weights = version / "weights"
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    (weights / "model.safetensors").write_bytes(b"")
    source = model.resolve_weights(version, base)
    assert (source.model_dir, source.adapter_dir) == (weights, None)
