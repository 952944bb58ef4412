"""Minimal cases of the frame-splitting property (test_engine_properties.py): the same samples must
give the same outcome however frames cut them and at whatever epoch time they were taken."""

from __future__ import annotations

import math

import pytest
from pytest import approx

from strainwatch.exposure import ExposureEngine, load_thresholds

from .helpers import Frame, Run, concat, engine, run, split, steady

pytestmark = pytest.mark.unit

EPOCH_MS = 1_700_000_000_000


def test_nudge_dose_does_not_depend_on_framing() -> None:
    # Both arms 40 deg for 130 s: both holds pass their 120-s limit with the sample at t=120 and
    # both arms are nudged then. The dose an alert carries must not depend on how the 130 samples
    # were framed (one frame, or one frame per second).
    samples = steady(130, arm_elevation_left=40, arm_elevation_right=40)
    whole, _ = run(engine(), split(samples, 0, 1.0, []))
    per_second, _ = run(engine(), split(samples, 0, 1.0, list(range(1, 130))))
    assert sorted((a.ts_s, a.segment) for a in whole.alerts) == [
        (120.0, "arm_elevation_left"),
        (120.0, "arm_elevation_right"),
    ]
    doses = [a.dose for a in sorted(whole.alerts, key=lambda a: a.segment)]
    assert doses == approx([a.dose for a in sorted(per_second.alerts, key=lambda a: a.segment)])


def test_a_frame_across_a_window_boundary_at_epoch_time() -> None:
    # 10 Hz frames of 10 samples starting 0.1 .. 0.9 s before an epoch window boundary
    # (1700000010): the samples before the boundary belong to the old window, the rest to the new.
    eng = engine()
    got, want = [], []
    for tenths in range(1, 10):
        start_ms = EPOCH_MS + 10_000 - 100 * tenths
        result, _ = run(eng, [Frame(start_ms / 1000, 10.0, steady(1, 10.0, trunk_flexion=0))])
        got.append([(w.window_start_s, w.samples["trunk_flexion"]) for w in result.windows])
        want.append([(1_700_000_000, tenths), (1_700_000_010, 10 - tenths)][: 2 if tenths < 10 else 1])
    assert got == want


def test_nudge_time_does_not_depend_on_framing_at_epoch_time() -> None:
    # 10 Hz: 0.2 s with the left arm down, 12 s at 120 deg (not acceptable, holding limit 10 s),
    # 4 s down. The hold starts at +0.2 s and is longer than 10 s with the sample at +10.2 s
    # (it then covers 10.1 s): the nudge is due at +10.2 s, however the frames are cut.
    start_ms = 1_700_997_045_000
    samples = concat(
        steady(0.2, 10.0, arm_elevation_left=0),
        steady(12, 10.0, arm_elevation_left=120),
        steady(4, 10.0, arm_elevation_left=0),
    )
    for cuts in ([], [1, 7]):
        result, _ = run(engine(), split(samples, start_ms, 10.0, cuts))
        offsets = [round(a.ts_s - start_ms / 1000, 3) for a in result.alerts]
        assert offsets == [10.2], cuts
        [violation] = result.violations
        assert violation.duration_s == approx(12.0, abs=1e-6)


@pytest.mark.parametrize("start_ms", [0, 1_000_000, EPOCH_MS])
def test_a_dip_shorter_than_the_debounce_is_not_a_new_movement(start_ms: int) -> None:
    # 10 Hz: trunk 30 deg (conditional) for 0.5 s, then 0.9 s upright, six times. Each upright dip
    # is shorter than movement_debounce_s (1 s), so there is one movement only: never "frequent",
    # all 3 s in the trunk's zone are conditional, at any start time.
    samples = concat(*[concat(steady(0.5, 10.0, trunk_flexion=30), steady(0.9, 10.0, trunk_flexion=0))] * 6)
    result, _ = run(engine(window_s=60), split(samples, start_ms, 10.0, []))
    zones = {k: 0.0 for k in ("acceptable", "conditional", "not_acceptable")}
    for w in result.windows:
        for k, v in w.zone_s["trunk_flexion"].items():
            zones[k] += v
    assert zones == approx({"acceptable": 5.4, "conditional": 3.0, "not_acceptable": 0.0})


