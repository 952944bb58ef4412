"""`strainwatch processor`: run one processor instance (scale out: more instances, one group)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from typing import Any

import typer

STOP_DEADLINE_S = 27.0


def run_processor(thresholds: str | None = None) -> None:
    import mode.loop

    # uvloop before anything creates a loop: faust schedules about 20 callbacks per event, which
    # uvloop makes markedly cheaper (docs/processor.md)
    mode.loop.use("uvloop")
    import faust

    from strainwatch.config import get_settings
    from strainwatch.processor.app import Processor

    settings = get_settings()
    processor = Processor(settings, thresholds)

    class ProcessorWorker(faust.Worker):  # type: ignore[misc]
        """faust's worker with a shutdown that persists state before the consumer stops."""

        _shutdown_task: asyncio.Future[None] | None = None

        def _on_sigterm(self) -> None:
            if self._shutdown_task is None:
                self._shutdown_task = asyncio.ensure_future(self._graceful(signal.SIGTERM))

        def _on_sigint(self) -> None:
            if self._shutdown_task is None:
                self._shutdown_task = asyncio.ensure_future(self._graceful(signal.SIGINT))

        async def _graceful(self, sig: signal.Signals) -> None:
            # Kubernetes kills after 30 s: if faust's own stop hangs (it waits about 63 s for a
            # broker that is gone), leave anyway; unacked frames replay on restart, so nothing is lost.
            watchdog = threading.Timer(STOP_DEADLINE_S, os._exit, args=(3,))
            watchdog.daemon = True
            watchdog.start()
            await processor.shutdown()
            self._schedule_shutdown(sig)

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
    worker.execute_from_commandline()


def register(app: Any) -> None:
    @app.command("processor")
    def processor(
        thresholds: str = typer.Option(None, "--thresholds", help="profile name or thresholds file"),
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
        run_processor(thresholds)
