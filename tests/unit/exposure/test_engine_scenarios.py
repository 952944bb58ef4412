"""Hand-computed scenarios of the model in docs/exposure-model.md; every expected number is derived
in the comment above it from profiles/default.json and profiles/iso11226-strict.json (1 Hz unless
said otherwise)."""

from __future__ import annotations

from array import array

import pytest
from pytest import approx

from strainwatch.exposure import Violation, WorkerState, load_thresholds

from .helpers import Frame, concat, engine, run, steady, window_at

pytestmark = pytest.mark.unit

HALF = 600.0  # recovery_half_life_s
ARMS_ROUTINE = ("scapular retractions (shoulder-blade squeezes)", "band pull-aparts", "wall angels")
NECK_ROUTINE = ("chin tucks", "upper-trapezius stretch", "slow neck rotations")
TRUNK_ROUTINE = ("standing thoracic extension", "hip-hinge reset", "gentle thoracic rotation")


def nudges(alerts: list, segment: str | None = None) -> list[float]:
    return [a.ts_s for a in alerts if a.kind == "posture_hold" and segment in (None, a.segment)]


# --- zones -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segment", "angle", "zone"),
    [
        ("trunk_flexion", 10, "acceptable"),
        ("trunk_flexion", 30, "conditional"),
        ("trunk_flexion", 59, "conditional"),
        ("trunk_flexion", 60, "not_acceptable"),  # >= 60
        ("trunk_flexion", -5, "not_acceptable"),  # backward, unsupported
        ("trunk_lateral", 5, "acceptable"),
        ("trunk_lateral", -5, "acceptable"),
        ("trunk_lateral", 15, "conditional"),  # >= 10, a single movement
        ("trunk_twist", -30, "conditional"),  # |twist| >= 10
        ("neck_flexion", 10, "acceptable"),
        ("neck_flexion", 30, "conditional"),
        ("neck_flexion", 45, "not_acceptable"),  # >= 45
        ("neck_flexion", -5, "not_acceptable"),  # extension
        ("arm_elevation_left", 10, "acceptable"),
        ("arm_elevation_right", 40, "conditional"),
        ("arm_elevation_left", 60, "not_acceptable"),  # >= 60
        ("arm_elevation_right", 170, "not_acceptable"),
    ],
)
def test_zones_of_the_default_profile(segment: str, angle: float, zone: str) -> None:
    result, _ = run(engine(), [Frame(0, 1, steady(1, **{segment: angle}))])
    [window] = result.windows
    expected = {"acceptable": 0.0, "conditional": 0.0, "not_acceptable": 0.0, zone: 1.0}
    assert window.zone_s[segment] == expected


def test_frequent_movements_into_a_conditional_zone_are_not_acceptable() -> None:
    # EN 1005-4: trunk 30 deg (conditional) for 5 s, upright 5 s, 30 deg again for 5 s: the second
    # movement comes 10 s after the first, i.e. >= 2 per minute, so its 5 s count as not acceptable.
    samples = concat(steady(5, trunk_flexion=30), steady(5, trunk_flexion=0), steady(5, trunk_flexion=30))
    result, _ = run(engine(window_s=60), [Frame(0, 1, samples)])
    assert result.windows[0].zone_s["trunk_flexion"] == approx(
        {"acceptable": 5, "conditional": 5, "not_acceptable": 5}
    )


def test_movements_more_than_a_minute_apart_stay_conditional() -> None:
    # Entries at t=0 and t=70: fewer than 2 per minute, both 5-s stays are conditional.
    samples = concat(steady(5, trunk_flexion=30), steady(65, trunk_flexion=0), steady(5, trunk_flexion=30))
    result, _ = run(engine(window_s=100), [Frame(0, 1, samples)])
    assert result.windows[0].zone_s["trunk_flexion"] == approx(
        {"acceptable": 65, "conditional": 10, "not_acceptable": 0}
    )


# --- static holds ----------------------------------------------------------------------------


