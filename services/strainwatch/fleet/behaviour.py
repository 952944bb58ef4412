"""How a simulated worker answers a device command: acknowledge it, take the break, or ignore it.

Pure logic (no sockets): `DeviceBehaviour.on_command` turns the bytes received on
`devices/{device_id}/commands` into a `Reaction`: a receipt (for latency measurements), the ack and
rest payloads to publish on `devices/{device_id}/ack`, and how long the worker's posture stays
neutral. Whether a worker acknowledges or takes a break is a seeded draw per alert id, so a run
reacts the same way to the same alerts whatever order or timing they arrive in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import orjson
from pydantic import ValidationError

from strainwatch.events import DeviceCommand

BREAK_S = 180.0  # a conditioning break routine lasts 2-3 minutes (docs/exposure-model.md)


@dataclass(frozen=True)
class DevicePolicy:
    ack_share: float = 1.0  # share of prompts (nudges and break prompts) the worker acknowledges
    take_share: float = 0.0  # share of break prompts the worker follows with a break
    report_rest: bool = False  # a device that detects the break reports it (`kind: rest`)
    seed: int = 42
    break_s: float = BREAK_S

    def __post_init__(self) -> None:
        for name in ("ack_share", "take_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1")
        if self.break_s <= 0:
            raise ValueError("break_s must be positive")


@dataclass(frozen=True, slots=True)
class CommandReceipt:
    device_id: str
    alert_id: str
    command_id: str
    command: str
    received_at: float  # wall clock, epoch seconds
    duplicate: bool  # the same command_id again (QoS 1 redelivery): no second reaction

    def as_dict(self) -> dict[str, object]:
        return {
            "device_id": self.device_id,
            "alert_id": self.alert_id,
            "command_id": self.command_id,
            "command": self.command,
            "received_at": self.received_at,
            "duplicate": self.duplicate,
        }


@dataclass(frozen=True, slots=True)
class Reaction:
    receipt: CommandReceipt
    ack: bytes | None = None  # payload for devices/{id}/ack, kind "ack"
    rest: bytes | None = None  # payload for devices/{id}/ack, kind "rest"
    neutral_until: float | None = None  # event time until which the worker holds a neutral posture


@dataclass(frozen=True, slots=True)
class Rejected:
    device_id: str
    reason: str  # why the payload is not a command for this device


def share_draw(seed: int, alert_id: str, purpose: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, alert id, purpose)."""
    digest = hashlib.sha256(f"{seed}:{alert_id}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def iso_z(ts_s: float) -> str:
    return datetime.fromtimestamp(ts_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ack_payload(alert_id: str, ts_s: float, kind: Literal["ack", "rest"]) -> bytes:
    return orjson.dumps({"schema_version": 1, "alert_id": alert_id, "ts": iso_z(ts_s), "kind": kind})


@dataclass
class DeviceBehaviour:
    device_id: str
    policy: DevicePolicy
    _seen: set[str] = field(default_factory=set)

    def on_command(self, payload: bytes, received_at: float, event_now: float) -> Reaction | Rejected:
        """React to one command. `event_now`: the simulator's event time when it arrived."""
        try:
            command = DeviceCommand.model_validate_json(payload)
        except ValidationError as error:
            return Rejected(self.device_id, f"not a DeviceCommand: {error.error_count()} error(s)")
        if command.device_id != self.device_id:
            return Rejected(self.device_id, f"addressed to {command.device_id}")
        alert_id = str(command.alert_id)
        command_id = str(command.command_id)
        duplicate = command_id in self._seen
        self._seen.add(command_id)
        receipt = CommandReceipt(
            self.device_id, alert_id, command_id, command.command, received_at, duplicate
        )
        if duplicate:
            return Reaction(receipt)
        policy = self.policy
        ack = None
        if share_draw(policy.seed, alert_id, "ack") < policy.ack_share:
            ack = ack_payload(alert_id, received_at, "ack")
        rest = None
        neutral_until = None
        if (
            command.command == "break_prompt"
            and share_draw(policy.seed, alert_id, "take") < policy.take_share
        ):
            neutral_until = event_now + policy.break_s
            if policy.report_rest:
                rest = ack_payload(alert_id, received_at, "rest")
        return Reaction(receipt, ack, rest, neutral_until)
