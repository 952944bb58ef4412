"""The delivery policy: whether a break alert reaches a person (docs/alerting.md). Pure, no I/O.

Time is event time: an alert's `ts` (epoch seconds here), a posture sample's time for the
neutral-posture wait. Each alert ends as exactly one Decision: sent, or suppressed with a reason.
A posture nudge may first wait for a neutral posture (`Pending`) and is decided by the frames that
follow it (`observe_neutral`) or by the clock (`expire_pending`).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from strainwatch.events import BreakAlert, RosterEntry

Reason = Literal["budget", "quiet_hours", "scheduled_break", "not_neutral", "duplicate", "stale"]

HOUR_S = 3600.0
FIXED_SHIFT_S = 8 * HOUR_S  # the shift when the roster names none the site defines
# How long a decided alert id is remembered (event time behind the worker's latest alert): the
# processor re-emits an alert only when it replays after a crash, minutes behind, never days.
DECIDED_HORIZON_S = 2 * 86_400.0
MAX_DECIDED_PER_WORKER = 5_000
EPS = 1e-6  # sample times are sums of 1/rate steps


@dataclass(frozen=True, slots=True)
class ClockRange:
    """A local 'HH:MM-HH:MM' range; an end at or before the start wraps past midnight."""

    start_min: int
    end_min: int

    @classmethod
    def parse(cls, text: str) -> ClockRange:
        try:
            start, end = text.strip().split("-")
            return cls(_minutes(start), _minutes(end))
        except ValueError:
            raise ValueError(f"{text!r} is not a 'HH:MM-HH:MM' range") from None

    def contains(self, minute: float) -> bool:
        if self.start_min < self.end_min:
            return self.start_min <= minute < self.end_min
        return minute >= self.start_min or minute < self.end_min  # wraps midnight (or all day)

    def length_min(self) -> int:
        return (self.end_min - self.start_min) % 1440 or 1440


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.strip().split(":")
    h, m = int(hours), int(minutes)
    if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
        raise ValueError(hhmm)
    return h * 60 + m


@dataclass(frozen=True, slots=True)
class Policy:
    """The rules for one worker, resolved from the site (and team) configuration."""

    timezone: str = "UTC"
    quiet_hours: tuple[ClockRange, ...] = ()
    shifts: Mapping[str, ClockRange] = field(default_factory=dict)
    nudges_per_hour: int = 6
    nudges_per_shift: int = 24
    nudge_when_neutral: bool = False
    neutral_hold_s: float = 2.0
    neutral_timeout_s: float = 60.0
    # a prompt about a posture older than this would reach the worker too late to mean anything
    # (history backfilled from a device's memory, a service back after an outage); 0: no limit
    max_alert_age_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Decision:
    alert: BreakAlert
    status: Literal["sent", "suppressed"]
    reason: Reason | None = None


@dataclass(slots=True)
class PendingNudge:
    """A nudge waiting for the worker to be back in a neutral posture."""

    alert: BreakAlert
    neutral_since: float | None = None  # event time the current all-acceptable run began


@dataclass(slots=True)
class WorkerPolicyState:
    nudges_sent: list[float] = field(default_factory=list)  # event times, ascending
    decided: dict[str, float] = field(default_factory=dict)  # alert id -> alert ts
    pending: dict[str, PendingNudge] = field(default_factory=dict)  # alert id -> nudge


def epoch(ts: datetime) -> float:
    return ts.timestamp()


def _local(ts: float, tz: str) -> datetime:
    return datetime.fromtimestamp(ts, UTC).astimezone(ZoneInfo(tz))


def _minute_of_day(local: datetime) -> float:
    return local.hour * 60 + local.minute + local.second / 60


def in_ranges(ts: float, tz: str, ranges: Sequence[ClockRange]) -> bool:
    minute = _minute_of_day(_local(ts, tz))
    return any(r.contains(minute) for r in ranges)


def shift_start(ts: float, policy: Policy, shift_name: str | None) -> float:
    """Start (epoch s) of the shift `ts` falls in: the roster's named shift as the site defines it,
    else a fixed 8-hour period from local midnight (00-08, 08-16, 16-24)."""
    local = _local(ts, policy.timezone)
    minute = _minute_of_day(local)
    shift = policy.shifts.get(shift_name) if shift_name else None
    if shift is not None and shift.contains(minute):
        back_min = (minute - shift.start_min) % 1440
        return ts - back_min * 60
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    block = int(minute * 60 // FIXED_SHIFT_S)
    return (midnight + timedelta(seconds=block * FIXED_SHIFT_S)).timestamp()


def _count_since(times: list[float], since: float, until: float) -> int:
    return bisect.bisect_right(times, until) - bisect.bisect_left(times, since)


def decide(
    alert: BreakAlert,
    roster: RosterEntry | None,
    policy: Policy,
    state: WorkerPolicyState,
    now: float | None = None,
) -> Decision | PendingNudge:
    """Decide one alert, updating the worker's state. The checks, in order: duplicate, stale (the
    alert is older than max_alert_age_s at `now`, the wall clock of the decision; None skips the
    check), scheduled break, quiet hours, then for posture nudges the hourly and per-shift budget
    and the optional wait for a neutral posture."""
    alert_id = str(alert.alert_id)
    ts = epoch(alert.ts)
    if alert_id in state.decided or alert_id in state.pending:
        return Decision(alert, "suppressed", "duplicate")
    if now is not None and policy.max_alert_age_s > 0 and now - ts > policy.max_alert_age_s:
        return _remember(state, Decision(alert, "suppressed", "stale"))
    if roster is not None and roster.scheduled_breaks:
        breaks = [ClockRange.parse(text) for text in roster.scheduled_breaks if _valid_range(text)]
        if in_ranges(ts, policy.timezone, breaks):
            return _remember(state, Decision(alert, "suppressed", "scheduled_break"))
    if policy.quiet_hours and in_ranges(ts, policy.timezone, policy.quiet_hours):
        return _remember(state, Decision(alert, "suppressed", "quiet_hours"))
    if alert.kind == "conditioning_break":
        # the processor already applied the break cooldown and the per-shift cap
        return _remember(state, Decision(alert, "sent"))
    if not _within_budget(state, policy, roster, ts):
        return _remember(state, Decision(alert, "suppressed", "budget"))
    if policy.nudge_when_neutral:
        pending = PendingNudge(alert)
        state.pending[alert_id] = pending
        return pending
    return _send_nudge(state, alert)


def _valid_range(text: str) -> bool:
    try:
        ClockRange.parse(text)
    except ValueError:
        return False  # a malformed roster range suppresses nothing (the roster is not ours to fix)
    return True


def _within_budget(state: WorkerPolicyState, policy: Policy, roster: RosterEntry | None, ts: float) -> bool:
    # a pending nudge holds its place in the budget: it may still be sent
    pending = [epoch(p.alert.ts) for p in state.pending.values()]
    times = sorted([*state.nudges_sent, *pending])
    if _count_since(times, ts - HOUR_S + EPS, ts) >= policy.nudges_per_hour:
        return False
    start = shift_start(ts, policy, roster.shift if roster else None)
    return _count_since(times, start, ts) < policy.nudges_per_shift


def _send_nudge(state: WorkerPolicyState, alert: BreakAlert) -> Decision:
    bisect.insort(state.nudges_sent, epoch(alert.ts))
    return _remember(state, Decision(alert, "sent"))


def _remember(state: WorkerPolicyState, decision: Decision) -> Decision:
    ts = epoch(decision.alert.ts)
    state.decided[str(decision.alert.alert_id)] = ts
    _prune(state, ts)
    return decision


def _prune(state: WorkerPolicyState, now: float) -> None:
    """Keep the state bounded: decided ids within the horizon (and a count cap), nudge times within
    the longest budget period."""
    horizon = max(state.decided.values(), default=now) - DECIDED_HORIZON_S
    if len(state.decided) > MAX_DECIDED_PER_WORKER or next(iter(state.decided.values()), now) < horizon:
        kept = sorted(((t, a) for a, t in state.decided.items() if t >= horizon), reverse=True)
        state.decided = {a: t for t, a in reversed(kept[:MAX_DECIDED_PER_WORKER])}
    cut = bisect.bisect_left(state.nudges_sent, now - 86_400.0)
    if cut:
        del state.nudges_sent[:cut]


def observe_neutral(
    state: WorkerPolicyState, policy: Policy, start_ts: float, rate_hz: float, acceptable: Sequence[bool]
) -> list[Decision]:
    """Feed one posture frame (per sample: is every present segment acceptable) to the worker's
    pending nudges; returns the nudges it decides (sent once neutral for neutral_hold_s, or
    suppressed `not_neutral` past neutral_timeout_s)."""
    decided: list[Decision] = []
    dt = 1.0 / rate_hz
    for alert_id, pending in list(state.pending.items()):
        alert_ts = epoch(pending.alert.ts)
        deadline = alert_ts + policy.neutral_timeout_s
        outcome: Decision | None = None
        for i, ok in enumerate(acceptable):
            t = start_ts + i * dt
            if t < alert_ts - EPS:
                continue
            if t > deadline + EPS:
                outcome = _drop(state, alert_id)
                break
            if not ok:
                pending.neutral_since = None
                continue
            if pending.neutral_since is None:
                pending.neutral_since = t
            if t + dt - pending.neutral_since >= policy.neutral_hold_s - EPS:
                del state.pending[alert_id]
                outcome = _send_nudge(state, pending.alert)
                break
        if outcome is not None:
            decided.append(outcome)
    return decided


def expire_pending(state: WorkerPolicyState, policy: Policy, now: float) -> list[Decision]:
    """Suppress (`not_neutral`) the pending nudges whose wait ended before `now` (event time the
    caller vouches for: no frame before it is still to come)."""
    expired = [
        alert_id
        for alert_id, pending in state.pending.items()
        if epoch(pending.alert.ts) + policy.neutral_timeout_s < now
    ]
    return [_drop(state, alert_id) for alert_id in expired]


def _drop(state: WorkerPolicyState, alert_id: str) -> Decision:
    pending = state.pending.pop(alert_id)
    return _remember(state, Decision(pending.alert, "suppressed", "not_neutral"))


def neutral_samples(
    present: Mapping[str, Sequence[float]], zones: Mapping[str, tuple[float, bool, bool]]
) -> list[bool]:
    """Per sample: is every present segment in its acceptable zone. `zones`: segment ->
    (acceptable_max, symmetric, negative_not_acceptable) from the exposure profile, the same rule
    as the engine's zone 0. Segments the profile does not know are ignored."""
    known = [(values, zones[name]) for name, values in present.items() if name in zones]
    if not known:
        return []
    n = len(known[0][0])
    out = [True] * n
    for values, (acc, symmetric, negative_bad) in known:
        for i, a in enumerate(values):
            if symmetric:
                ok = -acc < a < acc
            elif a < 0:
                ok = not negative_bad
            else:
                ok = a < acc
            if not ok:
                out[i] = False
    return out
