"""The gateway's pure decisions: bindings from the roster, frame and ack routing, commands."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from strainwatch.events import BreakAck, DeadLetter, DeadReason
from strainwatch.gateway.routing import (
    Bindings,
    Unusable,
    is_stale,
    parse_command,
    parse_device_topic,
    route_ack,
    route_frame,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def roster(worker: str, device: str | None, active: bool = True, site: str = "plant-1") -> bytes:
    doc = {"schema_version": 1, "worker_id": worker, "site_id": site, "team": "t", "shift": "A"}
    if device is not None:
        doc["device_id"] = device
    doc["active"] = active
    return orjson.dumps(doc)


def frame(device: str, worker: str) -> bytes:
    return orjson.dumps({"schema_version": 1, "device_id": device, "worker_id": worker, "samples": {}})


def bound(*pairs: tuple[str, str]) -> Bindings:
    b = Bindings()
    for device, worker in pairs:
        assert b.apply(worker.encode(), roster(worker, device))
    return b


def test_bindings_follow_the_roster() -> None:
    b = bound(("d1", "w1"), ("d2", "w2"))
    assert b.get("d1").worker_id == "w1" and b.get("d1").site_id == "plant-1"  # type: ignore[union-attr]
    b.apply(b"w1", roster("w1", "d3"))  # w1 moves to d3: d1 is free
    assert b.get("d1") is None and b.get("d3").worker_id == "w1"  # type: ignore[union-attr]
    b.apply(b"w2", roster("w2", "d2", active=False))  # inactive: unbound
    assert b.get("d2") is None
    b.apply(b"w1", None)  # tombstone
    assert b.get("d3") is None and len(b) == 0


def test_a_device_taken_by_another_worker_belongs_to_the_later_entry() -> None:
    b = bound(("d1", "w1"), ("d1", "w2"))
    assert b.get("d1").worker_id == "w2"  # type: ignore[union-attr]
    b.apply(b"w1", None)  # w1 leaving does not unbind w2's device
    assert b.get("d1").worker_id == "w2"  # type: ignore[union-attr]


def test_unreadable_roster_entries_change_nothing() -> None:
    b = bound(("d1", "w1"))
    assert not b.apply(b"w1", b"{broken")
    assert not b.apply(None, None)
    assert b.get("d1").worker_id == "w1"  # type: ignore[union-attr]


def test_bound_frame_goes_to_posture_events_keyed_by_the_worker_unchanged() -> None:
    payload = frame("d1", "w1")
    record = route_frame("d1", "devices/d1/frames", payload, bound(("d1", "w1")), NOW)
    assert (record.topic, record.key, record.value) == ("posture.events.v1", b"w1", payload)


@pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]", b'{"worker_id": 7}', b""])
def test_content_faults_are_forwarded_for_the_processor_to_judge(payload: bytes) -> None:
    record = route_frame("d1", "devices/d1/frames", payload, bound(("d1", "w1")), NOW)
    assert (record.topic, record.key, record.value) == ("posture.events.v1", b"w1", payload)


def letter_of(value: bytes) -> DeadLetter:
    return DeadLetter.model_validate_json(value)


def test_unbound_device_is_dead_lettered_with_the_original_bytes() -> None:
    payload = frame("d9", "w1")
    record = route_frame("d9", "devices/d9/frames", payload, bound(("d1", "w1")), NOW)
    letter = letter_of(record.value)
    assert record.topic == "posture.deadletter.v1"
    assert letter.reason is DeadReason.UNBOUND_DEVICE
    assert base64.b64decode(letter.original_b64) == payload
    assert letter.source_topic == "devices/d9/frames" and letter.received_at == NOW
    # unparseable bytes from an unbound device too: the device id comes from the topic
    assert letter_of(route_frame("d9", "devices/d9/frames", b"\xff", Bindings(), NOW).value).reason is (
        DeadReason.UNBOUND_DEVICE
    )


def test_frame_naming_another_worker_is_a_mismatch_keyed_by_the_bound_worker() -> None:
    payload = frame("d1", "w2")
    record = route_frame("d1", "devices/d1/frames", payload, bound(("d1", "w1"), ("d2", "w2")), NOW)
    letter = letter_of(record.value)
    assert letter.reason is DeadReason.DEVICE_WORKER_MISMATCH
    assert record.key == b"w1"
    assert base64.b64decode(letter.original_b64) == payload


def test_frame_naming_another_device_than_its_topic_is_dead_lettered() -> None:
    record = route_frame("d1", "devices/d1/frames", frame("d2", "w1"), bound(("d1", "w1")), NOW)
    letter = letter_of(record.value)
    assert letter.reason is DeadReason.INVALID_FIELD and "d2" in letter.detail


def test_oversized_frame_is_dead_lettered() -> None:
    payload = b"{" + b" " * 1_000_001 + b"}"
    record = route_frame("d1", "devices/d1/frames", payload, bound(("d1", "w1")), NOW)
    assert letter_of(record.value).reason is DeadReason.OVERSIZED


def test_device_topics() -> None:
    assert parse_device_topic("devices/d1/frames") == ("d1", "frames")
    assert parse_device_topic("devices//frames") is None
    assert parse_device_topic("devices/d1/frames/x") is None
    assert parse_device_topic("other/d1/frames") is None


def ack(kind: str, **extra: object) -> bytes:
    doc = {"schema_version": 1, "alert_id": str(uuid.uuid4()), "ts": "2026-03-02T10:00:00Z", "kind": kind}
    doc.update(extra)
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("kind", "outcome", "source"), [("ack", "acknowledged", "device"), ("rest", "taken", "rest")]
)
def test_device_ack_becomes_a_break_ack(kind: str, outcome: str, source: str) -> None:
    record = route_ack("d1", ack(kind), bound(("d1", "w1")))
    event = BreakAck.model_validate_json(record.value)
    assert (record.topic, record.key) == ("alerts.ack.v1", b"w1")
    assert (event.stage, event.outcome, event.source, event.worker_id, event.site_id) == (
        "acknowledgement",
        outcome,
        source,
        "w1",
        "plant-1",
    )


@pytest.mark.parametrize(
    "payload", [b"nope", ack("maybe"), ack("ack", extra=1), orjson.dumps({"schema_version": 1})]
)
def test_unusable_acks_are_refused(payload: bytes) -> None:
    with pytest.raises(Unusable):
        route_ack("d1", payload, bound(("d1", "w1")))


def test_ack_from_an_unbound_device_is_refused() -> None:
    with pytest.raises(Unusable, match="bound to no worker"):
        route_ack("d9", ack("ack"), bound(("d1", "w1")))


def command(ts: datetime) -> bytes:
    alert = uuid.uuid4()
    return orjson.dumps(
        {
            "schema_version": 1,
            "command_id": str(uuid.uuid5(alert, "command")),
            "worker_id": "w1",
            "device_id": "d1",
            "ts": ts.isoformat(),
            "command": "haptic_nudge",
            "haptic": "nudge",
            "alert_id": str(alert),
            "text": "Straighten up",
        }
    )


def test_commands_parse_and_age() -> None:
    fresh = parse_command(command(NOW - timedelta(seconds=5)))
    assert fresh.device_id == "d1" and not is_stale(fresh, NOW)
    assert is_stale(parse_command(command(NOW - timedelta(minutes=10))), NOW)
    for bad in (None, b"{}", b"x"):
        with pytest.raises(Unusable):
            parse_command(bad)