def test_trunk_hold_crossing_its_holding_limit() -> None:
    # Trunk flexion alternating 38/42 deg (within the +-5 deg tolerance; mean 40, conditional zone)
    # for 200 s, then upright (0 deg) for 10 s.
    # Holding limit at 40 deg: 240 s at 20 deg falling linearly to 60 s at 60 deg:
    #   240 + (40 - 20) / (60 - 20) * (60 - 240) = 150 s.
    # The sample at t=150 makes the hold 151 s > 150 s: one nudge at t=150 (the next would be due
    # at 270, after the hold ended).
    # The hold ends 3 s after its last sample (t=199): a violation, start 0, 200 s, mean 40 deg.
    # Dose: rate 1/s for 150 s, doubled for the 50 s past the limit: 150 + 2 * 50 = 250; then upright
    # for 10 s (every present segment acceptable): 250 * 0.5 ** (10 / 600).
    held = {"trunk_flexion": [38.0, 42.0] * 100}
    frames = [Frame(0, 1, held)] + [Frame(t, 1, steady(1, trunk_flexion=0)) for t in range(200, 210)]
    eng = engine()
    state = eng.new_state()
    emitted_at = []
    result, _ = run(eng, frames[:1], state, finish=False)
    for f in frames[1:]:
        more, _ = run(eng, [f], state, finish=False)
        emitted_at += [f.start_s] * len(more.violations)
        result.alerts += more.alerts
        result.violations += more.violations
        result.windows += more.windows
    assert nudges(result.alerts) == [150.0]
    assert [a.segment for a in result.alerts] == ["trunk_flexion"]
    assert result.violations == [Violation("trunk_flexion", 0.0, 200.0, 40.0)]
    assert emitted_at == [202.0]  # hysteresis: samples at 200, 201, 202 outside, then it ends
    last = window_at(result.windows, 190)
    assert last.dose["trunk_flexion"] == approx(250)
    assert last.longest_hold_s["trunk_flexion"] == approx(200)
    assert last.zone_s["trunk_flexion"] == approx({"acceptable": 0, "conditional": 10, "not_acceptable": 0})
    # cut-points: 38 and 42 are above 20 but not above 45 or 60
    assert last.cutpoints_s["trunk_flexion"] == approx({"gt20": 10, "gt45": 0, "gt60": 0})
    open_window = eng.open_window(state)
    assert open_window is not None and open_window.window_start_s == 200
    assert open_window.violations == 1
    assert state.dose("trunk_flexion") == approx(250 * 0.5 ** (10 / HALF))


@pytest.mark.parametrize(("outside_s", "longest_s"), [(2, 42.0), (3, 20.0)])
def test_a_hold_survives_less_than_3_s_outside(outside_s: int, longest_s: float) -> None:
    # Trunk 40 deg for 20 s, upright for 2 s or 3 s, 40 deg for 20 s: 2 s outside is within the
    # hysteresis (one hold of 20 + 2 + 20 = 42 s); after 3 s outside the hold ends (two holds of 20 s).
    samples = concat(
        steady(20, trunk_flexion=40), steady(outside_s, trunk_flexion=0), steady(20, trunk_flexion=40)
    )
    result, _ = run(engine(window_s=60), [Frame(0, 1, samples)])
    assert result.windows[0].longest_hold_s["trunk_flexion"] == approx(longest_s)


