"""The break-outcome tracker: taken (posture, rest), acknowledged, ignored, horizons, order, replays."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from strainwatch.alerts.outcomes import (
    DEFAULT_IDLE_TIMEOUT_S,
    OutcomeRecord,
    OutcomeTracker,
    window_is_acceptable,
)
from strainwatch.events import BreakAck, ExposureWindow, PromptDecision, ZoneSeconds

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 2, 8, 0, 0, tzinfo=UTC)
SEGMENTS = ("trunk_flexion", "neck_flexion", "arm_elevation_left", "arm_elevation_right")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def prompt(
    alert_ts: datetime,
    *,
    worker: str = "w1",
    kind: str = "conditioning_break",
    status: str = "sent",
    alert_id: uuid.UUID | None = None,
) -> PromptDecision:
    return PromptDecision(
        schema_version=1,
        alert_id=alert_id or uuid.uuid5(uuid.NAMESPACE_URL, f"{worker}/{alert_ts.isoformat()}/{kind}"),
        worker_id=worker,
        site_id="plant-1",
        team="assembly",
        kind=kind,
        ts=alert_ts + timedelta(seconds=1),
        alert_ts=alert_ts,
        segment="neck_flexion",
        status=status,
        reason=None if status == "sent" else "budget",
    )


def window(
    start: datetime, *, acceptable: bool = True, worker: str = "w1", wear_s: float = 10.0, window_s: int = 10
) -> ExposureWindow:
    zone = ZoneSeconds(acceptable=wear_s) if acceptable else ZoneSeconds(acceptable=wear_s - 2, conditional=2)
    return ExposureWindow(
        schema_version=1,
        worker_id=worker,
        site_id="plant-1",
        team="assembly",
        window_start=start,
        window_s=window_s,
        thresholds_version="default@1",
        frames=1,
        wear_s=wear_s,
        samples=dict.fromkeys(SEGMENTS, 100),
        zone_s=dict.fromkeys(SEGMENTS, zone),
    )


def ack(
    p: PromptDecision, ts: datetime, *, source: str = "device", stage: str = "acknowledgement"
) -> BreakAck:
    return BreakAck(
        schema_version=1,
        alert_id=p.alert_id,
        worker_id=p.worker_id,
        site_id=p.site_id,
        ts=ts,
        stage=stage,
        outcome="taken" if source == "rest" else "acknowledged",
        source=source,
    )


def windows(start: datetime, seconds: int, *, acceptable: bool = True) -> list[ExposureWindow]:
    return [window(start + timedelta(seconds=s), acceptable=acceptable) for s in range(0, seconds, 10)]


def feed(tracker: OutcomeTracker, events: list[Any]) -> list[OutcomeRecord]:
    out: list[OutcomeRecord] = []
    for event in events:
        if isinstance(event, PromptDecision):
            out += tracker.on_prompt(event)
        elif isinstance(event, BreakAck):
            out += tracker.on_ack(event)
        else:
            out += tracker.on_window(event)
        out += tracker.due()
    return out


def summary(records: list[OutcomeRecord]) -> list[tuple[str, str, str, datetime]]:
    return [(str(r.ack.alert_id), r.ack.outcome, r.ack.source, r.ack.ts) for r in records]


def test_taken_by_posture_two_minutes_after_the_run_starts() -> None:
    p = prompt(T0 + timedelta(seconds=3))  # mid-window: the first window counts from the prompt
    out = feed(
        OutcomeTracker(), [p, *windows(T0 - timedelta(seconds=60), 60, acceptable=False), *windows(T0, 200)]
    )
    assert len(out) == 1
    record = out[0]
    assert (record.ack.outcome, record.ack.source, record.ack.stage) == ("taken", "posture", "outcome")
    assert record.ack.ts == T0 + timedelta(seconds=123)  # clipped run start + 120 s, event time
    assert (record.team, record.kind, record.alert_ts) == ("assembly", "conditioning_break", p.alert_ts)


def test_a_gap_or_an_unacceptable_window_restarts_the_run() -> None:
    p = prompt(T0)
    events: list[Any] = [p, *windows(T0, 100), window(T0 + timedelta(seconds=100), acceptable=False)]
    events += windows(T0 + timedelta(seconds=110), 100)  # 100 s, then a missing window
    events += windows(T0 + timedelta(seconds=220), 120)
    out = feed(OutcomeTracker(), events)
    assert summary(out) == [(str(p.alert_id), "taken", "posture", T0 + timedelta(seconds=340))]


def test_a_window_worn_for_less_than_half_its_length_is_not_acceptable() -> None:
    assert window_is_acceptable(window(T0))
    assert not window_is_acceptable(window(T0, wear_s=4.0))
    assert not window_is_acceptable(window(T0, acceptable=False))


def test_taken_by_rest() -> None:
    p = prompt(T0)
    out = feed(
        OutcomeTracker(),
        [p, *windows(T0, 30, acceptable=False), ack(p, T0 + timedelta(seconds=40), source="rest")],
    )
    assert summary(out) == [(str(p.alert_id), "taken", "rest", T0 + timedelta(seconds=40))]


def test_acknowledged_when_acknowledged_but_not_taken() -> None:
    p = prompt(T0)
    events: list[Any] = [p, ack(p, T0 + timedelta(seconds=20), source="channel")]
    events += windows(T0, 600, acceptable=False)
    tracker = OutcomeTracker()
    assert feed(tracker, events) == []  # the horizon has not passed: no window starts at T0 + 600
    out = feed(tracker, [window(T0 + timedelta(seconds=600), acceptable=False)])
    assert summary(out) == [(str(p.alert_id), "acknowledged", "channel", T0 + timedelta(seconds=600))]


def test_ignored_when_neither_taken_nor_acknowledged_in_time() -> None:
    p = prompt(T0)
    late_ack = ack(p, T0 + timedelta(seconds=601))  # after the horizon: does not count
    out = feed(OutcomeTracker(), [p, late_ack, *windows(T0, 620, acceptable=False)])
    assert summary(out) == [(str(p.alert_id), "ignored", "timeout", T0 + timedelta(seconds=600))]


def test_a_window_spanning_the_horizon_counts_up_to_the_horizon_only() -> None:
    p = prompt(T0 + timedelta(seconds=5))  # horizon at T0 + 605, inside the window [600, 610)
    events: list[Any] = [p, *windows(T0, 490, acceptable=False), *windows(T0 + timedelta(seconds=490), 120)]
    out = feed(OutcomeTracker(), [*events, window(T0 + timedelta(seconds=610), acceptable=False)])
    # acceptable from 490 to 610, but only 490..605 = 115 s lie within the horizon
    assert summary(out) == [(str(p.alert_id), "ignored", "timeout", T0 + timedelta(seconds=605))]
    p2 = prompt(T0 + timedelta(seconds=5), worker="w2")
    events2 = [p2] + [
        window(w.window_start - timedelta(seconds=10), worker="w2", acceptable=window_is_acceptable(w))
        for w in events[1:]
    ]
    out2 = feed(OutcomeTracker(), events2)
    assert summary(out2) == [(str(p2.alert_id), "taken", "posture", T0 + timedelta(seconds=600))]


def test_out_of_order_windows_and_a_prompt_read_after_its_windows() -> None:
    p = prompt(T0)
    ordered = windows(T0, 200)
    shuffled = ordered[::-1][:6] + ordered[:-6]
    out = feed(OutcomeTracker(), [*shuffled, p])
    assert summary(out) == [(str(p.alert_id), "taken", "posture", T0 + timedelta(seconds=120))]


def test_a_rewritten_window_replaces_the_earlier_version() -> None:
    p = prompt(T0)
    events: list[Any] = [
        p,
        window(T0 + timedelta(seconds=50)),
        window(T0 + timedelta(seconds=50), acceptable=False),
    ]
    events += windows(T0, 50) + windows(T0 + timedelta(seconds=60), 100)
    assert feed(OutcomeTracker(), events) == []


def test_an_ack_read_before_its_prompt_still_counts() -> None:
    p = prompt(T0)
    out = feed(OutcomeTracker(), [ack(p, T0 + timedelta(seconds=5)), p, *windows(T0, 610, acceptable=False)])
    assert summary(out) == [(str(p.alert_id), "acknowledged", "device", T0 + timedelta(seconds=600))]


def test_posture_and_rest_evidence_the_earlier_moment_wins() -> None:
    p = prompt(T0)
    rest = ack(p, T0 + timedelta(seconds=130), source="rest")
    out = feed(OutcomeTracker(), [*windows(T0, 130), rest, p])  # both known when the prompt arrives
    assert summary(out) == [(str(p.alert_id), "taken", "posture", T0 + timedelta(seconds=120))]


def test_one_outcome_per_prompt_even_when_redelivered() -> None:
    p = prompt(T0)
    out = feed(OutcomeTracker(), [p, *windows(T0, 200), p, ack(p, T0 + timedelta(seconds=1)), p])
    assert len(out) == 1


def test_suppressed_prompts_posture_nudges_and_outcome_messages_are_not_tracked() -> None:
    tracker = OutcomeTracker()
    suppressed = prompt(T0, status="suppressed")
    nudge = prompt(T0, kind="posture_hold")
    sent = prompt(T0 + timedelta(seconds=1))
    own = ack(sent, T0 + timedelta(seconds=2), source="rest", stage="outcome")
    out = feed(tracker, [suppressed, nudge, sent, own, *windows(T0, 620, acceptable=False)])
    assert summary(out) == [(str(sent.alert_id), "ignored", "timeout", T0 + timedelta(seconds=601))]


def test_idle_timeout_decides_for_a_worker_who_stops_sending() -> None:
    clock = FakeClock()
    tracker = OutcomeTracker(clock=clock)
    p = prompt(T0)
    feed(tracker, [p, ack(p, T0 + timedelta(seconds=30)), *windows(T0, 60, acceptable=False)])
    clock.now += DEFAULT_IDLE_TIMEOUT_S - 1
    assert tracker.due() == []
    clock.now += 1
    assert tracker.due(ready=lambda _w: False) == []  # inputs not read up to date: wait
    out = tracker.due()
    # decided in event time at the horizon, whatever the wall clock says
    assert summary(out) == [(str(p.alert_id), "acknowledged", "device", T0 + timedelta(seconds=600))]
    assert tracker.due() == []


def test_horizon_waits_until_the_inputs_are_read() -> None:
    tracker = OutcomeTracker()
    p = prompt(T0)
    tracker.on_prompt(p)
    for w in windows(T0, 610, acceptable=False):
        tracker.on_window(w)
    assert tracker.due(ready=lambda _w: False) == []
    assert [r.ack.outcome for r in tracker.due()] == ["ignored"]


def _scenario() -> list[Any]:
    events: list[Any] = []
    for i, worker in enumerate(("w1", "w2", "w3", "w4")):
        p = prompt(T0 + timedelta(seconds=7 * i), worker=worker)
        events.append(p)
        good = i % 2 == 0
        for w in windows(T0, 900, acceptable=False):
            events.append(
                window(
                    w.window_start,
                    worker=worker,
                    acceptable=good and w.window_start > T0 + timedelta(seconds=300),
                )
            )
            if w.window_start == T0 + timedelta(seconds=100) and worker == "w2":
                events.append(ack(p, T0 + timedelta(seconds=100)))
    return events


def test_replay_gives_identical_outcome_messages() -> None:
    first = feed(OutcomeTracker(), _scenario())
    second = feed(OutcomeTracker(), _scenario())
    assert [r.ack.model_dump_json() for r in first] == [r.ack.model_dump_json() for r in second]
    assert [r.ack.outcome for r in first] == ["taken", "acknowledged", "taken", "ignored"]


def test_state_round_trip_mid_stream_gives_the_same_outcomes() -> None:
    events = _scenario()
    straight = feed(OutcomeTracker(), events)
    for cut in (1, len(events) // 3, len(events) // 2, len(events) - 5):
        before = OutcomeTracker()
        out = feed(before, events[:cut])
        after = OutcomeTracker()
        for worker in before.workers():
            raw = before.export_worker(worker)
            assert raw is not None
            assert after.restore_worker(raw) == worker
        out += feed(after, events[cut:])
        assert [r.ack.model_dump_json() for r in out] == [r.ack.model_dump_json() for r in straight], cut


def test_dirty_workers_are_reported_once() -> None:
    tracker = OutcomeTracker()
    tracker.on_window(window(T0, worker="w9"))
    assert tracker.take_dirty() == {"w9"}
    assert tracker.take_dirty() == set()


def test_break_ack_point_is_stamped_with_the_alert_time_and_tagged_by_outcome() -> None:
    from strainwatch.alerts.outcome_runner import outcome_line

    p = prompt(T0 + timedelta(seconds=3, microseconds=500_000))
    (record,) = feed(OutcomeTracker(), [p, *windows(T0, 620, acceptable=False)])
    assert outcome_line(record) == (
        "break_ack,kind=conditioning_break,outcome=ignored,site=plant-1,source=timeout,team=assembly,"
        f'worker=w1 alert_id="{p.alert_id}",taken=0i,acknowledged=0i,ignored=1i {int(T0.timestamp()) + 3}'
    )
