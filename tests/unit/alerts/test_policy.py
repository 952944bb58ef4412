"""The delivery policy, rule by rule (docs/alerting.md). Event time is the alert's ts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from strainwatch.alerts.policy import (
    ClockRange,
    Decision,
    PendingNudge,
    Policy,
    WorkerPolicyState,
    decide,
    expire_pending,
    neutral_samples,
    observe_neutral,
    shift_start,
)
from strainwatch.events import BreakAlert, RosterEntry

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday, 09:00 UTC


def alert(kind: str = "posture_hold", at: datetime = T0, **kw: object) -> BreakAlert:
    return BreakAlert(
        schema_version=1,
        alert_id=kw.pop("alert_id", uuid.uuid4()),  # type: ignore[arg-type]
        worker_id="w1",
        site_id="plant-1",
        kind=kind,  # type: ignore[arg-type]
        ts=at,
        segment="neck_flexion",
        dose=120.0,
        thresholds_version="default@1",
    )


def roster(**kw: object) -> RosterEntry:
    doc: dict[str, object] = {"schema_version": 1, "worker_id": "w1", "site_id": "plant-1", "team": "a"}
    doc.setdefault("shift", "early")
    doc.update(kw)
    return RosterEntry.model_validate(doc)


def status(result: Decision | PendingNudge) -> tuple[str, str | None]:
    assert isinstance(result, Decision)
    return result.status, result.reason


def test_clock_range_parses_and_wraps_midnight() -> None:
    assert ClockRange.parse("12:00-12:30").contains(12 * 60 + 10)
    assert not ClockRange.parse("12:00-12:30").contains(12 * 60 + 30)  # end excluded
    night = ClockRange.parse("22:00-06:00")
    assert night.contains(23 * 60) and night.contains(5 * 60) and not night.contains(12 * 60)
    with pytest.raises(ValueError, match="HH:MM"):
        ClockRange.parse("25:00-26:00")


def test_conditioning_break_is_sent() -> None:
    assert status(decide(alert("conditioning_break"), None, Policy(), WorkerPolicyState())) == ("sent", None)


def test_nudge_within_budget_is_sent() -> None:
    assert status(decide(alert(), None, Policy(), WorkerPolicyState())) == ("sent", None)


def test_same_alert_id_twice_is_duplicate() -> None:
    state = WorkerPolicyState()
    first = alert("conditioning_break")
    assert status(decide(first, None, Policy(), state)) == ("sent", None)
    assert status(decide(first, None, Policy(), state)) == ("suppressed", "duplicate")


def test_duplicate_of_a_suppressed_alert_is_duplicate_too() -> None:
    state = WorkerPolicyState()
    policy = Policy(quiet_hours=(ClockRange.parse("08:00-10:00"),))
    first = alert()
    assert status(decide(first, None, policy, state)) == ("suppressed", "quiet_hours")
    assert status(decide(first, None, policy, state)) == ("suppressed", "duplicate")


def test_seventh_nudge_in_a_sliding_hour_is_over_budget() -> None:
    state = WorkerPolicyState()
    for i in range(6):
        assert status(decide(alert(at=T0 + timedelta(minutes=i)), None, Policy(), state))[0] == "sent"
    assert status(decide(alert(at=T0 + timedelta(minutes=30)), None, Policy(), state)) == (
        "suppressed",
        "budget",
    )
    # the hour slides: 60 minutes after the first nudge, one place is free again
    assert status(decide(alert(at=T0 + timedelta(minutes=60)), None, Policy(), state)) == ("sent", None)


def test_budget_counts_only_nudges_not_breaks() -> None:
    state = WorkerPolicyState()
    policy = Policy(nudges_per_hour=1)
    assert status(decide(alert(), None, policy, state))[0] == "sent"
    assert (
        status(decide(alert("conditioning_break", T0 + timedelta(seconds=1)), None, policy, state))[0]
        == "sent"
    )
    assert status(decide(alert(at=T0 + timedelta(seconds=2)), None, policy, state)) == (
        "suppressed",
        "budget",
    )


def test_suppressed_nudges_do_not_use_the_budget() -> None:
    state = WorkerPolicyState()
    policy = Policy(nudges_per_hour=1, quiet_hours=(ClockRange.parse("09:00-09:05"),))
    assert status(decide(alert(), None, policy, state)) == ("suppressed", "quiet_hours")
    assert status(decide(alert(at=T0 + timedelta(minutes=10)), None, policy, state)) == ("sent", None)


def test_shift_budget_per_named_shift() -> None:
    policy = Policy(
        nudges_per_hour=100, nudges_per_shift=3, shifts={"early": ClockRange.parse("06:00-14:00")}
    )
    state = WorkerPolicyState()
    entry = roster(shift="early")
    for i in range(3):
        assert status(decide(alert(at=T0 + timedelta(minutes=i)), entry, policy, state))[0] == "sent"
    assert status(decide(alert(at=T0 + timedelta(hours=4)), entry, policy, state)) == ("suppressed", "budget")
    # the next day's early shift has a fresh budget
    assert status(decide(alert(at=T0 + timedelta(days=1)), entry, policy, state)) == ("sent", None)


def test_shift_start_of_named_shift_over_midnight_and_fixed_fallback() -> None:
    night = Policy(shifts={"night": ClockRange.parse("22:00-06:00")})
    at = datetime(2026, 3, 3, 2, 30, tzinfo=UTC).timestamp()
    assert shift_start(at, night, "night") == datetime(2026, 3, 2, 22, 0, tzinfo=UTC).timestamp()
    # no shift definitions: fixed 8-hour periods from local midnight
    assert shift_start(at, Policy(), "night") == datetime(2026, 3, 3, 0, 0, tzinfo=UTC).timestamp()
    assert shift_start(T0.timestamp(), Policy(), None) == datetime(2026, 3, 2, 8, 0, tzinfo=UTC).timestamp()


def test_fixed_shift_budget_without_shift_definitions() -> None:
    policy = Policy(nudges_per_hour=100, nudges_per_shift=2)
    state = WorkerPolicyState()
    decide(alert(at=T0), None, policy, state)
    decide(alert(at=T0 + timedelta(minutes=1)), None, policy, state)
    assert status(decide(alert(at=T0 + timedelta(hours=6)), None, policy, state)) == ("suppressed", "budget")
    assert status(decide(alert(at=T0 + timedelta(hours=7)), None, policy, state)) == ("sent", None)  # 16:00


def test_scheduled_break_suppresses_both_kinds() -> None:
    entry = roster(scheduled_breaks=["08:45-09:15"])
    for kind in ("posture_hold", "conditioning_break"):
        result = decide(alert(kind), entry, Policy(), WorkerPolicyState())
        assert status(result) == ("suppressed", "scheduled_break")


def test_scheduled_break_is_local_time_of_the_site() -> None:
    entry = roster(scheduled_breaks=["10:00-10:30"])
    berlin = Policy(timezone="Europe/Berlin")  # 09:10 UTC = 10:10 in Berlin (winter time)
    at = T0 + timedelta(minutes=10)
    assert status(decide(alert(at=at), entry, berlin, WorkerPolicyState())) == (
        "suppressed",
        "scheduled_break",
    )
    assert status(decide(alert(at=at), entry, Policy(), WorkerPolicyState())) == ("sent", None)


def test_malformed_scheduled_break_suppresses_nothing() -> None:
    entry = roster(scheduled_breaks=["lunch"])
    assert status(decide(alert(), entry, Policy(), WorkerPolicyState())) == ("sent", None)


def test_quiet_hours_none_by_default_and_suppress_when_set() -> None:
    assert status(decide(alert("conditioning_break"), None, Policy(), WorkerPolicyState()))[0] == "sent"
    quiet = Policy(quiet_hours=(ClockRange.parse("22:00-10:00"),))
    result = decide(alert("conditioning_break"), None, quiet, WorkerPolicyState())
    assert status(result) == ("suppressed", "quiet_hours")


def test_scheduled_break_is_reported_before_quiet_hours() -> None:
    entry = roster(scheduled_breaks=["09:00-09:30"])
    quiet = Policy(quiet_hours=(ClockRange.parse("08:00-10:00"),))
    assert status(decide(alert(), entry, quiet, WorkerPolicyState())) == ("suppressed", "scheduled_break")


NEUTRAL = Policy(nudge_when_neutral=True)


def test_nudge_when_neutral_waits_then_sends_after_two_acceptable_seconds() -> None:
    state = WorkerPolicyState()
    pending = decide(alert(), None, NEUTRAL, state)
    assert isinstance(pending, PendingNudge)
    t = T0.timestamp()
    # 1 s not acceptable, then 1.9 s acceptable: still waiting
    assert observe_neutral(state, NEUTRAL, t, 10, [False] * 10 + [True] * 19) == []
    # 0.1 s more makes 2 s: sent
    decided = observe_neutral(state, NEUTRAL, t + 2.9, 10, [True])
    assert [(d.status, d.reason) for d in decided] == [("sent", None)]
    assert not state.pending and len(state.nudges_sent) == 1


def test_nudge_when_neutral_run_restarts_on_a_bad_sample() -> None:
    state = WorkerPolicyState()
    decide(alert(), None, NEUTRAL, state)
    t = T0.timestamp()
    samples = [True] * 15 + [False] + [True] * 15
    assert observe_neutral(state, NEUTRAL, t, 10, samples) == []


def test_nudge_when_neutral_ignores_samples_before_the_alert() -> None:
    state = WorkerPolicyState()
    decide(alert(), None, NEUTRAL, state)
    assert observe_neutral(state, NEUTRAL, T0.timestamp() - 5, 1, [True] * 5) == []


def test_nudge_when_neutral_dropped_after_60_s_by_frames() -> None:
    state = WorkerPolicyState()
    decide(alert(), None, NEUTRAL, state)
    t = T0.timestamp()
    assert observe_neutral(state, NEUTRAL, t, 1, [False] * 60) == []
    decided = observe_neutral(state, NEUTRAL, t + 60, 1, [False, False])
    assert [(d.status, d.reason) for d in decided] == [("suppressed", "not_neutral")]
    assert not state.pending and not state.nudges_sent


def test_nudge_when_neutral_dropped_by_the_clock_without_frames() -> None:
    state = WorkerPolicyState()
    decide(alert(), None, NEUTRAL, state)
    assert expire_pending(state, NEUTRAL, T0.timestamp() + 59) == []
    decided = expire_pending(state, NEUTRAL, T0.timestamp() + 61)
    assert [(d.status, d.reason) for d in decided] == [("suppressed", "not_neutral")]


def test_pending_nudge_counts_in_budget_and_redelivery_is_duplicate() -> None:
    state = WorkerPolicyState()
    policy = Policy(nudge_when_neutral=True, nudges_per_hour=1)
    first = alert()
    assert isinstance(decide(first, None, policy, state), PendingNudge)
    assert status(decide(first, None, policy, state)) == ("suppressed", "duplicate")
    later = alert(at=T0 + timedelta(seconds=5))
    assert status(decide(later, None, policy, state)) == ("suppressed", "budget")


def test_decided_ids_are_bounded_by_the_horizon() -> None:
    state = WorkerPolicyState()
    old = alert("conditioning_break")
    decide(old, None, Policy(), state)
    decide(alert("conditioning_break", T0 + timedelta(days=3)), None, Policy(), state)
    assert str(old.alert_id) not in state.decided
    assert len(state.decided) == 1


def test_neutral_samples_follow_the_profile_zones() -> None:
    zones = {"neck_flexion": (25.0, False, True), "trunk_lateral": (10.0, True, False)}
    present = {"neck_flexion": [10.0, 30.0, -5.0, 10.0], "trunk_lateral": [-5.0, 0.0, 0.0, -12.0]}
    assert neutral_samples(present, zones) == [True, False, False, False]
    assert neutral_samples({"unknown": [1.0]}, zones) == []


def test_an_alert_older_than_the_age_limit_is_stale_and_remembered() -> None:
    state = WorkerPolicyState()
    old = alert("conditioning_break")
    now = T0.timestamp() + 301
    assert decide(old, None, Policy(), state, now=now) == Decision(old, "suppressed", "stale")
    assert decide(old, None, Policy(), state, now=now).reason == "duplicate"  # decided once
    fresh = alert("conditioning_break", at=T0)
    assert decide(fresh, None, Policy(), WorkerPolicyState(), now=T0.timestamp() + 299).status == "sent"
    assert (
        decide(fresh, None, Policy(max_alert_age_s=0), WorkerPolicyState(), now=now + 10**6).status == "sent"
    )
    assert decide(fresh, None, Policy(), WorkerPolicyState()).status == "sent"  # no clock: no age check
