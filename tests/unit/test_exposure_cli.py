"""`strainwatch exposure score`: a file of frames scored per worker by the processor's runtime."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from strainwatch.cli import app
from strainwatch.events import BreakAlert, DeadLetter, ExposureWindow, PostureFrame
from strainwatch.exposure import ExposureEngine, load_thresholds
from strainwatch.exposure_cli import score_lines
from strainwatch.processor.runtime import Runtime, RuntimeConfig, iso_ms
from tests.support import aligned_start, encode, frame

pytestmark = pytest.mark.unit

RATE = 10.0
N = 60  # 6 s per frame
# arms not acceptable for 18 s (> the 10 s limit: a violation once the hold ends), neck
# conditional, trunk acceptable; then 6 s with the arms down
A_ANGLES = {
    "trunk_flexion": 10.0,
    "neck_flexion": 30.0,
    "arm_elevation_left": 70.0,
    "arm_elevation_right": 70.0,
}
A_RELAXED = {**A_ANGLES, "arm_elevation_left": 10.0, "arm_elevation_right": 10.0}
B_ANGLES = {"trunk_flexion": 30.0, "neck_flexion": 10.0}


def write(path: Path, docs: list[dict[str, Any] | bytes]) -> Path:
    path.write_bytes(b"".join((d if isinstance(d, bytes) else orjson.dumps(d)) + b"\n" for d in docs))
    return path


def invoke(*args: str) -> Any:
    # COLUMNS: rich sizes the table to it; wide enough that no cell is folded
    return CliRunner(env={"COLUMNS": "200"}).invoke(app, ["exposure", "score", *args])


def rows(stdout: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stdout.splitlines() if line.strip()]


def score(docs: list[dict[str, Any]], window_s: int = 10) -> list[dict[str, Any]]:
    results, invalid = score_lines([encode(d) for d in docs], load_thresholds("default"), window_s)
    assert not invalid.lines, list(invalid.report())
    return results


@pytest.fixture
def start() -> datetime:
    # aligned to an hour: the direct engine run below sees every sample in one window
    return aligned_start(hours_ago=3, window_s=3600)


def worker_a(start: datetime) -> list[dict[str, Any]]:
    return [
        frame(
            "w-a",
            start + timedelta(seconds=6 * i),
            n=N,
            rate_hz=RATE,
            angles=A_ANGLES if i < 3 else A_RELAXED,
        )
        for i in range(4)
    ]


def worker_b(start: datetime) -> list[dict[str, Any]]:
    return [
        frame("w-b", start + timedelta(seconds=6 * i), n=N, rate_hz=RATE, angles=B_ANGLES) for i in range(3)
    ]


def two_workers(start: datetime) -> list[dict[str, Any]]:
    a, b = worker_a(start), worker_b(start)
    # interleaved; each worker's first frame first, the others out of order within the lateness
    return [b[0], a[0], b[2], a[2], a[1], b[1], a[3]]


def direct(docs: list[dict[str, Any]], profile: str = "default") -> dict[str, Any]:
    """The engine run by hand over one worker's frames in order, all in one hour-long window."""
    engine = ExposureEngine(load_thresholds(profile), window_s=3600)
    state = engine.new_state()
    outcomes = []
    for doc in sorted(docs, key=lambda d: d["start_ts"]):
        f = PostureFrame.model_validate(doc)
        outcomes.append(engine.process(state, f.start_ts.timestamp(), f.rate_hz, f.samples.present()))
    assert not [w for o in outcomes for w in o.closed]
    return {
        "window": engine.open_window(state),  # the processor does not end a file's last window
        "violations": [v for o in outcomes for v in o.violations],
        "alerts": [a for o in outcomes for a in o.alerts],
        "dose": {name: state.dose(name) for name in docs[0]["samples"]},
    }


