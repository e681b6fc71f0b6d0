"""Continuous batching: one thread decodes every in-flight request together, a step at a time.

`execute` hands each parsed request to `Scheduler.submit` and returns at once (the response goes
out later through the request's response sender), so requests that arrive while others are
decoding join the running batch at the next step instead of queueing behind them. Each step:

1. admit waiting jobs into free KV-cache slots and prefill their prompts (reusing the cached
   prefix of the last prompt when they share one, e.g. the chat template's system prompt);
2. drop jobs whose client cancelled;
3. decode one token for every active job in a single batched forward pass;
4. finish jobs that produced EOS or reached max_tokens, freeing their slots.

A job's failure (e.g. its prompt does not fit) finishes that job with the error; the others go on.

Cancellation is watched from a second thread: asking Triton whether a request was cancelled is
a round trip to the server process, and eight of those every quarter second cost the decode
loop about a fifth of its 8-request throughput when it made them itself.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

PREFIX_MIN_TOKENS = 8  # shorter shared prefixes are cheaper to recompute than to copy
IDLE_WAIT_S = 0.5  # how long the idle loop sleeps before checking for stop
DRAIN_TIMEOUT_S = 120.0  # on unload, how long in-flight requests may take to finish
DRAIN_POLL_S = 0.05
# How often the active requests are asked whether their client cancelled them.
CANCEL_POLL_S = 0.25


class Cancelled(Exception):
    """The client cancelled the request; no response is needed."""


@dataclass
class Job:
    prompt: list[int]
    max_tokens: int
    temperature: float
    seed: int | None
    # Called exactly once: with the generated tokens, or with the error that ended the job.
    finish: Callable[[list[int] | None, BaseException | None], None]
    cancelled: Callable[[], bool] = lambda: False
    tokens: list[int] = field(default_factory=list)
    slot: int = -1
    generator: torch.Generator | None = None
    first_token_s: float | None = None
    # Set by the cancel watcher; `done` (under `lock`) keeps it from asking about a request
    # whose response has already gone out.
    cancel_seen: bool = False
    done: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class Scheduler:
    """Owns the engine; every engine call happens on the scheduler's thread (or in `step`)."""

    def __init__(self, engine: object, eos_ids: set[int], *, prefix_cache: bool = True) -> None:
        self.engine = engine
        self.eos_ids = eos_ids
        total = engine.slots  # type: ignore[attr-defined]
        # With prefix caching the last slot holds the most recent prompt's keys/values.
        self.prefix_slot = total - 1 if prefix_cache and total > 1 else None
        self.free = list(range(total - 1 if self.prefix_slot is not None else total))
        self.prefix_tokens: list[int] = []
        self.waiting: deque[Job] = deque()
        self.active: list[Job] = []
        self.lock = threading.Condition()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.watcher: threading.Thread | None = None
        self.watcher_stop = threading.Event()
        self.cancel_polled_at = 0.0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="remed-planner-decode", daemon=True)
        self.watcher = threading.Thread(
            target=self._watch_cancellations, name="remed-planner-cancel-watch", daemon=True
        )
        self.thread.start()
        self.watcher.start()

    def stop(self, reason: str = "the model is unloading") -> None:
        """Let in-flight requests finish (a version swap must not fail them), then stop."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while self.thread is not None and time.monotonic() < deadline:
            with self.lock:
                if not self.active and not self.waiting:
                    break
            time.sleep(DRAIN_POLL_S)
        with self.lock:
            self.stopping = True
            self.lock.notify_all()
        self.watcher_stop.set()
        if self.thread is not None:
            self.thread.join()
        if self.watcher is not None:
            self.watcher.join()
        for job in [*self.active, *self.waiting]:
            job.finish(None, RuntimeError(reason))
        self.active.clear()
        self.waiting.clear()

    def submit(self, job: Job) -> None:
        with self.lock:
            self.waiting.append(job)
            self.lock.notify()

    def run_until_idle(self) -> None:
        """Drive the loop on the calling thread until no job is left (tests, warm-up)."""
        while self.step():
            pass

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self.lock:
                while not self.stopping and not self.waiting and not self.active:
                    self.lock.wait(IDLE_WAIT_S)
                if self.stopping:
                    return
            try:
                self.step()
            except Exception as exc:  # a bug in a step must not leave callers hanging
                for job in self.active:
                    self._end(job, None, exc)
                self.active.clear()

    def step(self) -> bool:
        """Admit, decode one token for every active job, finish; False when idle."""
        self._admit()
        if self.watcher is None:  # driven by run_until_idle: nobody else watches
            now = time.monotonic()
            if now - self.cancel_polled_at >= CANCEL_POLL_S:
                self.cancel_polled_at = now
                self._poll_cancelled(self.active)
        for job in [j for j in self.active if j.cancel_seen]:
            self._end(job, None, Cancelled())
        if not self.active:
            return bool(self.waiting)
        # Sorted by slot, so the batch usually reads one contiguous block of the cache.
        batch = sorted(self.active, key=lambda j: j.slot)
        logits = self.engine.decode(  # type: ignore[attr-defined]
            [j.slot for j in batch], [j.tokens[-1] for j in batch]
        )
        for job, row in zip(batch, logits, strict=True):
            self._append(job, row)
        if not self.active and not self.waiting:
            self.engine.shrink()  # type: ignore[attr-defined]
        return True

    def _watch_cancellations(self) -> None:
        while not self.watcher_stop.wait(CANCEL_POLL_S):
            self._poll_cancelled(list(self.active))

    @staticmethod
    def _poll_cancelled(jobs: list[Job]) -> None:
        for job in jobs:
            with job.lock:
                if not job.done and not job.cancel_seen and job.cancelled():
                    job.cancel_seen = True

    def _admit(self) -> None:
        while self.free:
            with self.lock:
                if not self.waiting:
                    return
                job = self.waiting.popleft()
            if job.cancelled():
                job.finish(None, Cancelled())
                continue
            slot = self.free.pop(0)
            job.slot = slot
            try:
                logits = self._prefill(job)
            except Exception as exc:
                self._end(job, None, exc, active=False)
                continue
            self.active.append(job)
            if job.temperature > 0:
                job.generator = torch.Generator()
                if job.seed is not None:
                    job.generator.manual_seed(job.seed)
                else:
                    job.generator.seed()
            self._append(job, logits)

    def _prefill(self, job: Job) -> torch.Tensor | np.ndarray:
        engine = self.engine
        engine.reserve(job.slot, len(job.prompt) + job.max_tokens)  # type: ignore[attr-defined]
        reused = 0
        if self.prefix_slot is not None:
            reused = _common_prefix(self.prefix_tokens, job.prompt)
            # At least one token must run through the model to produce the next-token logits.
            reused = min(reused, len(job.prompt) - 1)
            if reused >= PREFIX_MIN_TOKENS:
                engine.copy_prefix(self.prefix_slot, job.slot, reused)  # type: ignore[attr-defined]
            else:
                reused = 0
        logits: torch.Tensor | np.ndarray = engine.prefill(job.slot, job.prompt[reused:])  # type: ignore[attr-defined]
        if self.prefix_slot is not None and len(job.prompt) <= engine.capacity:  # type: ignore[attr-defined]
            engine.copy_prefix(job.slot, self.prefix_slot, len(job.prompt))  # type: ignore[attr-defined]
            self.prefix_tokens = list(job.prompt)
        return logits

    def _append(self, job: Job, logits: torch.Tensor | np.ndarray) -> None:
        # The quantised engine returns numpy rows: argmax them in numpy, because a torch op
        # here would wake torch's own thread pool next to the kernels' threads.
        if job.generator is None:
            token = int(logits.argmax())
        else:
            if isinstance(logits, np.ndarray):
                logits = torch.from_numpy(logits)
            probs = torch.softmax(logits / job.temperature, dim=-1)
            token = int(torch.multinomial(probs, 1, generator=job.generator))
        if job.first_token_s is None:
            job.first_token_s = time.monotonic()
        job.tokens.append(token)
        if token in self.eos_ids or len(job.tokens) >= job.max_tokens:
            self._end(job, job.tokens, None)

    def _end(
        self,
        job: Job,
        tokens: list[int] | None,
        error: BaseException | None,
        *,
        active: bool = True,
    ) -> None:
        if active and job in self.active:
            self.active.remove(job)
        if job.slot >= 0:
            self.engine.release(job.slot)  # type: ignore[attr-defined]
            self.free.append(job.slot)
            self.free.sort()
            job.slot = -1
        with job.lock:
            job.done = True
        job.finish(tokens, error)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
