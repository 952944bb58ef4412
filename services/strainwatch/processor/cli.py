"""`strainwatch processor`: run one processor instance (scale out: more instances, one group)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from typing import Any, NoReturn

import typer

STOP_DEADLINE_S = 27.0
# exit status when the final checkpoint could not persist and commit everything (broker or InfluxDB
# gone at SIGTERM): nothing was acknowledged past what is stored; the rest replays on restart
EXIT_INCOMPLETE = 3


class EarlySignal:
    """SIGTERM or SIGINT before faust's worker installs its handlers (a pod stopped while it is
    still importing and connecting): remembered instead of killing the process with the default
    action, then handled at the first moment the worker can stop. Nothing has been consumed by
    then, so stopping there is clean. A second signal exits at once, as it does later."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.received is not None:
            os._exit(128 + signum)
        self.received = signal.Signals(signum)


def run_processor(
    thresholds: str | None = None, ops_bind: str | None = None, early: EarlySignal | None = None
) -> None:
    import mode.loop

    # uvloop before anything creates a loop: faust schedules about 20 callbacks per event, which
    # uvloop makes markedly cheaper (docs/processor.md)
    mode.loop.use("uvloop")
    import faulthandler

    import faust

    # a crash in native code (uvloop, aiokafka's extensions, the compiled engine) leaves every
    # thread's Python stack in the log instead of a bare exit -11
    faulthandler.enable()

    from strainwatch.config import get_settings
    from strainwatch.ops.logs import limit_library_logs
    from strainwatch.ops.server import OpsServer, resolve_bind
    from strainwatch.processor.app import Processor, log

    settings = get_settings()
    processor = Processor(settings, thresholds)
    from strainwatch.native import choice, engine_kind

    # compiled: `make native`; python: not built, STRAINWATCH_ENGINE=python, or a build older than its source
    log.info("exposure engine", engine=engine_kind(), build=choice())
    bind = resolve_bind(ops_bind if ops_bind is not None else settings.ops_bind, "processor")
    ops = OpsServer(
        "processor",
        bind,
        processor.readiness,
        processor.metrics.registry,
        # unset: 127.0.0.1:9310, or a free port when another instance on this host has it
        fallback_to_free_port=ops_bind is None and settings.ops_bind is None,
    )

    class ProcessorWorker(faust.Worker):  # type: ignore[misc]
        """faust's worker with a shutdown that persists state before the consumer stops."""

        _shutdown_task: asyncio.Future[None] | None = None
        _watch_task: asyncio.Future[None] | None = None

        async def on_first_start(self) -> None:
            if early is not None and early.received is not None:
                _stopped_before_start(early.received)
            await super().on_first_start()  # faust's logging and our signal handlers
            if early is not None and early.received is not None:
                # it came while faust was installing its handlers: as if it came just after
                self._on_signal(early.received)
            limit_library_logs(60.0)  # aiokafka logs every reconnect while a broker is gone
            try:
                await ops.start()
            except OSError as error:
                # an address that was asked for and cannot be bound: a configuration error
                log.error("ops server cannot bind", bind=ops.bind, error=str(error))
                os._exit(2)
            if ops.url:
                log.info("ops server started", url=ops.url)
            self._watch_task = asyncio.ensure_future(processor.watch())
            # faust exits at once when the broker is down at start: wait for it instead
            if not await processor.wait_for_kafka():
                await asyncio.Event().wait()  # stopping: the signal handler cancels the start

        def _on_sigterm(self) -> None:
            self._on_signal(signal.SIGTERM)

        def _on_sigint(self) -> None:
            self._on_signal(signal.SIGINT)

        def _on_signal(self, sig: signal.Signals) -> None:
            if self._shutdown_task is None:
                log.info("stopping", signal=sig.name)
                self._shutdown_task = asyncio.ensure_future(self._graceful(sig))
            else:
                # a second SIGTERM or SIGINT: exit at once (what was not committed replays on restart)
                log.warning("second signal: exiting at once", signal=sig.name)
                os._exit(128 + int(sig))

        async def _graceful(self, sig: signal.Signals) -> None:
            # Kubernetes kills after 30 s: if faust's own stop hangs (it waits about 63 s for a
            # broker that is gone), leave anyway; unacked frames replay on restart, so nothing is lost.
            watchdog = threading.Timer(STOP_DEADLINE_S, os._exit, args=(EXIT_INCOMPLETE,))
            watchdog.daemon = True
            watchdog.start()
            await processor.shutdown()
            if self._watch_task is not None:
                self._watch_task.cancel()
            await ops.stop()
            self._schedule_shutdown(sig)

    def _stopped_before_start(sig: signal.Signals) -> None:
        # nothing consumed, nothing written: there is nothing to persist or commit
        log.info("stopped before starting", signal=sig.name)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    if early is not None and early.received is not None:
        _stopped_before_start(early.received)
    level = settings.log_level.upper()
    faust_level = level if level in ("DEBUG",) else "WARNING"
    worker = ProcessorWorker(
        processor.app,
        loglevel=faust_level,
        quiet=True,
        redirect_stdouts=False,
    )
    # faust leaves the root logger at DEBUG even with -l warn; that costs about 10 % (docs/architecture.md)
    logging.getLogger().setLevel(max(logging.WARNING, logging.getLevelName(level)))
    try:
        worker.execute_from_commandline()
    except SystemExit as done:
        code = done.code
        if code in (0, None) and not processor.clean_stop:
            code = EXIT_INCOMPLETE
        _exit_after_stop(code)


def _exit_after_stop(code: int | str | None) -> NoReturn:
    """Leave once faust's worker has stopped, without the interpreter's finalization: everything
    is persisted, committed and closed by then, while faust's consumer thread may still be starting
    or stopping. One processor stopped by SIGTERM during its start-up died of SIGSEGV (exit -11)
    after logging a clean stop; finalizing modules under a live native thread is the likely place."""
    if isinstance(code, str):  # SystemExit("message"): Python prints it and exits 1
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def register(app: Any) -> None:
    @app.command("processor")
    def processor(
        thresholds: str = typer.Option(None, "--thresholds", help="profile name or thresholds file"),
        ops_bind: str = typer.Option(
            None,
            "--ops-bind",
            help="HOST:PORT for /healthz, /readyz, /metrics, or 'off' (default: STRAINWATCH_OPS_BIND, "
            "else 127.0.0.1:9310)",
        ),
    ) -> None:
        """Score posture frames into exposure windows, alerts and InfluxDB points."""
        from strainwatch.processor.compat import UntestedVersionsError, check_tested_versions

        try:
            check_tested_versions()  # the processor leans on faust internals: refuse untested versions
        except UntestedVersionsError as error:
            typer.echo(f"strainwatch processor: {error}", err=True)
            raise typer.Exit(1) from None
        if thresholds is not None:
            from strainwatch.exposure import load_thresholds

            try:
                load_thresholds(thresholds)
            except ValueError as error:
                raise typer.BadParameter(str(error), param_hint="--thresholds") from None
        from strainwatch.config import get_settings
        from strainwatch.ops.server import parse_bind

        for value, hint in ((ops_bind, "--ops-bind"), (get_settings().ops_bind, "STRAINWATCH_OPS_BIND")):
            if value is not None:
                try:
                    parse_bind(value)
                except ValueError as error:
                    raise typer.BadParameter(str(error), param_hint=hint) from None
                break
        early = EarlySignal()
        early.install()  # before run_processor's imports, which take seconds on a busy host
        run_processor(thresholds, ops_bind, early)
