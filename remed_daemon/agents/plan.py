"""Planners for ThinkRemed: the prompt goes in, exactly one playbook (or probe requests) out.

- `TritonPlanner` (default): Triton's `remed_planner` through tritonclient's asyncio HTTP client,
  with a per-call timeout, retries with exponential backoff and a circuit breaker (after
  `breaker_failures` consecutive failures it answers `PlannerUnavailable` at once for
  `breaker_open_s`, so a dead Triton does not cost every incident the full retry ladder). It
  records prompt/completion tokens and the version Triton says answered (`model_version` of
  the response).
- `OraclePlanner`: the chaos lab's expert playbooks, looked up by category and target in a
  playbook directory, for testing the pipeline without a model.

`extract_playbook()` pulls exactly one playbook out of free model text: fenced ```yaml blocks,
bare YAML, leading or trailing prose, several blocks (the first that is a valid play list).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from remed_daemon.agents.prompt import build_plan_prompt
from remed_daemon.errors import PlannerUnavailable


@dataclass(frozen=True)
class PlanRequest:
    """What a planner gets for one attempt. `previous` is the evidence of earlier attempts."""

    report: Mapping[str, Any]
    service: str
    host: str
    category: str = ""
    facts: str = ""
    probes: Sequence[str] = ()
    previous: Sequence[str] = ()
    probe_names: Sequence[str] = ()
    attempt: int = 1

    def prompt(self) -> str:
        return build_plan_prompt(
            self.report,
            self.probes,
            facts=self.facts,
            previous=self.previous,
            probe_names=self.probe_names,
        )


@dataclass(frozen=True)
class PlanDraft:
    playbook: str  # "" when none could be extracted
    planner: str
    completion: str = ""
    prompt: str = ""
    model_name: str = ""
    model_version: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    probe_requests: tuple[str, ...] = ()


class AgentPlanner(Protocol):
    name: str

    async def plan(self, request: PlanRequest) -> PlanDraft: ...


# -- extraction -------------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def is_play_list(doc: object) -> bool:
    return (
        isinstance(doc, list)
        and bool(doc)
        and all(isinstance(p, dict) and "hosts" in p for p in doc)
        and any(isinstance(p.get("tasks"), list) and p["tasks"] for p in doc)
    )


def _parses(text: str) -> bool:
    try:
        return is_play_list(yaml.safe_load(text))
    except yaml.YAMLError:
        return False


def _bare(text: str) -> str:
    """Bare YAML in prose: from the first line that opens a play list, as long as it parses."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not (line.startswith("- ") or line.rstrip() in ("---", "-")):
            continue
        body = lines[i + 1 :] if line.rstrip() == "---" else lines[i:]
        # drop trailing prose a line at a time until what is left is a play list
        for end in range(len(body), 0, -1):
            candidate = "\n".join(body[:end]).strip("\n") + "\n"
            if _parses(candidate):
                return candidate
    return ""


def extract_playbook(completion: str) -> str:
    """Exactly one playbook from model output, or "" if there is none."""
    for m in _FENCE.finditer(completion):
        lang, body = m.group(1).lower(), m.group(2)
        if lang not in ("", "yaml", "yml", "ansible"):
            continue
        if _parses(body):
            return body.strip("\n") + "\n"
        inner = _bare(body)
        if inner:
            return inner
    return _bare(completion)


# -- Triton -----------------------------------------------------------------------------------


@dataclass
class CircuitBreaker:
    failures_to_open: int = 3
    open_s: float = 60.0
    failures: int = 0
    opened_at: float | None = None
    clock: Any = field(default=time.monotonic, repr=False)

    def check(self) -> None:
        if self.opened_at is None:
            return
        if self.clock() - self.opened_at < self.open_s:
            left = self.open_s - (self.clock() - self.opened_at)
            raise PlannerUnavailable(
                f"planner circuit open after {self.failures} consecutive failures; "
                f"next try in {left:.0f}s"
            )
        self.opened_at = None  # half-open: let one call through

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.failures_to_open:
            self.opened_at = self.clock()


@dataclass(frozen=True)
class TritonSettings:
    url: str = "127.0.0.1:8000"
    model: str = "remed_planner"
    timeout_s: float = 120.0
    max_tokens: int = 384
    temperature: float = 0.0
    retries: int = 3
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 15.0
    breaker_failures: int = 3
    breaker_open_s: float = 60.0


