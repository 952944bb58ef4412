"""Bounded logging of the Kafka clients: with the broker gone aiokafka logs every reconnect attempt
(about 50 lines a second, measured), which would bury everything else."""

from __future__ import annotations

import logging
import time


class RepeatFilter(logging.Filter):
    """Lets one record per (logger, message template) through per `interval_s`, for loggers under
    the given prefixes; the next one that passes says how many were suppressed in between."""

    def __init__(self, prefixes: tuple[str, ...], interval_s: float = 60.0) -> None:
        super().__init__()
        self._prefixes = prefixes
        self._interval_s = interval_s
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefixes):
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            record.msg = f"{record.msg} (repeated {suppressed} times since last logged)"
        return True


def limit_kafka_client_logs(interval_s: float = 60.0) -> None:
    """Install the filter on the root handlers (child loggers' records bypass their parents' filters)."""
    limiter = RepeatFilter(("aiokafka", "kafka"), interval_s)
    for handler in logging.getLogger().handlers:
        handler.addFilter(limiter)
