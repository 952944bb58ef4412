"""The dead-letter topic accepts the dead letter of any frame the posture topic accepts (real Kafka).

The processor dead-letters an invalid frame as JSON carrying its bytes base64-encoded (4/3 larger),
its key and a detail. With the broker's default 1 MiB limit on both topics, a frame near that size
produced a dead letter the broker refused, on every restart: a poison message. Here the largest
frames posture.events.v1 accepts go through the processor's Runtime, and their dead letters are
produced to posture.deadletter.v1 the way the processor's producer sends them.
"""

from __future__ import annotations

import pytest
from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import MessageSizeTooLargeError
from kafka.record.default_records import DefaultRecordBatchBuilder

from strainwatch.events import DeadReason
from strainwatch.exposure.engine import ExposureEngine
from strainwatch.exposure.thresholds import load_thresholds
from strainwatch.processor.runtime import Runtime, RuntimeConfig
from strainwatch.stack.topics import admin_client, ensure_topics, max_message_bytes
from strainwatch.topics import (
    KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
    POSTURE_DEADLETTER,
    POSTURE_EVENTS,
    PROCESSOR_MAX_REQUEST_BYTES,
    dead_letter_max_message_bytes,
)
from tests.integration.conftest import Broker
from tests.support import wait_for

pytestmark = pytest.mark.integration

OFFSET = 2**62  # a long offset: the dead letter's fields at their widest


def _batch_bytes(key: bytes | None, value: bytes) -> int:
    """What the broker compares with max.message.bytes: a one-record, uncompressed batch."""
    record = DefaultRecordBatchBuilder.size_in_bytes(0, 0, key, value, [])
    return DefaultRecordBatchBuilder.header_size_in_bytes() + record


def _largest_frame(limit: int, key_bytes: int) -> tuple[bytes, bytes]:
    """A key of key_bytes and the longest value with which the batch still fits in `limit`."""
    key = b"k" * key_bytes
    value_bytes = limit - _batch_bytes(key, b"")
    while _batch_bytes(key, b"x" * value_bytes) > limit:
        value_bytes -= 1
    return key, b"{" + b"x" * (value_bytes - 1)  # not JSON: it must be dead-lettered


def _send(kafka: Broker, topic: str, key: bytes | None, value: bytes) -> None:
    """One message, acknowledged or raising the broker's error.

    A producer per message: kafka-python's idempotent producer treats a refused batch as fatal
    and aborts whatever it sends next.
    """
    producer = KafkaProducer(
        bootstrap_servers=kafka.bootstrap, acks="all", max_request_size=PROCESSOR_MAX_REQUEST_BYTES
    )
    try:
        producer.send(topic, key=key, value=value).get(timeout=60)
    finally:
        producer.close(timeout=10)


def _limits(kafka: Broker) -> dict[str, int]:
    admin = admin_client(kafka.bootstrap)
    try:
        limits = max_message_bytes(admin, [POSTURE_EVENTS.name, POSTURE_DEADLETTER.name])
    finally:
        admin.close()
    assert limits is not None
    return limits


def _dead_letters(key: bytes, value: bytes) -> list[tuple[bytes | None, bytes]]:
    """The processor's dead letters for this frame: as Runtime emits it, and with the widest detail."""
    runtime = Runtime(ExposureEngine(load_thresholds("default")), RuntimeConfig(), load=lambda _: None)
    runtime.on_message(key, value, 0, OFFSET)
    emitted = runtime.take_outputs().dead_letters
    assert len(emitted) == 1, "an invalid frame is dead-lettered once"
    # the longest detail _dead_letter keeps, every character JSON-escaped to 6 bytes (\u0001)
    runtime._dead_letter(key, value, 2**31 - 1, OFFSET, DeadReason.MALFORMED_JSON, "\x01" * 5_000)
    return emitted + runtime.take_outputs().dead_letters


