"""remed_planner versions: swap under load, a broken version keeps the old one, rollback, and
a restart keeps serving the version chosen last.

Runs its own Triton (the stack's `Triton` class) on a copy of the model repository in a temp
directory, so adding version directories never touches the shared stack. Clients keep sending
requests through the generate endpoint the whole time; none may fail.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import planner_repo
import pytest

import remed_cli
from remed_daemon.model_versions import ModelVersionError, ModelVersions
from remed_stack.triton import MODEL_NAME, Triton

pytestmark = pytest.mark.integration

CLIENTS = 3
REQUEST_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def own_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Triton, ModelVersions]]:
    with planner_repo.own_triton(tmp_path_factory.mktemp("versions")) as served:
        yield served


async def _load_clients(url: str, stop: asyncio.Event, seen: list[tuple[int, Any]]) -> None:
    """Send requests back to back until `stop`; record (status, model_version or error)."""
    body = {"text_input": "Which command restarts nginx?", "parameters": {"max_tokens": 6}}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def client() -> None:
            while not stop.is_set():
                async with session.post(url, json=body) as resp:
                    data = await resp.json()
                    seen.append((resp.status, data.get("model_version", data)))

        await asyncio.gather(*(client() for _ in range(CLIENTS)))


async def _until(condition: Any, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "no requests completed in time"
        await asyncio.sleep(0.1)


async def test_swap_under_load_failed_load_and_rollback(
    own_triton: tuple[Triton, ModelVersions],
) -> None:
    triton, versions = own_triton
    assert versions.model_dir is not None
    assert versions.served() == [1]
    url = f"{triton.http_url}/v2/models/{MODEL_NAME}/generate"
    stop = asyncio.Event()
    seen: list[tuple[int, Any]] = []
    load = asyncio.create_task(_load_clients(url, stop, seen))
    try:
        await _until(lambda: len(seen) >= CLIENTS)

        planner_repo.add_version(versions.model_dir, 2)
        await asyncio.to_thread(versions.load, 2)
        assert versions.served() == [2]
        swapped_at = len(seen)

        planner_repo.add_version(versions.model_dir, 3, broken=True)
        after_failed_load = len(seen)
        with pytest.raises(ModelVersionError, match="still serving 2"):
            await asyncio.to_thread(versions.load, 3)
        assert versions.served() == [2]
        await _until(lambda: len(seen) >= after_failed_load + CLIENTS)

        assert await asyncio.to_thread(versions.rollback) == 1
        assert versions.served() == [1]
        rolled_back = len(seen)
        await _until(lambda: len(seen) >= rolled_back + CLIENTS)
    finally:
        stop.set()
        await load

    failures = [s for s in seen if s[0] != 200]
    assert not failures, failures[:5]
    served_by = [v for _, v in seen]
    assert "1" in served_by[:swapped_at]
    assert "2" in served_by[swapped_at:rolled_back]
    assert served_by[-1] == "1"
    status = versions.status()
    assert status.served == [1] and status.history == [1]

    # A restart serves the version chosen last (1), not the newest directory (3, broken, which
    # would not even let the server start).
    await asyncio.to_thread(triton.down)
    await asyncio.to_thread(triton.up)
    assert versions.served() == [1]


async def test_load_applies_an_edited_config_file(own_triton: tuple[Triton, ModelVersions]) -> None:
    triton, versions = own_triton
    assert versions.model_dir is not None
    config_file = versions.model_dir / "config.pbtxt"
    original = config_file.read_text()
    key = 'key: "default_max_tokens"\n    value: { string_value: "'
    assert key in original, "the test edits default_max_tokens in config.pbtxt"
    served = versions.served()[-1]
    try:
        config_file.write_text(original.replace(key + "256", key + "77"))
        await asyncio.to_thread(versions.load, served)
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(f"{triton.http_url}/v2/models/{MODEL_NAME}/config") as resp,
        ):
            config = await resp.json()
        assert config["parameters"]["default_max_tokens"]["string_value"] == "77"
    finally:
        config_file.write_text(original)
        await asyncio.to_thread(versions.load, served)


async def test_remed_model_manages_a_triton_by_url(
    own_triton: tuple[Triton, ModelVersions], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`remed model --url`: any Triton, not only the dev stack's. With `--model-repo` and
    `--state-file` it lists and loads version directories; with the URL alone (a Triton whose
    repository is on another machine) it reloads with the config Triton serves, and without a
    history file it refuses to load rather than lose the way back."""
    triton, versions = own_triton
    served = versions.served()[-1]
    where = ["--url", triton.http_url.removeprefix("http://"), "--model-repo",
             str(versions.model_dir), "--state-file", str(versions.state_file)]  # fmt: skip

    assert await asyncio.to_thread(remed_cli.main, ["model", "status", *where, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["served"] == [served] and served in status["on_disk"]
    assert status["model_dir"] == str(versions.model_dir)
    assert await asyncio.to_thread(remed_cli.main, ["model", "load", str(served), *where]) == 0
    assert f"now serving version {served}" in capsys.readouterr().out

    remote = ModelVersions(triton.http_url, state_file=tmp_path / "history.json")
    assert remote.on_disk() == [] and remote.status().served == [served]
    await asyncio.to_thread(remote.load, served)  # the served config, posted back
    assert remote.served() == [served] and remote.status().history == [served]

    url_only = ["--url", triton.http_url]
    assert await asyncio.to_thread(remed_cli.main, ["model", "load", str(served), *url_only]) == 1
    assert "without a version history file" in capsys.readouterr().err
    assert versions.served() == [served]
