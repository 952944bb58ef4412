"""The state record round-trips the policy state, pending nudges included."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from strainwatch.alerts.policy import Policy, WorkerPolicyState, decide
from strainwatch.alerts.state import from_record, to_record
from strainwatch.events import BreakAlert

pytestmark = pytest.mark.unit


def test_state_round_trip_keeps_budget_decided_ids_and_pending_nudges() -> None:
    state = WorkerPolicyState()
    for i, neutral in enumerate((False, True)):
        alert = BreakAlert(
            schema_version=1,
            alert_id=uuid.uuid4(),
            worker_id="w1",
            site_id="p",
            kind="posture_hold",
            ts=datetime(2026, 3, 2, 9, i, tzinfo=UTC),
            segment="neck_flexion",
            dose=1.0,
            thresholds_version="default@1",
        )
        decide(alert, None, Policy(nudge_when_neutral=neutral), state)
    worker, restored = from_record(to_record("w1", state))
    assert worker == "w1"
    assert restored == state
    assert len(restored.pending) == 1 and len(restored.nudges_sent) == 1