def test_arms_above_90_degrees() -> None:
    # Left arm 120 deg, right arm 75 deg, trunk 10 deg (acceptable), 11 s at 1 Hz.
    # Window [0, 10): both arms >= 60 deg, not acceptable for all 10 s. Cut-points: 120 deg is above
    # 30, 60 and 90 (10 s each); 75 deg is above 30 and 60 but not 90 (0 s): "> 90 reported separately".
    # Dose: not-acceptable rate 3/s; the holding limit in a not-acceptable zone is 10 s and a 10-s
    # hold is not longer: 3 * 10 = 30 per arm, upper back 60 (the acceptable trunk adds nothing and,
    # as not every segment is acceptable, nothing decays).
    # The sample at t=10 makes both holds 11 s > 10 s: a nudge per arm at t=10 and the arm dose
    # doubles for that second: 30 + 2 * 3 = 36.
    samples = steady(11, arm_elevation_left=120, arm_elevation_right=75, trunk_flexion=10)
    result, state = run(engine(), [Frame(0, 1, samples)], finish=False)
    [window] = result.windows
    assert window.zone_s["arm_elevation_left"] == approx(
        {"acceptable": 0, "conditional": 0, "not_acceptable": 10}
    )
    assert window.zone_s["arm_elevation_right"] == approx(
        {"acceptable": 0, "conditional": 0, "not_acceptable": 10}
    )
    assert window.zone_s["trunk_flexion"] == approx({"acceptable": 10, "conditional": 0, "not_acceptable": 0})
    assert window.cutpoints_s["arm_elevation_left"] == approx({"gt30": 10, "gt60": 10, "gt90": 10})
    assert window.cutpoints_s["arm_elevation_right"] == approx({"gt30": 10, "gt60": 10, "gt90": 0})
    assert window.dose == approx(
        {"arm_elevation_left": 30, "arm_elevation_right": 30, "trunk_flexion": 0, "upper_back": 60}
    )
    assert window.violations == 0
    assert sorted((a.ts_s, a.segment) for a in result.alerts) == [
        (10.0, "arm_elevation_left"),
        (10.0, "arm_elevation_right"),
    ]
    assert state.dose("arm_elevation_left") == approx(36)
    assert state.dose("arm_elevation_right") == approx(36)


# --- dose, recovery, breaks ------------------------------------------------------------------


def test_two_arms_push_upper_back_dose_over_the_break_threshold() -> None:
    # Both arms 40 deg (conditional), trunk 10 and neck 10 (acceptable), 215 s.
    # Arm holding limit at 40 deg: 180 + (40 - 20) / (60 - 20) * (60 - 180) = 120 s: each arm is
    # nudged at t=120 (the hold is then 121 s).
    # Arm dose after the sample at t: t + 1 up to t=119, then 120 + 2 * (t - 119) (doubled past the
    # limit). Upper back = both arms: 240 + 4 * (t - 119) >= 600 first at t = 209 (600 exactly):
    # one conditioning break at t=209 with the arms routine (the arms hold all the dose); the
    # 20-min cooldown allows no second one.
    samples = steady(215, arm_elevation_left=40, arm_elevation_right=40, trunk_flexion=10, neck_flexion=10)
    result, state = run(engine(), [Frame(0, 1, samples)], finish=False)
    assert sorted(nudges(result.alerts)) == [120.0, 120.0]
    [brk] = result.kind("conditioning_break")
    assert brk.ts_s == 209.0
    assert brk.dose == approx(600)
    assert brk.routine == ARMS_ROUTINE
    assert brk.segment in ("arm_elevation_left", "arm_elevation_right")
    # at the end (t=214): 120 + 2 * 95 = 310 per arm
    assert state.dose("arm_elevation_left") == approx(310)
    assert state.dose("trunk_flexion") == 0


def test_break_routine_follows_the_segment_with_most_dose() -> None:
    # Trunk 40 deg (conditional, limit 150 s) and neck 50 deg (not acceptable, limit 10 s), 100 s.
    # Trunk dose after t: t + 1 (under its limit). Neck dose: 3 * (t + 1) up to t=9, then
    # 30 + 6 * (t - 9). Sum 7t - 23 >= 600 first at t = 89 (600 exactly): neck 510, trunk 90, so
    # the neck routine.
    samples = steady(100, trunk_flexion=40, neck_flexion=50)
    result, _ = run(engine(), [Frame(0, 1, samples)], finish=False)
    [brk] = result.kind("conditioning_break")
    assert (brk.ts_s, brk.segment, brk.routine) == (89.0, "neck_flexion", NECK_ROUTINE)
    assert brk.dose == approx(600)


def test_recovery_while_neutral() -> None:
    # Trunk 40 deg for 100 s: dose 100 (rate 1/s, under its 150-s limit). Then 600 s upright with
    # the neck at 20 deg (both acceptable): one half-life, 100 -> 50.
    eng = engine()
    frames = [
        Frame(0, 1, steady(100, trunk_flexion=40, neck_flexion=20)),
        Frame(100, 1, steady(600, trunk_flexion=10, neck_flexion=20)),
    ]
    _, state = run(eng, frames[:1], finish=False)
    assert state.dose("trunk_flexion") == approx(100)
    run(eng, frames[1:], state, finish=False)
    assert state.dose("trunk_flexion") == approx(50)
    assert state.dose("neck_flexion") == 0


