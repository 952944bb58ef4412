"""The processor's per-message logic without a broker: validation, order, duplicates, replays."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta

import orjson
import pytest

from strainwatch.exposure import ExposureEngine, load_thresholds
from strainwatch.processor.record import WorkerRecord
from strainwatch.processor.runtime import Runtime, RuntimeConfig
from tests.support import aligned_start, encode, frame

pytestmark = pytest.mark.unit


def make_runtime(lateness_s: float = 30.0) -> tuple[Runtime, dict[str, WorkerRecord]]:
    table: dict[str, WorkerRecord] = {}
    engine = ExposureEngine(load_thresholds("default"), window_s=10)
    return Runtime(engine, RuntimeConfig(allowed_lateness_s=lateness_s), load=table.get), table


def frames_stored(lines: list[str]) -> dict[tuple[str, str], int]:
    """frames per (worker, window timestamp) from exposure lines; later lines overwrite earlier."""
    points: dict[tuple[str, str], int] = {}
    for text in lines:
        if not text.startswith("exposure,"):
            continue
        head, fields, ts = text.split(" ")
        worker = head.split("worker=")[1]
        values = dict(f.split("=") for f in fields.split(","))
        points[(worker, ts)] = int(values["frames"].rstrip("i"))
    return points


def test_every_valid_frame_lands_in_one_window_point() -> None:
    runtime, _ = make_runtime()
    start = aligned_start()
    for i in range(25):
        runtime.on_message(b"w-1", encode(frame("w-1", start + timedelta(seconds=i))), 0, i)
    _, lines = runtime.snapshot()
    points = frames_stored(lines)
    assert sum(points.values()) == 25  # two closed windows of 10 + the open one with 5
    assert sorted(points.values()) == [5, 10, 10]
    assert len(runtime.take_outputs().windows) == 2  # only closed windows go to the topic


def test_replayed_offsets_are_skipped_after_a_restore() -> None:
    runtime, _ = make_runtime()
    start = aligned_start()
    messages = [encode(frame("w-1", start + timedelta(seconds=i))) for i in range(12)]
    for offset, raw in enumerate(messages[:8]):
        runtime.on_message(b"w-1", raw, 0, offset)
    dirty, _ = runtime.snapshot()
    # the checkpoint persisted the record as bytes; a new instance restores it from the table
    persisted = {w: WorkerRecord.from_bytes(r.to_bytes()) for w, r in dirty.items()}
    restarted = Runtime(runtime.engine, runtime.config, load=persisted.get)
    for offset, raw in enumerate(messages):  # the broker redelivers from an older committed offset
        restarted.on_message(b"w-1", raw, 0, offset)
    assert restarted.counters.replayed == 8
    assert restarted.counters.frames_applied == 4
    _, lines = restarted.snapshot()
    assert frames_stored(lines)[("w-1", str(int(start.timestamp()) + 10))] == 2


def test_duplicate_event_id_is_dropped_and_counted() -> None:
    runtime, _ = make_runtime()
    start = aligned_start()
    doc = frame("w-1", start)
    runtime.on_message(b"w-1", encode(doc), 0, 0)
    runtime.on_message(b"w-1", encode(doc), 0, 1)
    assert runtime.counters.duplicates == 1
    assert runtime.counters.frames_applied == 1
    assert not runtime.take_outputs().dead_letters


def test_out_of_order_frame_within_lateness_is_merged_in_event_time() -> None:
    runtime, _ = make_runtime()
    start = aligned_start()
    docs = [frame("w-1", start + timedelta(seconds=i), angles={"trunk_flexion": 30.0 + i}) for i in range(4)]
    for offset, i in enumerate([0, 2, 3, 1]):  # frame 1 arrives late
        runtime.on_message(b"w-1", encode(docs[i]), 0, offset)
    assert runtime.counters.frames_applied == 4
    assert runtime.record_count() == 1
    in_order, _ = make_runtime()
    for offset, doc in enumerate(docs):
        in_order.on_message(b"w-1", encode(doc), 0, offset)
    assert runtime.records["w-1"].state.to_bytes() == in_order.records["w-1"].state.to_bytes()


def test_frame_overlapping_scored_samples_is_dead_lettered_late() -> None:
    runtime, _ = make_runtime()
    start = aligned_start()
    for i in range(5):
        runtime.on_message(b"w-1", encode(frame("w-1", start + timedelta(seconds=i))), 0, i)
    late = encode(frame("w-1", start + timedelta(seconds=2)))
    runtime.on_message(b"w-1", late, 0, 5)
    letters = runtime.take_outputs().dead_letters
    assert len(letters) == 1
    letter = orjson.loads(letters[0][1])
    assert letter["reason"] == "late"
    assert base64.b64decode(letter["original_b64"]) == late
    assert letter["source_offset"] == 5


def test_a_gap_that_never_fills_is_released_after_the_lateness() -> None:
    runtime, _ = make_runtime(lateness_s=5.0)
    start = aligned_start()
    runtime.on_message(b"w-1", encode(frame("w-1", start)), 0, 0)
    # a 3-second gap (frames 1..3 lost), then frames keep coming: they wait while the missing
    # frames could still arrive, i.e. until the buffered frames reach 5 s past the gap's start (1 s)
    for offset, second in enumerate(range(4, 12), start=1):
        runtime.on_message(b"w-1", encode(frame("w-1", start + timedelta(seconds=second))), 0, offset)
        expected = 1 if second + 1 - 1 <= 5 else second - 2
        assert runtime.counters.frames_applied == expected, second
    assert runtime.counters.frames_applied == 9


class FakeMonotonic:
    """The runtime's monotonic clock, moved by the test: the lateness passes without sleeping."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def nothing_stored(worker: str) -> WorkerRecord | None:
    return None


