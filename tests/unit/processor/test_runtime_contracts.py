"""Every message the processor's runtime emits conforms to its contract model in events.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from strainwatch.events import BreakAlert, DeadLetter, ExposureWindow
from strainwatch.exposure import ExposureEngine, load_thresholds
from strainwatch.processor.record import WorkerRecord
from strainwatch.processor.runtime import Runtime, RuntimeConfig
from tests.support import aligned_start, encode, frame

pytestmark = pytest.mark.unit

# every segment not acceptable (over its 10 s limit: posture_hold nudges) and enough dose, fast
# enough, for a conditioning_break within a minute
STRAINED = {
    "trunk_flexion": 70.0,
    "trunk_lateral": 40.0,
    "trunk_twist": -30.0,
    "neck_flexion": 50.0,
    "arm_elevation_left": 100.0,
    "arm_elevation_right": 70.0,
}
NEUTRAL = {"trunk_flexion": 5.0, "neck_flexion": 10.0}
MAX_SAMPLES = 500  # per frame, below the contract's own bound so the runtime's check is reached


def invalid_messages(start: datetime) -> list[tuple[bytes | None, bytes, str]]:
    """(key, value, expected reason) for one fault of each kind the runtime dead-letters."""
    ok = frame("w-bad", start)
    far_future = datetime.now(UTC) + timedelta(days=30)
    return [
        (None, b"{not json", "malformed_json"),
        (b"w-bad", orjson.dumps({k: v for k, v in ok.items() if k != "site_id"}), "missing_field"),
        (b"w-bad", encode({**ok, "colour": "red"}), "unknown_field"),
        (b"w-bad", encode({**ok, "schema_version": 2}), "unsupported_schema_version"),
        (b"w-bad", encode(frame("w-bad", start, angles={"neck_flexion": 120.0})), "out_of_range"),
        (
            b"w-bad",
            encode({**ok, "samples": {"trunk_flexion": [1.0], "neck_flexion": [1.0, 2.0]}}),
            "length_mismatch",
        ),
        (b"w-bad", encode({**ok, "samples": {}}), "no_segments"),
        (b"w-bad", encode(frame("w-bad", far_future)), "future_timestamp"),
        (b"w-bad", b'{"x": "' + b"a" * 300_000 + b'"}', "oversized"),
        (b"w-bad", encode(frame("w-bad", start, n=MAX_SAMPLES + 1)), "oversized"),
        (b"w-bad", encode(ok).replace(b"10.0]", b"NaN]", 1), "not_finite"),
        (b"w-other", encode(ok), "invalid_field"),  # key differs from worker_id
        (b"w-bad", b"\xff\xfe", "malformed_json"),
    ]


def varied_workload(start: datetime) -> list[tuple[bytes | None, bytes]]:
    messages: list[tuple[bytes | None, bytes]] = []
    # w-strained: 90 s of strain, frames 1 s each, two of them swapped (within the lateness)
    strained = [frame("w-strained", start + timedelta(seconds=i), angles=STRAINED) for i in range(90)]
    strained[40], strained[41] = strained[41], strained[40]
    messages += [(b"w-strained", encode(doc)) for doc in strained]
    messages.append((b"w-strained", encode(strained[85])))  # a redelivery: duplicate event id
    # late: overlaps samples already scored (a new event id, so not a duplicate)
    messages.append((b"w-strained", encode(frame("w-strained", start + timedelta(seconds=20)))))
    # a redelivery older than the 8 remembered event ids overlaps scored samples: late as well
    messages.append((b"w-strained", encode(strained[10])))
    # w-calm: neutral, at 25 Hz, with a team from the roster
    messages += [
        (
            b"w-calm",
            encode(frame("w-calm", start + timedelta(seconds=2 * i), n=50, rate_hz=25.0, angles=NEUTRAL)),
        )
        for i in range(20)
    ]
    messages += [(key, value) for key, value, _ in invalid_messages(start)]
    return messages


def run(messages: list[tuple[bytes | None, bytes]]) -> Runtime:
    table: dict[str, WorkerRecord] = {}
    engine = ExposureEngine(load_thresholds("default"), window_s=10)
    runtime = Runtime(
        engine,
        RuntimeConfig(max_samples_per_frame=MAX_SAMPLES),
        load=table.get,
        team_of={"w-calm": "packing"}.get,
        log_dead_letters=False,
    )
    for offset, (key, value) in enumerate(messages):
        runtime.on_message(key, value, 0, offset)
    return runtime


def validated(model: type[BaseModel], values: list[bytes]) -> list[Any]:
    return [model.model_validate_json(value) for value in values]


def test_every_emitted_message_conforms_to_its_contract() -> None:
    start = aligned_start(hours_ago=2)
    runtime = run(varied_workload(start))
    out = runtime.take_outputs()

    windows = validated(ExposureWindow, [value for _, value in out.windows])
    alerts = validated(BreakAlert, [value for _, value in out.alerts])
    letters = validated(DeadLetter, [value for _, value in out.dead_letters])
    open_windows = validated(
        ExposureWindow, [m for w in ("w-strained", "w-calm") if (m := runtime.open_window_message(w))]
    )

    # the workload exercised what it means to
    assert len(windows) == 8 + 3 and len(open_windows) == 2
    assert {a.kind for a in alerts} == {"posture_hold", "conditioning_break"}
    assert {w.team for w in windows if w.worker_id == "w-calm"} == {"packing"}
    reasons = [letter.reason.value for letter in letters]
    expected = [reason for _, _, reason in invalid_messages(start)]
    assert sorted(reasons) == sorted([*expected, "late", "late"])
    assert runtime.counters.duplicates == 1
    assert runtime.counters.frames_applied == 90 + 20

    # every message's key is the worker id it names (the dead letter: the source key, as sent)
    assert all(key == orjson.loads(value)["worker_id"].encode() for key, value in out.windows + out.alerts)
    assert all(letter.key_b64 is None or letter.source_topic == "posture.events.v1" for letter in letters)


def test_alert_ids_are_uuids_and_stable_across_runs() -> None:
    start = aligned_start(hours_ago=2)
    first = [orjson.loads(v)["alert_id"] for _, v in run(varied_workload(start)).take_outputs().alerts]
    second = [orjson.loads(v)["alert_id"] for _, v in run(varied_workload(start)).take_outputs().alerts]
    assert first == second and all(uuid.UUID(a) for a in first)
