"""Triton from the stack: remed_planner answers over HTTP, gRPC and the generate extension.

The `triton` fixture (tests/conftest.py) reuses a running server or starts one for the session
and stops only what it started. There is no skip path: without Triton these tests fail.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpc_aio
import tritonclient.http as httpclient
import tritonclient.http.aio as http_aio
from tritonclient.utils import InferenceServerException

from remed_stack.triton import MODEL_NAME

pytestmark = pytest.mark.integration

PROMPT = "Which command restarts the nginx service on a Linux host?"
MAX_TOKENS = 12
REQUEST_TIMEOUT_S = 120


def _http_inputs(text: str, **knobs: Any) -> list[Any]:
    return _inputs(httpclient.InferInput, text, **knobs)


def _grpc_inputs(text: str, **knobs: Any) -> list[Any]:
    return _inputs(grpcclient.InferInput, text, **knobs)


def _inputs(make: Any, text: str, **knobs: Any) -> list[Any]:
    dtypes: dict[str, tuple[str, Any]] = {
        "max_tokens": ("INT32", np.int32),
        "temperature": ("FP32", np.float32),
        "seed": ("UINT64", np.uint64),
    }
    text_input = make("text_input", [1], "BYTES")
    text_input.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
    inputs = [text_input]
    for name, value in knobs.items():
        triton_type, np_type = dtypes[name]
        tensor = make(name, [1], triton_type)
        tensor.set_data_from_numpy(np.array([value], dtype=np_type))
        inputs.append(tensor)
    return inputs


def _check_completion(text: str, prompt_tokens: int, completion_tokens: int, limit: int) -> None:
    assert text.strip(), "text_output is empty"
    assert prompt_tokens > 0
    assert 0 < completion_tokens <= limit


async def test_server_and_model_ready(triton: Any) -> None:
    assert triton.status()["ok"]
    client = http_aio.InferenceServerClient(url=triton.http_url.removeprefix("http://"))
    try:
        assert await client.is_server_ready()
        assert await client.is_model_ready(MODEL_NAME)
        metadata = await client.get_model_metadata(MODEL_NAME)
    finally:
        await client.close()
    assert {i["name"] for i in metadata["inputs"]} == {
        "text_input",
        "max_tokens",
        "temperature",
        "seed",
    }
    assert {o["name"] for o in metadata["outputs"]} == {
        "text_output",
        "prompt_tokens",
        "completion_tokens",
    }


async def test_http_aio_generates(triton: Any) -> None:
    client = http_aio.InferenceServerClient(url=triton.http_url.removeprefix("http://"))
    try:
        result = await client.infer(
            MODEL_NAME, _http_inputs(PROMPT, max_tokens=MAX_TOKENS), timeout=REQUEST_TIMEOUT_S
        )
    finally:
        await client.close()
    _check_completion(
        result.as_numpy("text_output")[0].decode(),
        int(result.as_numpy("prompt_tokens")[0]),
        int(result.as_numpy("completion_tokens")[0]),
        MAX_TOKENS,
    )


async def test_grpc_aio_generates(triton: Any) -> None:
    client = grpc_aio.InferenceServerClient(url=triton.grpc_url)
    try:
        result = await client.infer(
            MODEL_NAME,
            _grpc_inputs(PROMPT, max_tokens=MAX_TOKENS, temperature=0.0),
            client_timeout=REQUEST_TIMEOUT_S,
        )
    finally:
        await client.close()
    _check_completion(
        result.as_numpy("text_output")[0].decode(),
        int(result.as_numpy("prompt_tokens")[0]),
        int(result.as_numpy("completion_tokens")[0]),
        MAX_TOKENS,
    )


async def test_request_parameters_apply_when_no_input_is_sent(triton: Any) -> None:
    client = http_aio.InferenceServerClient(url=triton.http_url.removeprefix("http://"))
    try:
        result = await client.infer(MODEL_NAME, _http_inputs(PROMPT), parameters={"max_tokens": 3})
    finally:
        await client.close()
    assert 0 < int(result.as_numpy("completion_tokens")[0]) <= 3


async def test_generate_extension_with_parameters(triton: Any) -> None:
    url = f"{triton.http_url}/v2/models/{MODEL_NAME}/generate"
    body = {"text_input": PROMPT, "parameters": {"max_tokens": MAX_TOKENS}}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(url, json=body) as resp:
            assert resp.status == 200, await resp.text()
            data = await resp.json()
    _check_completion(
        data["text_output"], data["prompt_tokens"], data["completion_tokens"], MAX_TOKENS
    )
    assert data["model_name"] == MODEL_NAME


async def test_seeded_sampling_is_reproducible(triton: Any) -> None:
    url = f"{triton.http_url}/v2/models/{MODEL_NAME}/generate"
    body = {
        "text_input": "Name three Linux log files.",
        "parameters": {"max_tokens": 8, "temperature": 0.9, "seed": 1234},
    }
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        texts = []
        for _ in range(2):
            async with session.post(url, json=body) as resp:
                assert resp.status == 200, await resp.text()
                texts.append((await resp.json())["text_output"])
    assert texts[0] == texts[1]


@pytest.mark.parametrize(
    "body",
    [
        {"text_input": PROMPT, "parameters": {"max_tokens": 0}},
        {"text_input": PROMPT, "parameters": {"max_tokens": 5000}},
        {"text_input": "", "parameters": {"max_tokens": 4}},
        {"text_input": PROMPT, "parameters": {"temperature": -1.0}},
    ],
    ids=["max_tokens=0", "max_tokens=5000", "empty-text", "negative-temperature"],
)
async def test_bad_request_is_refused_while_a_good_one_succeeds(
    triton: Any, body: dict[str, Any]
) -> None:
    url = f"{triton.http_url}/v2/models/{MODEL_NAME}/generate"
    good = {"text_input": PROMPT, "parameters": {"max_tokens": 4}}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def post(payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            async with session.post(url, json=payload) as resp:
                return resp.status, await resp.json()

        (bad_status, bad_data), (good_status, good_data) = await asyncio.gather(
            post(body), post(good)
        )
    assert bad_status == 400, bad_data
    assert bad_data.get("error"), bad_data
    assert good_status == 200, good_data
    _check_completion(
        good_data["text_output"], good_data["prompt_tokens"], good_data["completion_tokens"], 4
    )


async def test_bad_request_over_grpc_raises_invalid_argument(triton: Any) -> None:
    client = grpc_aio.InferenceServerClient(url=triton.grpc_url)
    try:
        bad = client.infer(MODEL_NAME, _grpc_inputs(PROMPT, max_tokens=0))
        good = client.infer(MODEL_NAME, _grpc_inputs(PROMPT, max_tokens=4))
        results: tuple[Any, Any] = await asyncio.gather(bad, good, return_exceptions=True)
        bad_result, good_result = results
    finally:
        await client.close()
    assert isinstance(bad_result, InferenceServerException), bad_result
    assert "max_tokens" in str(bad_result.message())
    assert not isinstance(good_result, BaseException), good_result
    assert 0 < int(good_result.as_numpy("completion_tokens")[0]) <= 4
