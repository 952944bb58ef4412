"""Hostile input, without sockets: what parse_frame and the processor's Runtime make of frames built
to hurt (deep nesting, huge arrays, invalid UTF-8, oversized values, huge keys), with bounded memory,
and dead letters that always fit the dead-letter topic whoever writes them (processor, gateway)."""

from __future__ import annotations

import base64
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import pytest
from kafka.record.default_records import DefaultRecordBatchBuilder

from strainwatch.events import (
    DEAD_LETTER_MAX_ORIGINAL_BYTES,
    DeadLetter,
    DeadReason,
    Rejected,
    dead_letter_original,
    parse_frame,
)
from strainwatch.exposure import ExposureEngine, load_thresholds
from strainwatch.gateway.routing import Bindings, route_frame
from strainwatch.processor.runtime import Runtime, RuntimeConfig
from strainwatch.topics import (
    KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
    POSTURE_DEADLETTER,
    POSTURE_EVENTS,
    dead_letter_max_message_bytes,
)
from tests.support import encode, frame

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
OFFSET = 2**62  # the widest offset a letter carries


def batch_bytes(key: bytes | None, value: bytes) -> int:
    """What the broker compares with max.message.bytes: a one-record, uncompressed batch."""
    record = DefaultRecordBatchBuilder.size_in_bytes(0, 0, key, value, [])
    return DefaultRecordBatchBuilder.header_size_in_bytes() + record


def runtime() -> Runtime:
    return Runtime(
        ExposureEngine(load_thresholds("default")),
        RuntimeConfig(),
        load=lambda _worker: None,
        clock=lambda: NOW.timestamp(),
        log_dead_letters=False,
    )


def one_letter(key: bytes | None, value: bytes) -> tuple[tuple[bytes | None, bytes], DeadLetter]:
    rt = runtime()
    rt.on_message(key, value, 0, OFFSET)
    out = rt.take_outputs()
    assert len(out.dead_letters) == 1 and not out.windows, out
    return out.dead_letters[0], DeadLetter.model_validate_json(out.dead_letters[0][1])


