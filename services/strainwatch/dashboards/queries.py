"""The dashboards' own InfluxQL: what only Grafana needs, next to the shared figures.

Every exposure, prompt, outcome, incident and pipeline figure comes from
`strainwatch.storage.figures` (the one definition the monthly report reads too). This module adds:

- the template variables' `SHOW TAG VALUES` queries;
- `columns()`: one figure narrowed to some of its columns (optionally renamed), so that a time series
  grouped by a tag draws one line per group instead of one per column;
- `event_counts()`: counts of prompt decisions, outcomes and alerts per tag, with the same privacy rule
  as the figures (a count behind which fewer than `MIN_WORKERS` distinct workers stand is not shown);
- the worker timeline's per-worker statements (that dashboard is off unless a site enables it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from strainwatch.storage.figures import MIN_WORKERS, WINDOWS, Scope
from strainwatch.storage.measurements import EXPOSURE_HOURLY

SEGMENTS_HOLD = (
    "trunk_flexion",
    "trunk_lateral",
    "trunk_twist",
    "neck_flexion",
    "arm_elevation_left",
    "arm_elevation_right",
)


# --- template variables --------------------------------------------------------------------------


def site_values() -> str:
    """The sites with exposure in the hourly rollup (all of its retention, not only the range)."""
    return f'SHOW TAG VALUES FROM "{EXPOSURE_HOURLY}" WITH KEY = "site"'


def team_values() -> str:
    """The teams of the chosen sites (names only: panels still drop teams under MIN_WORKERS)."""
    return f'SHOW TAG VALUES FROM "{EXPOSURE_HOURLY}" WITH KEY = "team" WHERE "site" =~ /^$site$/'


def worker_values() -> str:
    """The pseudonymous worker ids of the chosen site and team (worker timeline only)."""
    return (
        f'SHOW TAG VALUES FROM "{EXPOSURE_HOURLY}" WITH KEY = "worker" '
        f'WHERE "site" =~ /^$site$/ AND "team" =~ /^$team$/'
    )


# --- narrowing a figure ----------------------------------------------------------------------------


def _tags(group: Sequence[str]) -> str:
    return f" GROUP BY {', '.join(f'{chr(34)}{g}{chr(34)}' for g in group)}" if group else ""


def columns(figure: str, names: Mapping[str, str] | Sequence[str], group: Sequence[str] = ()) -> str:
    """`figure` reduced to `names` (column -> new name, or a list of columns kept as they are),
    keeping the figure's `group` tags. The figure's own WHERE and privacy rule stay inside.

    Each column is read `::float`: InfluxDB 1.x types a subquery's column by its expression, so a
    ratio of two integer sums (compliance: taken / prompts) would come back truncated to an integer
    through one more SELECT (83 for 83.33), although the figure itself returns 83.33."""
    renames = dict(names) if isinstance(names, Mapping) else {n: n for n in names}
    cols = ", ".join(f'"{old}"::float AS "{new}"' for old, new in renames.items())
    return f"SELECT {cols} FROM ({figure}){_tags(group)}"


# --- counts of events per tag, with the privacy rule ---------------------------------------------------


def event_counts(
    measurement: str,
    scope: Scope,
    group: Sequence[str],
    alias: str,
    where: str = "",
    interval: str | None = None,
    min_workers: int = MIN_WORKERS,
) -> str:
    """Column `alias` (points of `measurement`, counted by their `alert_id`) and `workers` per `group`
    tags, dropping every group behind which fewer than `min_workers` distinct workers stand.

    Same three levels as the figures: per worker and group, per group (summing, counting workers),
    then the privacy filter."""
    time_group = [f"time({interval})"] if interval else []
    inner_group = ", ".join([*time_group, *(f'"{g}"' for g in group), '"worker"'])
    inner = (
        f'SELECT COUNT("alert_id") AS "{alias}" FROM "{measurement}" WHERE {scope.where(where)} '
        f"GROUP BY {inner_group}"
    )
    fill = " fill(none)" if interval else ""
    middle_keys = [*time_group, *(f'"{g}"' for g in group)]
    middle_group = f" GROUP BY {', '.join(middle_keys)}" if middle_keys else ""
    middle = (
        f'SELECT SUM("{alias}") AS "{alias}", COUNT("{alias}") AS "workers" FROM ({inner}{fill}) '
        f"WHERE {scope.time}{middle_group}{fill}"
    )
    return f'SELECT "{alias}", "workers" FROM ({middle}) WHERE "workers" >= {int(min_workers)}{_tags(group)}'


# --- the worker timeline (one pseudonymous worker; off unless the site enables it) ---------------


WORKER = '"worker" =~ /^$worker$/'


def worker_holds(scope: Scope) -> str:
    """Columns `<segment>`: the longest hold of each segment per interval, from the 10-s windows."""
    cols = ", ".join(f'MAX("hold_{s}_s") AS "{s}"' for s in SEGMENTS_HOLD)
    return f"SELECT {cols} FROM {WINDOWS} WHERE {scope.where(WORKER)} GROUP BY time($__interval) fill(none)"


def worker_dose(scope: Scope) -> str:
    """Column `dose_upper_back`: the worker's upper-back dose (its highest per interval), 10-s windows."""
    return (
        f'SELECT MAX("dose_upper_back") AS "dose_upper_back" FROM {WINDOWS} WHERE {scope.where(WORKER)} '
        f"GROUP BY time($__interval) fill(none)"
    )


def worker_events(measurement: str, scope: Scope, group: str, alias: str) -> str:
    """Column `alias` (points per interval) per `group` tag, for the chosen worker."""
    return (
        f'SELECT COUNT("alert_id") AS "{alias}" FROM "{measurement}" WHERE {scope.where(WORKER)} '
        f'GROUP BY time($__interval), "{group}" fill(none)'
    )
