"""Minimal cases of the frame-splitting property (test_engine_properties.py): the same samples must
give the same outcome however frames cut them and at whatever epoch time they were taken."""

from __future__ import annotations

import pytest
from pytest import approx

from .helpers import Frame, concat, engine, run, split, steady

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
