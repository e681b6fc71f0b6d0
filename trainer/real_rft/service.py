"""`remed train real-rft --config FILE`: the long-running Real-RFT trainer.

Lifecycle like the daemon's (remed_daemon/app.py): signal handlers only set an event; the run
loop is a TaskGroup (consumer, rounds, watchdog, shutdown); `READY=1` once the store is open
and the consumer joined its group, `STOPPING=1` when draining, `WATCHDOG=1` only while the
consumer makes progress. SIGTERM: the consumer stops (every stored message is committed
already), a running round is asked to stop at its next training step and gets
`drain_budget_s`; one that does not stop in time is left `running` in the store and runs again
from the same examples at the next start. A second signal exits at once.

The consumer: its own group (`real_rft.group_id`), both topics, auto-commit off. Each batch is
validated and stored (store.py: one transaction per message, deduplicated), and only then its
offsets are committed. A message that is not valid JSON or breaks its schema is recorded as
seen, logged and skipped (it can never become valid); it does not stop the trainer.

`--status` prints what the store holds (per category: feedback per verdict and per author,
corrections accepted and refused, examples by label; every round and why it ended).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from remed_daemon import sdnotify
from remed_daemon.schemas import Kind, iter_errors
from trainer.real_rft.config import RealRftConfig, RealRftConfigError
from trainer.real_rft.kto import Cancelled
from trainer.real_rft.rounds import RoundRunner
from trainer.real_rft.store import Round, Store

log = structlog.get_logger("remed.trainer")


def _in_thread(fn: Any, *args: Any) -> asyncio.Future[Any]:
    """Run `fn` in a daemon thread: a training step cannot be interrupted, and a stop must
    not wait on it beyond the drain budget (asyncio.to_thread's executor would)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def body() -> None:
        def settle(value: Any = None, error: BaseException | None = None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

        try:
            value = fn(*args)
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, value)

    threading.Thread(target=body, name="real-rft-round", daemon=True).start()
    return future


class TrainerService:
    def __init__(self, cfg: RealRftConfig, *, runner: RoundRunner | None = None) -> None:
        self.cfg = cfg
        self.store = Store(cfg.store_path, feedback_grace_s=cfg.feedback_grace_s)
        self.runner = runner or RoundRunner(cfg, self.store)
        self._stop = asyncio.Event()
        self._cancel = threading.Event()
        self.ready = False
        self.progress_at = time.monotonic()
        self.stored = 0
        self.invalid = 0
        self.results: list[dict[str, Any]] = []
        self._signals = 0

    def request_stop(self) -> None:
        self._stop.set()

    # -- run ----------------------------------------------------------------------------------

    async def run(self) -> None:
        main = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def on_term() -> None:
            self._signals += 1
            if self._signals > 1 and main is not None:
                main.cancel("forced stop")
            self._stop.set()

        installed = []
        with contextlib.suppress(NotImplementedError, RuntimeError):
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_term)
                installed.append(sig)
        consumer = self._consumer()
        try:
            await consumer.start()
            self.ready = True
            sdnotify.notify("READY=1\nSTATUS=consuming")
            log.info("real-rft trainer serving", group=self.cfg.group_id,
                     store=str(self.cfg.store_path))  # fmt: skip
            async with asyncio.TaskGroup() as tg:
                consume = tg.create_task(self._consume(consumer), name="consume")
                rounds = tg.create_task(self._rounds(), name="rounds")
                watchdog = tg.create_task(self._watchdog(), name="watchdog")
                await self._stop.wait()
                self.ready = False
                sdnotify.notify("STOPPING=1\nSTATUS=draining")
                consume.cancel()
                self._cancel.set()
                try:
                    async with asyncio.timeout(self.cfg.drain_budget_s):
                        await asyncio.gather(rounds, return_exceptions=True)
                except TimeoutError:
                    log.warning("round still training after drain_budget_s; it runs again "
                                "at the next start")  # fmt: skip
                    rounds.cancel()
                watchdog.cancel()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            with contextlib.suppress(Exception):
                await consumer.stop()
            self.write_status()
            self.store.close()

    def _consumer(self) -> Any:
        from aiokafka import AIOKafkaConsumer

        from remed_daemon.kafka_security import kafka_client_options

        k = self.cfg.kafka
        return AIOKafkaConsumer(
            self.cfg.outcomes_topic,
            self.cfg.feedback_topic,
            bootstrap_servers=k.bootstrap,
            group_id=self.cfg.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.cfg.max_poll_records,
            session_timeout_ms=k.session_timeout_ms,
            heartbeat_interval_ms=k.heartbeat_interval_ms,
            request_timeout_ms=k.request_timeout_ms,
            **kafka_client_options(k),
        )

    async def _consume(self, consumer: Any) -> None:
        from aiokafka.structs import OffsetAndMetadata

        while True:
            batches = await consumer.getmany(timeout_ms=self.cfg.poll_timeout_ms)
            self.progress_at = time.monotonic()
            if not batches:
                continue
            commit = {}
            for tp, records in batches.items():
                for record in records:
                    await asyncio.to_thread(self.ingest, record.topic, record.partition,
                                            record.offset, record.value)  # fmt: skip
                commit[tp] = OffsetAndMetadata(records[-1].offset + 1, "")
            # every record up to these offsets is in the store (synchronous=FULL)
            await consumer.commit(commit)
            self.write_status()

    def ingest(self, topic: str, partition: int, offset: int, value: bytes | None) -> bool:
        """Store one message (and its examples); False when it was a repeat or invalid."""
        kind: Kind = "outcome" if topic == self.cfg.outcomes_topic else "feedback"
        where = (topic, partition, offset)
        try:
            doc = json.loads(value or b"")
        except ValueError:
            doc = None
        errors = iter_errors(kind, doc) if doc is not None else ["not JSON"]
        if errors:
            self.invalid += 1
            log.warning("invalid message skipped", topic=topic, partition=partition,
                        offset=offset, errors=errors[:3])  # fmt: skip
            self.store.mark_seen(where)
            return False
        new = (self.store.add_outcome if kind == "outcome" else self.store.add_feedback)(doc, where)
        self.stored += int(new)
        return new

    async def _rounds(self) -> None:
        rnd: Round | None = await asyncio.to_thread(self.store.running_round)
        if rnd is not None:
            log.warning("resuming an interrupted round", round=rnd.id, attempts=rnd.attempts)
        while not self._cancel.is_set():
            if rnd is None and self.runner.due(time.time()):
                rnd = await asyncio.to_thread(
                    self.store.claim_round, time.time(),
                    self.cfg.max_examples_per_author_per_category,
                )  # fmt: skip
            if rnd is not None:
                sdnotify.notify(f"STATUS=round {rnd.id}: training on {len(rnd.examples)}")
                try:
                    result = await _in_thread(self.runner.run, rnd, self._cancel)
                except Cancelled:
                    return
                self.results.append(result)
                self.write_status()
                sdnotify.notify("STATUS=consuming")
                rnd = None
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cfg.round_check_interval_s):
                    await self._stop.wait()

    async def _watchdog(self) -> None:
        interval = sdnotify.watchdog_interval_s() or 5.0
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - self.progress_at > self.cfg.watchdog_stall_s:
                log.error("consumer made no progress; withholding WATCHDOG=1")
                continue
            sdnotify.notify("WATCHDOG=1")

    def status(self) -> dict[str, Any]:
        return {**self.store.counts(), "rounds": self.store.rounds(), "invalid": self.invalid}

    def write_status(self) -> None:
        with contextlib.suppress(Exception):
            path = self.cfg.state_dir / "status.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.status(), indent=2, default=str) + "\n")
            tmp.replace(path)


# -- the command --------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file with [real_rft] (and [kafka])")
    parser.add_argument("--state-dir", help="override real_rft.state_dir")
    parser.add_argument("--status", action="store_true",
                        help="print the store's counts and rounds as JSON and exit")  # fmt: skip


def run_command(args: argparse.Namespace) -> int:
    from remed_daemon.config import TelemetryConfig
    from remed_daemon.telemetry import configure_logging

    try:
        cfg = RealRftConfig.load(args.config, state_dir=args.state_dir)
    except (RealRftConfigError, OSError) as exc:
        print(f"remed train real-rft: {exc}", file=sys.stderr)
        return 2
    if args.status:
        store = Store(cfg.store_path, feedback_grace_s=cfg.feedback_grace_s)
        try:
            print(json.dumps({**store.counts(), "rounds": store.rounds()}, indent=2))
        finally:
            store.close()
        return 0
    configure_logging(TelemetryConfig())
    try:
        asyncio.run(TrainerService(cfg).run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="remed train real-rft", description=(__doc__ or "").split("\n")[0]
    )
    add_arguments(parser)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
