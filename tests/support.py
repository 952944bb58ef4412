"""Helpers shared by tests: known posture frames, waiting on conditions, real components."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson

T = TypeVar("T")

FOUR_SEGMENTS = ("trunk_flexion", "neck_flexion", "arm_elevation_left", "arm_elevation_right")


def frame(
    worker: str,
    start: datetime,
    *,
    n: int = 10,
    rate_hz: float = 10.0,
    angles: dict[str, float] | None = None,
    site: str = "plant-1",
    event_id: uuid.UUID | None = None,
    rest: bool | None = None,
) -> dict[str, Any]:
    angles = angles if angles is not None else dict.fromkeys(FOUR_SEGMENTS, 10.0)
    doc: dict[str, Any] = {
        "schema_version": 1,
        "event_id": str(event_id or uuid.uuid4()),
        "device_id": f"dev-{worker}",
        "worker_id": worker,
        "site_id": site,
        "start_ts": start.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "rate_hz": rate_hz,
        "samples": {name: [value] * n for name, value in angles.items()},
    }
    if rest is not None:
        doc["rest"] = rest
    return doc


def encode(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


def aligned_start(hours_ago: float = 2.0, window_s: int = 10) -> datetime:
    now = datetime.now(UTC) - timedelta(hours=hours_ago)
    epoch = int(now.timestamp()) // window_s * window_s
    return datetime.fromtimestamp(epoch, UTC)


def wait_for(condition: Callable[[], T | None], *, timeout_s: float, what: str, interval_s: float = 0.2) -> T:
    """Poll until condition() is truthy (the awaited condition, never a fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; last value: {last!r}")
