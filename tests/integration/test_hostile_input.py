"""Hostile input on real components: Apache Kafka, InfluxDB, `strainwatch processor` as deployed.

Frames built to hurt (100k nested brackets, 50k nested objects, invalid UTF-8, 120,000 samples,
an oversized frame, a 12 MB value inflated from a 1 MiB gzip batch, a key of 600 kB) go to
posture.events.v1 between valid frames. The processor dead-letters each with its reason, keeps
scoring the valid ones, and its memory stays bounded; every dead letter is one the broker
accepted, the inflated one cut to the bound and flagged. The gateway's letters for payloads a
site's own MQTT broker might pass are accepted by the broker too. And the atheris fuzz target
runs for a short budget without a crash.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from strainwatch.events import DEAD_LETTER_MAX_ORIGINAL_BYTES, DeadLetter, DeadReason
from strainwatch.gateway.routing import Bindings, route_frame
from strainwatch.topics import POSTURE_DEADLETTER, POSTURE_EVENTS, PROCESSOR_MAX_REQUEST_BYTES
from tests.integration.conftest import Broker, Influx, processor_env
from tests.integration.pipeline import stored_frames
from tests.support import aligned_start, encode, frame, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INFLATED_BYTES = 12 * 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def send(bootstrap: str, messages: list[tuple[bytes | None, bytes]], **config: Any) -> None:
    settings = {"acks": "all", "max_request_size": PROCESSOR_MAX_REQUEST_BYTES, **config}
    producer = KafkaProducer(bootstrap_servers=bootstrap, **settings)
    try:
        for future in [producer.send(POSTURE_EVENTS.name, key=k, value=v) for k, v in messages]:
            future.get(timeout=60)  # raises if the broker refused it
    finally:
        producer.close(timeout=10)


def read_letters(bootstrap: str, expected: int) -> list[tuple[bytes | None, bytes]]:
    consumer = KafkaConsumer(
        POSTURE_DEADLETTER.name,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=1_000,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    letters: list[tuple[bytes | None, bytes]] = []

    def enough() -> bool:
        letters.extend((record.key, record.value) for record in consumer)
        return len(letters) >= expected

    try:
        wait_for(enough, timeout_s=120, what=f"{expected} dead letters", interval_s=0)
        letters.extend((record.key, record.value) for record in consumer)  # and no more
    finally:
        consumer.close()
    return letters


def hostile_frames(worker: str) -> dict[str, tuple[bytes | None, bytes, DeadReason]]:
    """name -> (key, value, the reason the processor must give)."""
    doc = frame(worker, aligned_start(hours_ago=1))
    many = dict(doc, samples={"trunk_flexion": [1] * 120_000})
    big = dict(doc, samples={"trunk_flexion": [1] * 6_000}, firmware=None, padding="x" * 300_000)
    return {
        "100k-brackets": (worker.encode(), b"[" * 100_000, DeadReason.MALFORMED_JSON),
        "50k-nested-objects": (worker.encode(), b'{"a":' * 50_000, DeadReason.MALFORMED_JSON),
        "invalid-utf8": (
            worker.encode(),
            encode(doc).replace(b'"plant-1"', b'"plant-\xff\xfe"'),
            DeadReason.MALFORMED_JSON,
        ),
        "120k-samples": (worker.encode(), encode(many), DeadReason.OVERSIZED),
        "over-max-frame-bytes": (worker.encode(), encode(big), DeadReason.OVERSIZED),
        "600k-key": (b"k" * 600_000, b"{" * 400_000, DeadReason.OVERSIZED),
    }


def test_hostile_frames_are_dead_lettered_with_bounded_memory(
    kafka: Broker, influx: Influx, run_processor: Any, tmp_path: Path
) -> None:
    database = influx.new_database()
    ql = influx.ql(database)
    worker = "w-hostile"
    start = aligned_start(hours_ago=1)
    before = [(worker.encode(), encode(frame(worker, start + timedelta(seconds=s)))) for s in range(20)]
    after = [(worker.encode(), encode(frame(worker, start + timedelta(seconds=s)))) for s in range(20, 40)]
    hostile = hostile_frames(worker)

    proc = run_processor(processor_env(kafka, influx, database, tmp_path / "state"))
    send(kafka.bootstrap, before)
    wait_for(
        lambda: (proc.running() or pytest.fail(proc.log())) and stored_frames(ql) >= len(before),
        timeout_s=120,
        what="the first valid frames stored",
    )
    rss_warm = rss_bytes(proc.popen.pid)

    send(kafka.bootstrap, [(key, value) for key, value, _ in hostile.values()])
    # 12 MB of one byte, gzip'd: a record batch of about 12 kB, well within the topic's 1 MiB limit
    inflated = b"[" * INFLATED_BYTES
    # (kafka-python checks the uncompressed size against max_request_size: the broker does not)
    send(kafka.bootstrap, [(worker.encode(), inflated)], compression_type="gzip", max_request_size=2**25)
    send(kafka.bootstrap, after)

    letters = read_letters(kafka.bootstrap, len(hostile) + 1)
    wait_for(
        lambda: (proc.running() or pytest.fail(proc.log())) and stored_frames(ql) >= len(before) + len(after),
        timeout_s=120,
        what="the valid frames after the hostile ones stored",
    )
    rss_after = rss_bytes(proc.popen.pid)
    assert proc.running(), proc.log()
    assert stored_frames(ql) == len(before) + len(after)

    assert len(letters) == len(hostile) + 1, [orjson.loads(v)["reason"] for _, v in letters]
    parsed = [(key, DeadLetter.model_validate_json(value), value) for key, value in letters]
    by_original: dict[bytes, tuple[bytes | None, DeadLetter]] = {}
    for key, letter, value in parsed:
        assert len(value) + len(key or b"") <= POSTURE_DEADLETTER.max_message_bytes
        by_original[base64.b64decode(letter.original_b64)] = (key, letter)
    for name, (key, value, reason) in hostile.items():
        kept_key, letter = by_original[value]
        assert letter.reason is reason, (name, letter.detail)
        assert not letter.original_truncated and kept_key == key, name
    cut = [(k, letter) for k, letter, _ in parsed if letter.original_truncated]
    assert len(cut) == 1
    key, letter = cut[0]
    assert letter.reason is DeadReason.OVERSIZED and letter.original_size == INFLATED_BYTES
    assert key == worker.encode()
    assert len(base64.b64decode(letter.original_b64)) == DEAD_LETTER_MAX_ORIGINAL_BYTES - len(key)

    # the largest value was 12 MB: held by the consumer's fetch, once by the Runtime's letter; a
    # processor that parsed it or kept it would grow by many times that
    growth = rss_after - rss_warm
    assert growth < 8 * INFLATED_BYTES, f"RSS grew {growth} bytes (warm {rss_warm})"
    assert proc.terminate() == 0, proc.log()


def test_gateway_letters_of_huge_payloads_are_accepted(kafka: Broker) -> None:
    """What a site's own MQTT broker (no 1 MB packet limit) could pass: the letters still fit."""
    bindings = Bindings()
    roster = {"schema_version": 1, "worker_id": "w-1", "site_id": "s", "team": "t", "shift": "A"}
    bindings.apply(b"w-1", orjson.dumps(dict(roster, device_id="d-1")))
    now = aligned_start(hours_ago=0)
    records = [
        # bound device, oversized payload; unbound device naming a 3 MB worker id; a 60 kB topic
        route_frame("d-1", "devices/d-1/frames", b"{" * (6 * 1024 * 1024), bindings, now),
        route_frame("d-9", "devices/d-9/frames", orjson.dumps({"worker_id": "w" * 3_000_000}), bindings, now),
        route_frame("d" * 60_000, f"devices/{'d' * 60_000}/frames", b"[" * 2_000_000, bindings, now),
    ]
    producer = KafkaProducer(
        bootstrap_servers=kafka.bootstrap, acks="all", max_request_size=PROCESSOR_MAX_REQUEST_BYTES
    )
    try:
        for record in records:
            assert record.topic == POSTURE_DEADLETTER.name
            letter = DeadLetter.model_validate_json(record.value)
            assert letter.original_truncated and letter.original_size
            producer.send(record.topic, key=record.key, value=record.value).get(timeout=60)
    finally:
        producer.close(timeout=10)
    assert len(read_letters(kafka.bootstrap, len(records))) == len(records)


def test_fuzz_target_runs_a_short_budget_without_a_crash(tmp_path: Path) -> None:
    """tests/fuzz/fuzz_frames.py (atheris) for 20 s, as `make fuzz` runs it for 60 s."""
    corpus = tmp_path / "corpus"  # where libFuzzer adds inputs; the examples are seeds only
    corpus.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "fuzz" / "fuzz_frames.py"),
            "-max_total_time=20",
            "-rss_limit_mb=1024",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
            str(ROOT / "schemas" / "examples" / "valid"),
            str(ROOT / "schemas" / "examples" / "invalid"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    runs = int(re.search(r"stat::number_of_executed_units:\s+(\d+)", output).group(1))  # type: ignore[union-attr]
    assert runs >= 1_000, output[-2000:]
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("oom-*"))
