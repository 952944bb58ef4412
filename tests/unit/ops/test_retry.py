from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from strainwatch.ops.readiness import Readiness
from strainwatch.ops.retry import NotRetryable, OutageLog, RetryPolicy, RetryStopped

pytestmark = pytest.mark.unit

FAST = RetryPolicy(initial_s=0.001, cap_s=0.004, jitter_s=0.0)


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def _add(self, level: str, event: str, **kw: Any) -> None:
        self.lines.append((level, event, kw))

    def info(self, event: str, **kw: Any) -> None:
        self._add("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._add("warning", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._add("error", event, **kw)

    def events(self) -> list[str]:
        return [e for _, e, _ in self.lines]


class Flaky:
    def __init__(self, failures: int, exc: Exception | None = None) -> None:
        self.failures = failures
        self.calls = 0
        self.exc = exc or ConnectionError("broker down")

    def sync(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "ok"

    async def coro(self) -> str:
        return self.sync()


def test_async_retries_until_success_logging_the_outage_once() -> None:
    log, r, f = Log(), Readiness(), Flaky(5)
    result = asyncio.run(FAST.call(f.coro, what="kafka", logger=log, readiness=r, check="kafka"))
    assert result == "ok" and f.calls == 6
    assert log.events() == ["kafka_unavailable", "kafka_recovered"]
    assert log.lines[0][2]["error"] == "ConnectionError: broker down"
    assert log.lines[1][2]["attempts"] == 5
    assert r.get("kafka")["ok"] is True  # type: ignore[index]


def test_not_retryable_raises_at_once_and_marks_fatal() -> None:
    log, r = Log(), Readiness()
    f = Flaky(100, NotRetryable("InfluxDB 401 unauthorized"))
    with pytest.raises(NotRetryable):
        asyncio.run(FAST.call(f.coro, what="influx", logger=log, readiness=r, check="sink"))
    assert f.calls == 1
    assert log.events() == ["influx_failed"]
    assert log.lines[0][0] == "error" and log.lines[0][2]["retried"] is False
    check = r.get("sink")
    assert check is not None and check["fatal"] is True and "401" in check["detail"]


def test_retryable_attribute_and_retry_on_filter() -> None:
    class SinkFatal(Exception):
        retryable = False

    f = Flaky(100, SinkFatal("404"))
    with pytest.raises(SinkFatal):
        FAST.call_sync(f.sync, what="sink", logger=Log())
    assert f.calls == 1
    g = Flaky(100, ValueError("bad data"))
    with pytest.raises(ValueError):
        FAST.call_sync(g.sync, what="sink", logger=Log(), retry_on=(ConnectionError,))
    assert g.calls == 1


def test_stop_event_interrupts_the_back_off() -> None:
    slow = RetryPolicy(initial_s=30.0, cap_s=30.0, jitter_s=0.0)

    async def main() -> None:
        stop = asyncio.Event()
        f = Flaky(100)
        task = asyncio.create_task(slow.call(f.coro, what="kafka", logger=Log(), stop=stop))
        await asyncio.sleep(0)  # first attempt fails, then sleeps 30 s
        while f.calls == 0:
            await asyncio.sleep(0)
        stop.set()
        with pytest.raises(RetryStopped):
            await asyncio.wait_for(task, timeout=5)
        assert f.calls == 1

    asyncio.run(main())


def test_sync_stop_event_and_deadline() -> None:
    stop = threading.Event()
    stop.set()
    once = Flaky(1)
    with pytest.raises(RetryStopped):  # stopping: one attempt, no retry
        FAST.call_sync(once.sync, what="x", logger=Log(), stop=stop)
    assert once.calls == 1
    assert FAST.call_sync(Flaky(0).sync, what="x", logger=Log(), stop=stop) == "ok"
    log = Log()
    with pytest.raises(ConnectionError):
        RetryPolicy(initial_s=0.001, cap_s=0.002, jitter_s=0.0, deadline_s=0.05).call_sync(
            Flaky(10**9).sync, what="kafka", logger=log
        )
    assert log.events()[0] == "kafka_unavailable" and log.events()[-1] == "kafka_failed"
    assert log.lines[-1][2]["reason"] == "retry deadline reached"


def test_outage_log_reminder_is_bounded() -> None:
    now = [0.0]
    log = Log()
    o = OutageLog(log, "kafka", reminder_s=60.0, clock=lambda: now[0])
    for step in range(0, 1800):  # 180 s of failures every 0.1 s
        now[0] = step / 10
        o.failure(ConnectionError("down"), 0.1)
    now[0] = 200.0
    o.recovered()
    assert log.events() == [
        "kafka_unavailable",
        "kafka_still_unavailable",
        "kafka_still_unavailable",
        "kafka_recovered",
    ]
    assert log.lines[1][2]["down_s"] == 60.0 and log.lines[2][2]["down_s"] == 120.0
    assert log.lines[-1][2] == {"attempts": 1800, "down_s": 200.0}
    o.recovered()  # nothing to report twice
    assert len(log.lines) == 4


def test_back_off_doubles_to_its_cap_with_bounded_jitter() -> None:
    policy = RetryPolicy(initial_s=0.5, cap_s=30.0, jitter_s=0.25)
    wait = policy._common(OutageLog(Log(), "x"), lambda e: False, (Exception,), None, None)["wait"]

    class State:
        def __init__(self, attempt: int) -> None:
            self.attempt_number = attempt

    waits = [wait(State(n)) for n in range(1, 11)]
    base = [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30]
    for got, want in zip(waits, base, strict=True):
        assert want <= got <= want + 0.25