def peak_bytes(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- parse_frame never lets an exception other than Rejected out ---------------------------------

HOSTILE: dict[str, tuple[bytes, DeadReason]] = {
    # 100k '[': pydantic stops at its depth limit; the NaN/Infinity check must not recurse either
    "100k-brackets": (b"[" * 100_000, DeadReason.MALFORMED_JSON),
    "50k-nested-objects": (b'{"a":' * 50_000, DeadReason.MALFORMED_JSON),
    # deep enough for pydantic's limit, shallow enough for json: a NaN inside is still found
    "900-deep-nan": (b"[" * 900 + b"NaN" + b"]" * 900, DeadReason.NOT_FINITE),
    "1e999-sample": (
        encode(frame("w-1", NOW)).replace(b"[10.0,", b"[1e999,", 1),
        DeadReason.NOT_FINITE,
    ),
    "invalid-utf8-in-string": (
        encode(frame("w-1", NOW)).replace(b'"w-1"', b'"w-\xff\xfe"', 1),
        DeadReason.MALFORMED_JSON,
    ),
    "lone-surrogate-escape": (
        encode(frame("w-1", NOW)).replace(b'"w-1"', b'"w-\\ud800"', 1),
        DeadReason.MALFORMED_JSON,
    ),
    "utf16-bom": ("\ufeff".encode("utf-16") + encode(frame("w-1", NOW)), DeadReason.MALFORMED_JSON),
    "nul-bytes": (b"\x00" * 1000, DeadReason.MALFORMED_JSON),
    "empty": (b"", DeadReason.MALFORMED_JSON),
    "json-string": (b'"' + b"a" * 200_000 + b'"', DeadReason.INVALID_FIELD),  # JSON, not an object
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_bytes_are_rejected_with_a_reason(name: str) -> None:
    raw, reason = HOSTILE[name]
    with pytest.raises(Rejected) as rejected:
        parse_frame(raw, now=NOW)
    assert rejected.value.reason is reason, rejected.value.detail
    _, letter = one_letter(None, raw)
    assert letter.reason is reason
    assert base64.b64decode(letter.original_b64) == raw and not letter.original_truncated


def samples_frame(count: int) -> bytes:
    """A valid frame but for its size: `count` samples of one segment."""
    doc = frame("w-1", NOW, n=1)
    doc["samples"] = {"trunk_flexion": [1] * count}
    return encode(doc)


# (frame, reason, bound on traced Python memory as a multiple of the frame's size)
SIZED = {
    # 10^6 samples, 2 MB: refused by size before any parsing
    "million-samples": (lambda: samples_frame(1_000_000), DeadReason.OVERSIZED),
    # 120,000 samples within max_frame_bytes: refused by the schema's 6,000-sample bound
    "120k-samples-under-the-byte-limit": (lambda: samples_frame(120_000), DeadReason.OVERSIZED),
    "100k-brackets": (lambda: b"[" * 100_000, DeadReason.MALFORMED_JSON),
    "deep-but-parseable-with-nan": (lambda: b"[" * 900 + b"NaN" + b"]" * 900, DeadReason.NOT_FINITE),
    "20-MB-of-garbage": (lambda: b"\xff" * 20_000_000, DeadReason.OVERSIZED),
}


@pytest.mark.parametrize("name", sorted(SIZED))
def test_memory_is_bounded_by_the_frame_size(name: str) -> None:
    make, reason = SIZED[name]
    raw = make()
    rt = runtime()
    rt.on_message(None, raw, 0, 1)  # warm: imports, caches
    rt.take_outputs()
    peak = peak_bytes(lambda: rt.on_message(None, raw, 0, 2))
    letters = rt.take_outputs().dead_letters
    assert len(letters) == 1 and DeadLetter.model_validate_json(letters[0][1]).reason is reason
    # the letter itself is ~4/3 of the frame (base64) plus its JSON copy: about 3x; parsing adds little
    assert peak < 20 * len(raw) + 1_000_000, f"{peak} bytes traced for a {len(raw)}-byte frame"


# --- dead letters fit the dead-letter topic whatever arrives ---------------------------------------


def test_small_letters_are_unchanged_and_carry_no_flags() -> None:
    (_key, value), letter = one_letter(b"w-1", b"{not json")
    assert set(orjson.loads(value)) == {
        "schema_version",
        "reason",
        "detail",
        "source_topic",
        "source_partition",
        "source_offset",
        "received_at",
        "original_b64",
        "key_b64",
    }
    assert not letter.original_truncated and letter.original_size is None and not letter.key_truncated


def test_dead_letter_original_keeps_key_then_value_within_the_limit() -> None:
    assert dead_letter_original(b"k", b"v" * 10, limit=20) == (b"k", b"v" * 10, {})
    assert dead_letter_original(None, b"v" * 30, limit=20) == (
        None,
        b"v" * 20,
        {"original_truncated": True, "original_size": 30},
    )
    assert dead_letter_original(b"k" * 5, b"v" * 30, limit=20) == (
        b"k" * 5,
        b"v" * 15,
        {"original_truncated": True, "original_size": 30},
    )
    assert dead_letter_original(b"k" * 25, b"v", limit=20) == (
        b"k" * 20,
        b"",
        {"original_truncated": True, "original_size": 1, "key_truncated": True},
    )


def test_the_bound_fits_the_dead_letter_topic() -> None:
    # a source topic never accepts less than Kafka's default, and the dead-letter topic follows it
    assert (
        DEAD_LETTER_MAX_ORIGINAL_BYTES == KAFKA_DEFAULT_MAX_MESSAGE_BYTES <= POSTURE_EVENTS.max_message_bytes
    )
    assert (
        dead_letter_max_message_bytes(DEAD_LETTER_MAX_ORIGINAL_BYTES) <= POSTURE_DEADLETTER.max_message_bytes
    )


# Values a 1 MiB compressed batch can carry (a gzip'd run of one byte inflates about 1000-fold), with
# keys from none to larger than any limit.
LARGE = 5 * 1024 * 1024


@pytest.mark.parametrize(
    ("key_bytes", "value_bytes"),
    [(None, LARGE), (8, LARGE), (64, LARGE), (600_000, LARGE), (2_000_000, LARGE), (2_000_000, 10)],
)
def test_processor_letters_of_inflated_messages_fit(key_bytes: int | None, value_bytes: int) -> None:
    key = None if key_bytes is None else b"k" * key_bytes
    value = b"{" * value_bytes
    rt = runtime()
    rt.on_message(key, value, 0, OFFSET)
    # and with the widest detail a letter keeps, every character escaped to 6 bytes
    rt._dead_letter(key, value, 2**31 - 1, OFFSET, DeadReason.MALFORMED_JSON, "\x01" * 5_000)
    letters = rt.take_outputs().dead_letters
    assert len(letters) == 2
    for letter_key, letter_value in letters:
        assert batch_bytes(letter_key, letter_value) <= POSTURE_DEADLETTER.max_message_bytes
        letter = DeadLetter.model_validate_json(letter_value)
        kept = base64.b64decode(letter.original_b64)
        assert value.startswith(kept)
        assert letter.original_truncated == (len(kept) < len(value))
        if letter.original_truncated:
            assert letter.original_size == len(value)
        if key is not None:
            assert letter.key_b64 is not None
            assert key.startswith(base64.b64decode(letter.key_b64)) and key.startswith(letter_key or b"")
            assert letter.key_truncated == (len(key) > DEAD_LETTER_MAX_ORIGINAL_BYTES)
        assert len(kept) + len(letter_key or b"") <= DEAD_LETTER_MAX_ORIGINAL_BYTES


def test_gateway_letters_of_huge_mqtt_payloads_fit() -> None:
    """A site's own MQTT broker may pass any payload and topic: the gateway's letters still fit."""
    huge_worker = "w" * 3_000_000
    payloads = [
        orjson.dumps({"worker_id": huge_worker, "samples": []}),  # unbound device, claims a huge key
        b"[" * (8 * 1024 * 1024),
    ]
    bindings = Bindings()
    bindings.apply(
        b"w-1",
        orjson.dumps(
            {
                "schema_version": 1,
                "worker_id": "w-1",
                "site_id": "s",
                "team": "t",
                "shift": "A",
                "device_id": "d1",
            }
        ),
    )
    for device in ("d0", "d1", "d" * 60_000):
        for payload in payloads:
            record = route_frame(device, f"devices/{device}/frames", payload, bindings, NOW)
            assert record.topic == POSTURE_DEADLETTER.name
            assert batch_bytes(record.key, record.value) <= POSTURE_DEADLETTER.max_message_bytes
            letter = DeadLetter.model_validate_json(record.value)
            assert letter.original_truncated and letter.original_size == len(payload)
            assert payload.startswith(base64.b64decode(letter.original_b64))
            assert len(letter.source_topic) <= 249
