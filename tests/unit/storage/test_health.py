"""Health points: cumulative counters become per-report deltas, gauges pass through."""

from __future__ import annotations

import pytest

from strainwatch.storage.health import HealthPoints

pytestmark = pytest.mark.unit


def test_counters_become_deltas_and_reasons_get_their_own_points() -> None:
    health = HealthPoints("processor", instance="host-1")
    counters = {"frames_in": 50, "frames_processed": 48, "dead_lettered": 2}
    first = health.lines(100.0, counters, {"late": 2}, {})
    assert first == [
        "pipeline,instance=host-1,service=processor "
        "frames_in=50i,frames_processed=48i,dead_lettered=2i,sink_write_errors=0i,interval_s=0.0 100",
        "dead_letter,instance=host-1,reason=late,service=processor count=2i 100",
    ]
    second = health.lines(
        110.0,
        {"frames_in": 80, "frames_processed": 77, "dead_lettered": 3, "sink_write_errors": 1},
        {"late": 2, "invalid_json": 1},
        {"lag_frames": 12, "checkpoint_age_s": 1.5},
    )
    assert second == [
        "pipeline,instance=host-1,service=processor frames_in=30i,frames_processed=29i,dead_lettered=1i,"
        "sink_write_errors=1i,lag_frames=12i,checkpoint_age_s=1.5,interval_s=10.0 110",
        "dead_letter,instance=host-1,reason=invalid_json,service=processor count=1i 110",
    ]
