"""The hourly rollup: sums of the hour's closed windows, carried in the worker's record."""

from __future__ import annotations

from datetime import timedelta

import pytest

from strainwatch.exposure import ExposureEngine, load_thresholds
from strainwatch.processor.record import WorkerRecord
from strainwatch.processor.runtime import Runtime, RuntimeConfig
from tests.support import aligned_start, encode, frame

pytestmark = pytest.mark.unit

ANGLES = {
    "trunk_flexion": 40.0,
    "neck_flexion": 30.0,
    "arm_elevation_left": 95.0,
    "arm_elevation_right": 10.0,
}
SUMMED = ("frames", "wear_s", "violations", "zone_trunk_flexion_conditional_s", "accrued_upper_back")


def points(lines: list[str], measurement: str) -> dict[tuple[str, str], dict[str, str]]:
    """Last fields per (tags, timestamp): later lines overwrite earlier ones, as in InfluxDB."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for text in lines:
        head, fields, ts = text.split(" ")
        if head.split(",")[0] != measurement:
            continue
        out[(head, ts)] = dict(f.split("=", 1) for f in fields.split(","))
    return out


def number(value: str) -> float:
    return float(value.rstrip("i"))


def run(
    frames: int, restart_every: int | None = None, roster: dict[str, str] | None = None
) -> tuple[list[str], int]:
    """Score `frames` 1-second frames of one worker from 20 minutes before an hour boundary;
    optionally persist and restart (a new runtime on the persisted records) every N frames."""
    table: dict[str, WorkerRecord] = {}
    engine = ExposureEngine(load_thresholds("default"), window_s=10)
    tasks = roster or {}

    def new_runtime() -> Runtime:
        return Runtime(engine, RuntimeConfig(), load=table.get, task_of=tasks.get)

    runtime = new_runtime()
    start = aligned_start(hours_ago=3.0)
    start -= timedelta(seconds=int(start.timestamp()) % 3600 - 2400)  # hh:40:00
    lines: list[str] = []
    for i in range(frames):
        runtime.on_message(b"w-1", encode(frame("w-1", start + timedelta(seconds=i), angles=ANGLES)), 0, i)
        if restart_every and (i + 1) % restart_every == 0:
            dirty, out = runtime.snapshot()
            lines += out
            table.update({w: WorkerRecord.from_bytes(r.to_bytes()) for w, r in dirty.items()})
            runtime = new_runtime()
    lines += runtime.snapshot()[1]
    return lines, int(start.timestamp())


def test_hourly_points_sum_the_hours_closed_windows() -> None:
    lines, start = run(frames=2400 + 5)  # 40 minutes: 20 in the first hour, 20 in the next
    windows = points(lines, "exposure")
    hours = points(lines, "exposure_hourly")
    assert len(hours) == 2
    for (head, ts), fields in hours.items():
        hour = int(ts)
        closed = [
            f for (_, wts), f in windows.items() if hour <= int(wts) < hour + 3600 and int(wts) < start + 2400
        ]
        assert int(number(fields["windows"])) == len(closed) == 120, head
        for name in SUMMED:
            assert number(fields[name]) == pytest.approx(sum(number(f[name]) for f in closed)), name
        assert number(fields["cut_arm_elevation_left_gt90_s"]) == pytest.approx(1200.0)
        assert number(fields["hold_neck_flexion_s"]) == max(number(f["hold_neck_flexion_s"]) for f in closed)
    (first, second) = sorted(hours, key=lambda key: key[1])
    assert int(first[1]) == start - 2400 and int(second[1]) == start + 1200


def test_restarts_from_persisted_records_give_the_same_hourly_points() -> None:
    """The running sums travel in the record (the changelog): a restart after any checkpoint adds
    exactly the windows the restored sums lack."""
    straight, _ = run(frames=1500)
    restarted, _ = run(frames=1500, restart_every=97)
    assert points(restarted, "exposure_hourly") == points(straight, "exposure_hourly")


def test_the_rosters_task_tags_windows_and_hours() -> None:
    lines, _ = run(frames=30, roster={"w-1": "overhead-drilling"})
    assert all("task=overhead-drilling" in head for head, _ in points(lines, "exposure_hourly"))
    assert all("task=overhead-drilling" in head for head, _ in points(lines, "exposure"))
    untagged, _ = run(frames=30)
    assert all("task=unassigned" in head for head, _ in points(untagged, "exposure_hourly"))
