"""The one definition of strainwatch's Kafka topics: names, keys, partitions, retention, compaction."""

from __future__ import annotations

from dataclasses import dataclass

from strainwatch.events import (
    BreakAck,
    BreakAlert,
    DeadLetter,
    DeviceCommand,
    ExposureWindow,
    Incident,
    Message,
    PostureFrame,
    RosterEntry,
)

DAY_MS = 86_400_000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    message: type[Message]
    key: str  # the field whose value is the message key
    description: str
    retention_ms: int | None  # None: keep forever (compacted topics)
    compacted: bool = False
    # Topics keyed by worker_id share the posture topic's partition count, so the processor's
    # per-worker table and the outputs stay co-partitioned.
    per_worker: bool = True

    def config(self, retention_ms: int | None = None) -> dict[str, str]:
        cfg = {"cleanup.policy": "compact" if self.compacted else "delete"}
        effective = retention_ms if retention_ms is not None else self.retention_ms
        cfg["retention.ms"] = str(effective if effective is not None else -1)
        return cfg


POSTURE_EVENTS = TopicSpec(
    "posture.events.v1", PostureFrame, "worker_id", "posture frames from wearables", 7 * DAY_MS
)
POSTURE_DEADLETTER = TopicSpec(
    "posture.deadletter.v1", DeadLetter, "worker_id", "rejected frames: original bytes + reason", 30 * DAY_MS
)
EXPOSURE_WINDOWS = TopicSpec(
    "exposure.windows.v1", ExposureWindow, "worker_id", "per-worker exposure per window", 30 * DAY_MS
)
ALERTS_BREAK = TopicSpec("alerts.break.v1", BreakAlert, "worker_id", "break decisions", 90 * DAY_MS)
DEVICE_COMMANDS = TopicSpec(
    "device.commands.v1", DeviceCommand, "worker_id", "commands to wearables", 1 * DAY_MS
)
ALERTS_ACK = TopicSpec("alerts.ack.v1", BreakAck, "worker_id", "break prompt outcomes", 90 * DAY_MS)
INCIDENTS = TopicSpec(
    "incidents.v1", Incident, "site_id", "injury log entries", 3650 * DAY_MS, per_worker=False
)
ROSTER = TopicSpec("roster.v1", RosterEntry, "worker_id", "worker to team/site/shift", None, compacted=True)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    POSTURE_EVENTS,
    POSTURE_DEADLETTER,
    EXPOSURE_WINDOWS,
    ALERTS_BREAK,
    DEVICE_COMMANDS,
    ALERTS_ACK,
    INCIDENTS,
    ROSTER,
)


def partitions_for(spec: TopicSpec, posture_partitions: int) -> int:
    return posture_partitions if spec.per_worker else 1
