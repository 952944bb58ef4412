"""`strainwatch exposure score`: a file of frames scored per worker as the engine scores them."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from strainwatch.cli import app
from strainwatch.events import PostureFrame
from strainwatch.exposure import ExposureEngine, load_thresholds
from strainwatch.exposure_cli import iso_ms, score_frames
from tests.support import aligned_start, frame

pytestmark = pytest.mark.unit

RATE = 10.0
N = 60  # 6 s per frame
# arms not acceptable (held 18 s > the 10 s limit: a violation), neck conditional, trunk acceptable
A_ANGLES = {
    "trunk_flexion": 10.0,
    "neck_flexion": 30.0,
    "arm_elevation_left": 70.0,
    "arm_elevation_right": 70.0,
}
B_ANGLES = {"trunk_flexion": 30.0, "neck_flexion": 10.0}


def write(path: Path, docs: list[dict[str, Any] | bytes]) -> Path:
    path.write_bytes(b"".join((d if isinstance(d, bytes) else orjson.dumps(d)) + b"\n" for d in docs))
    return path


def invoke(*args: str) -> Any:
    # COLUMNS: rich sizes the table to it; wide enough that no cell is folded
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["exposure", "score", *args])
    return result


def rows(stdout: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.fixture
def start() -> datetime:
    # aligned to an hour: the direct engine run below sees every sample in one window
    return aligned_start(hours_ago=3, window_s=3600)


def two_workers(start: datetime) -> list[dict[str, Any]]:
    a = [frame("w-a", start + timedelta(seconds=6 * i), n=N, rate_hz=RATE, angles=A_ANGLES) for i in range(3)]
    b = [frame("w-b", start + timedelta(seconds=6 * i), n=N, rate_hz=RATE, angles=B_ANGLES) for i in range(3)]
    return [b[2], a[1], b[0], a[2], a[0], b[1]]  # interleaved, out of order


def direct(docs: list[dict[str, Any]], profile: str = "default") -> dict[str, Any]:
    """The engine run by hand over one worker's frames in order, all in one hour-long window."""
    engine = ExposureEngine(load_thresholds(profile), window_s=3600)
    state = engine.new_state()
    outcomes = []
    for doc in sorted(docs, key=lambda d: d["start_ts"]):
        f = PostureFrame.model_validate(doc)
        outcomes.append(engine.process(state, f.start_ts.timestamp(), f.rate_hz, f.samples.present()))
    outcomes.append(engine.finish(state))
    (window,) = [w for o in outcomes for w in o.closed]
    return {
        "window": window,
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

    # concrete values: 3 frames × 60 samples at 10 Hz
    for r in (a, b):
        assert r["frames"] == 3
        assert r["wear_s"] == 3 * N / RATE == 18.0
        assert r["thresholds_version"] == "default@1"
    assert a["samples"] == dict.fromkeys(A_ANGLES, 3 * N)
    assert a["zone_s"]["arm_elevation_left"] == {
        "acceptable": 0.0,
        "conditional": 0.0,
        "not_acceptable": 18.0,
    }
    assert a["zone_s"]["neck_flexion"] == {"acceptable": 0.0, "conditional": 18.0, "not_acceptable": 0.0}
    assert a["zone_s"]["trunk_flexion"] == {"acceptable": 18.0, "conditional": 0.0, "not_acceptable": 0.0}
    assert a["cutpoints_s"]["arm_elevation_right"] == {"gt30": 18.0, "gt60": 18.0, "gt90": 0.0}
    assert a["cutpoints_s"]["neck_flexion"] == {"gt20": 18.0, "gt45": 0.0}
    # both arms held 18 s in the not-acceptable zone: over the 10 s limit
    assert a["violations"] == [
        {"segment": side, "start": iso_ms(start.timestamp()), "duration_s": 18.0, "mean_angle": 70.0}
        for side in ("arm_elevation_left", "arm_elevation_right")
    ]
    assert {(x["kind"], x["segment"]) for x in a["alerts"]} == {
        ("posture_hold", "arm_elevation_left"),
        ("posture_hold", "arm_elevation_right"),
    }
    assert all(x["ts"].endswith("Z") and len(x["ts"]) == len("2024-01-01T00:00:10.000Z") for x in a["alerts"])
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
        assert [(x["kind"], x["ts"], x["segment"]) for x in r["alerts"]] == [
            (x.kind, iso_ms(x.ts_s), x.segment) for x in ref["alerts"]
        ]


def test_input_order_does_not_matter(start: datetime) -> None:
    docs = two_workers(start)
    frames = [PostureFrame.model_validate(d) for d in docs]
    thresholds = load_thresholds("default")
    in_order = sorted(frames, key=lambda f: (f.worker_id, f.start_ts))
    assert score_frames(frames, thresholds, 10) == score_frames(in_order, thresholds, 10)
    # the window length only splits the aggregation: totals are the same
    assert score_frames(frames, thresholds, 10) == score_frames(frames, thresholds, 60)


def test_invalid_lines_are_reported_by_number_and_the_rest_scored(tmp_path: Path, start: datetime) -> None:
    first = frame("w-a", start, n=N, rate_hz=RATE, angles=A_ANGLES)
    bad_range = frame("w-a", start + timedelta(seconds=6), n=N, rate_hz=RATE, angles={"neck_flexion": 120.0})
    overlapping = frame("w-a", start + timedelta(seconds=3), n=N, rate_hz=RATE, angles=A_ANGLES)
    second = frame("w-a", start + timedelta(seconds=6), n=N, rate_hz=RATE, angles=A_ANGLES)
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
        ],
    )
    result = invoke(str(path))
    assert result.exit_code == 1
    errors = result.stderr.splitlines()
    assert errors[0].startswith("line 2: out_of_range: samples.neck_flexion.0")
    assert errors[1].startswith("line 3: malformed_json: ")
    assert errors[2].startswith("line 5: late: frame at ")
    assert errors[3] == "3 invalid line(s) skipped"
    assert len(errors) == 4
    (r,) = rows(result.stdout)
    assert r["frames"] == 2
    assert r["duplicates"] == 1
    assert r["overlapping"] == 1
    assert r["wear_s"] == 2 * N / RATE == 12.0


