"""The privacy rule of every report table: no group of fewer than 5 distinct workers on its own.

The grouped figures (`strainwatch.storage.figures`) already drop groups of fewer than 5 workers
inside InfluxDB, so no small group ever leaves the database. The report adds one "other" row: the
scope's total minus the groups shown, with its distinct workers counted by a query of its own (a
worker who moved between two small teams counts once). If "other" itself holds fewer than 5
workers, its values are withheld and the row says so (the site totals still include those workers).
Individuals are never ranked: the finest grain of any table is a team or a task.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from strainwatch.reports.model import MIN_GROUP_WORKERS, OTHER, Group

# sums subtracted from each other carry float noise; below this, "nothing left"
_EPSILON_HOURS = 1e-6


@dataclass(frozen=True)
class GroupFigure:
    """One row of a grouped figure (or the scope's total): workers, hours, dose per hour."""

    name: str
    workers: int
    hours: float
    dose_per_hour: float | None

    @property
    def dose(self) -> float:
        return (self.dose_per_hour or 0.0) * self.hours


def per_hour(total: float, hours: float) -> float | None:
    return total / hours if hours > _EPSILON_HOURS else None


def ranked(groups: Iterable[GroupFigure], minimum: int = MIN_GROUP_WORKERS) -> list[Group]:
    """Groups of at least `minimum` workers, highest dose per monitored hour first (ties by name).
    A group below the minimum here is a bug upstream, so it is refused rather than shown."""
    out = []
    for g in groups:
        if g.workers < minimum:
            raise ValueError(f"group {g.name!r} has {g.workers} workers: below the privacy minimum")
        out.append(Group(g.name, g.workers, g.hours, g.dose_per_hour))
    out.sort(key=lambda g: (-(g.dose_per_hour if g.dose_per_hour is not None else -1.0), g.name))
    return out


def with_other(
    shown: Iterable[GroupFigure],
    total: GroupFigure,
    other_workers: int,
    minimum: int = MIN_GROUP_WORKERS,
) -> list[Group]:
    """The shown groups ranked, then "other" = total minus the shown groups (if anything is left)."""
    shown = list(shown)
    groups = ranked(shown, minimum)
    hours = total.hours - sum(g.hours for g in shown)
    dose = total.dose - sum(g.dose for g in shown)
    if other_workers <= 0 and hours <= _EPSILON_HOURS:
        return groups
    hours = max(hours, 0.0)
    if other_workers < minimum:
        groups.append(Group(OTHER, 0, 0.0, None, withheld=True))  # not even its count
    else:
        groups.append(Group(OTHER, other_workers, round(hours, 6), _round(per_hour(dose, hours))))
    return groups


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def merge_counts(
    counts: dict[str, int], workers: dict[str, int], minimum: int = MIN_GROUP_WORKERS
) -> dict[str, int]:
    """Counts per group (e.g. incidents per team) with the groups of fewer than `minimum` workers (or
    unknown to `workers`) added into "other"."""
    out: dict[str, int] = {}
    for name, count in counts.items():
        key = name if workers.get(name, 0) >= minimum and name != OTHER else OTHER
        out[key] = out.get(key, 0) + count
    return out
