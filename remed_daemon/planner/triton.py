"""The one client of Triton's `remed_planner`: tritonclient's asyncio HTTP client with a per-call
timeout, retries with exponential backoff and a circuit breaker (after `breaker_failures`
consecutive failures it answers `PlannerUnavailable` at once for `breaker_open_s`, so a dead
Triton does not cost every incident the full retry ladder). It records prompt and completion
tokens and the version that answered (the response's `model_version`, not the newest version in
the repository: during a version swap they differ).

The daemon, `remed bench --remediator model` and `make demo` all plan through `TritonPlanner`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from remed_daemon.errors import PlannerUnavailable
from remed_daemon.planner.base import PlanDraft, PlanRequest
from remed_daemon.planner.extract import extract_playbook


@dataclass
class CircuitBreaker:
    failures_to_open: int = 3
    open_s: float = 60.0
    failures: int = 0
    opened_at: float | None = None
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

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


@dataclass(frozen=True)
class Completion:
    """One answer of the model, as Triton returned it."""

    text: str
    model_version: str
    prompt_tokens: int
    completion_tokens: int


class TritonPlanner:
    name = "triton"

    def __init__(self, settings: TritonSettings) -> None:
        self.s = settings
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_open_s)

    async def plan(self, request: PlanRequest) -> PlanDraft:
        prompt = request.prompt()
        answer = await self.complete(prompt)
        return PlanDraft(
            playbook=extract_playbook(answer.text),
            planner=self.name,
            completion=answer.text,
            prompt=prompt,
            model_name=self.s.model,
            model_version=answer.model_version or "unknown",
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            probe_requests=tuple(_probe_requests(answer.text)),
        )

    async def complete(self, prompt: str) -> Completion:
        """The model's answer to `prompt`, through the breaker and the retries."""
        self.breaker.check()
        delay = self.s.backoff_initial_s
        last: Exception | None = None
        for attempt in range(self.s.retries + 1):
            try:
                answer = await self._infer(prompt)
            except PlannerUnavailable as exc:
                last = exc
                self.breaker.failure()
                if attempt == self.s.retries or self.breaker.opened_at is not None:
                    break
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, self.s.backoff_max_s)
                continue
            self.breaker.success()
            return answer
        raise PlannerUnavailable(str(last)) from last

    async def _infer(self, prompt: str) -> Completion:
        import numpy as np
        import tritonclient.http.aio as httpclient
        from tritonclient.utils import InferenceServerException

        # tritonclient wants host:port; accept a URL too (what `remed stack status` prints)
        url = self.s.url.removeprefix("http://").removeprefix("https://")
        # conn_timeout bounds the connection; asyncio.timeout below bounds the whole call
        client = httpclient.InferenceServerClient(url, conn_timeout=self.s.timeout_s)
        try:
            # the model takes one prompt per request: dims [1], max_batch_size 0
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
        return Completion(
            text=str(completion),
            model_version=str(response.get("model_version", "")),
            prompt_tokens=_int_output(result, "prompt_tokens"),
            completion_tokens=_int_output(result, "completion_tokens"),
        )


def _int_output(result: Any, name: str) -> int:
    try:
        arr = result.as_numpy(name)
    except Exception:
        return 0
    return int(arr.reshape(-1)[0]) if arr is not None and arr.size else 0


def _probe_requests(completion: str) -> list[str]:
    from remed_daemon.agents.probe import requested_probes

    return requested_probes(completion)