def test_workers_come_out_sorted_with_the_engines_numbers(tmp_path: Path, start: datetime) -> None:
    docs = two_workers(start)
    result = invoke(str(write(tmp_path / "frames.jsonl", docs)))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    out = rows(result.stdout)
    assert [r["worker_id"] for r in out] == ["w-a", "w-b"]
    a, b = out

    # concrete values: 4 and 3 frames × 60 samples at 10 Hz
    assert (a["frames"], a["wear_s"]) == (4, 24.0)
    assert (b["frames"], b["wear_s"]) == (3, 18.0)
    assert {r["thresholds_version"] for r in out} == {"default@1"}
    assert a["samples"] == dict.fromkeys(A_ANGLES, 4 * N)
    assert a["zone_s"]["arm_elevation_left"] == {
        "acceptable": 6.0,
        "conditional": 0.0,
        "not_acceptable": 18.0,
    }
    assert a["zone_s"]["neck_flexion"] == {"acceptable": 0.0, "conditional": 24.0, "not_acceptable": 0.0}
    assert a["zone_s"]["trunk_flexion"] == {"acceptable": 24.0, "conditional": 0.0, "not_acceptable": 0.0}
    assert a["cutpoints_s"]["arm_elevation_right"] == {"gt30": 18.0, "gt60": 18.0, "gt90": 0.0}
    assert a["cutpoints_s"]["neck_flexion"] == {"gt20": 24.0, "gt45": 0.0}
    # both arms held 18 s in the not-acceptable zone: over the 10 s limit
    assert a["violations"] == [
        {"segment": side, "start": iso_ms(start.timestamp()), "duration_s": 18.0, "mean_angle": 70.0}
        for side in ("arm_elevation_left", "arm_elevation_right")
    ]
    # arm dose 3/s for 10 s, then doubled over the limit: 30 + 8 × 6 = 78 each; neck 1/s for 24 s
    assert a["dose"] == {
        "trunk_flexion": 0.0,
        "neck_flexion": 24.0,
        "arm_elevation_left": 78.0,
        "arm_elevation_right": 78.0,
        "upper_back": 180.0,
    }
    assert [(x["kind"], x["segment"], x["ts"]) for x in a["alerts"]] == [
        ("posture_hold", side, iso_ms(start.timestamp() + 10))
        for side in ("arm_elevation_left", "arm_elevation_right")
    ]
    assert b["violations"] == [] and b["alerts"] == []
    assert set(b["zone_s"]) == set(B_ANGLES)

    # equal to the engine run directly (one window instead of 10 s windows: sums must not differ)
    for r, worker in ((a, "w-a"), (b, "w-b")):
        ref = direct([d for d in docs if d["worker_id"] == worker])
        window = ref["window"]
        assert r["wear_s"] == pytest.approx(window.wear_s)
        assert r["samples"] == window.samples
        for name, zones in window.zone_s.items():
            assert r["zone_s"][name] == pytest.approx(zones)
            assert r["cutpoints_s"][name] == pytest.approx(window.cutpoints_s[name])
        assert r["longest_hold_s"] == pytest.approx(window.longest_hold_s)
        assert {k: v for k, v in r["dose"].items() if k != "upper_back"} == pytest.approx(ref["dose"])
        assert r["dose"]["upper_back"] == pytest.approx(window.dose["upper_back"])
        assert r["dose"]["upper_back"] > 0
        assert [(v["segment"], v["start"], v["duration_s"], v["mean_angle"]) for v in r["violations"]] == [
            (v.segment, iso_ms(v.start_s), pytest.approx(v.duration_s), pytest.approx(v.mean_angle))
            for v in ref["violations"]
        ]
        assert [(x["kind"], x["ts"], x["segment"], x["dose"]) for x in r["alerts"]] == [
            (x.kind, iso_ms(x.ts_s), x.segment, x.dose) for x in ref["alerts"]
        ]


def test_order_within_the_lateness_and_window_length_do_not_matter(start: datetime) -> None:
    docs = two_workers(start)
    in_order = sorted(docs, key=lambda d: (d["worker_id"], d["start_ts"]))
    assert score(docs) == score(in_order)
    # the window length only splits the aggregation: totals are the same
    assert score(docs, 10) == score(docs, 60)


def test_arrival_order_is_the_processors_not_event_time(start: datetime) -> None:
    """A worker's first frame starts its timeline: an earlier frame arriving later overlaps
    scored samples (late), as in the processor; so does one beyond the lateness."""
    a = worker_a(start)
    (r,) = score_lines([encode(d) for d in [a[1], a[0], a[2], a[3]]], load_thresholds("default"))[0]
    assert (r["frames"], r["overlapping"]) == (3, 1)

    # 1 s frames; frame 1 is held up until the frames after it reach past the 30 s lateness
    frames = [frame("w-c", start + timedelta(seconds=i)) for i in range(40)]
    arrival = [frames[0], *frames[2:], frames[1]]
    results, invalid = score_lines([encode(d) for d in arrival], load_thresholds("default"))
    assert (results[0]["frames"], results[0]["overlapping"]) == (39, 1)
    assert [(line, reason) for line, reason, _ in invalid.lines] == [(40, "late")]


