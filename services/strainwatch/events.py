"""Every message strainwatch exchanges, as pydantic v2 models: the contracts.

`schemas/` holds the JSON Schema exported from these classes (`strainwatch schemas export`); a test
keeps the two identical. Worker ids are site-issued pseudonyms: no names, e-mails or phone numbers
travel on posture topics.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

SCHEMA_VERSION = 1

# Pseudonymous identifiers: short, no spaces, no '@' (so an e-mail address cannot pass as one).
Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]

# Physiological ranges (docs/exposure-model.md): samples outside them are sensor faults, rejected.
SEGMENT_RANGES: dict[str, tuple[float, float]] = {
    "trunk_flexion": (-60.0, 150.0),
    "trunk_lateral": (-90.0, 90.0),
    "trunk_twist": (-90.0, 90.0),
    "neck_flexion": (-90.0, 90.0),
    "arm_elevation_left": (0.0, 180.0),
    "arm_elevation_right": (0.0, 180.0),
}
SEGMENTS: tuple[str, ...] = tuple(SEGMENT_RANGES)

# One bound for every segment's array; the processor applies its configured (smaller) limit.
MAX_SAMPLES_PER_SEGMENT = 6_000


def _angles(lo: float, hi: float) -> Any:
    sample = Annotated[float, Field(ge=lo, le=hi, allow_inf_nan=False)]
    return Annotated[
        list[sample] | None, Field(default=None, min_length=1, max_length=MAX_SAMPLES_PER_SEGMENT)
    ]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # Required, not defaulted: a message that does not say its version cannot be trusted to mean v1.
    schema_version: Literal[1] = Field(description="contract version; consumers dead-letter others")


class PostureSamples(BaseModel):
    """Per-segment angle arrays in degrees, one value per sample, all the same length."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trunk_flexion: _angles(*SEGMENT_RANGES["trunk_flexion"])  # type: ignore[valid-type]
    trunk_lateral: _angles(*SEGMENT_RANGES["trunk_lateral"])  # type: ignore[valid-type]
    trunk_twist: _angles(*SEGMENT_RANGES["trunk_twist"])  # type: ignore[valid-type]
    neck_flexion: _angles(*SEGMENT_RANGES["neck_flexion"])  # type: ignore[valid-type]
    arm_elevation_left: _angles(*SEGMENT_RANGES["arm_elevation_left"])  # type: ignore[valid-type]
    arm_elevation_right: _angles(*SEGMENT_RANGES["arm_elevation_right"])  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _one_length(self) -> PostureSamples:
        lengths = {name: len(v) for name in SEGMENTS if (v := getattr(self, name)) is not None}
        if not lengths:
            raise PydanticCustomError("no_segments", "a frame carries at least one segment's samples")
        if len(set(lengths.values())) > 1:
            raise PydanticCustomError(
                "length_mismatch", "segment arrays differ in length: {lengths}", {"lengths": lengths}
            )
        return self

    def present(self) -> dict[str, list[float]]:
        return {name: v for name in SEGMENTS if (v := getattr(self, name)) is not None}


class PostureFrame(Message):
    """A wearable's upload: samples from `start_ts` at `rate_hz`. Topic posture.events.v1, key worker_id.

    The public contract for device makers.
    """

    event_id: UUID = Field(description="unique per frame; redelivery with the same id is dropped")
    device_id: Ident
    worker_id: Ident = Field(description="site-issued pseudonym")
    site_id: Ident
    start_ts: AwareDatetime = Field(description="time of the first sample, ISO 8601 with zone")
    rate_hz: float = Field(ge=1, le=100, allow_inf_nan=False)
    samples: PostureSamples
    battery_pct: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    firmware: str | None = Field(default=None, max_length=64)
    rest: bool | None = Field(default=None, description="the device reports the worker at rest")

    @field_validator("start_ts")
    @classmethod
    def _not_in_future(cls, value: datetime, info: ValidationInfo) -> datetime:
        ctx = info.context or {}
        now: datetime = ctx.get("now") or datetime.now(UTC)
        max_future = timedelta(seconds=float(ctx.get("max_future_s", 300.0)))
        if value - now > max_future:
            raise PydanticCustomError(
                "future_timestamp",
                "start_ts {start_ts} is more than {max_future_s} s ahead of the clock",
                {"start_ts": value.isoformat(), "max_future_s": int(max_future.total_seconds())},
            )
        return value

    @property
    def n_samples(self) -> int:
        samples = self.samples
        for name in SEGMENTS:  # all present arrays have the same length (validated)
            values = getattr(samples, name)
            if values is not None:
                return len(values)
        return 0

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.rate_hz


