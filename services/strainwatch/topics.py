"""The one definition of strainwatch's Kafka topics: names, keys, partitions, retention, compaction,
largest message."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from strainwatch.alerts.outcomes import OutcomeState
from strainwatch.alerts.state import AlertingState
from strainwatch.events import (
    BreakAck,
    BreakAlert,
    DeadLetter,
    DeviceCommand,
    ExposureWindow,
    Incident,
    Message,
    PostureFrame,
    PromptDecision,
    RosterEntry,
)
from strainwatch.privacy.request import ErasureRequest

DAY_MS = 86_400_000

# Kafka's default message.max.bytes: 1 MiB plus the 12 bytes of a record batch's log overhead.
# Topics pin it explicitly so that a broker-wide change cannot silently break the dead-letter bound.
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588

# Room in a dead letter for everything that is not the source record's key and value (see
# dead_letter_max_message_bytes): `detail` is cut to 2,000 characters, each at most 6 bytes once
# JSON-escaped (\u00XX) = 12,000; the other fields (schema_version, reason, source_topic <= 249
# characters, partition, offset, received_at, key names) < 1,000; record batch header and record
# varints < 100. Rounded up to 16 KiB.
DEAD_LETTER_ENVELOPE_BYTES = 16_384

# The processor's producer_max_request_size (processor/app.py): no topic limit above it helps, the
# processor could not send such a message.
PROCESSOR_MAX_REQUEST_BYTES = 4 * 1024 * 1024


def dead_letter_max_message_bytes(source_max_message_bytes: int) -> int:
    """The smallest limit a dead-letter topic needs to accept the dead letter of any source message.

    A source record batch of at most S bytes holds one record with key k and value v, k + v <= S.
    Its dead letter (processor/runtime.py `_dead_letter`) keeps the raw key k as its own key and
    carries base64(v) and base64(k) in its JSON value; base64 of n bytes is 4 * ceil(n / 3) bytes.
    So key + value <= k + 4 * ceil(v / 3) + 4 * ceil(k / 3) + envelope
                   <= k + 4 * S / 3 + 8 + envelope,
    and k <= S: at most 7 * S / 3 + 8 + envelope. Kafka's 1 MiB default source gives 2,463,102
    bytes, within the processor producer's 4 MiB max request size. (With a worker-id key of <= 64
    bytes it is about 4 * S / 3; the bound keeps the key term because the broker accepts any key.)
    The bound holds for uncompressed source batches, which is what the gateway produces. A
    compressed batch of S bytes can hold a larger value (and a site's MQTT broker may pass larger
    payloads to the gateway): dead letters carry at most events.DEAD_LETTER_MAX_ORIGINAL_BYTES of key
    and value together, flagged when cut, so every letter stays within this bound for Kafka's
    default S, below any source limit the topics have.
    """
    return 7 * -(-source_max_message_bytes // 3) + 8 + DEAD_LETTER_ENVELOPE_BYTES


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
    # the largest record batch the broker accepts on this topic (topic config max.message.bytes)
    max_message_bytes: int = KAFKA_DEFAULT_MAX_MESSAGE_BYTES

    def config(self, retention_ms: int | None = None) -> dict[str, str]:
        cfg = {"cleanup.policy": "compact" if self.compacted else "delete"}
        effective = retention_ms if retention_ms is not None else self.retention_ms
        cfg["retention.ms"] = str(effective if effective is not None else -1)
        cfg["max.message.bytes"] = str(self.max_message_bytes)
        return cfg


POSTURE_EVENTS = TopicSpec(
    "posture.events.v1", PostureFrame, "worker_id", "posture frames from wearables", 7 * DAY_MS
)
# Any frame posture.events.v1 accepts, however invalid, must fit in its dead letter: a dead letter
# the broker refuses fails again on every restart (a poison message).
POSTURE_DEADLETTER = TopicSpec(
    "posture.deadletter.v1",
    DeadLetter,
    "worker_id",
    "rejected frames: original bytes + reason",
    30 * DAY_MS,
    max_message_bytes=dead_letter_max_message_bytes(POSTURE_EVENTS.max_message_bytes),
)
EXPOSURE_WINDOWS = TopicSpec(
    "exposure.windows.v1", ExposureWindow, "worker_id", "per-worker exposure per window", 30 * DAY_MS
)
ALERTS_BREAK = TopicSpec("alerts.break.v1", BreakAlert, "worker_id", "break decisions", 90 * DAY_MS)
DEVICE_COMMANDS = TopicSpec(
    "device.commands.v1", DeviceCommand, "worker_id", "commands to wearables", 1 * DAY_MS
)
ALERTS_PROMPTS = TopicSpec(
    "alerts.prompts.v1", PromptDecision, "worker_id", "break prompts sent or suppressed (reason)", 90 * DAY_MS
)
ALERTS_ACK = TopicSpec("alerts.ack.v1", BreakAck, "worker_id", "break prompt outcomes", 90 * DAY_MS)
INCIDENTS = TopicSpec(
    "incidents.v1", Incident, "site_id", "injury log entries", 3650 * DAY_MS, per_worker=False
)
ROSTER = TopicSpec("roster.v1", RosterEntry, "worker_id", "worker to team/site/shift", None, compacted=True)
# The alerting service's own state (budget history, decided alert ids, pending nudges), one record per
# worker, co-partitioned with alerts.break.v1. Internal, hence not in ALL_TOPICS (whose messages are
# the public contracts in events.MESSAGE_MODELS): the alerting service creates it at start.
ALERTS_STATE = TopicSpec(
    "alerts.state.v1", AlertingState, "worker_id", "alerting service state per worker", None, compacted=True
)
# The outcome tracker's state (pending prompts and their evidence, decided alert ids), one record per
# worker, co-partitioned with its inputs; internal likewise, created by the tracker at start.
ALERTS_OUTCOMES_STATE = TopicSpec(
    "alerts.outcomes.state.v1",
    OutcomeState,
    "worker_id",
    "outcome tracker state per worker",
    None,
    compacted=True,
)
INTERNAL_TOPICS: tuple[TopicSpec, ...] = (ALERTS_STATE, ALERTS_OUTCOMES_STATE)
# Erasure requests (`strainwatch privacy erase`), keyed by worker and co-partitioned with the posture
# topic, so the processor instance that owns a worker also reads its erasure. Internal like the state
# topics, but created with the public topics (`stack topics`): the processor subscribes to it.
PRIVACY_ERASURES = TopicSpec(
    "privacy.erasures.v1",
    ErasureRequest,
    "worker_id",
    "erasure requests: services drop the worker's state (docs/privacy.md)",
    30 * DAY_MS,
)
PRIVACY_TOPICS: tuple[TopicSpec, ...] = (PRIVACY_ERASURES,)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    POSTURE_EVENTS,
    POSTURE_DEADLETTER,
    EXPOSURE_WINDOWS,
    ALERTS_BREAK,
    ALERTS_PROMPTS,
    DEVICE_COMMANDS,
    ALERTS_ACK,
    INCIDENTS,
    ROSTER,
)


def required_max_message_bytes(current: Mapping[str, int]) -> dict[str, int]:
    """The max.message.bytes every topic needs, given the limits topics already have (name -> bytes).

    A topic keeps a limit raised beyond its spec (an operator's choice; lowering it could refuse
    messages producers rely on); the dead-letter topic follows the source topic's effective limit.
    """
    required = {spec.name: max(spec.max_message_bytes, current.get(spec.name, 0)) for spec in ALL_TOPICS}
    source = required[POSTURE_EVENTS.name]
    required[POSTURE_DEADLETTER.name] = max(
        required[POSTURE_DEADLETTER.name], dead_letter_max_message_bytes(source)
    )
    if required[POSTURE_DEADLETTER.name] > PROCESSOR_MAX_REQUEST_BYTES:
        # a source limit above ~1.7 MiB: the largest frames' dead letters exceed what the processor sends
        raise ValueError(
            f"{POSTURE_EVENTS.name} accepts {source} bytes; its dead letters need up to "
            f"{required[POSTURE_DEADLETTER.name]} bytes, more than the processor's "
            f"{PROCESSOR_MAX_REQUEST_BYTES}-byte requests: lower the topic's max.message.bytes"
        )
    return required


def partitions_for(spec: TopicSpec, posture_partitions: int) -> int:
    return posture_partitions if spec.per_worker else 1
