"""The Daemon: journal, intakes, scheduler and outcome producer in one TaskGroup.

Lifecycle (hypercorn/uvicorn style): signal handlers only set events; shutdown is an event a test
can set instead of sending a signal. Start: open the journal and recover it (an incident caught
in `executing` is escalated, never re-run), start HTTP and Kafka, resubmit what was waiting,
`READY=1`. Stop (SIGTERM/SIGINT, or `request_stop()`): `STOPPING=1`, readiness goes 503, the
intakes stop taking work and the consumer commits, running remediations get
`lifecycle.drain_budget_s`, then are cancelled (a cancelled playbook is escalated), the outbox
is flushed, everything closes. A second signal cancels at once. SIGHUP reloads the config file
and applies what can change at run time (scheduler limits, kill switch, log level).

Kafka away: the consumer and the outcome producer back off and retry (the webhook keeps
working). Kafka refusing remed's TLS/SASL credentials is different: it will not heal, so the
daemon drains and stops, `run()` raises `KafkaAuthError`, and `remed serve` exits 78 (EX_CONFIG),
which the systemd unit's `RestartPreventExitStatus=` keeps from becoming a restart loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from aiokafka.errors import KafkaError

from remed_daemon import config as config_mod
from remed_daemon import sdnotify
from remed_daemon.agents.approvals import ApprovalBook
from remed_daemon.agents.approvals import register_routes as register_approval_routes
from remed_daemon.agents.loop import make_thinkremed
from remed_daemon.config import Config
from remed_daemon.errors import ConfigError
from remed_daemon.feedback import register_routes as register_feedback_routes
from remed_daemon.http import HttpDeps, build_app, load_cert_chain, server_ssl_context
from remed_daemon.journal import Incident, Journal
from remed_daemon.kafka_security import EXIT_KAFKA_AUTH, KafkaAuthError, kafka_client_options
from remed_daemon.outcomes import document
from remed_daemon.outcomes.producer import OutcomeProducer
from remed_daemon.remediation import Remediator
from remed_daemon.scheduler import Scheduler
from remed_daemon.sources.kafka import KafkaIntake
from remed_daemon.telemetry import (
    Metrics,
    configure_logging,
    make_tracer,
    set_log_level,
)

log = structlog.get_logger("remed")
HOUSEKEEPING_INTERVAL_S = 3600.0


class Daemon:
    def __init__(
        self,
        cfg: Config,
        *,
        config_path: Path | None = None,
        remediator: Remediator | None = None,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.metrics = Metrics.create()
        self.tracer, self._provider = make_tracer(cfg.telemetry, self.metrics)
        self.journal = Journal(cfg.journal_path)
        # High-risk plans wait here for a person (agents/approvals.py; its own HTTP token).
        self.approvals = ApprovalBook()
        self.remediator = remediator or make_thinkremed(cfg, self.approvals)
        self.scheduler = Scheduler(
            cfg=cfg.scheduler,
            remediation=cfg.remediation,
            journal=self.journal,
            remediator=self.remediator,
            metrics=self.metrics,
            tracer=self.tracer,
            state_dir=cfg.state_dir,
            kill_switch_path=cfg.kill_switch_path,
            on_terminal=self._on_terminal,
        )
        # gauges read at each scrape (telemetry.py): plans waiting for a person, kill switch
        self.metrics.watch_approvals(self.approvals.pending, cfg.agents.approval_timeout_s)
        self.metrics.kill_switch.set_function(lambda: float(self.scheduler.killed()))
        self.producer: OutcomeProducer | None = None
        self.intake: KafkaIntake | None = None
        self.http_port: int | None = None
        # HTTPS when http.tls_* are set; loaded here so bad files stop the start (ConfigError)
        self._ssl = server_ssl_context(cfg.http) if cfg.http.enabled else None
        if cfg.kafka.enabled:
            kafka_client_options(cfg.kafka)  # the same for kafka.ssl_* files
        # Set when Kafka refused our credentials: the daemon drains, stops and run() raises it.
        self.fatal: KafkaAuthError | None = None
        self._runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._ready = False
        self._signals = 0

    # -- control ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    @property
    def ready(self) -> bool:
        return self._ready

    def _on_terminal(self, incident: Incident) -> None:
        if self.producer is not None:
            self.producer.notify()

    def _on_cancel(self, incident: Incident) -> None:
        self.scheduler.cancel(incident.id)
        self._on_terminal(incident)

    # -- run ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until stopped; returns after a clean drain."""
        main = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def on_term() -> None:
            self._signals += 1
            if self._signals > 1 and main is not None:
                log.warning("second signal: stopping now without draining")
                main.cancel("forced stop")
            self._stop.set()

        installed: list[signal.Signals] = []
        with contextlib.suppress(NotImplementedError, RuntimeError):
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_term)
                installed.append(sig)
            loop.add_signal_handler(signal.SIGHUP, self._reload.set)
            installed.append(signal.SIGHUP)
        try:
            await self._start()
            async with asyncio.TaskGroup() as tg:
                workers = [tg.create_task(self.scheduler.run(), name="scheduler")]
                if self.producer is not None:
                    workers.append(
                        tg.create_task(self._stop_on_refusal(self.producer.run()), name="outcomes")
                    )
                intake_task = (
                    tg.create_task(self._stop_on_refusal(self._intake_loop()), name="kafka-intake")
                    if self.intake is not None
                    else None
                )
                workers.append(tg.create_task(self._watchdog(), name="watchdog"))
                workers.append(tg.create_task(self._reloader(), name="reload"))
                workers.append(tg.create_task(self._housekeeping(), name="housekeeping"))
                tg.create_task(self._shutdown(workers, intake_task), name="shutdown")
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self._close()
        if self.fatal is not None:
            raise self.fatal

    async def _stop_on_refusal(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work`; refused Kafka credentials stop the daemon instead of being retried:
        they will not heal, and retrying them would only hammer the broker (and perhaps lock
        the account). Exit status 78 tells systemd (RestartPreventExitStatus) not to restart."""
        try:
            await work
        except KafkaAuthError as exc:
            if self.fatal is None:
                self.fatal = exc
                log.error("Kafka refused remed's credentials; stopping", error=str(exc))
            self.request_stop()

    async def _start(self) -> None:
        cfg = self.cfg
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        await self.journal.open()
        recovery = await self.journal.recover(document.builder(None))
        for incident_id in recovery.escalated:
            # the canonical line of a remediation that a crash cut short
            log.warning(
                "remediation",
                incident_id=incident_id,
                status="escalated",
                reason="interrupted by a restart during execution; not run again",
            )
        log.info(
            "journal recovered",
            escalated=len(recovery.escalated),
            replanned=len(recovery.replanned),
            resumed=len(recovery.resumed),
            path=str(cfg.journal_path),
        )
        if cfg.kafka.enabled:
            self.producer = OutcomeProducer(cfg.kafka, self.journal, self.metrics, self.tracer)
            self.intake = KafkaIntake(
                cfg.kafka,
                self.journal,
                self.metrics,
                self.tracer,
                submit=self.scheduler.submit,
                depth=lambda: self.scheduler.depth,
                cancel=self._on_cancel,
                on_terminal=self._on_terminal,
            )
        if cfg.http.enabled:
            deps = HttpDeps(
                cfg=cfg.http,
                journal=self.journal,
                metrics=self.metrics,
                tracer=self.tracer,
                submit=self.scheduler.submit,
                cancel=self._on_cancel,
                depth=lambda: self.scheduler.depth,
                ready=lambda: self._ready,
            )
            http_app = build_app(deps)
            register_approval_routes(http_app, self.approvals, cfg.agents.approval_token)
            register_feedback_routes(http_app, cfg, self.journal)  # http.feedback_token
            self._runner = web.AppRunner(http_app, access_log=None, handle_signals=False)
            await self._runner.setup()
            site = web.TCPSite(self._runner, cfg.http.host, cfg.http.port, ssl_context=self._ssl)
            await site.start()
            sockets = [s for s in self._runner.addresses if isinstance(s, tuple)]
            self.http_port = int(sockets[0][1]) if sockets else cfg.http.port
            # Tests and the benchmark find the port here when http.port = 0 (any free port).
            (cfg.state_dir / "http.port").write_text(str(self.http_port))
        for inc in recovery.resumed:
            self.scheduler.submit(inc)
        self._ready = True
        sdnotify.notify("READY=1\nSTATUS=serving")
        log.info(
            "remed serving",
            http_port=self.http_port,
            https=self._ssl is not None,
            mtls=bool(self._ssl is not None and cfg.http.tls_client_cafile),
            kafka=cfg.kafka.enabled,
            mode=cfg.remediation.mode,
        )

    async def _intake_loop(self) -> None:
        """The Kafka consumer, restarted with backoff if the broker is away at start."""
        assert self.intake is not None
        backoff = self.cfg.kafka.outbox_retry_initial_s
        while True:
            try:
                await self.intake.start()
                backoff = self.cfg.kafka.outbox_retry_initial_s
                await self.intake.run()
            except (KafkaError, OSError) as exc:
                log.warning("Kafka intake failed; restarting", error=str(exc), retry_s=backoff)
                with contextlib.suppress(KafkaError, OSError):
                    await self.intake.stop()
                # waiting out a broker outage is progress: the webhook keeps working, and
                # systemd must not restart us for Kafka's sake
                self.intake.progress_at = time.monotonic() + backoff
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.cfg.kafka.outbox_retry_max_s)

    async def _shutdown(
        self, workers: list[asyncio.Task[None]], intake_task: asyncio.Task[None] | None
    ) -> None:
        await self._stop.wait()
        log.info("stopping", drain_budget_s=self.cfg.lifecycle.drain_budget_s)
        self._ready = False
        sdnotify.notify("STOPPING=1\nSTATUS=draining")
        if intake_task is not None:
            intake_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await intake_task
        if self.intake is not None:
            await self.intake.stop()  # commits what was journaled
        await self.scheduler.drain(
            self.cfg.lifecycle.drain_budget_s,
            f"shutdown: lifecycle.drain_budget_s = {self.cfg.lifecycle.drain_budget_s} exceeded",
        )
        for task in workers:
            task.cancel()
        if self.producer is not None:
            await self.producer.stop(flush_timeout_s=self.cfg.kafka.request_timeout_ms / 1000)

    async def _watchdog(self) -> None:
        """WATCHDOG=1 only while the scheduler, the consumer and the journal make progress."""
        interval = sdnotify.watchdog_interval_s() or 5.0
        stall = self.cfg.lifecycle.watchdog_stall_s
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            stalled = [
                name
                for name, at in (
                    ("scheduler", self.scheduler.progress_at),
                    ("kafka", self.intake.progress_at if self.intake else now),
                )
                if now - at > stall
            ]
            try:
                async with asyncio.timeout(stall):
                    await self.journal.open_count()
            except TimeoutError:
                stalled.append("journal")
            if stalled:
                log.error("no progress; withholding WATCHDOG=1", stalled=stalled)
                continue
            sdnotify.notify("WATCHDOG=1")

    async def _housekeeping(self) -> None:
        """Hourly: drop finished, delivered incidents older than `journal_retention_s`."""
        while True:
            removed = await self.journal.purge(time.time() - self.cfg.journal_retention_s)
            if removed:
                log.info("journal purged", removed=removed)
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)

    async def _reloader(self) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            sdnotify.notify(f"RELOADING=1\nMONOTONIC_USEC={sdnotify.monotonic_usec()}")
            try:
                new = config_mod.load(self.config_path)
            except ConfigError as exc:
                log.error("reload refused; keeping the running config", error=str(exc))
                sdnotify.notify("READY=1")
                continue
            applied, ignored = config_mod.reloadable_changes(self.cfg, new)
            if self._ssl is not None:
                # the running files again (a renewed certificate); new handshakes get it. A
                # scratch context first: a failed load can leave a context without its key.
                try:
                    server_ssl_context(self.cfg.http)
                    load_cert_chain(self._ssl, self.cfg.http)
                    applied.append("http.tls_certfile (reloaded)")
                except ConfigError as exc:
                    log.error("TLS reload refused; keeping the running certificate", error=str(exc))
            self.scheduler.reload(new.scheduler)
            set_log_level(new.telemetry.log_level)
            self.cfg = dataclasses.replace(
                self.cfg, scheduler=new.scheduler, telemetry=new.telemetry
            )
            log.info("config reloaded", applied=applied, needs_restart=ignored)
            sdnotify.notify("READY=1")

    async def _close(self) -> None:
        self._ready = False
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.intake is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self.intake.stop()
        await self.journal.close()
        self._provider.shutdown()


def serve(config_path: Path | None) -> int:
    """`remed serve --config FILE`: load, configure logging, run. Returns the exit code."""
    try:
        cfg = config_mod.load(config_path)
    except ConfigError as exc:
        print(f"remed serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(cfg.telemetry)
    log.info("config loaded", config=repr(cfg))
    try:
        daemon = Daemon(cfg, config_path=config_path)
    except ConfigError as exc:  # e.g. http.tls_* files that cannot be loaded
        print(f"remed serve: {config_path or 'defaults'}: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(daemon.run())
    except KafkaAuthError as exc:
        print(f"remed serve: {exc}", file=sys.stderr)
        return EXIT_KAFKA_AUTH
    except asyncio.CancelledError:
        return 130
    except KeyboardInterrupt:
        return 130
    return 0