class ZoneSeconds(BaseModel):
    model_config = ConfigDict(extra="forbid")
    acceptable: float = 0.0
    conditional: float = 0.0
    not_acceptable: float = 0.0


class ExposureWindow(Message):
    """One worker's exposure over one window. Topic exposure.windows.v1, key worker_id."""

    worker_id: Ident
    site_id: Ident
    team: str | None = None
    window_start: AwareDatetime
    window_s: int = Field(gt=0)
    thresholds_version: str
    frames: int = Field(ge=0)
    wear_s: float = Field(ge=0)
    samples: dict[str, int] = Field(description="samples per segment")
    zone_s: dict[str, ZoneSeconds] = Field(default_factory=dict)
    cutpoints_s: dict[str, dict[str, float]] = Field(default_factory=dict)
    longest_hold_s: dict[str, float] = Field(default_factory=dict)
    dose: dict[str, float] = Field(
        default_factory=dict, description="per segment and upper_back, at window end"
    )
    accrued: dict[str, float] = Field(
        default_factory=dict,
        description="dose accrued within the window before recovery, per segment and upper_back",
    )
    task: str | None = Field(default=None, description="the roster's task or station for the worker")


AlertKind = Literal["posture_hold", "conditioning_break"]


class BreakAlert(Message):
    """A break decision of the processor. Topic alerts.break.v1, key worker_id."""

    alert_id: UUID
    worker_id: Ident
    site_id: Ident
    team: str | None = None
    kind: AlertKind
    ts: AwareDatetime
    segment: str
    dose: float = Field(ge=0)
    routine: list[str] = Field(default_factory=list)
    thresholds_version: str


class DeviceCommand(Message):
    """A command back to a wearable. Topic device.commands.v1, key worker_id; the gateway sends it
    to MQTT `devices/{device_id}/commands`. One command per alert: command_id is derived from the
    alert id, so a redelivered command is recognisably the same one."""

    command_id: UUID
    worker_id: Ident
    device_id: Ident
    ts: AwareDatetime
    command: Literal["haptic_nudge", "break_prompt"]
    haptic: Literal["nudge", "break"] = Field(description="nudge: one short pulse; break: three")
    alert_id: UUID
    text: str = Field(max_length=60, description="shown on the device")
    routine_id: str | None = Field(default=None, max_length=64)


class PromptDecision(Message):
    """What the alerting service did with a break alert: sent (to the device and/or channels) or
    suppressed with its reason. Topic alerts.prompts.v1, key worker_id; one per alert_id."""

    alert_id: UUID
    worker_id: Ident
    site_id: Ident
    team: str | None = None
    kind: AlertKind
    ts: AwareDatetime = Field(description="when the decision was made")
    alert_ts: AwareDatetime = Field(description="event time of the alert (the sample that crossed the rule)")
    segment: str
    status: Literal["sent", "suppressed"]
    reason: (
        Literal["budget", "quiet_hours", "scheduled_break", "not_neutral", "duplicate", "stale"] | None
    ) = None
    device_id: Ident | None = None
    routine_id: str | None = Field(default=None, max_length=64)
    channels_ok: int = Field(default=0, ge=0, description="channel messages delivered")
    channels_failed: int = Field(default=0, ge=0)


class BreakAck(Message):
    """What became of a break prompt. Topic alerts.ack.v1, key worker_id.

    stage `acknowledgement`: a worker acknowledged the prompt (on the device, via the gateway, or
    on a channel); stage `outcome`: the alerting service's verdict for the prompt (taken,
    acknowledged only, or ignored), once per alert."""

    alert_id: UUID
    worker_id: Ident
    site_id: Ident
    ts: AwareDatetime
    stage: Literal["acknowledgement", "outcome"] = "acknowledgement"
    outcome: Literal["taken", "acknowledged", "ignored"]
    source: Literal["device", "channel", "posture", "rest", "timeout"]


# An injury log's case id: also an InfluxDB tag and an InfluxQL string literal, so no quotes,
# backslashes or spaces (docs/incidents.md).
CASE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/#-]*$"
BodyPart = Literal["neck", "shoulder", "upper_back", "lower_back", "other"]
Severity = Literal["recordable", "first_aid"]