def test_topics_carry_the_dead_letter_bound(kafka: Broker) -> None:
    limits = _limits(kafka)
    assert limits[POSTURE_EVENTS.name] == POSTURE_EVENTS.max_message_bytes == KAFKA_DEFAULT_MAX_MESSAGE_BYTES
    assert limits[POSTURE_DEADLETTER.name] == dead_letter_max_message_bytes(limits[POSTURE_EVENTS.name])
    # and the processor's producer can send what the topic accepts
    assert limits[POSTURE_DEADLETTER.name] <= PROCESSOR_MAX_REQUEST_BYTES


# a worker-id key, and keys taking a share of the record the broker accepts (it accepts any key)
KEY_BYTES = (8, 64, KAFKA_DEFAULT_MAX_MESSAGE_BYTES // 2, 1_040_000)


def test_dead_letter_of_the_largest_frame_is_accepted(kafka: Broker) -> None:
    limits = _limits(kafka)
    admin = admin_client(kafka.bootstrap)
    try:
        # the broker's default limit, as posture.deadletter.v1 had it before
        admin.create_topics([NewTopic("deadletter.default-limit", 1, 1)], timeout_ms=30_000)
    finally:
        admin.close()
    for key_bytes in KEY_BYTES:
        key, value = _largest_frame(limits[POSTURE_EVENTS.name], key_bytes)
        # the frame is at the source topic's maximum: accepted, one byte more is refused
        _send(kafka, POSTURE_EVENTS.name, key, value)
        with pytest.raises(MessageSizeTooLargeError):
            _send(kafka, POSTURE_EVENTS.name, key, value + b"x")
        letters = _dead_letters(key, value)
        widest = max(_batch_bytes(k, v) for k, v in letters)
        assert widest <= limits[POSTURE_DEADLETTER.name], key_bytes
        for letter_key, letter in letters:
            _send(kafka, POSTURE_DEADLETTER.name, letter_key, letter)
        # what happened before: the broker default refuses the dead letter
        with pytest.raises(MessageSizeTooLargeError):
            _send(kafka, "deadletter.default-limit", letters[0][0], letters[0][1])


def test_ensure_topics_raises_limits_of_existing_topics(kafka: Broker) -> None:
    """An older deployment's topics: the dead-letter topic at the broker default, a raised source."""
    admin = admin_client(kafka.bootstrap)
    try:
        raised_source = 3 * KAFKA_DEFAULT_MAX_MESSAGE_BYTES // 2  # dead letters still < 4 MiB
        results = admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC, POSTURE_DEADLETTER.name, {"max.message.bytes": "1048588"}
                ),
                ConfigResource(
                    ConfigResourceType.TOPIC, POSTURE_EVENTS.name, {"max.message.bytes": str(raised_source)}
                ),
            ]
        )
    finally:
        admin.close()
    assert results == {"topic": {POSTURE_DEADLETTER.name: "OK", POSTURE_EVENTS.name: "OK"}}
    # the controller applies config changes asynchronously
    wait_for(
        lambda: _limits(kafka)[POSTURE_DEADLETTER.name] == 1_048_588,
        timeout_s=30,
        what="the dead-letter topic back at the broker default",
    )
    ensure_topics(kafka.bootstrap, kafka.partitions)
    expected = {
        POSTURE_EVENTS.name: raised_source,  # an operator's higher limit stays
        POSTURE_DEADLETTER.name: dead_letter_max_message_bytes(raised_source),
    }
    wait_for(lambda: _limits(kafka) == expected, timeout_s=30, what=f"topic limits {expected}")


def test_ensure_topics_is_idempotent_on_either_broker(broker: Broker) -> None:
    """Run again over existing topics: Tansu cannot describe configs (and has no limit), Kafka can."""
    partitions = ensure_topics(broker.bootstrap, broker.partitions)
    assert partitions[POSTURE_DEADLETTER.name] == broker.partitions
    if broker.kind == "kafka":
        assert _limits(broker)[POSTURE_DEADLETTER.name] == POSTURE_DEADLETTER.max_message_bytes