class TritonPlanner:
    name = "triton"

    def __init__(self, settings: TritonSettings) -> None:
        self.s = settings
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_open_s)

    async def plan(self, request: PlanRequest) -> PlanDraft:
        prompt = request.prompt()
        self.breaker.check()
        delay = self.s.backoff_initial_s
        last: Exception | None = None
        for attempt in range(self.s.retries + 1):
            try:
                completion, meta = await self._infer(prompt)
            except PlannerUnavailable as exc:
                last = exc
                self.breaker.failure()
                if attempt == self.s.retries or self.breaker.opened_at is not None:
                    break
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, self.s.backoff_max_s)
                continue
            self.breaker.success()
            return PlanDraft(
                playbook=extract_playbook(completion),
                planner=self.name,
                completion=completion,
                prompt=prompt,
                model_name=self.s.model,
                model_version=str(meta.get("model_version") or "unknown"),
                prompt_tokens=int(meta.get("prompt_tokens", 0)),
                completion_tokens=int(meta.get("completion_tokens", 0)),
                probe_requests=tuple(_probe_requests(completion)),
            )
        raise PlannerUnavailable(str(last)) from last

    async def _infer(self, prompt: str) -> tuple[str, dict[str, Any]]:
        import numpy as np
        import tritonclient.http.aio as httpclient
        from tritonclient.utils import InferenceServerException

        url = self.s.url.removeprefix("http://").removeprefix("https://")
        # conn_timeout bounds the connection; wait_for below bounds the whole call
        client = httpclient.InferenceServerClient(url, conn_timeout=self.s.timeout_s)
        try:
            text = httpclient.InferInput("text_input", [1], "BYTES")
            text.set_data_from_numpy(np.array([prompt.encode()], dtype=object))
            max_tokens = httpclient.InferInput("max_tokens", [1], "INT32")
            max_tokens.set_data_from_numpy(np.array([self.s.max_tokens], dtype=np.int32))
            temperature = httpclient.InferInput("temperature", [1], "FP32")
            temperature.set_data_from_numpy(np.array([self.s.temperature], dtype=np.float32))
            async with asyncio.timeout(self.s.timeout_s):
                result = await client.infer(self.s.model, [text, max_tokens, temperature])
        except (InferenceServerException, OSError, TimeoutError) as exc:
            raise PlannerUnavailable(
                f"Triton at {self.s.url} did not plan: {exc or type(exc).__name__}; will retry"
            ) from exc
        except Exception as exc:  # aiohttp's client errors, malformed responses
            raise PlannerUnavailable(f"Triton at {self.s.url} failed: {exc!r}") from exc
        finally:
            await client.close()
        out = result.as_numpy("text_output")
        completion = out.reshape(-1)[0] if out is not None and out.size else b""
        if isinstance(completion, bytes):
            completion = completion.decode("utf-8", "replace")
        response = result.get_response() or {}
        meta = {
            "model_version": response.get("model_version", ""),
            "prompt_tokens": _int_output(result, "prompt_tokens"),
            "completion_tokens": _int_output(result, "completion_tokens"),
        }
        return str(completion), meta


def _int_output(result: Any, name: str) -> int:
    try:
        arr = result.as_numpy(name)
    except Exception:
        return 0
    return int(arr.reshape(-1)[0]) if arr is not None and arr.size else 0


def _probe_requests(completion: str) -> list[str]:
    from remed_daemon.agents.probe import requested_probes

    return requested_probes(completion)


# -- oracle -----------------------------------------------------------------------------------

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class OraclePlanner:
    """Expert playbooks from a directory, tried in this order for category C, service S:
    `C/S.yml`, `C.yml`, `S.yml` (also `.yaml`). `{{ remed_host }}` and `{{ remed_service }}` in
    the file are replaced by the target's names (plain names, checked) so the guard sees the
    literal host."""

    name = "oracle"

    def __init__(self, playbook_dir: str = "") -> None:
        self.dir = Path(playbook_dir) if playbook_dir else None

    def lookup(self, category: str, service: str) -> Path | None:
        if self.dir is None:
            return None
        stems = []
        if category and _NAME.match(category):
            stems += [f"{category}/{service}", category]
        stems.append(service)
        for stem in stems:
            for ext in (".yml", ".yaml"):
                p = self.dir / f"{stem}{ext}"
                if p.is_file():
                    return p
        return None

    async def plan(self, request: PlanRequest) -> PlanDraft:
        if not _NAME.match(request.service) or not _NAME.match(request.host):
            return PlanDraft(playbook="", planner=self.name)
        path = self.lookup(request.category, request.service)
        if path is None and self.dir is None:
            return _chaos_oracle(request, self.name)
        if path is None:
            return PlanDraft(
                playbook="",
                planner=self.name,
                completion=f"no expert playbook for {request.category}/{request.service} "
                f"in {self.dir}",
            )
        text = path.read_text()
        for var, value in (("remed_host", request.host), ("remed_service", request.service)):
            text = re.sub(r"\{\{\s*" + var + r"\s*\}\}", value, text)
        return PlanDraft(playbook=text, planner=self.name, completion=text)


def _chaos_oracle(request: PlanRequest, name: str) -> PlanDraft:
    """The chaos lab's expert playbook for the request's category and target."""
    try:
        from chaos.playbooks import oracle_playbook
    except ImportError:
        return PlanDraft(
            playbook="", planner=name,
            completion="no oracle: set agents.oracle_playbook_dir or install the chaos lab",
        )  # fmt: skip
    params = request.report.get("fault_params")
    try:
        text = oracle_playbook(
            request.category, request.host, request.service,
            dict(params) if isinstance(params, Mapping) else {},
        )  # fmt: skip
    except (ValueError, KeyError) as exc:
        return PlanDraft(playbook="", planner=name, completion=f"no expert playbook: {exc}")
    return PlanDraft(playbook=text, planner=name, completion=text)