class Incident(Message):
    """An injury-log case (docs/incidents.md). Topic incidents.v1, key site_id.

    The case id (`incident_id`) is the identity: importing a log again republishes the same message,
    a corrected case a new message with the same incident_id. Consumers keep the latest message per
    incident_id. No names: a worker appears at most as the site-issued pseudonym."""

    incident_id: str = Field(
        min_length=1, max_length=64, pattern=CASE_ID_PATTERN, description="the log's case id: the identity"
    )
    site_id: Ident
    team: str = Field(min_length=1, max_length=64)
    worker_id: Ident | None = Field(default=None, description="site-issued pseudonym, when the log has one")
    ts: AwareDatetime = Field(description="the incident date at 00:00 UTC")
    body_part: BodyPart
    severity: Severity = Field(description="OSHA: recordable, or first aid only")
    injury_type: str = Field(min_length=1, max_length=64, description="e.g. strain, sprain, contusion")
    days_away: int = Field(default=0, ge=0, description="days away from work")
    days_restricted: int = Field(default=0, ge=0, description="days of restricted work or job transfer")


class RosterEntry(Message):
    """Worker to team, site and shift. Topic roster.v1 (compacted), key worker_id."""

    worker_id: Ident
    site_id: Ident
    team: str = Field(min_length=1, max_length=64)
    task: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="the task or station the worker is on (reports rank tasks by dose per hour)",
    )
    shift: str = Field(min_length=1, max_length=32)
    device_id: Ident | None = Field(default=None, description="the wearable bound to this worker")
    scheduled_breaks: list[str] = Field(
        default_factory=list, description="local 'HH:MM-HH:MM' ranges without prompts"
    )
    hours_per_week: float | None = Field(default=None, ge=0, le=80)
    active: bool = True


class DeadReason(StrEnum):
    """Why a message was dead-lettered; one code per kind of fault."""

    MALFORMED_JSON = "malformed_json"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    INVALID_FIELD = "invalid_field"
    OUT_OF_RANGE = "out_of_range"
    NOT_FINITE = "not_finite"
    LENGTH_MISMATCH = "length_mismatch"
    NO_SEGMENTS = "no_segments"
    FUTURE_TIMESTAMP = "future_timestamp"
    OVERSIZED = "oversized"
    LATE = "late"
    UNBOUND_DEVICE = "unbound_device"  # a frame from a device no roster entry binds to a worker
    DEVICE_WORKER_MISMATCH = "device_worker_mismatch"  # names a worker its device is not bound to


# The most bytes of a rejected message's key and value (together) a dead letter carries: Kafka's
# default max.message.bytes. Whatever arrives (a value inflated from a compressed batch, an MQTT
# payload from a broker with a larger limit, a huge key), the letter then stays within
# topics.dead_letter_max_message_bytes of this, which posture.deadletter.v1 always accepts.
DEAD_LETTER_MAX_ORIGINAL_BYTES = 1_048_588


class DeadLetter(Message):
    """A rejected message with its original bytes (base64) and the reason. Topic posture.deadletter.v1.

    The original key and value are carried whole up to DEAD_LETTER_MAX_ORIGINAL_BYTES together;
    beyond that the value (and a key that alone exceeds it) is cut to its first bytes and flagged.
    The flags appear only on a cut letter, so every other letter reads as before."""

    reason: DeadReason
    detail: str = Field(max_length=2_000)
    source_topic: str
    source_partition: int | None = None
    source_offset: int | None = None
    received_at: AwareDatetime
    original_b64: str = Field(description="the rejected value, base64 (its first bytes when truncated)")
    key_b64: str | None = None
    original_truncated: bool = Field(
        default=False, description="original_b64 holds only the first bytes of the value"
    )
    original_size: int | None = Field(
        default=None, ge=0, description="the rejected value's size in bytes, given when truncated"
    )
    key_truncated: bool = Field(default=False, description="the key (and key_b64) holds only its first bytes")


