"""Samples to exposure: zones, static holds, strain dose with recovery, break decisions.

The model is described in docs/exposure-model.md.

Pure and deterministic: event time only, no I/O. Samples are processed one by one in event time, so
the same samples in the same order give the same result however they are split into frames. A
worker's state is a flat array of doubles (about 1 KiB) so a processor can hold 10,000+ of them.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from mypy_extensions import mypyc_attr

from strainwatch.exposure.thresholds import SegmentThresholds, Thresholds

# The state holds blocks for the first CORE_SEGMENTS always and grows for the optional ones the
# first time a device sends them: most wearables have no lateral/twist sensors (288 bytes a worker).
SEGMENT_ORDER: tuple[str, ...] = (
    "trunk_flexion",
    "neck_flexion",
    "arm_elevation_left",
    "arm_elevation_right",
    "trunk_lateral",
    "trunk_twist",
)
CORE_SEGMENTS = 4
ZONES: tuple[str, str, str] = ("acceptable", "conditional", "not_acceptable")
NEVER = -math.inf

# State layout (WorkerState.slots, one array('d')): NG global slots, then one block of NS slots per
# segment in SEGMENT_ORDER; segment i's slot X is slots[NG + i * NS + X]. Times are epoch seconds,
# NEVER (-inf) for "not yet"; flags are 0.0 / 1.0.
#
# global slots
G_END = 0  # event time just after the last processed sample
G_WIN = 1  # start of the open window, NEVER when none is open
G_FRAMES = 2  # frames that touched the open window
G_WEAR = 3  # seconds of samples in the open window
G_VIOL = 4  # violations in the open window
G_LAST_BREAK = 5  # time of the last conditioning break
G_BREAK_SHIFT = 6  # shift period (floor(t / shift_s)) the break count is for
G_BREAK_COUNT = 7  # breaks in that shift period
G_DT = 8  # sample period of the last frame
G_CLOCK_T0 = 9  # the sample clock's anchor: sample k since the anchor is at G_CLOCK_T0 + k * G_DT
G_CLOCK_N = 10  # samples since the anchor
NG = 11
# per-segment slots: state carried from sample to sample
DOSE = 0  # strain dose
ACTIVE = 1  # a hold is in progress
H_START = 2  # the hold's first sample time
H_SUM = 3  # sum of the hold's angles (mean = H_SUM / H_N)
H_N = 4  # samples in the hold
H_LAST_IN = 5  # time of the hold's last sample within tolerance (hysteresis counts from here)
LAST_NUDGE = 6  # time of the last posture_hold alert
LAST_ENTRY = 7  # time of the last movement into a non-acceptable zone
FREQUENT = 8  # that movement came within the frequent gap of the previous one
LAST_OUT = 9  # time of the last sample outside the acceptable zone (debounce counts from here)
# per-segment slots: the open window's aggregates, zeroed when it closes (W_SAMPLES..W_LONGEST)
W_SAMPLES = 10  # samples
W_ACC, W_COND, W_NA = 11, 12, 13  # seconds per zone
W_CUT0, W_CUT1, W_CUT2 = 14, 15, 16  # seconds above each cut-point
W_LONGEST = 17  # longest hold
W_ACCRUED = 18  # dose accrued in the window, before recovery (dose per hour of work sums these)
NS = 19
MAX_CUTPOINTS = 3
_STATE_VERSION = 4
_NG_V2 = 9  # version 2 had no sample clock
_NS_V3 = 18  # versions 2 and 3 had no accrued-dose slot
# Dose comparisons carry this much slack (dose points; outputs are rounded to 1e-6): 600 s at 1/s and
# 100 Hz is 60,000 float steps of 0.01 = 599.9999999996, and must reach the 600 threshold.
DOSE_SLACK = 1e-6


# plain Python classes even when mypyc compiles this module: a compiled (native) class has no
# descriptors of its own; both are off the per-sample path
@mypyc_attr(native_class=False)
class _Slot:
    """One named slot of a segment block: `view.dose` is `slots[base + DOSE]`."""

    __slots__ = ("offset",)

    def __init__(self, offset: int) -> None:
        self.offset = offset

    def __get__(self, view: SegmentSlots, owner: object = None) -> float:
        return view.slots[view.base + self.offset]

    def __set__(self, view: SegmentSlots, value: float) -> None:
        view.slots[view.base + self.offset] = value


@mypyc_attr(native_class=False)
class SegmentSlots:
    """A named view of one segment's block of a WorkerState.

    Used everywhere but the per-sample loop of `ExposureEngine._chunk`, which keeps the block's
    slots in local variables (a property call per sample would cost measurable speed there).
    """

    __slots__ = ("base", "slots")

    def __init__(self, slots: array[float], index: int) -> None:
        self.slots = slots
        self.base = NG + index * NS

    dose = _Slot(DOSE)
    hold_active = _Slot(ACTIVE)
    hold_start = _Slot(H_START)
    hold_angle_sum = _Slot(H_SUM)
    hold_samples = _Slot(H_N)
    hold_last_in = _Slot(H_LAST_IN)
    last_nudge = _Slot(LAST_NUDGE)
    last_entry = _Slot(LAST_ENTRY)
    last_out = _Slot(LAST_OUT)
    window_samples = _Slot(W_SAMPLES)
    window_acceptable_s = _Slot(W_ACC)
    window_conditional_s = _Slot(W_COND)
    window_not_acceptable_s = _Slot(W_NA)
    window_longest_hold_s = _Slot(W_LONGEST)
    window_accrued = _Slot(W_ACCRUED)

    @property
    def hold_mean(self) -> float:
        return self.hold_angle_sum / self.hold_samples

    def window_cutpoint_s(self, k: int) -> float:
        return self.slots[self.base + W_CUT0 + k]

    def clear_window(self) -> None:
        """Zero the open window's aggregates (W_SAMPLES..W_ACCRUED)."""
        for slot in range(W_SAMPLES, W_ACCRUED + 1):
            self.slots[self.base + slot] = 0.0


