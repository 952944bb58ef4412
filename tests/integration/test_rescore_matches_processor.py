"""Offline rescoring gives exactly the processor's messages.

The same frames go to the real processor (Apache Kafka, InfluxDB, `strainwatch processor`) and, as a
file in topic order, through `strainwatch exposure score --emit`: every closed window on
exposure.windows.v1 and every alert on alerts.break.v1 must be byte for byte what the file run
emitted. The workload has out-of-order frames within the lateness, a late frame, a redelivered
event id, an invalid frame, and postures that raise posture_hold and conditioning_break alerts.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from typer.testing import CliRunner

from strainwatch.cli import app
from strainwatch.topics import ALERTS_BREAK, EXPOSURE_WINDOWS, POSTURE_EVENTS
from tests.integration.conftest import Broker, Influx, processor_env
from tests.support import aligned_start, encode, frame, wait_for

pytestmark = pytest.mark.integration

SECONDS = 60  # per worker, one 1 s frame a second
# every segment not acceptable: posture_hold nudges after 10 s, a conditioning_break within a minute
STRAINED = {
    "trunk_flexion": 70.0,
    "trunk_lateral": 40.0,
    "trunk_twist": -30.0,
    "neck_flexion": 50.0,
    "arm_elevation_left": 100.0,
    "arm_elevation_right": 70.0,
}
MIXED = {"trunk_flexion": 35.0, "neck_flexion": 30.0, "arm_elevation_left": 70.0, "arm_elevation_right": 10.0}
NEUTRAL = {"trunk_flexion": 5.0, "neck_flexion": 10.0}


def workload() -> list[tuple[bytes | None, bytes]]:
    """Three workers' frames interleaved as they would arrive, with the faults listed above."""
    start = aligned_start(hours_ago=3)
    per_worker: dict[str, list[dict[str, Any]]] = {
        "w-strained": [
            frame("w-strained", start + timedelta(seconds=i), angles=STRAINED) for i in range(SECONDS)
        ],
        "w-mixed": [
            frame("w-mixed", start + timedelta(seconds=i), n=25, rate_hz=25.0, angles=MIXED)
            for i in range(SECONDS)
        ],
        "w-calm": [frame("w-calm", start + timedelta(seconds=i), angles=NEUTRAL) for i in range(SECONDS)],
    }
    strained, mixed = per_worker["w-strained"], per_worker["w-mixed"]
    # out of order within the lateness: the reorder buffer merges them in event time
    strained[20], strained[23] = strained[23], strained[20]
    mixed[8], mixed[9] = mixed[9], mixed[8]
    messages: list[tuple[bytes | None, bytes]] = []
    for i in range(SECONDS):
        for worker, docs in per_worker.items():
            messages.append((worker.encode(), encode(docs[i])))
        if i == 30:
            messages.append((b"w-strained", encode(strained[27])))  # a redelivery: duplicate event id
            # late: overlaps samples already scored
            late = frame("w-calm", start + timedelta(seconds=12), angles=STRAINED)
            messages.append((b"w-calm", encode(late)))
            messages.append((b"w-mixed", b'{"schema_version": 1}'))  # invalid: missing fields
    return messages


def rescore_offline(messages: list[tuple[bytes | None, bytes]], tmp_path: Path) -> Path:
    dump = tmp_path / "posture-events.jsonl"
    dump.write_bytes(b"".join(value + b"\n" for _, value in messages))
    out = tmp_path / "offline"
    result = CliRunner().invoke(app, ["exposure", "score", str(dump), "--emit", str(out)])
    assert result.exit_code == 1, result.output  # the late and the invalid frame
    assert [line.split(":")[1].strip() for line in result.stderr.splitlines()[:2]] == [
        "late",
        "missing_field",
    ]
    return out


def produce(bootstrap: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    for key, value in messages:
        producer.send(POSTURE_EVENTS.name, key=key, value=value)
    producer.flush(30)
    producer.close()


class TopicReader:
    """Every message of some topics from the beginning, read as it arrives (no consumer group)."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, consumer_timeout_ms=500
        )
        parts = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(self.consumer.partitions_for_topic(topic))
        ]
        self.consumer.assign(parts)
        self.consumer.seek_to_beginning(*parts)
        self.values: dict[str, list[tuple[bytes, bytes]]] = defaultdict(list)

    def poll(self) -> dict[str, list[tuple[bytes, bytes]]]:
        for batch in self.consumer.poll(timeout_ms=500).values():
            for record in batch:
                self.values[record.topic].append((record.key, record.value))
        return self.values

    def close(self) -> None:
        self.consumer.close()


def by_worker(messages: list[tuple[bytes, bytes]] | list[bytes]) -> dict[str, list[bytes]]:
    """Messages per worker in order: the processor keeps each worker's order (one partition)."""
    grouped: dict[str, list[bytes]] = defaultdict(list)
    for item in messages:
        value = item[1] if isinstance(item, tuple) else item
        grouped[orjson.loads(value)["worker_id"]].append(value)
    return dict(grouped)


def test_rescoring_a_topic_dump_gives_the_processors_windows_and_alerts(
    kafka: Broker, influx: Influx, run_processor: Any, tmp_path: Path
) -> None:
    messages = workload()
    offline = rescore_offline(messages, tmp_path)
    windows = (offline / "exposure-windows.jsonl").read_bytes().splitlines()
    alerts = (offline / "break-alerts.jsonl").read_bytes().splitlines()
    kinds = {orjson.loads(a)["kind"] for a in alerts}
    assert kinds == {"posture_hold", "conditioning_break"}, "the workload should raise both kinds"
    assert len(windows) == 3 * (SECONDS // 10 - 1)  # each worker's last window stays open

    produce(kafka.bootstrap, messages)
    database = influx.new_database()
    proc = run_processor(processor_env(kafka, influx, database, tmp_path / "state"))
    reader = TopicReader(kafka.bootstrap, [EXPOSURE_WINDOWS.name, ALERTS_BREAK.name])
    try:
        got = wait_for(
            lambda: (
                (proc.running() or pytest.fail(proc.log()))
                and (values := reader.poll())
                and len(values[EXPOSURE_WINDOWS.name]) >= len(windows)
                and len(values[ALERTS_BREAK.name]) >= len(alerts)
                and values
            ),
            timeout_s=45,
            what=f"{len(windows)} windows and {len(alerts)} alerts from the processor",
        )
    finally:
        reader.close()
    assert proc.terminate() == 0, proc.log()

    assert all(key == orjson.loads(value)["worker_id"].encode() for key, value in got[EXPOSURE_WINDOWS.name])
    assert by_worker(got[EXPOSURE_WINDOWS.name]) == by_worker(windows)
    assert by_worker(got[ALERTS_BREAK.name]) == by_worker(alerts)