def dead_letter_original(
    key: bytes | None, value: bytes, limit: int = DEAD_LETTER_MAX_ORIGINAL_BYTES
) -> tuple[bytes | None, bytes, dict[str, Any]]:
    """What a dead letter keeps of a rejected message: (key, value, flags), key + value <= limit.

    The key comes first (it routes the letter and is at most limit bytes), the value gets the rest.
    flags holds the DeadLetter truncation fields to add to the letter, empty when nothing was cut.
    """
    kept_key = key[:limit] if key is not None else None
    room = limit - (len(kept_key) if kept_key is not None else 0)
    kept = value[:room] if len(value) > room else value
    flags: dict[str, Any] = {}
    if len(kept) < len(value):
        flags["original_truncated"] = True
        flags["original_size"] = len(value)
    if key is not None and kept_key is not None and len(kept_key) < len(key):
        flags["key_truncated"] = True
    return kept_key, kept, flags


class Rejected(Exception):
    def __init__(self, reason: DeadReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


_SAMPLE_ERROR_REASONS = {
    "greater_than_equal": DeadReason.OUT_OF_RANGE,
    "less_than_equal": DeadReason.OUT_OF_RANGE,
    "finite_number": DeadReason.NOT_FINITE,
    "float_type": DeadReason.NOT_FINITE,  # null sample
    "too_long": DeadReason.OVERSIZED,
}
_ERROR_REASONS = {
    "json_invalid": DeadReason.MALFORMED_JSON,
    "json_type": DeadReason.MALFORMED_JSON,
    "missing": DeadReason.MISSING_FIELD,
    "extra_forbidden": DeadReason.UNKNOWN_FIELD,
    "length_mismatch": DeadReason.LENGTH_MISMATCH,
    "no_segments": DeadReason.NO_SEGMENTS,
    "future_timestamp": DeadReason.FUTURE_TIMESTAMP,
}


def reason_for(error: ValidationError) -> tuple[DeadReason, str]:
    """The reason code of the first error, and a short detail naming the field."""
    first = error.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in first["loc"])
    kind = first["type"]
    if first["loc"][:1] == ("schema_version",) and kind != "missing":
        reason = DeadReason.UNSUPPORTED_SCHEMA_VERSION
    elif first["loc"][:1] == ("samples",) and len(first["loc"]) >= 3 and kind in _SAMPLE_ERROR_REASONS:
        reason = _SAMPLE_ERROR_REASONS[kind]
    elif first["loc"][:1] == ("samples",) and len(first["loc"]) == 2 and kind == "too_long":
        reason = DeadReason.OVERSIZED
    else:
        reason = _ERROR_REASONS.get(kind, DeadReason.INVALID_FIELD)
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return reason, f"{loc}: {first['msg']}{more}"[:2_000]


def parse_frame(
    raw: bytes, *, now: datetime | None = None, max_future_s: float = 300.0, max_bytes: int = 262_144
) -> PostureFrame:
    """Validate one posture frame from its wire bytes, or raise `Rejected` with a reason code."""
    if len(raw) > max_bytes:
        raise Rejected(DeadReason.OVERSIZED, f"{len(raw)} bytes > {max_bytes}")
    try:
        return PostureFrame.model_validate_json(raw, context={"now": now, "max_future_s": max_future_s})
    except ValidationError as error:
        reason, detail = reason_for(error)
        if reason is DeadReason.MALFORMED_JSON and _has_non_finite_literal(raw):
            reason = DeadReason.NOT_FINITE
        raise Rejected(reason, detail) from None


def _has_non_finite_literal(raw: bytes) -> bool:
    """True when the bytes are JSON but for NaN/Infinity literals (which some firmware emits).

    The parser's hooks see every number, so nothing walks the document: a deeply nested one
    (pydantic refuses it past its depth limit) ends in RecursionError here, which means no.
    """
    import json

    found = False

    def constant(literal: str) -> float:  # NaN, Infinity, -Infinity
        nonlocal found
        found = True
        return 0.0

    def number(literal: str) -> float:  # 1e999 is a float literal that is not finite either
        nonlocal found
        value = float(literal)
        if not math.isfinite(value):
            found = True
        return 0.0

    try:
        json.loads(raw, parse_constant=constant, parse_float=number)
    except (ValueError, RecursionError):
        return False
    return found


MESSAGE_MODELS: dict[str, type[Message]] = {
    "PostureFrame": PostureFrame,
    "ExposureWindow": ExposureWindow,
    "BreakAlert": BreakAlert,
    "DeviceCommand": DeviceCommand,
    "PromptDecision": PromptDecision,
    "BreakAck": BreakAck,
    "Incident": Incident,
    "RosterEntry": RosterEntry,
    "DeadLetter": DeadLetter,
}
