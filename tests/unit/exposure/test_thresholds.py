"""load_thresholds: the shipped profiles carry the numbers of docs/exposure-model.md; files load; bad
input is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from strainwatch.exposure import SEGMENT_ORDER, SHIPPED, ExposureEngine, load_thresholds

pytestmark = pytest.mark.unit


def test_both_profiles_ship() -> None:
    assert set(SHIPPED) == {"default", "iso11226-strict"}
    assert load_thresholds("default").label == "default@1"
    assert load_thresholds("iso11226-strict").label == "iso11226-strict@1"


def test_default_profile_has_the_domain_numbers() -> None:
    th = load_thresholds("default")
    assert set(th.segments) == set(SEGMENT_ORDER)
    # docs/exposure-model.md "Per sample": acceptable / conditional / not acceptable boundaries
    zones = {name: (seg.acceptable_max, seg.conditional_max) for name, seg in th.segments.items()}
    assert zones == {
        "trunk_flexion": (20, 60),
        "trunk_lateral": (10, 90),
        "trunk_twist": (10, 90),
        "neck_flexion": (25, 45),
        "arm_elevation_left": (20, 60),
        "arm_elevation_right": (20, 60),
    }
    assert th.segments["trunk_flexion"].negative_not_acceptable  # backward < 0 unsupported
    assert th.segments["neck_flexion"].negative_not_acceptable  # extension < 0
    assert th.segments["trunk_lateral"].symmetric and th.segments["trunk_twist"].symmetric
    # "Static holds": trunk 4 min at 20 deg to 1 min at 60; neck 3 min at 25 to 1 min at 45;
    # upper arm 3 min at 20 to 1 min at 60; 10 s in a not-acceptable zone
    assert th.segments["trunk_flexion"].holding_limit == ((20, 240), (60, 60))
    assert th.segments["neck_flexion"].holding_limit == ((25, 180), (45, 60))
    assert th.segments["arm_elevation_left"].holding_limit == ((20, 180), (60, 60))
    assert th.segments["arm_elevation_right"].holding_limit == ((20, 180), (60, 60))
    assert th.not_acceptable_limit_s == 10
    assert th.hold_tolerance_deg == 5
    assert th.hold_hysteresis_s == 3
    # study cut-points: trunk > 20, 45, 60; arm > 30, 60, 90; neck > 20, 45
    assert th.segments["trunk_flexion"].cutpoints == (20, 45, 60)
    assert th.segments["arm_elevation_left"].cutpoints == (30, 60, 90)
    assert th.segments["arm_elevation_right"].cutpoints == (30, 60, 90)
    assert th.segments["neck_flexion"].cutpoints == (20, 45)
    # "Strain dose and recovery" and "Break rules"
    assert th.dose_rate == {"acceptable": 0, "conditional": 1, "not_acceptable": 3}
    assert th.over_limit_multiplier == 2
    assert th.recovery_half_life_s == 600
    assert th.frequent_entries_per_min == 2
    assert th.break_dose == 600
    assert th.nudge_interval_s == 120
    assert th.break_cooldown_s == 1200
    assert th.max_breaks_per_shift == 8
    assert th.routines == {
        "neck": ("chin tucks", "upper-trapezius stretch", "slow neck rotations"),
        "arms": ("scapular retractions (shoulder-blade squeezes)", "band pull-aparts", "wall angels"),
        "trunk": ("standing thoracic extension", "hip-hinge reset", "gentle thoracic rotation"),
    }


def test_strict_profile_differs_from_default_only_in_the_neck_rule() -> None:
    default = load_thresholds("default").model_dump()
    strict = load_thresholds("iso11226-strict").model_dump()
    # ISO 11226 as written: neck flexion beyond 25 deg is not acceptable (no conditional band)
    assert strict["segments"]["neck_flexion"]["acceptable_max"] == 25
    assert strict["segments"]["neck_flexion"]["conditional_max"] == 25
    assert default["segments"]["neck_flexion"]["conditional_max"] == 45
    for doc in (default, strict):
        del doc["profile"], doc["description"], doc["segments"]["neck_flexion"]["conditional_max"]
    assert strict == default


def test_a_file_path_loads(tmp_path: Path) -> None:
    doc = load_thresholds("default").model_dump(mode="json")
    doc.update(profile="site-7", version="2025-03", break_dose=400)
    path = tmp_path / "site.json"
    path.write_text(json.dumps(doc))
    th = load_thresholds(str(path))
    assert th.label == "site-7@2025-03"
    assert th.break_dose == 400
    assert ExposureEngine(th).version == "site-7@2025-03"


def test_an_unknown_name_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown thresholds 'iso-lax'.*default, iso11226-strict"):
        load_thresholds("iso-lax")


@pytest.mark.parametrize(
    "change",
    [
        {"unknown_setting": 1},  # extra fields are refused (a typo must not pass silently)
        {"recovery_half_life_s": 0},
        # every zone needs a dose rate and every region a routine, else the engine fails later
        # with a KeyError instead of the loader naming the file
        {"dose_rate": {"acceptable": 0, "conditional": 1}},
        {"routines": {"arms": ["wall angels"]}},
    ],
)
def test_an_invalid_file_is_refused(tmp_path: Path, change: dict[str, object]) -> None:
    doc = load_thresholds("default").model_dump(mode="json")
    doc.update(change)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="invalid thresholds in"):
        load_thresholds(str(path))


def test_zone_bounds_out_of_order_are_refused(tmp_path: Path) -> None:
    doc = load_thresholds("default").model_dump(mode="json")
    doc["segments"]["neck_flexion"]["acceptable_max"] = 50
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="acceptable_max must not exceed conditional_max"):
        load_thresholds(str(path))


def test_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="invalid thresholds in"):
        load_thresholds(str(path))


def test_the_engine_needs_every_segment() -> None:
    th = load_thresholds("default")
    segments = {k: v for k, v in th.segments.items() if k != "trunk_twist"}
    with pytest.raises(ValueError, match="trunk_twist"):
        ExposureEngine(th.model_copy(update={"segments": segments}))
    with pytest.raises(ValueError, match="window_s"):
        ExposureEngine(th, window_s=0)