@pytest.mark.parametrize("start_ms", [0, 1, 123, EPOCH_MS + 123])
def test_a_steady_posture_at_1_hz_is_one_movement(start_ms: int) -> None:
    # 1 Hz: trunk 30 deg (conditional, limit 240 + (30-20)/40 * -180 = 195 s) held for 60 s. One
    # movement into the zone, no dip at all: 60 s conditional and dose 1/s * 60 = 60, whatever the
    # start time. (Consecutive samples are exactly movement_debounce_s = 1 s apart at 1 Hz.)
    result, state = run(engine(window_s=60), [Frame(start_ms / 1000, 1.0, steady(60, trunk_flexion=30))])
    zones = {k: 0.0 for k in ("acceptable", "conditional", "not_acceptable")}
    for w in result.windows:
        for k, v in w.zone_s["trunk_flexion"].items():
            zones[k] += v
    assert zones == approx({"acceptable": 0.0, "conditional": 60.0, "not_acceptable": 0.0})
    assert state.dose("trunk_flexion") == approx(60.0)


# --- dose ties and clocks (docs/exposure-model.md, "Framing and ties") -------------------------
#
# Alerts are compared by sample index (the index of the sample in the stream), not by timestamp:
# at rates whose period is not a whole number of milliseconds (3, 7, 30 Hz) a frame's start
# carries up to half a millisecond of rounding, and the engine must not let that move an alert.

FRAMINGS = ("one", "per_second", "odd")


def cuts_for(framing: str, n: int, rate_hz: float) -> list[int]:
    if framing == "one":
        return []
    if framing == "per_second":
        return list(range(round(rate_hz), n, round(rate_hz)))
    return [c for c in (1, 7, 483, 2003, 4099, 5999, 6001, 9001) if c < n]


def alert_samples(result: Run, start_ms: int, rate_hz: float) -> list[tuple[int, str, str]]:
    return sorted((round((a.ts_s - start_ms / 1000) * rate_hz), a.kind, a.segment) for a in result.alerts)


def breaks(result: Run, start_ms: int, rate_hz: float) -> list[int]:
    return [i for i, kind, _ in alert_samples(result, start_ms, rate_hz) if kind == "conditioning_break"]


CONDITIONAL_PAIRS = {"trunk_flexion": (25, 50), "neck_flexion": (27, 40), "arm_elevation_left": (25, 50)}


