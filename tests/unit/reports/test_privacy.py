"""The privacy rule: groups of fewer than 5 workers never on their own; "other" withheld when small."""

from __future__ import annotations

import pytest

from strainwatch.reports.model import OTHER
from strainwatch.reports.privacy import RawGroup, merge_counts, merge_small

pytestmark = pytest.mark.unit


def test_groups_ranked_by_dose_per_hour_and_small_ones_merged_into_other() -> None:
    groups = [
        RawGroup("B", 5, 100 * 3600.0, 200.0),  # 2.0 per hour
        RawGroup("A", 6, 50 * 3600.0, 150.0),  # 3.0
        RawGroup("E", 7, 10 * 3600.0, 20.0),  # 2.0: tie with B, by name
        RawGroup("C", 3, 30 * 3600.0, 30.0),
        RawGroup("D", 2, 10 * 3600.0, 30.0),
    ]
    asked: list[list[str]] = []

    def distinct(names: list[str]) -> int:
        asked.append(names)
        return 5

    out = merge_small(groups, distinct)
    assert [g.name for g in out] == ["A", "B", "E", OTHER]
    assert asked == [["C", "D"]]
    other = out[-1]
    assert other.workers == 5 and not other.withheld
    assert other.hours == pytest.approx(40.0)
    assert other.dose_per_hour == pytest.approx(60.0 / 40.0)
    assert "C" not in {g.name for g in out} and "D" not in {g.name for g in out}


def test_a_team_of_three_alone_in_other_is_withheld() -> None:
    out = merge_small([RawGroup("A", 6, 3600.0, 2.0), RawGroup("C", 3, 7200.0, 9.0)], lambda names: 3)
    assert [g.name for g in out] == ["A", OTHER]
    other = out[-1]
    assert other.withheld and other.workers == 0 and other.hours == 0.0 and other.dose_per_hour is None


def test_distinct_workers_decide_not_the_sum_of_group_counts() -> None:
    # one worker moved between the two small teams: 3 + 3 in the groups, 5 distinct
    out = merge_small([RawGroup("C", 3, 3600.0, 1.0), RawGroup("D", 3, 3600.0, 1.0)], lambda names: 5)
    assert out[-1].workers == 5 and not out[-1].withheld
    out = merge_small([RawGroup("C", 3, 3600.0, 1.0), RawGroup("D", 3, 3600.0, 1.0)], lambda names: 4)
    assert out[-1].withheld


def test_no_other_row_when_every_group_is_large_enough() -> None:
    out = merge_small([RawGroup("A", 6, 3600.0, 2.0), RawGroup("B", 5, 3600.0, 1.0)])
    assert [g.name for g in out] == ["A", "B"]


def test_a_group_named_other_is_never_shown_as_a_group() -> None:
    out = merge_small([RawGroup(OTHER, 9, 3600.0, 2.0), RawGroup("A", 6, 3600.0, 1.0)], lambda names: 9)
    assert [g.name for g in out] == ["A", OTHER]


def test_counts_of_small_groups_are_added_into_other() -> None:
    counts = {"A": 2, "C": 1, "D": 1, "X": 4}
    workers = {"A": 6, "C": 3, "D": 2}  # X: unknown team size, so not shown on its own
    assert merge_counts(counts, workers) == {"A": 2, OTHER: 6}