def gap_then_silence(runtime: Runtime) -> datetime:
    """Frame 0, then frame 3 (1 and 2 lost), then the worker sends nothing more."""
    start = aligned_start()
    runtime.on_message(b"w-1", encode(frame("w-1", start)), 0, 0)
    runtime.on_message(b"w-1", encode(frame("w-1", start + timedelta(seconds=3))), 0, 1)
    assert runtime.counters.frames_applied == 1  # frame 3 waits for the gap to fill
    return start


def test_buffered_frames_of_a_worker_that_stops_sending_are_released_after_the_lateness() -> None:
    clock = FakeMonotonic()
    engine = ExposureEngine(load_thresholds("default"), window_s=10)
    runtime = Runtime(engine, RuntimeConfig(allowed_lateness_s=5.0), load=nothing_stored, monotonic=clock)
    start = gap_then_silence(runtime)
    dirty, _ = runtime.snapshot()  # a checkpoint persists the record with frame 3 still buffered
    assert list(dirty) == ["w-1"]
    assert runtime.counters.frames_applied == 1
    clock.now += 4.0
    dirty, lines = runtime.snapshot()
    assert not dirty and not lines  # within the lateness: the gap may still fill
    clock.now += 2.0
    dirty, lines = runtime.snapshot()  # no frame since: only the wall-clock wait releases frame 3
    assert runtime.counters.frames_applied == 2
    assert not runtime.records["w-1"].buffer
    assert dirty["w-1"].last_offset == 1  # persisted with the released frame in its state
    assert frames_stored(lines) == {("w-1", str(int(start.timestamp()))): 2}
    assert runtime.snapshot() == ({}, [])  # released once, and nothing left to check


def test_a_restored_buffer_is_released_after_a_restart_without_new_frames() -> None:
    clock = FakeMonotonic()
    engine = ExposureEngine(load_thresholds("default"), window_s=10)
    config = RuntimeConfig(allowed_lateness_s=5.0)
    runtime = Runtime(engine, config, load=nothing_stored, monotonic=clock)
    start = gap_then_silence(runtime)
    dirty, _ = runtime.snapshot()
    # the instance dies; the next one restores the table (frame 3 in the record's buffer) and the
    # broker has nothing after the committed offset for this worker
    table = {w: WorkerRecord.from_bytes(r.to_bytes()) for w, r in dirty.items()}
    assert len(table["w-1"].buffer) == 1
    restarted = Runtime(engine, config, load=table.get, monotonic=clock)
    restarted.adopt_restored(table.items())
    clock.now += 4.0
    assert restarted.snapshot() == ({}, [])  # the wait starts again at the restore
    clock.now += 2.0
    dirty, lines = restarted.snapshot()
    assert restarted.counters.frames_applied == 1
    assert not dirty["w-1"].buffer and dirty["w-1"].last_offset == 1
    assert frames_stored(lines) == {("w-1", str(int(start.timestamp()))): 2}


def test_a_restored_buffer_loaded_by_a_roster_update_is_released_too() -> None:
    clock = FakeMonotonic()
    engine = ExposureEngine(load_thresholds("default"), window_s=10)
    config = RuntimeConfig(allowed_lateness_s=5.0)
    runtime = Runtime(engine, config, load=nothing_stored, monotonic=clock)
    gap_then_silence(runtime)
    dirty, _ = runtime.snapshot()
    table = {w: WorkerRecord.from_bytes(r.to_bytes()) for w, r in dirty.items()}
    restarted = Runtime(engine, config, load=table.get, monotonic=clock)
    restarted.set_team("w-1", "assembly")  # loads the record lazily, as a frame of the worker would
    restarted.snapshot()
    clock.now += 6.0
    dirty, _ = restarted.snapshot()
    assert restarted.counters.frames_applied == 1
    assert dirty["w-1"].team == "assembly" and not dirty["w-1"].buffer


