"""The gateway's decisions, without I/O: device bindings from the roster, where each MQTT message goes.

The device id always comes from the MQTT topic (Mosquitto authenticated the device and its ACL
lets it write only its own topics), never from the payload.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from strainwatch.events import BreakAck, DeadReason, DeviceCommand, RosterEntry, dead_letter_original
from strainwatch.topics import ALERTS_ACK, POSTURE_DEADLETTER, POSTURE_EVENTS

FRAMES_SUBSCRIPTION = "devices/+/frames"
ACKS_SUBSCRIPTION = "devices/+/ack"
# A frame larger than this cannot be a Kafka record of posture.events.v1 (1 MiB batches); it is
# dead-lettered (base64 fits the dead-letter topic's larger limit). Mosquitto refuses such packets first.
MAX_FORWARD_BYTES = 1_000_000
# An MQTT topic can be 64 KiB; a dead letter's envelope budget (topics.py) allows a Kafka topic name's 249.
MAX_SOURCE_TOPIC_CHARS = 249


def commands_topic(device_id: str) -> str:
    return f"devices/{device_id}/commands"


def parse_device_topic(topic: str) -> tuple[str, str] | None:
    """`devices/{id}/{kind}` -> (id, kind); None for anything else."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != "devices" or not parts[1]:
        return None
    return parts[1], parts[2]


@dataclass(frozen=True)
class Binding:
    worker_id: str
    site_id: str


class Bindings:
    """device_id -> the worker it is bound to, following roster.v1 (compacted, key worker_id).

    A worker's newest entry replaces its older one: a worker moved to another device frees the
    old device; an inactive entry or a tombstone unbinds it. If two workers name the same device,
    the later entry wins.
    """

    def __init__(self) -> None:
        self._by_device: dict[str, Binding] = {}
        self._device_of: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._by_device)

    def get(self, device_id: str) -> Binding | None:
        return self._by_device.get(device_id)

    def apply(self, key: bytes | None, value: bytes | None) -> bool:
        """Apply one roster record; False if it could not be read (it changes nothing then)."""
        if value is None:  # tombstone: the worker left the roster
            if key is None:
                return False
            self._unbind_worker(key.decode(errors="replace"))
            return True
        try:
            entry = RosterEntry.model_validate_json(value)
        except ValidationError:
            return False
        self._unbind_worker(entry.worker_id)
        if entry.active and entry.device_id is not None:
            previous = self._by_device.get(entry.device_id)
            if previous is not None:
                self._device_of.pop(previous.worker_id, None)
            self._by_device[entry.device_id] = Binding(entry.worker_id, entry.site_id)
            self._device_of[entry.worker_id] = entry.device_id
        return True

    def _unbind_worker(self, worker_id: str) -> None:
        device = self._device_of.pop(worker_id, None)
        if device is not None and (bound := self._by_device.get(device)) and bound.worker_id == worker_id:
            del self._by_device[device]


@dataclass(frozen=True)
class KafkaRecord:
    topic: str
    key: bytes | None
    value: bytes


def dead_letter(
    reason: DeadReason,
    detail: str,
    source_topic: str,
    original: bytes,
    received_at: datetime,
    key: str | None,
) -> KafkaRecord:
    # A site's own MQTT broker may pass payloads (and topics) of any size: the letter keeps at most
    # DEAD_LETTER_MAX_ORIGINAL_BYTES of key and payload, so posture.deadletter.v1 accepts it.
    kept_key, kept, flags = dead_letter_original(key.encode() if key else None, original)
    letter = {
        "schema_version": 1,
        "reason": reason.value,
        "detail": detail[:2_000],
        "source_topic": source_topic[:MAX_SOURCE_TOPIC_CHARS],
        "source_partition": None,
        "source_offset": None,
        "received_at": received_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "original_b64": base64.b64encode(kept).decode(),
        "key_b64": None,
        **flags,
    }
    return KafkaRecord(POSTURE_DEADLETTER.name, kept_key, orjson.dumps(letter))


