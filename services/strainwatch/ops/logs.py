"""Bounded logging of the libraries under a service (aiokafka, faust, mode) during an outage.

While a broker is gone aiokafka logs every reconnect attempt (about ten lines a second). The
service logs the outage itself, once plus a reminder (ops/retry.py); the libraries' own lines are
limited here to one per logger and message template per interval, with the count suppressed since.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RepeatLimit(logging.Filter):
    """Lets a (logger, level, message template) through at most once per `interval_s`."""

    def __init__(self, interval_s: float = 60.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()  # faust's consumer thread logs too
        self._last: dict[tuple[str, int, str], float] = {}
        self._suppressed: dict[tuple[str, int, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("strainwatch"):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
            if len(self._last) > 10_000:  # templates are few; never let the map grow unbounded
                self._last.clear()
        if suppressed:
            record.msg = (
                f"{record.msg} [{suppressed} similar lines suppressed in the last {self.interval_s:.0f} s]"
            )
        return True


def limit_library_logs(interval_s: float = 60.0, logger: logging.Logger | None = None) -> RepeatLimit:
    """Installs one RepeatLimit on every handler of `logger` (the root logger by default)."""
    target = logger or logging.getLogger()
    limit = RepeatLimit(interval_s)
    for handler in target.handlers:
        if not any(isinstance(f, RepeatLimit) for f in handler.filters):
            handler.addFilter(limit)
    return limit
