"""Every figure the monthly report and the Grafana dashboards both show, as one InfluxQL definition.

A figure is a function of a `Scope` (time range, site, team) that returns one InfluxQL statement
for the portable `/query` endpoint (InfluxDB 1.x, 2.x through its v1 API, 3.x). The report passes
literal scopes (`Scope.month`), the dashboards pass Grafana's macros (`Scope.grafana`), so both read
the same numbers from the same statement.

Privacy is part of the query, not of its reader: a figure grouped by team or task counts the
distinct workers behind each group and drops groups of fewer than `min_workers` (5 by default), so
neither a panel nor a report can show a small group on its own. The report merges the dropped
groups into "other" by reading the same figure without the grouping and subtracting.

Shape of a grouped figure (three levels, all inside InfluxDB):

    SELECT <ratios>, "workers" FROM (                       -- per group: drop small groups
      SELECT SUM(<part>) ..., COUNT(<first part>) AS "workers" FROM (   -- per group: sum workers
        SELECT <aggregate> AS <part> ... FROM <source> WHERE <scope> GROUP BY <group>, "worker"
      ) WHERE <time> GROUP BY <group>
    ) WHERE "workers" >= <min_workers> GROUP BY <group>

Ratios are computed last, from sums, so a ratio is the ratio of the group's totals (not an average of
per-worker ratios). Column names are the aliases documented on each function.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from strainwatch.storage.measurements import (
    BREAK_ACK,
    DEAD_LETTER,
    EXPOSURE,
    EXPOSURE_HOURLY,
    INCIDENT,
    PIPELINE,
    WINDOWS_RP,
)

MIN_WORKERS = 5  # no group of fewer workers is shown on its own
HOURS_BASIS = 200_000  # OSHA: 100 full-time workers × 50 weeks × 40 hours

HOURLY = f'"{EXPOSURE_HOURLY}"'  # the rollup: reports and long ranges
WINDOWS = f'"{WINDOWS_RP}"."{EXPOSURE}"'  # the 10-second windows: the last weeks only

SEGMENTS = (
    "trunk_flexion",
    "trunk_lateral",
    "trunk_twist",
    "neck_flexion",
    "arm_elevation_left",
    "arm_elevation_right",
)
ZONES = ("acceptable", "conditional", "not_acceptable")
GROUPS = ("team", "task")

_IDENT = re.compile(r"^[A-Za-z0-9_.:\-]+$")


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Scope:
    """Which points a figure reads: a time condition, and optionally one site, team and task.

    `site`/`team`/`task` are literal ids, or Grafana variables (`$site`), which become regex matches
    (`"site" =~ /^$site$/`) so that Grafana's multi-value and "All" options work.
    """

    time: str
    site: str | None = None
    team: str | None = None
    task: str | None = None

    @classmethod
    def grafana(cls, team: bool = True, task: bool = False) -> Scope:
        return cls("$timeFilter", "$site", "$team" if team else None, "$task" if task else None)

    @classmethod
    def between(
        cls,
        start_s: int,
        end_s: int,
        site: str | None = None,
        team: str | None = None,
        task: str | None = None,
    ) -> Scope:
        return cls(f"time >= {int(start_s)}s AND time < {int(end_s)}s", site, team, task)

    @classmethod
    def month(cls, year: int, month: int, site: str | None = None, team: str | None = None) -> Scope:
        start_s, end_s = month_bounds(year, month)
        return cls.between(start_s, end_s, site, team)

    def where(self, *extra: str) -> str:
        parts = [self.time]
        for tag, value in (("site", self.site), ("team", self.team), ("task", self.task)):
            if value is None:
                continue
            if value.startswith("$"):
                parts.append(f'"{tag}" =~ /^{value}$/')
            else:
                parts.append(f'"{tag}" = {_quote(value)}')
        parts.extend(e for e in extra if e)
        return " AND ".join(parts)


def month_bounds(year: int, month: int) -> tuple[int, int]:
    """[start, end) of a calendar month in UTC, as epoch seconds."""
    if not 1 <= month <= 12:
        raise ValueError(f"month {month} is not 1-12")
    start = calendar.timegm((year, month, 1, 0, 0, 0))
    year_end, month_end = (year + 1, 1) if month == 12 else (year, month + 1)
    return start, calendar.timegm((year_end, month_end, 1, 0, 0, 0))


def _group_clause(group: Sequence[str], interval: str | None) -> str:
    keys = ([f"time({interval})"] if interval else []) + [f'"{g}"' for g in group]
    return f" GROUP BY {', '.join(keys)}" if keys else ""


def grouped(
    parts: Mapping[str, str],
    ratios: Mapping[str, str],
    scope: Scope,
    source: str = HOURLY,
    by: str | None = None,
    interval: str | None = None,
    min_workers: int = MIN_WORKERS,
    where: str = "",
    fill_none: bool = True,
) -> str:
    """The three-level figure described in the module doc.

    `parts`: alias -> per-worker aggregate (e.g. `SUM("wear_s")`); the first one decides whether a
    worker counts (it must be non-null for every worker the figure covers).
    `ratios`: alias -> expression over the part aliases, computed from the group's sums.
    """
    if by is not None and by not in GROUPS:
        raise ValueError(f"figures group by {GROUPS}, not {by!r}")
    if not parts:
        raise ValueError("a figure needs at least one part")
    group = [by] if by else []
    first = next(iter(parts))
    inner_cols = ", ".join(f'{agg} AS "{alias}"' for alias, agg in parts.items())
    inner = (
        f"SELECT {inner_cols} FROM {source} WHERE {scope.where(where)}"
        f"{_group_clause([*group, 'worker'], interval)}"
    )
    fill = " fill(none)" if interval and fill_none else ""
    middle_cols = ", ".join(f'SUM("{alias}") AS "{alias}"' for alias in parts)
    middle = (
        f'SELECT {middle_cols}, COUNT("{first}") AS "workers" FROM ({inner}{fill}) '
        f"WHERE {scope.time}{_group_clause(group, interval)}{fill}"
    )
    outer_cols = ", ".join([*(f'{expr} AS "{alias}"' for alias, expr in ratios.items()), '"workers"'])
    keep = f'"workers" >= {int(min_workers)}'
    return f"SELECT {outer_cols} FROM ({middle}) WHERE {keep}{_group_clause(group, None)}"


def _p(alias: str) -> str:
    return f'"{alias}"'


# --- exposure (rollup by default; pass source=WINDOWS for the 10-second windows) ---------------


def monitored(
    scope: Scope,
    by: str | None = None,
    interval: str | None = None,
    source: str = HOURLY,
    min_workers: int = MIN_WORKERS,
) -> str:
    """Columns `workers` (distinct workers with wear time) and `hours` (monitored hours)."""
    return grouped(
        {"wear": 'SUM("wear_s")'},
        {"hours": '"wear" / 3600'},
        scope,
        source,
        by,
        interval,
        min_workers,
        where='"wear_s" > 0',
    )


def zone_percent(
    segment: str,
    scope: Scope,
    by: str | None = None,
    interval: str | None = None,
    source: str = HOURLY,
    min_workers: int = MIN_WORKERS,
) -> str:
    """Columns `acceptable`, `conditional`, `not_acceptable`: percent of the segment's measured time
    (the three zones' seconds sum to it) in each zone."""
    _check_segment(segment)
    parts = {zone: f'SUM("zone_{segment}_{zone}_s")' for zone in ZONES}
    total = " + ".join(_p(z) for z in ZONES)
    ratios = {zone: f"100 * {_p(zone)} / ({total})" for zone in ZONES}
    return grouped(parts, ratios, scope, source, by, interval, min_workers)


def cutpoint_percent(
    segment: str,
    degrees: Sequence[int],
    scope: Scope,
    by: str | None = None,
    interval: str | None = None,
    source: str = HOURLY,
    min_workers: int = MIN_WORKERS,
) -> str:
    """Columns `gt<deg>` (e.g. `gt90`): percent of the segment's measured time above each study
    cut-point."""
    _check_segment(segment)
    parts = {"measured": " + ".join(f'SUM("zone_{segment}_{z}_s")' for z in ZONES)}
    parts |= {f"gt{d}": f'SUM("cut_{segment}_gt{int(d)}_s")' for d in degrees}
    ratios = {f"gt{d}": f'100 * "gt{d}" / "measured"' for d in degrees}
    return grouped(parts, ratios, scope, source, by, interval, min_workers)


def violations_per_100h(
    scope: Scope,
    by: str | None = None,
    interval: str | None = None,
    source: str = HOURLY,
    min_workers: int = MIN_WORKERS,
) -> str:
    """Columns `per_100h` (holds beyond their limit per 100 monitored hours) and `violations`."""
    parts = {"wear": 'SUM("wear_s")', "violations": 'SUM("violations")'}
    ratios = {"per_100h": '100 * "violations" / ("wear" / 3600)', "violations": '"violations"'}
    return grouped(parts, ratios, scope, source, by, interval, min_workers, where='"wear_s" > 0')


def dose_per_hour(
    scope: Scope,
    by: str | None = None,
    interval: str | None = None,
    source: str = HOURLY,
    min_workers: int = MIN_WORKERS,
) -> str:
    """Columns `dose_per_hour` (upper-back dose accrued per monitored hour, before recovery: what
    an hour of the work causes) and `hours`."""
    parts = {"wear": 'SUM("wear_s")', "dose": 'SUM("accrued_upper_back")'}
    ratios = {"dose_per_hour": '"dose" / ("wear" / 3600)', "hours": '"wear" / 3600'}
    return grouped(parts, ratios, scope, source, by, interval, min_workers, where='"wear_s" > 0')


# --- prompts and outcomes ---------------------------------------------------------------------


def outcome_counts(scope: Scope, interval: str | None = None) -> str:
    """Column `outcomes` per `outcome` (taken, acknowledged, ignored) and `kind` tag."""
    return (
        f'SELECT COUNT("alert_id") AS "outcomes" FROM "{BREAK_ACK}" WHERE {scope.where()}'
        f"{_group_clause(['outcome', 'kind'], interval)}"
    )


def conditioning_compliance(
    scope: Scope, by: str | None = None, interval: str | None = None, min_workers: int = MIN_WORKERS
) -> str:
    """Columns `compliance` (percent of conditioning-break prompts with the break taken),
    `taken` and `prompts` (prompts with a recorded outcome)."""
    parts = {"prompts": 'COUNT("alert_id")', "taken": 'SUM("taken")'}
    ratios = {"compliance": '100 * "taken" / "prompts"', "taken": '"taken"', "prompts": '"prompts"'}
    return grouped(
        parts,
        ratios,
        scope,
        f'"{BREAK_ACK}"',
        by,
        interval,
        min_workers,
        where="\"kind\" = 'conditioning_break'",
    )


# --- incidents --------------------------------------------------------------------------------


def incident_counts(scope: Scope, by: Sequence[str] = ("body_part",), interval: str | None = None) -> str:
    """Columns `incidents`, `days_away`, `days_restricted` per the `by` tags (body_part, severity,
    team). Incidents are not per worker: groups of small teams are merged by the reader."""
    return (
        f'SELECT SUM("count") AS "incidents", SUM("days_away") AS "days_away", '
        f'SUM("days_restricted") AS "days_restricted" FROM "{INCIDENT}" WHERE {scope.where()}'
        f"{_group_clause(list(by), interval)}"
    )


def incidence_rate(incidents: float, hours: float) -> float | None:
    """Incidents per 200,000 hours (OSHA); None when no hours were recorded."""
    return incidents * HOURS_BASIS / hours if hours > 0 else None


# --- pipeline health --------------------------------------------------------------------------


def pipeline_rates(scope: Scope, interval: str = "1m", service: str | None = None) -> str:
    """Columns `frames_in`, `frames_processed`, `dead_lettered`, `sink_write_errors` (sums over each
    interval) per `service`."""
    cond = f'"service" = {_quote(service)}' if service else ""
    cols = ", ".join(
        f'SUM("{f}") AS "{f}"'
        for f in ("frames_in", "frames_processed", "dead_lettered", "sink_write_errors")
    )
    return (
        f'SELECT {cols} FROM "{PIPELINE}" WHERE {_time_only(scope, cond)}'
        f"{_group_clause(['service'], interval)} fill(0)"
    )


def pipeline_gauges(scope: Scope, interval: str = "1m") -> str:
    """Columns `lag_frames` and `checkpoint_age_s` (the worst instance in each interval) per `service`."""
    return (
        f'SELECT MAX("lag_frames") AS "lag_frames", MAX("checkpoint_age_s") AS "checkpoint_age_s" '
        f'FROM "{PIPELINE}" WHERE {_time_only(scope)}{_group_clause(["service"], interval)} fill(none)'
    )


def dead_letters_by_reason(scope: Scope, interval: str | None = None) -> str:
    """Column `dead_letters` per `reason` (and `service`)."""
    return (
        f'SELECT SUM("count") AS "dead_letters" FROM "{DEAD_LETTER}" WHERE {_time_only(scope)}'
        f"{_group_clause(['reason', 'service'], interval)}"
    )


def _time_only(scope: Scope, *extra: str) -> str:
    # pipeline points are per service instance, not per site or team
    return " AND ".join([scope.time, *(e for e in extra if e)])


def _check_segment(segment: str) -> None:
    if segment not in SEGMENTS:
        raise ValueError(f"unknown segment {segment!r}; one of {', '.join(SEGMENTS)}")
