"""SIGTERM / SIGINT and the ops server for the long-running services (alerting, gateway;
docs/operations.md).

The first signal asks the service to stop cleanly (outputs flushed, offsets committed) and starts a
deadline: if the process is still there after it, it exits anyway, so a stop never takes more than
30 s whatever a broker does. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable

import structlog
import typer
from prometheus_client import CollectorRegistry

from strainwatch.ops.readiness import Readiness
from strainwatch.ops.server import ENV_VAR, OpsServer

log = structlog.get_logger("strainwatch.service")

STOP_DEADLINE_S = 27.0


def install_stop_signals(
    loop: asyncio.AbstractEventLoop,
    stop: Callable[[], None],
    *,
    service: str,
    deadline_s: float = STOP_DEADLINE_S,
) -> None:
    received: list[int] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        if len(received) > 1:
            exit_now(service, f"second signal ({sig.name})", 128 + sig)
        log.info("stopping", service=service, signal=sig.name)
        stop()
        exit_on_next_signal(service)
        # a thread, not the loop: it fires even if something blocks the loop
        timer = threading.Timer(
            deadline_s, exit_now, (service, f"not stopped {deadline_s:.0f} s after {sig.name}", 1)
        )
        timer.daemon = True
        timer.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)


async def start_ops_server(
    service: str,
    bind: tuple[str, int] | None,
    readiness: Readiness,
    registry: CollectorRegistry,
    cli_value: str | None,
) -> OpsServer:
    """/healthz, /readyz, /metrics on `bind`. When neither --ops-bind nor STRAINWATCH_OPS_BIND chose
    it and the default port is taken (a second instance on this host), a free port instead (logged
    with its URL); a bind that was asked for and fails exits with status 2."""
    server = OpsServer(service, bind, readiness, registry)
    try:
        await server.start()
    except OSError as error:
        chosen = cli_value is not None or os.environ.get(ENV_VAR) is not None
        if chosen or bind is None or error.errno != errno.EADDRINUSE:
            typer.echo(f"error: cannot serve /healthz, /readyz, /metrics on {bind}: {error}", err=True)
            raise typer.Exit(2) from None
        log.warning("ops port taken, binding a free one", service=service, port=bind[1])
        server = OpsServer(service, (bind[0], 0), readiness, registry)
        await server.start()
    if server.url:
        log.info("ops endpoints", service=service, url=server.url)
    return server


def exit_on_next_signal(service: str) -> None:
    """From now on SIGTERM or SIGINT exits at once, also once the event loop is gone (the process
    waiting for threads on its way out). Call from the main thread."""

    def handler(signum: int, _frame: object) -> None:
        exit_now(service, f"second signal ({signal.Signals(signum).name})", 128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def exit_now(service: str, reason: str, code: int) -> None:
    log.warning("exiting at once", service=service, reason=reason, exit_code=code)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)