def test_invalid_frames_become_dead_letters_never_exceptions() -> None:
    runtime, _ = make_runtime()
    for offset, raw in enumerate([b"", b"{", b"null", b"[]", b'{"schema_version": 1}', b"\xff\xfe"]):
        runtime.on_message(b"w-1", raw, 0, offset)
    letters = [orjson.loads(v) for _, v in runtime.take_outputs().dead_letters]
    assert len(letters) == 6
    assert {letter["reason"] for letter in letters} <= {"malformed_json", "missing_field", "invalid_field"}


def test_key_must_match_worker_id() -> None:
    runtime, _ = make_runtime()
    runtime.on_message(b"w-other", encode(frame("w-1", aligned_start())), 3, 9)
    (key, value) = runtime.take_outputs().dead_letters[0]
    assert key == b"w-other"
    assert orjson.loads(value)["reason"] == "invalid_field"


def test_a_roster_update_mid_window_keeps_the_windows_team() -> None:
    roster = {"w-1": "assembly"}
    engine = ExposureEngine(load_thresholds("default"), window_s=10)
    runtime = Runtime(engine, RuntimeConfig(), load={}.get, team_of=roster.get)
    start = aligned_start()
    window_ts = str(int(start.timestamp()))
    next_ts = str(int(start.timestamp()) + 10)

    def teams(lines: list[str], ts: str) -> set[str]:
        return {text.split("team=")[1].split(",")[0] for text in lines if text.endswith(f" {ts}")}

    for i in range(4):
        runtime.on_message(b"w-1", encode(frame("w-1", start + timedelta(seconds=i))), 0, i)
    _, lines = runtime.snapshot()
    assert teams(lines, window_ts) == {"assembly"}

    roster["w-1"] = "packing"
    runtime.set_team("w-1", "packing")  # mid-window: the open window's point keeps its tag
    for i in range(4, 10):
        runtime.on_message(b"w-1", encode(frame("w-1", start + timedelta(seconds=i))), 0, i)
    _, lines = runtime.snapshot()
    assert teams(lines, window_ts) == {"assembly"}

    # the next frame closes the window: its final point and its message keep the team too
    runtime.on_message(b"w-1", encode(frame("w-1", start + timedelta(seconds=10))), 0, 10)
    (closed,) = runtime.take_outputs().windows
    assert orjson.loads(closed[1])["team"] == "assembly"
    _, lines = runtime.snapshot()
    assert teams(lines, window_ts) == {"assembly"}
    assert teams(lines, next_ts) == {"packing"}  # the next window carries the new team

    for i in range(11, 21):
        runtime.on_message(b"w-1", encode(frame("w-1", start + timedelta(seconds=i))), 0, i)
    (second,) = runtime.take_outputs().windows
    assert orjson.loads(second[1])["team"] == "packing"
    assert orjson.loads(runtime.open_window_message("w-1") or b"{}")["team"] == "packing"


def test_a_roster_update_the_record_missed_wins_when_the_record_is_restored() -> None:
    """The roster table has the new team, the record persisted before the update has the old one
    (a restart between the two checkpoints): the restored worker's next windows carry the roster's
    team, and the window that was open keeps the team its point was first written with."""
    engine = ExposureEngine(load_thresholds("default"), window_s=10)
    roster = {"w-1": "assembly"}
    first = Runtime(engine, RuntimeConfig(), load=lambda worker: None, team_of=roster.get)
    start = aligned_start()
    for i in range(4):
        first.on_message(b"w-1", encode(frame("w-1", start + timedelta(seconds=i))), 0, i)
    dirty, _ = first.snapshot()
    persisted = {w: WorkerRecord.from_bytes(r.to_bytes()) for w, r in dirty.items()}

    roster["w-1"] = "packing"  # consumed by the roster agent, then the process died
    restarted = Runtime(engine, RuntimeConfig(), load=persisted.get, team_of=roster.get)
    for i in range(4, 21):
        restarted.on_message(b"w-1", encode(frame("w-1", start + timedelta(seconds=i))), 0, i)
    first_window, second_window = (orjson.loads(v)["team"] for _, v in restarted.take_outputs().windows)
    assert (first_window, second_window) == ("assembly", "packing")