def test_a_gap_that_never_fills_is_scored_at_the_end_of_the_file(start: datetime) -> None:
    frames = [frame("w-c", start + timedelta(seconds=i)) for i in (0, 2, 3)]  # frame 1 never comes
    (r,) = score(frames)
    assert (r["frames"], r["wear_s"], r["overlapping"]) == (3, 3.0, 0)


def test_only_the_last_eight_event_ids_are_duplicates(start: datetime) -> None:
    """The processor remembers 8 event ids per worker: an older redelivery overlaps scored samples."""
    frames = [frame("w-c", start + timedelta(seconds=i)) for i in range(12)]
    (r,) = score_lines(
        [encode(d) for d in [*frames, frames[11], frames[4], frames[3]]], load_thresholds("default")
    )[0]
    assert (r["frames"], r["duplicates"], r["overlapping"]) == (12, 2, 1)


def test_invalid_lines_are_reported_by_number_and_the_rest_scored(tmp_path: Path, start: datetime) -> None:
    first = frame("w-a", start, n=N, rate_hz=RATE, angles=A_ANGLES)
    bad_range = frame("w-a", start + timedelta(seconds=6), n=N, rate_hz=RATE, angles={"neck_flexion": 120.0})
    overlapping = frame("w-a", start + timedelta(seconds=3), n=N, rate_hz=RATE, angles=A_ANGLES)
    second = frame("w-a", start + timedelta(seconds=6), n=N, rate_hz=RATE, angles=A_ANGLES)
    future = frame("w-a", datetime.now(UTC) + timedelta(days=1), n=N, rate_hz=RATE, angles=A_ANGLES)
    path = write(
        tmp_path / "frames.jsonl",
        [
            first,  # line 1
            bad_range,  # line 2: out_of_range
            b"{not json",  # line 3: malformed_json
            dict(first),  # line 4: same event_id: a redelivery, dropped without complaint
            overlapping,  # line 5: starts inside line 1's frame
            b"",  # line 6: blank, skipped
            second,  # line 7
            future,  # line 8: frames from the past are normal, from the future not
        ],
    )
    result = invoke(str(path))
    assert result.exit_code == 1
    errors = result.stderr.splitlines()
    assert errors[0].startswith("line 2: out_of_range: samples.neck_flexion.0")
    assert errors[1].startswith("line 3: malformed_json: Invalid JSON")
    assert errors[2].startswith("line 5: late: frame at ")
    assert errors[3].startswith("line 8: future_timestamp: start_ts")
    assert errors[4] == "4 invalid line(s) skipped"
    assert len(errors) == 5
    (r,) = rows(result.stdout)
    assert r["frames"] == 2
    assert r["duplicates"] == 1
    assert r["overlapping"] == 1
    assert r["wear_s"] == 2 * N / RATE == 12.0


def test_emit_writes_the_processors_messages(tmp_path: Path, start: datetime) -> None:
    # 30 s of strain for w-a (holds, windows), one invalid line, one late frame
    docs: list[dict[str, Any] | bytes] = [
        frame("w-a", start + timedelta(seconds=6 * i), n=N, rate_hz=RATE, angles=A_ANGLES) for i in range(5)
    ]
    docs += [b"[]", frame("w-a", start, n=N, rate_hz=RATE)]
    path = write(tmp_path / "frames.jsonl", docs)
    result = invoke(str(path), "--emit", str(tmp_path / "out"))
    assert result.exit_code == 1, result.output

    # the same lines through the runtime directly, as the processor takes them from the topic
    runtime = Runtime(
        ExposureEngine(load_thresholds("default"), window_s=10), RuntimeConfig(), load=lambda worker: None
    )
    for offset, line in enumerate(path.read_bytes().splitlines()):
        runtime.on_message(b"w-a" if line.startswith(b"{") else None, line, 0, offset)
    expected = runtime.take_outputs()

    def emitted(name: str) -> list[bytes]:
        return (tmp_path / "out" / name).read_bytes().splitlines()

    assert emitted("exposure-windows.jsonl") == [value for _, value in expected.windows]
    assert emitted("break-alerts.jsonl") == [value for _, value in expected.alerts]
    assert len(emitted("exposure-windows.jsonl")) == 2  # closed windows only: 30 s from :00 leaves one open
    assert len(emitted("break-alerts.jsonl")) == 2
    letters = [DeadLetter.model_validate_json(v) for v in emitted("dead-letters.jsonl")]
    assert [(x.reason.value, x.source_partition, x.source_offset) for x in letters] == [
        ("invalid_field", 0, 5),
        ("late", 0, 6),
    ]
    for value in emitted("exposure-windows.jsonl"):
        ExposureWindow.model_validate_json(value)
    for value in emitted("break-alerts.jsonl"):
        BreakAlert.model_validate_json(value)
    # the summary counts the open window too
    (r,) = rows(result.stdout)
    assert r["wear_s"] == 30.0
    assert len(r["alerts"]) == 2


