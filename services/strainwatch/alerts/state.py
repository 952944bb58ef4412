"""The alerting service's per-worker state as a record of the compacted topic alerts.state.v1.

One record per worker (key worker_id): the budget history, the alert ids decided within the
horizon, the nudges waiting for a neutral posture. The service writes it before it commits the
alerts.break.v1 offsets its decisions cover, and reads it back when it is assigned a partition.
"""

from __future__ import annotations

from pydantic import Field

from strainwatch.alerts.policy import PendingNudge, WorkerPolicyState
from strainwatch.events import BreakAlert, Ident, Message


class PendingRecord(Message):
    alert: BreakAlert
    neutral_since: float | None = None


class AlertingState(Message):
    """Internal: not a contract for other services (it can change with the alerting service)."""

    worker_id: Ident
    nudges_sent: list[float] = Field(default_factory=list, description="event times (epoch s) of sent nudges")
    decided: dict[str, float] = Field(default_factory=dict, description="alert id -> alert event time")
    pending: list[PendingRecord] = Field(default_factory=list)


def to_record(worker_id: str, state: WorkerPolicyState) -> bytes:
    record = AlertingState(
        schema_version=1,
        worker_id=worker_id,
        nudges_sent=list(state.nudges_sent),
        decided=dict(state.decided),
        pending=[
            PendingRecord(schema_version=1, alert=p.alert, neutral_since=p.neutral_since)
            for p in state.pending.values()
        ],
    )
    return record.model_dump_json().encode()


def from_record(raw: bytes) -> tuple[str, WorkerPolicyState]:
    """Raises pydantic.ValidationError on a record this version cannot read."""
    record = AlertingState.model_validate_json(raw)
    state = WorkerPolicyState(
        nudges_sent=sorted(record.nudges_sent),
        decided=dict(record.decided),
        pending={str(p.alert.alert_id): PendingNudge(p.alert, p.neutral_since) for p in record.pending},
    )
    return record.worker_id, state
