"""The privacy rule: groups of fewer than 5 workers never on their own; "other" withheld when small."""

from __future__ import annotations

import pytest

from strainwatch.reports.model import OTHER
from strainwatch.reports.privacy import GroupFigure, merge_counts, ranked, with_other

pytestmark = pytest.mark.unit


def test_shown_groups_ranked_by_dose_per_hour_then_other() -> None:
    shown = [GroupFigure("B", 5, 100.0, 2.0), GroupFigure("A", 6, 50.0, 3.0), GroupFigure("E", 7, 10.0, 2.0)]
    total = GroupFigure("total", 16, 200.0, (2.0 * 100 + 3.0 * 50 + 2.0 * 10 + 40 * 1.5) / 200)
    groups = with_other(shown, total, other_workers=5)
    assert [g.name for g in groups] == ["A", "B", "E", OTHER]  # ties (B, E) by name
    other = groups[-1]
    assert other.workers == 5 and not other.withheld
    assert other.hours == pytest.approx(40.0)
    assert other.dose_per_hour == pytest.approx(1.5)


def test_a_team_of_three_alone_in_other_is_withheld() -> None:
    shown = [GroupFigure("A", 6, 60.0, 2.0)]
    total = GroupFigure("total", 9, 90.0, (120 + 30 * 4.0) / 90)
    groups = with_other(shown, total, other_workers=3)
    assert [g.name for g in groups] == ["A", OTHER]
    assert groups[-1].withheld
    assert groups[-1].workers == 0 and groups[-1].dose_per_hour is None and groups[-1].hours == 0.0


def test_no_other_row_when_every_group_is_shown() -> None:
    shown = [GroupFigure("A", 6, 60.0, 2.0), GroupFigure("B", 5, 40.0, 1.0)]
    total = GroupFigure("total", 11, 100.0, 160 / 100)
    assert [g.name for g in with_other(shown, total, other_workers=0)] == ["A", "B"]


def test_a_small_group_reaching_the_ranking_is_refused() -> None:
    with pytest.raises(ValueError, match="privacy minimum"):
        ranked([GroupFigure("C", 3, 10.0, 1.0)])


def test_counts_of_small_groups_are_added_into_other() -> None:
    counts = {"A": 2, "C": 1, "D": 1, "X": 4}
    workers = {"A": 6, "C": 3, "D": 2}  # X: unknown team size, so not shown on its own
    assert merge_counts(counts, workers) == {"A": 2, OTHER: 6}