def test_unknown_profile_and_bad_arguments_exit_2(tmp_path: Path, start: datetime) -> None:
    path = write(tmp_path / "frames.jsonl", two_workers(start))
    result = invoke(str(path), "--thresholds", "no-such-profile")
    assert result.exit_code == 2
    assert "unknown thresholds 'no-such-profile'" in result.output
    assert invoke(str(tmp_path / "missing.jsonl")).exit_code == 2
    assert invoke(str(path), "--format", "xml").exit_code == 2
    assert invoke(str(path), "--window-s", "0").exit_code == 2
    result = invoke(str(path), "--emit", str(path))  # a file, not a directory
    assert result.exit_code == 2
    assert "--emit" in result.output
    (tmp_path / "blocker").write_bytes(b"")
    result = invoke(str(path), "--emit", str(tmp_path / "blocker" / "out"))
    assert result.exit_code == 2
    assert "--emit" in result.output


def test_profiles_name_their_version_and_score_differently(tmp_path: Path, start: datetime) -> None:
    path = write(tmp_path / "frames.jsonl", two_workers(start))
    default = rows(invoke(str(path), "--thresholds", "default").stdout)[0]
    strict = rows(invoke(str(path), "--thresholds", "iso11226-strict").stdout)[0]
    assert default["thresholds_version"] == "default@1"
    assert strict["thresholds_version"] == "iso11226-strict@1"
    # neck at 30°: conditional in the default profile, not acceptable as ISO 11226 is written
    assert default["zone_s"]["neck_flexion"]["conditional"] == 24.0
    assert strict["zone_s"]["neck_flexion"]["not_acceptable"] == 24.0
    assert {a["segment"] for a in strict["alerts"]} >= {"neck_flexion"}
    assert "neck_flexion" not in {a["segment"] for a in default["alerts"]}


def test_thresholds_file_path_is_accepted(tmp_path: Path, start: datetime) -> None:
    profile = orjson.loads(load_thresholds("default").model_dump_json())
    profile["version"] = "7-test"
    custom = tmp_path / "custom.json"
    custom.write_bytes(orjson.dumps(profile))
    path = write(tmp_path / "frames.jsonl", two_workers(start))
    result = invoke(str(path), "--thresholds", str(custom))
    assert result.exit_code == 0, result.output
    assert {r["thresholds_version"] for r in rows(result.stdout)} == {"default@7-test"}


def test_table_lists_each_worker(tmp_path: Path, start: datetime) -> None:
    path = write(tmp_path / "frames.jsonl", two_workers(start))
    result = invoke(str(path), "--format", "table")
    assert result.exit_code == 0, result.output
    assert "w-a" in result.stdout and "w-b" in result.stdout
    assert result.stdout.index("w-a") < result.stdout.index("w-b")
    assert "default@1" in result.stdout
    # w-a: arms not acceptable 18 of 24 s (75.0 %), trunk never
    a_row = next(line for line in result.stdout.splitlines() if "w-a" in line)
    assert "75.0" in a_row and "0:00:24" in a_row


def test_event_ids_are_per_worker(start: datetime) -> None:
    shared = uuid.uuid4()
    docs = [frame(w, start, n=N, rate_hz=RATE, event_id=shared) for w in ("w-a", "w-b")]
    assert [(r["worker_id"], r["frames"], r["duplicates"]) for r in score(docs)] == [
        ("w-a", 1, 0),
        ("w-b", 1, 0),
    ]
