"""The gateway's producer counts frames the broker acknowledged, and fails when one was not.

`produce()` used to count a frame when `send()` returned (the frame merely queued): a frame the
broker refused still counted as produced, and the demo then waited for a frame that never existed.
"""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from strainwatch.events import DeadReason
from strainwatch.fleet.producer import ProduceError, produce, produce_roster
from strainwatch.fleet.simulator import FleetSimulator, SimConfig, SimFrame
from strainwatch.topics import POSTURE_EVENTS, ROSTER
from tests.integration.conftest import Broker
from tests.support import aligned_start, wait_for

pytestmark = pytest.mark.integration


def _frames(n_seconds: int, invalid_rate: float = 0.0) -> list[SimFrame]:
    cfg = SimConfig(
        workers=3,
        duration_s=n_seconds,
        start=aligned_start(hours_ago=1.0),
        invalid_rate=invalid_rate,
        shifts=False,
        seed=5,
    )
    return list(FleetSimulator(cfg).frames())


class _Reader:
    """Reads a topic from the beginning (Tansu's offsets do not count records, so count records)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        partitions = self.consumer.partitions_for_topic(topic) or set()
        self.consumer.assign([TopicPartition(topic, p) for p in partitions])
        self.seen = 0
        self.values: list[bytes] = []

    def count(self) -> int:
        for records in self.consumer.poll(timeout_ms=500).values():
            self.seen += len(records)
            self.values.extend(record.value for record in records)
        return self.seen

    def at_end(self) -> bool:
        """Kafka only: every partition's position is its end offset."""
        self.count()
        assigned = self.consumer.assignment()
        ends = self.consumer.end_offsets(list(assigned))
        return all(self.consumer.position(tp) >= ends[tp] for tp in assigned)

    def close(self) -> None:
        self.consumer.close()


def _messages_in(bootstrap: str, topic: str, expected: int) -> int:
    """Records in the topic once `expected` arrived (or the wait timed out), plus any beyond."""
    reader = _Reader(bootstrap, topic)
    try:
        wait_for(lambda: reader.count() >= expected, timeout_s=30, what=f"{expected} records in {topic}")
        return reader.count()
    finally:
        reader.close()


def _records_in_kafka(bootstrap: str, topic: str) -> int:
    reader = _Reader(bootstrap, topic)
    try:
        wait_for(reader.at_end, timeout_s=30, what=f"reading {topic} to its end")
        return reader.seen
    finally:
        reader.close()


def test_every_delivered_frame_counts(broker: Broker) -> None:
    frames = _frames(40, invalid_rate=0.1)
    stats = produce(frames, broker.bootstrap, POSTURE_EVENTS.name)
    assert stats.frames_produced == len(frames)
    assert _messages_in(broker.bootstrap, POSTURE_EVENTS.name, len(frames)) == len(frames)
    invalid = [f for f in frames if f.expected_reason is not None]
    assert stats.invalid_frames == len(invalid) > 0
    assert stats.valid_frames == len(frames) - len(invalid)
    assert stats.valid_samples == sum(f.n_samples for f in frames if f.expected_reason is None)
    assert sum(stats.by_reason.values()) == len(invalid)


def test_a_refused_frame_fails_the_run_and_is_not_counted(kafka: Broker) -> None:
    """Apache Kafka refuses a record batch above the topic's max.message.bytes (Tansu has no limit)."""
    frames = _frames(20)
    # above the topic's 1 MiB limit, below the producer's 4 MiB max_request_size: only the broker refuses it
    too_large = replace(
        frames[5], value=b"x" * (POSTURE_EVENTS.max_message_bytes + 1), expected_reason=DeadReason.OVERSIZED
    )
    with pytest.raises(ProduceError) as raised:
        produce([*frames[:10], too_large, *frames[10:]], kafka.bootstrap, POSTURE_EVENTS.name)
    message = str(raised.value)
    assert "not delivered" in message and "MessageSizeTooLargeError" in message, message
    stats = raised.value.stats
    assert stats is not None
    # the count is what the broker holds, never the refused frame
    assert stats.frames_produced == _records_in_kafka(kafka.bootstrap, POSTURE_EVENTS.name)
    assert stats.frames_produced <= len(frames)
    assert stats.invalid_frames == 0


def test_roster_counts_acknowledged_entries(broker: Broker) -> None:
    sim = FleetSimulator(SimConfig(workers=5, duration_s=0, shifts=False))
    assert produce_roster(sim.roster(), broker.bootstrap, ROSTER.name) == 5
    reader = _Reader(broker.bootstrap, ROSTER.name)
    try:
        wait_for(lambda: reader.count() >= 5, timeout_s=30, what="5 roster entries")
        assert reader.count() == 5
        # every field of the entry reaches the topic, the task (reports rank tasks) included
        tasks = {orjson.loads(value)["worker_id"]: orjson.loads(value)["task"] for value in reader.values}
        assert tasks == {w.worker_id: w.task for w in sim.workers}
    finally:
        reader.close()