def test_no_recovery_while_another_segment_is_not_acceptable() -> None:
    # Trunk 40 deg for 100 s (dose 100), then trunk upright but neck 30 deg (conditional) for 60 s:
    # not every present segment is acceptable, so the trunk dose stays 100 and the neck gains 60.
    frames = [
        Frame(0, 1, steady(100, trunk_flexion=40, neck_flexion=10)),
        Frame(100, 1, steady(60, trunk_flexion=10, neck_flexion=30)),
    ]
    _, state = run(engine(), frames, finish=False)
    assert state.dose("trunk_flexion") == approx(100)
    assert state.dose("neck_flexion") == approx(60)


def test_recovery_across_a_gap() -> None:
    # Dose 100 as above, then no samples for 600 s, then one upright sample at t=700:
    # 100 * 0.5 (the gap) * 0.5 ** (1 / 600) (the sample).
    frames = [Frame(0, 1, steady(100, trunk_flexion=40)), Frame(700, 1, steady(1, trunk_flexion=10))]
    _, state = run(engine(), frames, finish=False)
    assert state.dose("trunk_flexion") == approx(100 * 0.5 * 0.5 ** (1 / HALF))


def test_recovery_and_no_break_prompt_during_a_scheduled_break() -> None:
    # Both arms 120 deg (not acceptable): arm dose 3 * (t + 1) to t=9, then 30 + 6 * (t - 9); upper
    # back 60 + 12 * (t - 9) >= 600 first at t=54: a break at 54. The next is due 1200 s later
    # (t=1254), but [1200, 1300) is a scheduled break (rest): dose decays by 0.5 ** (100 / 600) and no
    # prompt; the first sample after it (t=1300) gets the prompt.
    eng = engine()
    arms = {"arm_elevation_left": 120, "arm_elevation_right": 120}
    result, state = run(eng, [Frame(0, 1, steady(1200, **arms))], finish=False)
    before = state.dose("arm_elevation_left")
    assert before == approx(30 + 6 * (1199 - 9))
    during, _ = run(eng, [Frame(1200, 1, steady(100, **arms), rest=True)], state, finish=False)
    assert during.kind("conditioning_break") == []
    assert state.dose("arm_elevation_left") == approx(before * 0.5 ** (100 / HALF))
    after, _ = run(eng, [Frame(1300, 1, steady(10, **arms))], state, finish=False)
    assert [a.ts_s for a in result.kind("conditioning_break")] == [54.0]
    assert [a.ts_s for a in after.kind("conditioning_break")] == [1300.0]


def test_nudge_cooldown_is_per_segment() -> None:
    # Trunk 40 deg (limit 150 s) and neck 50 deg (not acceptable, limit 10 s) for 400 s.
    # A violation in progress nudges at most once per segment per 120 s:
    # trunk at 150, 270, 390; neck at 10, 130, 250, 370.
    samples = steady(400, trunk_flexion=40, neck_flexion=50)
    result, _ = run(engine(), [Frame(0, 1, samples)], finish=False)
    assert nudges(result.alerts, "trunk_flexion") == [150.0, 270.0, 390.0]
    assert nudges(result.alerts, "neck_flexion") == [10.0, 130.0, 250.0, 370.0]


def test_break_cooldown_and_cap_per_shift() -> None:
    # Both arms 120 deg from T0 = 86400 - 12000 (shift = UTC day) until 10 s into the next day.
    # Upper back reaches 600 at T0 + 54 (see above) and stays above it: prompts every 20 min,
    # T0 + 54 + 1200 k, k = 0..7; the 9th (T0 + 9654) exceeds the cap of 8 per shift, so none
    # until the next shift starts at 86400, where the cooldown has long passed: one more at 86400.
    t0 = 86_400 - 12_000
    samples = steady(12_010, arm_elevation_left=120, arm_elevation_right=120)
    result, _ = run(engine(), [Frame(t0, 1, samples)], finish=False)
    expected = [float(t0 + 54 + 1200 * k) for k in range(8)] + [86_400.0]
    assert [a.ts_s for a in result.kind("conditioning_break")] == expected
    assert {a.routine for a in result.kind("conditioning_break")} == {ARMS_ROUTINE}


