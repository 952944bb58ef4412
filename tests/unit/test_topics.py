"""Topic definitions: every topic pins its message limit; the dead-letter bound's arithmetic."""

from __future__ import annotations

import base64

import orjson
import pytest

from strainwatch.topics import (
    ALL_TOPICS,
    KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
    POSTURE_DEADLETTER,
    POSTURE_EVENTS,
    PROCESSOR_MAX_REQUEST_BYTES,
    dead_letter_max_message_bytes,
    required_max_message_bytes,
)

pytestmark = pytest.mark.unit


def test_every_topic_config_pins_max_message_bytes() -> None:
    for spec in ALL_TOPICS:
        assert int(spec.config()["max.message.bytes"]) == spec.max_message_bytes, spec.name


def test_dead_letter_topic_holds_the_dead_letter_of_a_full_source_record() -> None:
    source = POSTURE_EVENTS.max_message_bytes
    assert source == KAFKA_DEFAULT_MAX_MESSAGE_BYTES
    assert POSTURE_DEADLETTER.max_message_bytes == dead_letter_max_message_bytes(source) == 2_463_102
    assert POSTURE_DEADLETTER.max_message_bytes <= PROCESSOR_MAX_REQUEST_BYTES
    # the shape of runtime._dead_letter at its widest: all key, longest escaped detail
    key = b"k" * source
    letter = orjson.dumps(
        {
            "schema_version": 1,
            "reason": "malformed_json",
            "detail": "\x01" * 2_000,
            "source_topic": "t" * 249,
            "source_partition": 2**31 - 1,
            "source_offset": 2**63 - 1,
            "received_at": "2026-01-01T00:00:00.000000Z",
            "original_b64": base64.b64encode(b"").decode(),
            "key_b64": base64.b64encode(key).decode(),
        }
    )
    assert len(key) + len(letter) + 100 <= POSTURE_DEADLETTER.max_message_bytes


def test_required_limits_follow_the_source_and_keep_raised_limits() -> None:
    assert required_max_message_bytes({}) == {spec.name: spec.max_message_bytes for spec in ALL_TOPICS}
    raised = 1_500_000
    required = required_max_message_bytes({POSTURE_EVENTS.name: raised, POSTURE_DEADLETTER.name: 1_048_588})
    assert required[POSTURE_EVENTS.name] == raised
    assert required[POSTURE_DEADLETTER.name] == dead_letter_max_message_bytes(raised)
    bigger = {POSTURE_DEADLETTER.name: 3_000_000}
    assert required_max_message_bytes(bigger)[POSTURE_DEADLETTER.name] == 3_000_000


def test_a_source_limit_beyond_what_the_processor_can_dead_letter_is_refused() -> None:
    with pytest.raises(ValueError, match=r"max\.message\.bytes"):
        required_max_message_bytes({POSTURE_EVENTS.name: 2 * 1024 * 1024})
