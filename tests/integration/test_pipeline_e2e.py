"""End to end through a real broker (Tansu and Apache Kafka) and a real InfluxDB.

A known set of frames, valid and invalid, goes in; every valid frame must be counted exactly once
in InfluxDB and every invalid one must sit in the dead-letter topic with its reason and original
bytes; nothing else.
"""

from __future__ import annotations

import base64
import copy
from collections import Counter
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from strainwatch.topics import POSTURE_DEADLETTER, POSTURE_EVENTS, ROSTER
from tests.integration.conftest import Broker, Influx, processor_env
from tests.support import FOUR_SEGMENTS, aligned_start, encode, frame, wait_for

pytestmark = pytest.mark.integration


def known_frames() -> tuple[list[tuple[bytes, bytes]], dict[str, int], Counter[str]]:
    """(key, value) messages in send order; expected valid samples per segment; expected reasons."""
    start = aligned_start(hours_ago=3)
    messages: list[tuple[bytes, bytes]] = []
    samples: Counter[str] = Counter()
    workers = {
        "w-a1": dict.fromkeys(FOUR_SEGMENTS, 30.0),
        "w-b2": {"trunk_flexion": 45.0},  # back sensor only
        "w-c3": {
            "trunk_flexion": 5.0,
            "neck_flexion": 35.0,
            "arm_elevation_left": 100.0,
            "arm_elevation_right": 95.0,
        },
    }
    valid_docs = []
    for i in range(25):  # 25 one-second frames per worker: three windows of 10 s
        for worker, angles in workers.items():
            doc = frame(worker, start + timedelta(seconds=i), angles=angles)
            valid_docs.append(doc)
            messages.append((worker.encode(), encode(doc)))
            for segment in angles:
                samples[segment] += 10
    reasons: Counter[str] = Counter()

    def bad(worker: str, raw: bytes, reason: str) -> None:
        messages.append((worker.encode(), raw))
        reasons[reason] += 1

    base = frame("w-a1", start + timedelta(seconds=100))
    bad("w-a1", encode(base)[:-7], "malformed_json")
    bad("w-a1", encode({**base, "schema_version": 2}), "unsupported_schema_version")
    bad("w-a1", encode({k: v for k, v in base.items() if k != "site_id"}), "missing_field")
    bad("w-a1", encode({**base, "colour": "red"}), "unknown_field")
    bad("w-a1", encode({**base, "event_id": "not-a-uuid"}), "invalid_field")
    out_of_range = copy.deepcopy(base)
    out_of_range["samples"]["arm_elevation_left"][3] = 181.0
    bad("w-a1", encode(out_of_range), "out_of_range")
    nan = encode(base).replace(b"[10.0,", b"[NaN,", 1)
    bad("w-a1", nan, "not_finite")
    mismatch = copy.deepcopy(base)
    mismatch["samples"]["neck_flexion"] = mismatch["samples"]["neck_flexion"][:-1]
    bad("w-a1", encode(mismatch), "length_mismatch")
    bad("w-a1", encode({**base, "samples": {}}), "no_segments")
    bad("w-a1", encode(frame("w-a1", start + timedelta(days=3))), "future_timestamp")
    bad("w-a1", encode(frame("w-a1", start, n=7_000, angles={"trunk_flexion": 1.0})), "oversized")
    bad("w-zz", encode(frame("w-a1", start + timedelta(seconds=200))), "invalid_field")  # key != worker
    # a frame overlapping samples already scored (new event id): late
    bad("w-b2", encode(frame("w-b2", start + timedelta(seconds=3), angles={"trunk_flexion": 45.0})), "late")
    # an exact redelivery of a frame (same event id): dropped and counted, never dead-lettered
    messages.append((b"w-c3", encode(valid_docs[-1])))
    return messages, dict(samples), reasons