# --- profiles: the neck rule -------------------------------------------------------------------


def test_strict_profile_rates_neck_flexion_beyond_25_not_acceptable() -> None:
    # Neck 30 deg for 20 s, then 10 deg for 5 s (one 60-s window).
    # default: 25-45 is conditional; limit at 30 deg = 180 + (30 - 25) / (45 - 25) * (60 - 180)
    #   = 150 s, not reached: no nudge, no violation; dose 1/s * 20 = 20, then 5 s of recovery.
    # iso11226-strict: > 25 is not acceptable; limit 10 s: nudge at t=10 (hold 11 s), violation
    #   start 0, 20 s, mean 30; dose 3 * 10 + 2 * 3 * 10 = 90, then 5 s of recovery.
    samples = concat(steady(20, neck_flexion=30), steady(5, neck_flexion=10))
    recovery = 0.5 ** (5 / HALF)

    default, d_state = run(engine("default", window_s=60), [Frame(0, 1, samples)])
    assert default.windows[0].zone_s["neck_flexion"] == approx(
        {"acceptable": 5, "conditional": 20, "not_acceptable": 0}
    )
    assert default.alerts == [] and default.violations == []
    assert d_state.dose("neck_flexion") == approx(20 * recovery)
    assert default.windows[0].thresholds_version == "default@1"

    strict, s_state = run(engine("iso11226-strict", window_s=60), [Frame(0, 1, samples)])
    assert strict.windows[0].zone_s["neck_flexion"] == approx(
        {"acceptable": 5, "conditional": 0, "not_acceptable": 20}
    )
    assert nudges(strict.alerts, "neck_flexion") == [10.0]
    assert strict.violations == [Violation("neck_flexion", 0.0, 20.0, 30.0)]
    assert s_state.dose("neck_flexion") == approx(90 * recovery)
    assert strict.windows[0].thresholds_version == "iso11226-strict@1"


@pytest.mark.parametrize(
    ("angle", "zone"), [(20, "acceptable"), (50, "not_acceptable"), (-10, "not_acceptable")]
)
def test_both_profiles_agree_on_the_rest_of_the_neck_range(angle: float, zone: str) -> None:
    for profile in ("default", "iso11226-strict"):
        result, _ = run(engine(profile), [Frame(0, 1, steady(5, neck_flexion=angle))])
        assert result.windows[0].zone_s["neck_flexion"][zone] == approx(5), profile


def test_strict_profile_changes_nothing_but_the_neck() -> None:
    # Trunk 40, arms 70, lateral 15 for 30 s: same outcome under both profiles.
    samples = steady(30, trunk_flexion=40, arm_elevation_left=70, arm_elevation_right=30, trunk_lateral=15)
    default, _ = run(engine("default"), [Frame(0, 1, samples)])
    strict, _ = run(engine("iso11226-strict"), [Frame(0, 1, samples)])
    for a, b in zip(default.windows, strict.windows, strict=True):
        assert (a.zone_s, a.dose, a.cutpoints_s, a.longest_hold_s) == (
            b.zone_s,
            b.dose,
            b.cutpoints_s,
            b.longest_hold_s,
        )
    assert default.alerts == strict.alerts
    assert default.violations == strict.violations


# --- inputs ------------------------------------------------------------------------------------


def test_frames_must_come_in_order_and_be_well_formed() -> None:
    eng = engine()
    state = eng.new_state()
    eng.process(state, 100, 1, steady(10, trunk_flexion=0))
    with pytest.raises(ValueError, match="frames must be in order"):
        eng.process(state, 105, 1, steady(1, trunk_flexion=0))
    with pytest.raises(ValueError, match="differ in length"):
        eng.process(state, 110, 1, {"trunk_flexion": [0.0], "neck_flexion": [0.0, 0.0]})
    with pytest.raises(ValueError, match="at least one segment"):
        eng.process(state, 110, 1, {"trunk_flexion": []})