def test_unknown_profile_and_bad_arguments_exit_2(tmp_path: Path, start: datetime) -> None:
    path = write(tmp_path / "frames.jsonl", two_workers(start))
    result = invoke(str(path), "--thresholds", "no-such-profile")
    assert result.exit_code == 2
    assert "unknown thresholds 'no-such-profile'" in result.output
    assert invoke(str(tmp_path / "missing.jsonl")).exit_code == 2
    assert invoke(str(path), "--format", "xml").exit_code == 2
    assert invoke(str(path), "--window-s", "0").exit_code == 2


def test_profiles_name_their_version_and_score_differently(tmp_path: Path, start: datetime) -> None:
    path = write(tmp_path / "frames.jsonl", two_workers(start))
    default = rows(invoke(str(path), "--thresholds", "default").stdout)[0]
    strict = rows(invoke(str(path), "--thresholds", "iso11226-strict").stdout)[0]
    assert default["thresholds_version"] == "default@1"
    assert strict["thresholds_version"] == "iso11226-strict@1"
    # neck at 30°: conditional in the default profile, not acceptable as ISO 11226 is written
    assert default["zone_s"]["neck_flexion"]["conditional"] == 18.0
    assert strict["zone_s"]["neck_flexion"]["not_acceptable"] == 18.0
    assert "neck_flexion" in {v["segment"] for v in strict["violations"]}
    assert "neck_flexion" not in {v["segment"] for v in default["violations"]}


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
    # w-a: arms not acceptable all the time (100.0 %), trunk never
    a_row = next(line for line in result.stdout.splitlines() if "w-a" in line)
    assert "100.0" in a_row and "0:00:18" in a_row


def test_event_ids_are_per_worker(start: datetime) -> None:
    shared = uuid.uuid4()
    frames = [
        PostureFrame.model_validate(frame(w, start, n=N, rate_hz=RATE, event_id=shared))
        for w in ("w-a", "w-b")
    ]
    out = score_frames(frames, load_thresholds("default"), 10)
    assert [(r["worker_id"], r["frames"], r["duplicates"]) for r in out] == [("w-a", 1, 0), ("w-b", 1, 0)]
