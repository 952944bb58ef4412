"""The privacy rule of every report table: no group of fewer than 5 distinct workers on its own.

Groups (teams, tasks) below the minimum are merged into one "other" row, its sums the sums of the
merged groups and its distinct workers counted by a query of its own (a worker who moved between two
small teams counts once). If "other" itself holds fewer than 5 workers, its values — and its worker
count — are withheld and the row says so (the site totals still include those workers). The small
groups' own numbers are never part of the report model, so no renderer can show them.
Individuals are never ranked: the finest grain of any table is a team or a task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from strainwatch.reports.model import MIN_GROUP_WORKERS, OTHER, Group


@dataclass(frozen=True)
class RawGroup:
    """A team's or task's sums from the rollup."""

    name: str
    workers: int  # distinct workers with wear time
    wear_s: float
    accrued: float  # upper-back dose accrued


def per_hour(total: float, wear_s: float) -> float | None:
    return total / (wear_s / 3600.0) if wear_s > 0 else None


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def merge_small(
    groups: Iterable[RawGroup],
    distinct_workers: Callable[[list[str]], int] | None = None,
    minimum: int = MIN_GROUP_WORKERS,
) -> list[Group]:
    """Groups of at least `minimum` workers ranked by dose per monitored hour (highest first, ties by
    name), then "other" holding the rest.

    `distinct_workers(names)` counts the distinct workers of the merged groups; without it their
    counts are added (an upper bound)."""
    kept: list[Group] = []
    small: list[RawGroup] = []
    for raw in groups:
        if raw.workers >= minimum and raw.name != OTHER:
            kept.append(
                Group(
                    raw.name,
                    raw.workers,
                    _r(raw.wear_s / 3600.0) or 0.0,
                    _r(per_hour(raw.accrued, raw.wear_s)),
                )
            )
        else:
            small.append(raw)
    kept.sort(key=lambda g: (-(g.dose_per_hour if g.dose_per_hour is not None else -1.0), g.name))
    if small:
        names = sorted(g.name for g in small)
        workers = distinct_workers(names) if distinct_workers else sum(g.workers for g in small)
        wear_s = sum(g.wear_s for g in small)
        accrued = sum(g.accrued for g in small)
        if workers < minimum:
            kept.append(Group(OTHER, 0, 0.0, None, withheld=True))  # not even its count
        elif wear_s > 0:
            kept.append(Group(OTHER, workers, _r(wear_s / 3600.0) or 0.0, _r(per_hour(accrued, wear_s))))
    return kept


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
