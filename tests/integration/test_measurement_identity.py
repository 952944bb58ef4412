"""Every InfluxDB point's identity (measurement + tags + timestamp) is unique per event it records.

InfluxDB silently replaces a point written with an existing identity. That is what makes replays
idempotent, and what loses data when two distinct events share an identity. So, per line builder of
storage/measurements.py: two distinct events that differ in only one part of what could identify
them are both stored, and the same event written twice is one point. All on the real InfluxDB,
through the processor's sink (`/api/v2/write`, precision seconds).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from strainwatch.exposure.engine import ExposureEngine, WindowAggregate
from strainwatch.exposure.thresholds import load_thresholds
from strainwatch.fleet.simulator import FleetSimulator, SimConfig
from strainwatch.processor.sink import InfluxSink
from strainwatch.storage import influxql
from strainwatch.storage.measurements import (
    BREAK_ALERT,
    BREAK_ALERT_TAGS,
    EXPOSURE,
    EXPOSURE_TAGS,
    break_alert_line,
    exposure_line,
    source,
)
from tests.integration.conftest import Influx
from tests.support import aligned_start

pytestmark = pytest.mark.integration

# a whole second, recent: the 10-second windows' retention policy keeps weeks, not years
T0 = int(aligned_start(hours_ago=24.0).timestamp())


def _write(influx: Influx, database: str, lines: list[str]) -> None:
    async def write() -> None:
        sink = InfluxSink(influx.url, "test-token", "strainwatch", database)
        try:
            sink.add(lines)
            await sink.flush()
        finally:
            await sink.close()

    asyncio.run(write())


def _points(influx: Influx, database: str, measurement: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Stored points keyed by identity (tags, time), fields as a dict."""
    points: dict[tuple[Any, ...], dict[str, Any]] = {}
    for series in influx.ql(database).query(f"SELECT * FROM {source(measurement)} GROUP BY *"):
        tags = tuple(sorted((series.get("tags") or {}).items()))
        for row in series["values"]:
            fields = {c: v for c, v in zip(series["columns"], row, strict=True) if c != "time"}
            points[(tags, row[0])] = {k: v for k, v in fields.items() if v is not None}
    return points


def _window(start_s: int, *, frames: int = 10, dose: float = 5.0) -> WindowAggregate:
    return WindowAggregate(
        window_start_s=start_s,
        window_s=10,
        frames=frames,
        wear_s=float(frames),
        samples={"trunk_flexion": frames * 10},
        zone_s={"trunk_flexion": {"acceptable": float(frames), "conditional": 0.0, "not_acceptable": 0.0}},
        cutpoints_s={"trunk_flexion": {"gt20": 0.0}},
        longest_hold_s={"trunk_flexion": 0.0},
        dose={"trunk_flexion": dose, "upper_back": dose},
        violations=0,
        thresholds_version="default@1",
    )


def _alert(
    *,
    site: str = "plant-1",
    team: str | None = "assembly",
    worker: str = "w-1",
    kind: str = "posture_hold",
    segment: str = "trunk_flexion",
    ts_s: float = T0 + 0.1,
    dose: float = 120.0,
) -> str:
    # the id the processor derives (deterministic per alert), so replays carry the same one
    alert_id = f"{worker}|{kind}|{segment}|{ts_s:.3f}"
    return break_alert_line(site, team, worker, kind, segment, dose, alert_id, ts_s)


def _exposure(
    *, site: str = "plant-1", team: str | None = "assembly", worker: str = "w-1", start_s: int = T0
) -> str:
    return exposure_line(site, team, worker, _window(start_s))


# Pairs of distinct events sharing everything but one part of their identity. The first break-alert
# pair is the reviewed defect: two segments crossing their limit at the same sample.
DISTINCT: dict[str, tuple[str, list[tuple[str, Callable[[], str], Callable[[], str]]]]] = {
    "exposure": (
        EXPOSURE,
        [
            ("two workers, same window", lambda: _exposure(worker="w-1"), lambda: _exposure(worker="w-2")),
            (
                "one pseudonym at two sites",
                lambda: _exposure(site="plant-1"),
                lambda: _exposure(site="plant-2"),
            ),
            (
                "consecutive windows",
                lambda: _exposure(start_s=T0),
                lambda: _exposure(start_s=T0 + 10),
            ),
        ],
    ),
    "break_alert": (
        BREAK_ALERT,
        [
            (
                "two segments in one second",
                lambda: _alert(segment="arm_elevation_left", ts_s=T0 + 0.2),
                lambda: _alert(segment="arm_elevation_right", ts_s=T0 + 0.2),
            ),
            (
                "two segments, different samples of one second",
                lambda: _alert(segment="trunk_flexion", ts_s=T0 + 0.1),
                lambda: _alert(segment="neck_flexion", ts_s=T0 + 0.9),
            ),
            (
                "a nudge and a break in one second",
                lambda: _alert(kind="posture_hold", segment="trunk_flexion"),
                lambda: _alert(kind="conditioning_break", segment="trunk_flexion"),
            ),
            ("two workers in one second", lambda: _alert(worker="w-1"), lambda: _alert(worker="w-2")),
            ("one pseudonym at two sites", lambda: _alert(site="plant-1"), lambda: _alert(site="plant-2")),
        ],
    ),
}


