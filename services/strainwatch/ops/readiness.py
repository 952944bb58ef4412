"""Readiness: named checks a service sets as its dependencies come and go (docs/operations.md).

A service is *ready* when every check is ok. A *fatal* check (for example InfluxDB answering 401,
403 or 404: bad token, missing bucket or database) makes the service not ready for good: retrying
cannot fix it, so later `set(..., ok=True)` calls on that check are ignored until an operator
restarts the service with a fixed configuration. *Alive* stays true while the event loop serves
requests; a service can declare itself dead (`set_alive(False)`) when a worker it cannot restart
has stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass
class _Check:
    ok: bool
    detail: str
    since: float
    fatal: bool


class Readiness:
    """Thread-safe: checks may be set from executor threads (sink writes) and read by the server."""

    def __init__(self, expected: Iterable[str] = (), *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._checks: dict[str, _Check] = {}
        self._alive = True
        self._alive_detail = ""
        for name in expected:
            self.expect(name)

    def expect(self, check: str, detail: str = "not checked yet") -> None:
        """Registers a check as not ok until first set (does nothing if it is already known)."""
        with self._lock:
            if check not in self._checks:
                self._checks[check] = _Check(False, detail, self._clock(), False)

    def set(self, check: str, ok: bool, detail: str = "", *, fatal: bool = False) -> None:
        """Sets a check. `since` changes only when ok/fatal changes. A fatal check stays fatal."""
        if fatal:
            ok = False
        with self._lock:
            current = self._checks.get(check)
            if current is not None and current.fatal and not fatal:
                return
            if current is None or current.ok != ok or current.fatal != fatal:
                self._checks[check] = _Check(ok, detail, self._clock(), fatal)
            else:
                current.detail = detail

    def set_alive(self, alive: bool, detail: str = "") -> None:
        with self._lock:
            self._alive = alive
            self._alive_detail = detail

    def get(self, check: str) -> dict[str, Any] | None:
        with self._lock:
            c = self._checks.get(check)
            return None if c is None else {"ok": c.ok, "detail": c.detail, "since": c.since, "fatal": c.fatal}

    @property
    def ready(self) -> bool:
        with self._lock:
            return self._alive and all(c.ok for c in self._checks.values())

    @property
    def alive(self) -> bool:
        with self._lock:
            return self._alive

    @property
    def fatal(self) -> bool:
        with self._lock:
            return any(c.fatal for c in self._checks.values())

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            checks = {
                name: {"ok": c.ok, "detail": c.detail, "since": c.since, "fatal": c.fatal}
                for name, c in sorted(self._checks.items())
            }
            snap: dict[str, Any] = {
                "ready": self._alive and all(c["ok"] for c in checks.values()),
                "alive": self._alive,
                "checks": checks,
            }
            if self._alive_detail:
                snap["alive_detail"] = self._alive_detail
            return snap