def _claimed(payload: bytes, field: str) -> str | None:
    """A string field of a JSON object payload, if there is one (for binding checks only)."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    value = doc.get(field) if isinstance(doc, dict) else None
    return value if isinstance(value, str) and value else None


def route_frame(
    device_id: str, mqtt_topic: str, payload: bytes, bindings: Bindings, received_at: datetime
) -> KafkaRecord:
    """Where one frame from `devices/{device_id}/frames` goes.

    Bound device, and the frame names its worker (or names none readable): posture.events.v1
    keyed by the bound worker, bytes unchanged, so the processor judges the content and
    dead-letters it with its own reasons. Otherwise a dead letter with the original bytes.
    """
    claimed_worker = _claimed(payload, "worker_id")
    binding = bindings.get(device_id)
    if binding is None:
        return dead_letter(
            DeadReason.UNBOUND_DEVICE,
            f"device {device_id} is bound to no worker in the roster",
            mqtt_topic,
            payload,
            received_at,
            claimed_worker,
        )
    if claimed_worker is not None and claimed_worker != binding.worker_id:
        return dead_letter(
            DeadReason.DEVICE_WORKER_MISMATCH,
            f"frame names worker {claimed_worker[:64]}; device {device_id} is bound to {binding.worker_id}",
            mqtt_topic,
            payload,
            received_at,
            binding.worker_id,
        )
    claimed_device = _claimed(payload, "device_id")
    if claimed_device is not None and claimed_device != device_id:
        # the processor cannot see the MQTT topic: this is the only place to catch it
        return dead_letter(
            DeadReason.INVALID_FIELD,
            f"device_id: frame names device {claimed_device[:64]} but was published by {device_id}",
            mqtt_topic,
            payload,
            received_at,
            binding.worker_id,
        )
    if len(payload) > MAX_FORWARD_BYTES:
        return dead_letter(
            DeadReason.OVERSIZED,
            f"{len(payload)} bytes > {MAX_FORWARD_BYTES}",
            mqtt_topic,
            payload,
            received_at,
            binding.worker_id,
        )
    return KafkaRecord(POSTURE_EVENTS.name, binding.worker_id.encode(), payload)


class DeviceAck(BaseModel):
    """Payload of `devices/{device_id}/ack` (docs/architecture.md conventions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal[1]
    alert_id: UUID
    ts: AwareDatetime
    kind: Literal["ack", "rest"]


class Unusable(Exception):
    """A device message the gateway drops (with a log line): nothing downstream can use it."""


def route_ack(device_id: str, payload: bytes, bindings: Bindings) -> KafkaRecord:
    """A device's acknowledgement -> BreakAck (stage acknowledgement) on alerts.ack.v1, key worker."""
    binding = bindings.get(device_id)
    if binding is None:
        raise Unusable(f"ack from device {device_id}, which is bound to no worker")
    try:
        ack = DeviceAck.model_validate_json(payload)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise Unusable(f"ack from device {device_id} is invalid: {loc}: {first['msg']}") from None
    acked = ack.kind == "ack"
    event = BreakAck(
        schema_version=1,
        alert_id=ack.alert_id,
        worker_id=binding.worker_id,
        site_id=binding.site_id,
        ts=ack.ts,
        stage="acknowledgement",
        outcome="acknowledged" if acked else "taken",
        source="device" if acked else "rest",
    )
    return KafkaRecord(ALERTS_ACK.name, binding.worker_id.encode(), event.model_dump_json().encode())


# A break prompt older than this is no use to the worker: a gateway that was down longer drops
# the backlog instead of buzzing devices with it.
COMMAND_MAX_AGE = timedelta(minutes=5)


def parse_command(value: bytes | None) -> DeviceCommand:
    """A device.commands.v1 record's DeviceCommand; raises Unusable if it is not one."""
    if value is None:
        raise Unusable("empty command record")
    try:
        return DeviceCommand.model_validate_json(value)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise Unusable(f"not a DeviceCommand: {loc}: {first['msg']}") from None


def is_stale(command: DeviceCommand, now: datetime, max_age: timedelta = COMMAND_MAX_AGE) -> bool:
    return now - command.ts > max_age