@pytest.mark.parametrize("builder", sorted(DISTINCT))
def test_distinct_events_are_distinct_points(influx: Influx, builder: str) -> None:
    measurement, cases = DISTINCT[builder]
    for name, first, second in cases:
        database = influx.new_database()
        lines = [first(), second()]
        assert lines[0] != lines[1], name
        _write(influx, database, lines)
        points = _points(influx, database, measurement)
        assert len(points) == 2, f"{builder}: {name}: {len(points)} point(s) stored for 2 events: {points}"


def test_every_tag_of_a_point_is_an_identity_tag(influx: Influx) -> None:
    """The tag sets the docstring of measurements.py promises, so the cases above cover them all."""
    database = influx.new_database()
    _write(influx, database, [_exposure(), _alert()])
    for measurement, tags in ((EXPOSURE, EXPOSURE_TAGS), (BREAK_ALERT, BREAK_ALERT_TAGS)):
        keys = influx.ql(database).query(f'SHOW TAG KEYS FROM "{measurement}"')
        assert sorted(row[0] for row in keys[0]["values"]) == sorted(tags), measurement


@pytest.mark.parametrize("builder", sorted(DISTINCT))
def test_the_same_event_written_twice_is_one_point(influx: Influx, builder: str) -> None:
    measurement, cases = DISTINCT[builder]
    database = influx.new_database()
    lines = [first() for _, first, _ in cases]
    _write(influx, database, lines)
    _write(influx, database, lines)  # a replay after a crash writes every point again
    assert len(_points(influx, database, measurement)) == len(set(lines))


def test_a_rewritten_open_window_keeps_one_point_with_the_last_fields(influx: Influx) -> None:
    database = influx.new_database()
    partial = exposure_line("plant-1", "assembly", "w-1", _window(T0, frames=3, dose=1.0))
    full = exposure_line("plant-1", "assembly", "w-1", _window(T0, frames=10, dose=5.0))
    _write(influx, database, [partial])
    _write(influx, database, [full])
    points = list(_points(influx, database, EXPOSURE).values())
    assert len(points) == 1
    assert points[0]["frames"] == 10 and points[0]["dose_upper_back"] == 5.0


def test_a_simulated_site_keeps_every_alert_and_window(influx: Influx) -> None:
    """The review's measurement at small scale: as many points stored as events emitted."""
    cfg = SimConfig(
        workers=6, frame_s=10.0, duration_s=2 * 3600, start=aligned_start(hours_ago=3.0), shifts=False, seed=3
    )
    sim = FleetSimulator(cfg)
    engine = ExposureEngine(load_thresholds("default"))
    states: dict[str, Any] = {}
    windows: list[str] = []
    alerts: list[str] = []
    same_second_segments = 0
    for frame in sim.frames():
        doc = orjson.loads(frame.value)
        state = states.setdefault(frame.worker_id, engine.new_state())
        samples = {k: v for k, v in doc["samples"].items() if v}
        out = engine.process(state, frame.start_s, doc["rate_hz"], samples)
        windows += [exposure_line(cfg.site_id, None, frame.worker_id, w) for w in out.closed]
        seconds = [(a.kind, int(a.ts_s)) for a in out.alerts]
        same_second_segments += len(seconds) - len(set(seconds))
        alerts += [
            _alert(site=cfg.site_id, worker=frame.worker_id, kind=a.kind, segment=a.segment, ts_s=a.ts_s)
            for a in out.alerts
        ]
    # the simulated fleet does produce the colliding case, so this test exercises it
    assert alerts and same_second_segments > 0
    database = influx.new_database()
    _write(influx, database, windows + alerts)
    ql = influx.ql(database)
    stored_alerts = sum(int(s["values"][0][1]) for s in ql.query(influxql.break_alert_counts("segment")))
    assert stored_alerts == len(alerts)
    assert int(ql.scalar(influxql.exposure_points_count())) == len(windows)


def test_windows_older_than_their_retention_are_dropped_and_the_rest_stored(influx: Influx) -> None:
    """A backfill of frames older than the windows' retention (35 days by default): InfluxDB drops
    those points; the sink must not retry them forever, and the other points of the batch are kept."""
    database = influx.new_database()
    old = T0 - 60 * 86_400
    lines = [
        exposure_line("plant-1", "assembly", "w-1", _window(old)),
        exposure_line("plant-1", "assembly", "w-1", _window(T0)),
        break_alert_line("plant-1", "assembly", "w-1", "posture_hold", "neck_flexion", 1.0, "a-1", old),
    ]

    async def write() -> int:
        sink = InfluxSink(influx.url, "test-token", "strainwatch", database)
        try:
            sink.add(lines)
            await asyncio.wait_for(sink.flush(), timeout=30)
            return sink.beyond_retention_batches
        finally:
            await sink.close()

    assert asyncio.run(write()) == 1
    assert [key[1] for key in _points(influx, database, EXPOSURE)] == [T0]
    # the long retention policy keeps the 60-day-old alert
    assert [key[1] for key in _points(influx, database, BREAK_ALERT)] == [old]