def _r(value: float) -> float:
    """Outputs are rounded to the microsecond: sums of 1/rate steps carry float noise (9.999999…)."""
    return round(value, 6)


def _init_block(slots: array[float], index: int) -> None:
    """A fresh segment block: no dose, no hold, never nudged, never entered a zone."""
    block = SegmentSlots(slots, index)
    block.last_nudge = NEVER
    block.last_entry = NEVER
    block.last_out = NEVER


def _absent_dose(s: array[float], present: Sequence[tuple[_Segment, object]]) -> float:
    """Upper-back dose held by the tracked segments a frame does not carry."""
    present_indexes = {seg.index for seg, _ in present}
    return sum(s[NG + i * NS + DOSE] for i in range((len(s) - NG) // NS) if i not in present_indexes)


@dataclass(frozen=True, slots=True)
class Alert:
    kind: Literal["posture_hold", "conditioning_break"]
    ts_s: float
    segment: str
    dose: float
    routine: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Violation:
    segment: str
    start_s: float
    duration_s: float
    mean_angle: float


@dataclass(slots=True)
class WindowAggregate:
    window_start_s: int
    window_s: int
    frames: int
    wear_s: float
    samples: dict[str, int]
    zone_s: dict[str, dict[str, float]]
    cutpoints_s: dict[str, dict[str, float]]
    longest_hold_s: dict[str, float]
    dose: dict[str, float]
    violations: int
    thresholds_version: str
    # dose accrued within the window, before recovery, per segment and `upper_back` (sums over
    # windows are the dose a stretch of work caused: dose per monitored hour)
    accrued: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class FrameOutcome:
    alerts: list[Alert] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    closed: list[WindowAggregate] = field(default_factory=list)


class WorkerState:
    """One worker's exposure state: a flat array of doubles (see the slot constants)."""

    __slots__ = ("slots",)

    def __init__(self, slots: array[float]) -> None:
        self.slots = slots

    @classmethod
    def new(cls) -> WorkerState:
        slots = array("d", bytes(8 * (NG + NS * CORE_SEGMENTS)))  # exact size: extend over-allocates
        slots[G_END] = NEVER
        slots[G_WIN] = NEVER
        slots[G_LAST_BREAK] = NEVER
        slots[G_BREAK_SHIFT] = NEVER
        slots[G_CLOCK_T0] = NEVER
        for index in range(CORE_SEGMENTS):
            _init_block(slots, index)
        return cls(slots)

    @property
    def segments(self) -> int:
        """How many segment blocks the state holds (SEGMENT_ORDER's first n)."""
        return (len(self.slots) - NG) // NS

    def grow(self, segments: int) -> None:
        """Add blocks up to `segments` (a new block: no dose, no hold, never nudged)."""
        slots = self.slots
        for index in range(self.segments, segments):
            slots.extend(array("d", bytes(8 * NS)))
            _init_block(slots, index)

    @property
    def end_s(self) -> float:
        """Event time just after the last processed sample; -inf before the first."""
        return self.slots[G_END]

    def segment(self, index: int) -> SegmentSlots:
        """Segment `index` of SEGMENT_ORDER, by slot name."""
        return SegmentSlots(self.slots, index)

    def dose(self, segment: str) -> float:
        index = SEGMENT_ORDER.index(segment)
        return self.segment(index).dose if index < self.segments else 0.0

    def to_bytes(self) -> bytes:
        return bytes([_STATE_VERSION]) + self.slots.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> WorkerState:
        if not data or data[0] not in (2, 3, _STATE_VERSION):
            raise ValueError("unknown exposure state version")
        slots = array("d")
        slots.frombytes(data[1:])
        if data[0] == 2 and len(slots) >= _NG_V2:
            # version 2: no sample clock; the next frame anchors a new one at its end
            slots[_NG_V2:_NG_V2] = array("d", (slots[G_END], 0.0))
        if data[0] in (2, 3):
            # versions 2 and 3: no accrued-dose slot; the open window's accrual starts at 0
            blocks_v3, rest_v3 = divmod(len(slots) - NG, _NS_V3)
            if rest_v3:
                raise ValueError("exposure state has the wrong size")
            for index in reversed(range(blocks_v3)):
                end = NG + (index + 1) * _NS_V3
                slots[end:end] = array("d", (0.0,))
        blocks, rest = divmod(len(slots) - NG, NS)
        if rest or not CORE_SEGMENTS <= blocks <= len(SEGMENT_ORDER):
            raise ValueError("exposure state has the wrong size")
        return cls(slots)


@dataclass(frozen=True, slots=True)
class _Segment:
    index: int
    name: str
    region: str
    symmetric: bool
    acceptable_max: float
    conditional_max: float
    negative_not_acceptable: bool
    limit_a0: float
    limit_s0: float
    limit_a1: float
    limit_s1: float
    cutpoints: tuple[float, ...]
    cut_names: tuple[str, ...]
    min_limit_s: float  # no hold shorter than this can be over its limit: skips most limit() calls

    def zones(self, values: Sequence[float]) -> list[int]:
        """zone() of each value, inlined: this runs for every sample of every segment."""
        acc, cond = self.acceptable_max, self.conditional_max
        if self.symmetric:
            return [0 if -acc < a < acc else (1 if -cond < a < cond else 2) for a in values]
        neg = 2 if self.negative_not_acceptable else 0
        return [((neg if a < 0 else 0) if a < acc else (1 if a < cond else 2)) for a in values]

    def seconds_above(self, values: Sequence[float], dt: float) -> list[float]:
        """Seconds above each cut-point: one C sort, then a bisection per cut-point."""
        ordered = sorted(values)
        n = len(ordered)
        return [(n - bisect_right(ordered, cut)) * dt for cut in self.cutpoints]

    def zone(self, angle: float) -> int:
        """0 acceptable, 1 conditional, 2 not acceptable (before the movement-frequency rule)."""
        if self.symmetric:
            angle = abs(angle)
        elif angle < 0:
            return 2 if self.negative_not_acceptable else 0
        if angle < self.acceptable_max:
            return 0
        if angle < self.conditional_max:
            return 1
        return 2

    def limit(self, mean_angle: float, not_acceptable_limit_s: float) -> float:
        """Maximum acceptable holding time at this mean angle (linear approximation of ISO 11226)."""
        if self.zone(mean_angle) == 2:
            return not_acceptable_limit_s
        angle = abs(mean_angle) if self.symmetric else mean_angle
        if angle <= self.limit_a0:
            return self.limit_s0
        if angle >= self.limit_a1:
            return self.limit_s1
        share = (angle - self.limit_a0) / (self.limit_a1 - self.limit_a0)
        return self.limit_s0 + share * (self.limit_s1 - self.limit_s0)


def _compile(index: int, name: str, seg: SegmentThresholds, not_acceptable_limit_s: float) -> _Segment:
    if len(seg.cutpoints) > MAX_CUTPOINTS:
        raise ValueError(f"{name}: at most {MAX_CUTPOINTS} cut-points")
    (a0, s0), (a1, s1) = seg.holding_limit
    return _Segment(
        min_limit_s=min(s0, s1, not_acceptable_limit_s),
        index=index,
        name=name,
        region=seg.region,
        symmetric=seg.symmetric,
        acceptable_max=seg.acceptable_max,
        conditional_max=seg.conditional_max,
        negative_not_acceptable=seg.negative_not_acceptable,
        limit_a0=a0,
        limit_s0=s0,
        limit_a1=a1,
        limit_s1=s1,
        cutpoints=seg.cutpoints,
        cut_names=tuple(f"gt{c:g}" for c in seg.cutpoints),
    )


# `strainwatch exposure` subclasses it to observe violations (exposure_cli.py)
@mypyc_attr(allow_interpreted_subclasses=True)
class ExposureEngine:
    def __init__(self, thresholds: Thresholds, window_s: int = 10) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        missing = [name for name in SEGMENT_ORDER if name not in thresholds.segments]
        if missing:
            raise ValueError(f"thresholds lack segments: {missing}")
        self.thresholds = thresholds
        self.window_s = window_s
        self.version = thresholds.label
        self._segments = {
            name: _compile(i, name, thresholds.segments[name], thresholds.not_acceptable_limit_s)
            for i, name in enumerate(SEGMENT_ORDER)
        }
        per_min = thresholds.frequent_entries_per_min
        # "≥ 2 movements per minute" (EN 1005-4): an entry within 60 s of the previous one
        # (approximation: for k per minute, within 60/(k-1) s, i.e. k entries within a minute on average)
        self._frequent_gap_s = 60.0 / (per_min - 1.0) if per_min > 1.0 else math.inf
        self._by_index = [self._segments[name] for name in SEGMENT_ORDER]
        rates = thresholds.dose_rate
        self._rates = (rates["acceptable"], rates["conditional"], rates["not_acceptable"])
        self._max_rate = max(self._rates) * thresholds.over_limit_multiplier
        self._decay_cache: dict[float, float] = {}

    def new_state(self) -> WorkerState:
        return WorkerState.new()

    def _decay(self, seconds: float) -> float:
        factor = self._decay_cache.get(seconds)
        if factor is None:
            factor = 0.5 ** (seconds / self.thresholds.recovery_half_life_s)
            if len(self._decay_cache) < 64:
                self._decay_cache[seconds] = factor
        return factor

    # --- frames ------------------------------------------------------------------------------

    def process(
        self,
        state: WorkerState,
        start_s: float,
        rate_hz: float,
        samples: Mapping[str, Sequence[float]],
        rest: bool = False,
    ) -> FrameOutcome:
        """Score one frame of samples (any subset of segments, equal lengths) in event time."""
        s = state.slots
        dt = 1.0 / rate_hz
        present = [(self._segments[name], values) for name, values in samples.items() if len(values)]
        if not present:
            raise ValueError("a frame needs at least one segment")
        n = len(present[0][1])
        if any(len(values) != n for _, values in present):
            raise ValueError("segment arrays differ in length")
        needed = max(seg.index for seg, _ in present) + 1
        if NG + needed * NS > len(s):
            state.grow(needed)  # the first frame with an optional segment (lateral bend, twist)
        end = s[G_END]
        if end != NEVER and start_s < end - 0.5 * dt:
            raise ValueError(
                f"frame at {start_s} starts before the state's end {end}: frames must be in order"
            )
        # The sample clock: a frame that continues the previous one (its start within a millisecond,
        # the precision of device timestamps, of the state's end, same rate) keeps counting samples
        # from the same anchor, so every sample's time is t0 + k * dt whatever the framing. A frame
        # start at 30 Hz is up to 0.5 ms off the sample grid, far more than the time-threshold slack.
        if end != NEVER and dt == s[G_DT] and abs(start_s - end) <= min(1e-3, 0.25 * dt):
            t0, k0 = s[G_CLOCK_T0], s[G_CLOCK_N]
        else:
            t0, k0 = start_s, 0.0
        out = FrameOutcome()
        window_s = self.window_s
        # Epoch seconds (~1.7e9) carry ~2e-7 s of float error: sample times within a thousandth of a
        # sample of a window boundary are on it (timestamps have millisecond precision anyway).
        snap = 1e-3 * dt
        first_window = math.floor((t0 + k0 * dt + snap) / window_s) * window_s
        if s[G_WIN] != NEVER and first_window != s[G_WIN]:
            out.closed.append(self._close_window(state))
        if end != NEVER and start_s - end > 0.5 * dt:
            self._gap(state, start_s - end, out)
        if s[G_WIN] == NEVER:
            s[G_WIN] = first_window
        s[G_FRAMES] += 1
        s[G_DT] = dt
        th = self.thresholds
        # samples split at window boundaries: each chunk belongs to one window
        i0 = 0
        while i0 < n:
            window = math.floor((t0 + (k0 + i0) * dt + snap) / window_s) * window_s
            if window != s[G_WIN]:
                out.closed.append(self._close_window(state))
                s[G_WIN] = window
            boundary = window + window_s
            i1 = min(n, max(i0 + 1, math.ceil((boundary - t0 - snap) / dt - k0)))
            self._chunk(state, present, t0, dt, int(k0) + i0, i0, i1, rest, th, out)
            i0 = i1
        s[G_CLOCK_T0] = t0
        s[G_CLOCK_N] = k0 + n
        s[G_END] = t0 + (k0 + n) * dt
        return out

    def _chunk(
        self,
        state: WorkerState,
        present: list[tuple[_Segment, Sequence[float]]],
        t0: float,
        dt: float,
        clock_i: int,
        i0: int,
        i1: int,
        rest: bool,
        th: Thresholds,
        out: FrameOutcome,
    ) -> None:
        """Samples i0..i1 of the frame: the clock's samples clock_i.., at t0 + (clock_i + j) * dt."""
        s = state.slots
        count = i1 - i0
        s[G_WEAR] += count * dt
        chunks = [values[i0:i1] for _, values in present]
        zones = [seg.zones(chunk) for (seg, _), chunk in zip(present, chunks, strict=True)]
        all_ok = (
            [not any(col) for col in zip(*zones, strict=True)]
            if len(zones) > 1
            else [z == 0 for z in zones[0]]
        )
        decay = self._decay(dt)
        rates = self._rates
        over_mult = th.over_limit_multiplier
        tol = th.hold_tolerance_deg
        # Sample times are sums of epoch seconds and i/rate, off by ~1e-7 s: a comparison that lands
        # exactly on a threshold (1 s debounce at 1 Hz, 3 s hysteresis at 10 Hz) must not flip on
        # float noise, so every time threshold carries a thousandth of a sample of slack.
        snap = 1e-3 * dt
        hyst = th.hold_hysteresis_s - snap
        na_limit = th.not_acceptable_limit_s
        nudge_every = th.nudge_interval_s - snap
        frequent_gap = self._frequent_gap_s + snap
        debounce = th.movement_debounce_s + snap
        break_possible = self._break_possible(s, len(present), count * dt)
        trajectories: list[list[float]] = []  # per present segment: dose after each sample
        hold_alerts: list[tuple[int, str]] = []  # (sample index in the chunk, segment)
        for (seg, _values), chunk, seg_zones in zip(present, chunks, zones, strict=True):
            b = NG + seg.index * NS
            for k, seconds in enumerate(seg.seconds_above(chunk, dt)):
                s[b + W_CUT0 + k] += seconds
            dose = s[b + DOSE]
            accrued = 0.0
            active = s[b + ACTIVE]
            s[b + W_SAMPLES] += count
            traj: list[float] = []
            if not active and not any(seg_zones):
                # fast path: neutral all through, no hold: only cut-points and recovery to account
                s[b + W_ACC] += count * dt
                for ok in all_ok:
                    if ok or rest:
                        dose *= decay
                    traj.append(dose)
                s[b + DOSE] = dose
                trajectories.append(traj)
                continue
            h_start = s[b + H_START]
            h_sum = s[b + H_SUM]
            h_n = s[b + H_N]
            last_in = s[b + H_LAST_IN]
            last_nudge = s[b + LAST_NUDGE]
            last_entry = s[b + LAST_ENTRY]
            frequent = s[b + FREQUENT]
            last_out = s[b + LAST_OUT]
            longest = s[b + W_LONGEST]
            zone_samples = [0, 0, 0]
            over_from = seg.min_limit_s + snap
            for j in range(count):
                a = chunk[j]
                t = t0 + (clock_i + j) * dt
                base_zone = seg_zones[j]
                zone = base_zone
                if base_zone:
                    # a movement into the zone, unless it only dipped out for less than the
                    # debounce time (sensor noise at a zone boundary is not a movement)
                    if t - last_out > debounce:
                        frequent = 1.0 if t - last_entry <= frequent_gap else 0.0
                        last_entry = t
                    last_out = t
                    if frequent and zone == 1:
                        zone = 2  # EN 1005-4: frequent movements into the zone are not acceptable
                zone_samples[zone] += 1
                if active:
                    if base_zone and abs(a - h_sum / h_n) <= tol:
                        h_sum += a
                        h_n += 1.0
                        last_in = t
                    elif t - last_in >= hyst:
                        self._end_hold(seg, s, h_start, last_in + dt, h_sum / h_n, na_limit, out)
                        active = 0.0
                if not active and base_zone:
                    active = 1.0
                    h_start = t
                    h_sum = a
                    h_n = 1.0
                    last_in = t
                over = False
                if active:
                    duration = last_in + dt - h_start
                    if duration > longest:
                        longest = duration
                    if duration > over_from and duration > seg.limit(h_sum / h_n, na_limit) + snap:
                        over = True
                        if not rest and t - last_nudge >= nudge_every:
                            last_nudge = t
                            hold_alerts.append((j, seg.name))
                if all_ok[j] or rest:
                    dose *= decay
                else:
                    step = rates[zone] * (over_mult if over else 1.0) * dt
                    dose += step
                    accrued += step
                traj.append(dose)
            s[b + DOSE] = dose
            s[b + ACTIVE] = active
            s[b + H_START] = h_start
            s[b + H_SUM] = h_sum
            s[b + H_N] = h_n
            s[b + H_LAST_IN] = last_in
            s[b + LAST_NUDGE] = last_nudge
            s[b + LAST_ENTRY] = last_entry
            s[b + FREQUENT] = frequent
            s[b + LAST_OUT] = last_out
            s[b + W_LONGEST] = longest
            s[b + W_ACCRUED] += accrued
            s[b + W_ACC] += zone_samples[0] * dt
            s[b + W_COND] += zone_samples[1] * dt
            s[b + W_NA] += zone_samples[2] * dt
            trajectories.append(traj)
        if hold_alerts:
            # the upper-back dose at each alert's sample, once every segment has reached it: reading
            # the state mid-loop would mix segments at different samples (and depend on frame splits)
            absent = _absent_dose(s, present)
            for j, name in sorted(hold_alerts):
                upper_back = absent + sum(traj[j] for traj in trajectories)
                out.alerts.append(Alert("posture_hold", t0 + (clock_i + j) * dt, name, _r(upper_back)))
        if break_possible and not rest:
            self._maybe_break(state, present, trajectories, t0, dt, clock_i, out)

    def _upper_back(self, s: array[float]) -> float:
        return sum(s[NG + i * NS + DOSE] for i in range((len(s) - NG) // NS))

    def _break_possible(self, s: array[float], n_present: int, seconds: float) -> bool:
        """Whether upper-back dose could reach the break threshold within this chunk (else skip the check).

        The bound is the dose at the chunk's start plus every present segment at the highest rate for
        the whole chunk; summing the per-sample steps rounds differently from this product, so it
        gets a margin on top of the threshold's own slack (a spare check is cheap, a missed one is not).
        """
        ceiling = self._upper_back(s) + n_present * self._max_rate * seconds
        return ceiling + DOSE_SLACK >= self.thresholds.break_dose - DOSE_SLACK

    def _maybe_break(
        self,
        state: WorkerState,
        present: list[tuple[_Segment, Sequence[float]]],
        trajectories: list[list[float]],
        t0: float,
        dt: float,
        clock_i: int,
        out: FrameOutcome,
    ) -> None:
        s = state.slots
        th = self.thresholds
        present_indexes = {seg.index for seg, _ in present}
        absent = _absent_dose(s, present)
        break_at = th.break_dose - DOSE_SLACK
        for j, doses in enumerate(zip(*trajectories, strict=True)):
            upper_back = absent + sum(doses)
            if upper_back < break_at:
                continue
            t = t0 + (clock_i + j) * dt
            shift = math.floor(t / th.shift_s)
            if s[G_BREAK_SHIFT] != shift:
                s[G_BREAK_SHIFT] = shift
                s[G_BREAK_COUNT] = 0
            if (
                t - s[G_LAST_BREAK] < th.break_cooldown_s - 1e-3 * dt
                or s[G_BREAK_COUNT] >= th.max_breaks_per_shift
            ):
                continue
            s[G_LAST_BREAK] = t
            s[G_BREAK_COUNT] += 1
            # the routine targets the body region that contributed most dose
            by_region: dict[str, float] = {}
            for (seg, _), dose in zip(present, doses, strict=True):
                by_region[seg.region] = by_region.get(seg.region, 0.0) + dose
            for index, name in enumerate(SEGMENT_ORDER[: (len(s) - NG) // NS]):
                if index not in present_indexes:
                    region = self._segments[name].region
                    by_region[region] = by_region.get(region, 0.0) + state.segment(index).dose
            region = max(sorted(by_region), key=lambda r: by_region[r])
            top = max(
                (
                    (seg.name, dose)
                    for (seg, _), dose in zip(present, doses, strict=True)
                    if seg.region == region
                ),
                key=lambda item: item[1],
                default=(region, 0.0),
            )[0]
            out.alerts.append(Alert("conditioning_break", t, top, upper_back, tuple(th.routines[region])))  # type: ignore[index]

    def _end_hold(
        self,
        seg: _Segment,
        s: array[float],
        start: float,
        end: float,
        mean: float,
        na_limit: float,
        out: FrameOutcome,
    ) -> None:
        duration = end - start
        if duration > seg.limit(mean, na_limit) + 1e-3 * s[G_DT]:  # slack: see _chunk
            out.violations.append(Violation(seg.name, start, duration, mean))
            s[G_VIOL] += 1

    def _stop_hold(self, seg: _Segment, block: SegmentSlots, s: array[float], out: FrameOutcome) -> None:
        """End a hold in progress outside the sample loop (a gap in the data, or the end of input):
        it lasted until its last sample within tolerance."""
        end = block.hold_last_in + s[G_DT]
        self._end_hold(
            seg, s, block.hold_start, end, block.hold_mean, self.thresholds.not_acceptable_limit_s, out
        )
        block.hold_active = 0.0

    def _gap(self, state: WorkerState, gap_s: float, out: FrameOutcome) -> None:
        """No samples for gap_s: holds longer than the hysteresis end; dose recovers over the gap."""
        s = state.slots
        th = self.thresholds
        factor = 0.5 ** (gap_s / th.recovery_half_life_s)
        for seg in self._by_index[: state.segments]:
            block = state.segment(seg.index)
            block.dose *= factor
            if block.hold_active and gap_s >= th.hold_hysteresis_s - 1e-3 * s[G_DT]:
                self._stop_hold(seg, block, s, out)

    # --- windows -----------------------------------------------------------------------------

    def _aggregate(self, state: WorkerState) -> WindowAggregate:
        s = state.slots
        samples: dict[str, int] = {}
        zone_s: dict[str, dict[str, float]] = {}
        cut_s: dict[str, dict[str, float]] = {}
        longest: dict[str, float] = {}
        dose: dict[str, float] = {}
        accrued: dict[str, float] = {}
        upper_back = 0.0
        accrued_upper_back = 0.0
        for seg in self._by_index[: state.segments]:
            block = state.segment(seg.index)
            upper_back += block.dose
            if not block.window_samples:
                continue
            samples[seg.name] = int(block.window_samples)
            zone_s[seg.name] = {
                "acceptable": block.window_acceptable_s,
                "conditional": block.window_conditional_s,
                "not_acceptable": block.window_not_acceptable_s,
            }
            cut_s[seg.name] = {name: block.window_cutpoint_s(k) for k, name in enumerate(seg.cut_names)}
            longest[seg.name] = block.window_longest_hold_s
            accrued[seg.name] = _r(block.window_accrued)
            accrued_upper_back += block.window_accrued
            dose[seg.name] = block.dose
        dose["upper_back"] = upper_back
        accrued["upper_back"] = _r(accrued_upper_back)
        return WindowAggregate(
            window_start_s=int(s[G_WIN]),
            window_s=self.window_s,
            frames=int(s[G_FRAMES]),
            wear_s=_r(s[G_WEAR]),
            samples=samples,
            zone_s=zone_s,
            cutpoints_s=cut_s,
            longest_hold_s=longest,
            dose=dose,
            accrued=accrued,
            violations=int(s[G_VIOL]),
            thresholds_version=self.version,
        )

    def _close_window(self, state: WorkerState) -> WindowAggregate:
        aggregate = self._aggregate(state)
        s = state.slots
        s[G_FRAMES] = 0.0
        s[G_WEAR] = 0.0
        s[G_VIOL] = 0.0
        for index in range(state.segments):
            state.segment(index).clear_window()
        s[G_WIN] = NEVER
        return aggregate

    def window_start(self, state: WorkerState) -> float:
        """Start of the open window, or -inf when none is open."""
        return state.slots[G_WIN]

    def open_window(self, state: WorkerState) -> WindowAggregate | None:
        """The current window so far (a partial point, rewritten until the window closes)."""
        if state.slots[G_WIN] == NEVER:
            return None
        return self._aggregate(state)

    def finish(self, state: WorkerState) -> FrameOutcome:
        """End of input: holds in progress end (violations), the open window closes."""
        s = state.slots
        out = FrameOutcome()
        for seg in self._by_index[: state.segments]:
            block = state.segment(seg.index)
            if block.hold_active:
                self._stop_hold(seg, block, s, out)
        if s[G_WIN] != NEVER:
            out.closed.append(self._close_window(state))
        return out
