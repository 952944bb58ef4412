"""The InfluxQL statements of the Grafana alert rules (`alert_rules.py`), in one place.

Alert rules need statements of a shape the shared figures (`strainwatch.storage.figures`) do not
give: exactly one value column (Grafana turns every value column into its own series, and two series
with the same labels make a rule's expressions fail), grouped by every tag the alert is about (site
*and* team) across all sites, with no template variables. What they share with the figures is
reused from there: the sources (`HOURLY`, `WINDOWS`), the privacy rule (`MIN_WORKERS`: a team of
fewer workers never alerts on its own) and the way a ratio is taken (the ratio of the group's
totals). `$timeFilter` is Grafana's macro: it becomes the range of the query's `relativeTimeRange`.
"""

from __future__ import annotations

from strainwatch.storage.figures import HOURLY, MIN_WORKERS, WINDOWS
from strainwatch.storage.measurements import PIPELINE

TIME = "$timeFilter"


def team_dose_per_hour(min_workers: int = MIN_WORKERS) -> str:
    """Column `dose_per_hour` per `site`, `team`: upper-back dose per monitored hour over the range,
    from the hourly rollup, for teams with at least `min_workers` workers wearing a device in it."""
    per_worker = (
        f'SELECT SUM("dose_upper_back") AS "dose", SUM("wear_s") AS "wear" FROM {HOURLY} '
        f'WHERE {TIME} AND "wear_s" > 0 GROUP BY "site", "team", "worker"'
    )
    per_team = (
        f'SELECT SUM("dose") AS "dose", SUM("wear") AS "wear", COUNT("wear") AS "workers" '
        f'FROM ({per_worker}) WHERE {TIME} GROUP BY "site", "team"'
    )
    return (
        f'SELECT "dose" / ("wear" / 3600) AS "dose_per_hour" FROM ({per_team}) '
        f'WHERE "workers" >= {int(min_workers)} AND {TIME} GROUP BY "site", "team"'
    )


def site_recent_windows(silent_minutes: int) -> str:
    """Column `windows` per `site`: how many exposure windows the site wrote in the last
    `silent_minutes`, for every site that wrote any in the range (0 for those silent since)."""
    recent = (
        f'SELECT COUNT("frames") AS "windows" FROM {WINDOWS} '
        f'WHERE time >= now() - {int(silent_minutes)}m AND {TIME} GROUP BY "site"'
    )
    active = f'SELECT COUNT("frames") * 0 AS "windows" FROM {WINDOWS} WHERE {TIME} GROUP BY "site"'
    return f'SELECT MAX("windows") AS "windows" FROM ({recent}), ({active}) WHERE {TIME} GROUP BY "site"'


def dead_letter_percent(min_frames: int) -> str:
    """Column `dead_letter_pct` per `service`: dead-lettered frames as a percent of the frames in,
    over the range, for services that took in at least `min_frames` (a handful of frames is noise)."""
    sums = (
        f'SELECT SUM("dead_lettered") AS "dead", SUM("frames_in") AS "frames" FROM "{PIPELINE}" '
        f'WHERE {TIME} GROUP BY "service"'
    )
    return (
        f'SELECT 100 * "dead" / "frames" AS "dead_letter_pct" FROM ({sums}) '
        f'WHERE "frames" >= {int(min_frames)} AND {TIME} GROUP BY "service"'
    )


def processor_gauge(field: str) -> str:
    """Column `<field>` per processor `instance`: the instance's latest value of a gauge
    (`lag_frames`, `checkpoint_age_s`) in the range."""
    if field not in ("lag_frames", "checkpoint_age_s"):
        raise ValueError(f"not a processor gauge: {field!r}")
    return (
        f'SELECT LAST("{field}") AS "{field}" FROM "{PIPELINE}" '
        f'WHERE "service" = \'processor\' AND {TIME} GROUP BY "instance"'
    )