def conditional(seconds: int, rate_hz: float, segment: str = "trunk_flexion") -> dict[str, list[float]]:
    """`segment` in its conditional zone (dose 1/s) for `seconds`, never over a holding limit: the
    angle alternates between two conditional angles more than 5 deg apart every 10 s, so every
    hold ends after the 3-s hysteresis (at most 13 s, far below the limits)."""
    low, high = CONDITIONAL_PAIRS[segment]
    return concat(*[steady(10, rate_hz, **{segment: low if k % 2 else high}) for k in range(seconds // 10)])


@pytest.mark.parametrize("rate_hz", [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0])
@pytest.mark.parametrize("start_ms", [0, EPOCH_MS + 123])
def test_conditional_for_exactly_600_s_breaks_with_its_last_sample(rate_hz: float, start_ms: int) -> None:
    # Dose 1/s for 600 s reaches break_dose 600 exactly with sample 600 * rate - 1 (the dose counts
    # a sample's whole period). The float sum of 60,000 steps of 0.01 is 599.9999999996: without
    # slack on the dose threshold the break came one sample late at 5, 50 and 100 Hz.
    samples = conditional(600, rate_hz)
    n = round(600 * rate_hz)
    for framing in FRAMINGS:
        result, _ = run(engine(), split(samples, start_ms, rate_hz, cuts_for(framing, n, rate_hz)))
        assert breaks(result, start_ms, rate_hz) == [n - 1], framing
        [brk] = result.kind("conditioning_break")
        assert brk.dose == approx(600.0, abs=1e-6)


@pytest.mark.parametrize("rate_hz", [5.0, 10.0, 20.0, 25.0, 100.0])
def test_rates_of_several_segments_summing_to_the_threshold(rate_hz: float) -> None:
    # Trunk and neck conditional (1/s each) and the left arm not acceptable without a hold over its
    # 10-s limit (3/s: 70 and 90 deg alternating every 5 s): 5/s, so 600 after exactly 120 s,
    # with sample 120 * rate - 1, in every framing.
    arm = concat(*[steady(5, rate_hz, arm_elevation_left=70 if k % 2 else 90) for k in range(24)])
    samples = {**conditional(120, rate_hz), **conditional(120, rate_hz, "neck_flexion"), **arm}
    n = round(120 * rate_hz)
    for framing in FRAMINGS:
        result, _ = run(engine(), split(samples, EPOCH_MS, rate_hz, cuts_for(framing, n, rate_hz)))
        assert result.kind("posture_hold") == []
        assert breaks(result, EPOCH_MS, rate_hz) == [n - 1], framing


def test_a_break_after_recovery_does_not_depend_on_framing() -> None:
    # 10 Hz: 400 s conditional (dose 400), 300 s upright (recovery to 400 * 2**-0.5 = 282.84),
    # conditional again until the dose reaches 600: 317.16 s later, whatever the framing.
    samples = concat(conditional(400, 10.0), steady(300, 10.0, trunk_flexion=0), conditional(400, 10.0))
    got = {
        framing: breaks(
            run(engine(), split(samples, EPOCH_MS, 10.0, cuts_for(framing, 11_000, 10.0)))[0], EPOCH_MS, 10.0
        )
        for framing in FRAMINGS
    }
    expected = 7000 + math.ceil((600 - 400 * 2**-0.5) * 10) - 1
    assert got == {framing: [expected] for framing in FRAMINGS}


@pytest.mark.parametrize("rate_hz", [3.0, 7.0, 30.0])
def test_millisecond_frame_starts_do_not_move_a_nudge(rate_hz: float) -> None:
    # At 3, 7 and 30 Hz a frame's millisecond start is up to 0.5 ms off the sample grid, more than
    # the thousandth of a sample of slack on time comparisons. Left arm at 120 deg (not acceptable,
    # 10-s limit) from sample 1: the hold is over its limit with sample 10 * rate + 1, its dose
    # doubles from there and the break follows; per-sample frames moved all of it by a sample.
    n = round(200 * rate_hz)
    samples = {"arm_elevation_left": [0.0] + [120.0] * (n - 1)}
    want, _ = run(engine(), split(samples, 0, rate_hz, []))
    expected = alert_samples(want, 0, rate_hz)
    assert expected[0] == (round(10 * rate_hz) + 1, "posture_hold", "arm_elevation_left")
    for start_ms in (0, EPOCH_MS + 1):
        for cuts in ([], list(range(1, n)), [1, 2, 5, 100, 101, 1001]):
            result, _ = run(engine(), split(samples, start_ms, rate_hz, cuts))
            assert alert_samples(result, start_ms, rate_hz) == expected, (start_ms, len(cuts))


def test_a_break_is_found_in_a_long_chunk() -> None:
    # 5 Hz, 60-s windows, left arm at 120 deg: dose 3/s for 10 s, then 6/s (over the limit): 600
    # with sample 524. Frames cut at samples 483 and 525 make a chunk of 42 samples whose quick
    # "can the dose reach the threshold here" bound (dose at its start + 6/s * its length) was a
    # float rounding below the summed dose: the break was skipped to the next chunk.
    samples = {"arm_elevation_left": [120.0] * 1000}
    for cuts in ([], [483, 525], list(range(1, 1000))):
        result, _ = run(engine(window_s=60), split(samples, 0, 5.0, cuts))
        assert breaks(result, 0, 5.0) == [524], cuts


def test_the_break_bound_uses_the_highest_dose_rate() -> None:
    # A profile whose conditional rate (5/s) exceeds the not-acceptable one (1/s): trunk 30 deg
    # (conditional, limit 195 s) reaches 600 with sample 119 at 1 Hz, whatever the framing. The
    # chunk bound assumed the not-acceptable rate was the highest and skipped the break.
    th = load_thresholds("default")
    th = th.model_copy(update={"dose_rate": {"acceptable": 0.0, "conditional": 5.0, "not_acceptable": 1.0}})
    samples = steady(200, trunk_flexion=30)
    for cuts in ([], [50], list(range(1, 200))):
        result, _ = run(ExposureEngine(th, window_s=60), split(samples, 0, 1.0, cuts))
        assert breaks(result, 0, 1.0) == [119], cuts