def produce(bootstrap: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4 * 1024 * 1024)
    for n, (key, value) in enumerate(messages):
        producer.send(POSTURE_EVENTS.name, key=key, value=value)
        if n == 36:  # a roster update mid-stream: team tags change at most between windows
            for worker in ("w-a1", "w-c3"):
                entry = {
                    "schema_version": 1,
                    "worker_id": worker,
                    "site_id": "plant-1",
                    "team": "team-x",
                    "shift": "day",
                }
                producer.send(ROSTER.name, key=worker.encode(), value=orjson.dumps(entry))
    producer.flush(30)
    producer.close()


def read_dead_letters(bootstrap: str, expected: int, timeout_s: float = 60.0) -> list[dict[str, object]]:
    consumer = KafkaConsumer(
        POSTURE_DEADLETTER.name,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=1_000,
    )
    letters: list[dict[str, object]] = []

    def enough() -> bool:
        for record in consumer:
            letters.append(orjson.loads(record.value))
        return len(letters) >= expected

    try:
        wait_for(enough, timeout_s=timeout_s, what=f"{expected} dead letters", interval_s=0)
        for record in consumer:  # anything beyond the expected is a failure too
            letters.append(orjson.loads(record.value))
    finally:
        consumer.close()
    return letters


def test_known_frames_counted_exactly_once(
    broker: Broker, influx: Influx, run_processor, tmp_path: Path
) -> None:
    messages, samples, reasons = known_frames()
    database = influx.new_database()
    produce(broker.bootstrap, messages)
    proc = run_processor(processor_env(broker, influx, database, tmp_path / "state"))
    ql = influx.ql(database)
    valid_frames = 75

    def frames_stored() -> float | None:
        assert proc.running(), proc.log()
        try:
            total = ql.scalar('SELECT SUM("frames") FROM "windows"."exposure"')
        except Exception:
            return None
        return total if total >= valid_frames else None

    wait_for(frames_stored, timeout_s=90, what="all valid frames in InfluxDB")
    letters = read_dead_letters(broker.bootstrap, sum(reasons.values()))

    # the processor's health points count the same frames (written every 10 s)
    def health_counted() -> bool:
        return ql.scalar('SELECT SUM("frames_in") FROM "pipeline"') >= len(messages)

    wait_for(health_counted, timeout_s=60, what="pipeline health points")
    assert proc.terminate(timeout_s=30) == 0, proc.log()
    assert ql.scalar('SELECT SUM("frames_in") FROM "pipeline"') == len(messages)
    assert ql.scalar('SELECT SUM("frames_processed") FROM "pipeline"') == valid_frames
    by_reason = {
        s["tags"]["reason"]: s["values"][0][1]
        for s in ql.query('SELECT SUM("count") FROM "dead_letter" GROUP BY "reason"')
    }
    assert by_reason == {str(reason): count for reason, count in reasons.items()}

    assert ql.scalar('SELECT SUM("frames") FROM "windows"."exposure"') == valid_frames
    for segment, count in samples.items():
        assert ql.scalar(f'SELECT SUM("samples_{segment}") FROM "windows"."exposure"') == count, segment
    assert ql.scalar('SELECT SUM("wear_s") FROM "windows"."exposure"') == pytest.approx(75.0)
    workers = {
        s["tags"]["worker"]
        for s in ql.query('SELECT SUM("frames") FROM "windows"."exposure" GROUP BY "worker"')
    }
    assert workers == {"w-a1", "w-b2", "w-c3"}

    assert Counter(str(letter["reason"]) for letter in letters) == reasons
    produced = {value for _, value in messages}
    for letter in letters:
        assert base64.b64decode(str(letter["original_b64"])) in produced
        assert letter["source_topic"] == POSTURE_EVENTS.name
        assert isinstance(letter["source_offset"], int)
        assert base64.b64decode(str(letter["key_b64"])) in {key for key, _ in messages}


def test_processor_exits_on_bad_threshold_profile(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "strainwatch.cli", "processor", "--thresholds", "no-such-profile"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no-such-profile" in result.stderr
