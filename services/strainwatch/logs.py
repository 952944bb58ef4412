"""structlog set-up, done once at process start (libraries never configure logging on import)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import structlog


class _StderrLogger:
    """Writes each line to whatever sys.stderr is *now*: a stream captured at configure time may be
    closed later (test runners, typer's CliRunner) and cached loggers would keep writing to it."""

    def msg(self, message: str) -> None:
        stream = sys.stderr
        stream.write(message + "\n")
        stream.flush()

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _stderr_logger(*_args: Any) -> _StderrLogger:
    return _StderrLogger()


def configure(level: str = "INFO", fmt: str = "auto") -> None:
    """JSON lines, or the console renderer when stderr is a TTY and fmt is 'auto'."""
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=True,
    )
    # Third-party stdlib loggers (faust, aiokafka, kafka-python) stay at WARNING unless asked:
    # faust leaves the root logger at DEBUG, which costs about 10 % of throughput (docs/architecture.md).
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, force=True)
    for name in ("faust", "mode", "aiokafka", "kafka", "urllib3", "influxdb_client"):
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


class RateLimitedLog:
    """Logs an event at most once per `interval_s` per key, with the count it suppressed between."""

    def __init__(self, logger: Any, interval_s: float = 10.0) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, event: str, **kw: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        self._logger.warning(event, suppressed=self._suppressed.pop(key, 0), **kw)