def test_state_bytes_are_checked() -> None:
    data = WorkerState.new().to_bytes()
    assert WorkerState.from_bytes(data).to_bytes() == data
    with pytest.raises(ValueError, match="version"):
        WorkerState.from_bytes(b"\x09" + data[1:])
    with pytest.raises(ValueError, match="wrong size"):
        WorkerState.from_bytes(data[:-8])
    assert len(data) < 1100  # "about 1 KiB" per worker
    assert load_thresholds("default")  # the profile the engine above used


def _without_accrued(slots: array[float]) -> array[float]:
    """The segment blocks as versions 2 and 3 laid them out: no accrued-dose slot at the end."""
    from strainwatch.exposure.engine import NG, NS

    out = array("d", slots[:NG])
    for start in range(NG, len(slots), NS):
        out.extend(slots[start : start + NS - 1])
    return out


def test_a_version_2_state_loads_and_scores_on() -> None:
    """Records on a changelog written before the sample clock (state version 2: two global slots
    fewer) load, and the next frame continues the worker's exposure as if nothing changed."""
    from strainwatch.exposure.engine import G_CLOCK_N, G_CLOCK_T0, NG, NS, W_ACCRUED

    eng = engine()
    state = eng.new_state()
    eng.process(state, 100, 1, steady(30, trunk_flexion=40))
    slots = state.slots
    old = _without_accrued(slots)
    version_2 = bytes([2]) + (old[:G_CLOCK_T0] + old[NG:]).tobytes()  # the v2 layout
    restored = WorkerState.from_bytes(version_2)
    assert len(restored.slots) == len(slots)
    assert restored.end_s == state.end_s == 130
    assert restored.dose("trunk_flexion") == state.dose("trunk_flexion") > 0
    assert restored.slots[G_CLOCK_T0] == 130 and restored.slots[G_CLOCK_N] == 0  # a new anchor
    accrued = {NG + i * NS + W_ACCRUED for i in range(state.segments)}
    assert all(restored.slots[i] == 0.0 for i in accrued)  # the window's accrual was not kept
    assert [v for i, v in enumerate(restored.slots) if i >= NG and i not in accrued] == [
        v for i, v in enumerate(slots) if i >= NG and i not in accrued
    ]
    after_v2 = eng.process(restored, 130, 1, steady(30, trunk_flexion=40))
    after_v3 = eng.process(state, 130, 1, steady(30, trunk_flexion=40))
    assert restored.dose("trunk_flexion") == approx(state.dose("trunk_flexion"))
    assert [a.ts_s for a in after_v2.alerts] == [a.ts_s for a in after_v3.alerts]


def test_a_version_3_state_loads_with_the_accrued_slot_added() -> None:
    from strainwatch.exposure.engine import NG, NS, W_ACCRUED

    eng = engine()
    state = eng.new_state()
    eng.process(state, 100, 1, steady(30, trunk_flexion=40))
    restored = WorkerState.from_bytes(bytes([3]) + _without_accrued(state.slots).tobytes())
    assert len(restored.slots) == len(state.slots)
    for i in range(state.segments):
        base = NG + i * NS
        assert list(restored.slots[base : base + W_ACCRUED]) == list(state.slots[base : base + W_ACCRUED])
        assert restored.slots[base + W_ACCRUED] == 0.0


def test_accrued_dose_is_what_the_window_added_before_recovery() -> None:
    """40 deg trunk flexion is conditional (rate 1/s): 10 s accrue 10, whatever the recovery later."""
    eng = engine()
    state = eng.new_state()
    out = eng.process(state, 100, 1, steady(20, trunk_flexion=40))
    (first,) = [w for w in out.closed if w.window_start_s == 100]
    assert first.accrued["trunk_flexion"] == approx(10.0)
    assert first.accrued["upper_back"] == approx(10.0)
    out = eng.process(state, 120, 1, steady(20, trunk_flexion=0))
    neutral = [w for w in out.closed if w.window_start_s == 120]
    assert neutral and neutral[0].accrued["upper_back"] == 0.0 and neutral[0].dose["upper_back"] > 0
