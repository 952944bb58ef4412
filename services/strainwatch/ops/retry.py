"""The retry policy every service uses for its brokers and sinks (tenacity; docs/operations.md).

Exponential back-off with jitter, capped (0.5 s doubling to 30 s by default), forever unless a
deadline is given. An outage is logged once when it starts (warning `<what>_unavailable`), then a
bounded reminder (`<what>_still_unavailable`, at most once per `reminder_s`, with the attempts and
the outage's duration so far), and once when it ends (`<what>_recovered`). Errors not worth
retrying (`NotRetryable`, or anything `is_permanent` says so, such as InfluxDB 401/403/404) are
raised at once, logged once as an error, and — with a readiness check — mark it fatal.

A stop event (asyncio.Event for `call`, threading.Event for `call_sync`) interrupts the back-off
sleep at once and raises `RetryStopped`, so a shutdown never waits for the next attempt. A call made
while the event is already set still makes one attempt (a final flush on the way out), no retry.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    stop_never,
    wait_exponential,
    wait_random,
)

from strainwatch.ops.readiness import Readiness

T = TypeVar("T")


class NotRetryable(Exception):
    """Raise (or wrap with) this for errors that retrying cannot fix: retrying stops at once."""


class RetryStopped(Exception):
    """The stop event was set while waiting to retry (the service is shutting down)."""


def default_is_permanent(exc: BaseException) -> bool:
    """NotRetryable, or any exception carrying `retryable = False` (e.g. the sink's SinkFatal)."""
    return isinstance(exc, NotRetryable) or getattr(exc, "retryable", True) is False


def describe(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ")
    if len(text) > 300:
        text = text[:300] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class OutageLog:
    """Logs an outage once, a reminder at most every `reminder_s`, and its end once."""

    def __init__(
        self,
        logger: Any,
        what: str,
        reminder_s: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what
        self.reminder_s = reminder_s
        self._clock = clock
        self._started: float | None = None
        self._last_log = 0.0
        self._attempts = 0

    @property
    def in_outage(self) -> bool:
        return self._started is not None

    def failure(self, exc: BaseException, next_wait_s: float | None = None, **kw: Any) -> None:
        now = self._clock()
        self._attempts += 1
        if self._started is None:
            self._started = now
            self._last_log = now
            self.logger.warning(
                f"{self.what}_unavailable", error=describe(exc), retry_in_s=_round(next_wait_s), **kw
            )
        elif now - self._last_log >= self.reminder_s:
            self._last_log = now
            self.logger.warning(
                f"{self.what}_still_unavailable",
                error=describe(exc),
                attempts=self._attempts,
                down_s=round(now - self._started, 1),
                retry_in_s=_round(next_wait_s),
                **kw,
            )

    def recovered(self, **kw: Any) -> None:
        if self._started is None:
            return
        now = self._clock()
        self.logger.info(
            f"{self.what}_recovered", attempts=self._attempts, down_s=round(now - self._started, 1), **kw
        )
        self._started = None
        self._attempts = 0


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


@dataclass(frozen=True)
class RetryPolicy:
    initial_s: float = 0.5
    cap_s: float = 30.0
    jitter_s: float = 0.25
    reminder_s: float = 60.0
    deadline_s: float | None = None  # give up (raise the last error) after this long; None: never

    def _common(
        self,
        outage: OutageLog,
        is_permanent: Callable[[BaseException], bool],
        retry_on: tuple[type[BaseException], ...],
        readiness: Readiness | None,
        check: str | None,
    ) -> dict[str, Any]:
        def retryable(exc: BaseException) -> bool:
            return not isinstance(exc, RetryStopped) and isinstance(exc, retry_on) and not is_permanent(exc)

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            if exc is None:
                return
            wait = state.next_action.sleep if state.next_action is not None else None
            outage.failure(exc, wait)
            if readiness is not None and check is not None:
                readiness.set(check, False, describe(exc))

        return {
            "retry": retry_if_exception(retryable),
            # wait_exponential and wait_random: the same in every tenacity since 8 (the pinned floor)
            "wait": wait_exponential(multiplier=self.initial_s, max=self.cap_s)
            + wait_random(0, self.jitter_s),
            "stop": stop_never if self.deadline_s is None else stop_after_delay(self.deadline_s),
            "before_sleep": before_sleep,
            "reraise": True,
        }

    async def call(
        self,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        what: str,
        logger: Any,
        stop: asyncio.Event | None = None,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        is_permanent: Callable[[BaseException], bool] = default_is_permanent,
        readiness: Readiness | None = None,
        check: str | None = None,
        outage: OutageLog | None = None,
        **kwargs: Any,
    ) -> T:
        """Awaits `fn(*args, **kwargs)` until it succeeds, per this policy."""
        log = outage if outage is not None else OutageLog(logger, what, self.reminder_s)

        async def sleep(seconds: float) -> None:
            if stop is None:
                await asyncio.sleep(seconds)
                return
            if stop.is_set():
                raise RetryStopped(what)
            try:
                await asyncio.wait_for(stop.wait(), timeout=seconds)
            except TimeoutError:
                return
            raise RetryStopped(what)

        retrying = AsyncRetrying(sleep=sleep, **self._common(log, is_permanent, retry_on, readiness, check))
        try:
            result: T = await retrying(fn, *args, **kwargs)
        except RetryStopped:
            raise
        except BaseException as exc:
            _on_giving_up(exc, log, what, is_permanent, readiness, check)
            raise
        log.recovered()
        if readiness is not None and check is not None:
            readiness.set(check, True)
        return result

    def call_sync(
        self,
        fn: Callable[..., T],
        *args: Any,
        what: str,
        logger: Any,
        stop: threading.Event | None = None,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        is_permanent: Callable[[BaseException], bool] = default_is_permanent,
        readiness: Readiness | None = None,
        check: str | None = None,
        outage: OutageLog | None = None,
        **kwargs: Any,
    ) -> T:
        """The same for blocking calls (threads): `stop` is a threading.Event."""
        log = outage if outage is not None else OutageLog(logger, what, self.reminder_s)

        def sleep(seconds: float) -> None:
            if stop is None:
                time.sleep(seconds)
            elif stop.wait(seconds):
                raise RetryStopped(what)

        retrying = Retrying(sleep=sleep, **self._common(log, is_permanent, retry_on, readiness, check))
        try:
            result: T = retrying(fn, *args, **kwargs)
        except RetryStopped:
            raise
        except BaseException as exc:
            _on_giving_up(exc, log, what, is_permanent, readiness, check)
            raise
        log.recovered()
        if readiness is not None and check is not None:
            readiness.set(check, True)
        return result


def _on_giving_up(
    exc: BaseException,
    log: OutageLog,
    what: str,
    is_permanent: Callable[[BaseException], bool],
    readiness: Readiness | None,
    check: str | None,
) -> None:
    if not isinstance(exc, Exception):  # CancelledError, KeyboardInterrupt: not an outcome to report
        return
    permanent = is_permanent(exc)
    log.logger.error(
        f"{what}_failed",
        error=describe(exc),
        retried=not permanent,
        reason="not retryable" if permanent else "retry deadline reached",
    )
    if readiness is not None and check is not None:
        readiness.set(check, False, describe(exc), fatal=permanent)


DEFAULT_POLICY = RetryPolicy()
