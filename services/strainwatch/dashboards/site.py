"""Site overview: exposure of a site (and the chosen teams), by segment, team and task; prompts.

Every exposure panel reads the hourly rollup (`exposure_hourly`, the database's long retention), so
any range works from a day to years; the figures drop teams and tasks of fewer than 5 workers.
"""

from __future__ import annotations

from typing import Any

from strainwatch.dashboards import queries
from strainwatch.dashboards.panels import (
    HOURLY_MIN_INTERVAL,
    NEUTRAL,
    Placed,
    assemble,
    bargauge_panel,
    override,
    series_query,
    site_variable,
    stat_panel,
    table_panel,
    table_query,
    team_variable,
    timeseries_panel,
    transform,
)
from strainwatch.storage import figures as f
from strainwatch.storage.figures import SEGMENTS, ZONES, Scope
from strainwatch.storage.measurements import BREAK_PROMPT

UID = "strainwatch-site"
INTERVAL = "$__interval"

GOOD_BAD_PER_100H = ((None, "green"), (10.0, "orange"), (25.0, "red"))
DOSE_STEPS = ((None, "green"), (300.0, "orange"), (600.0, "red"))
ARMS_STEPS = ((None, "green"), (5.0, "orange"), (10.0, "red"))
ZONE_STEPS = ((None, "green"), (10.0, "orange"), (20.0, "red"))
COMPLIANCE_STEPS = ((None, "red"), (50.0, "orange"), (80.0, "green"))


def stats(scope: Scope) -> list[Placed]:
    """The six headline numbers of a scope (site and teams, or one team)."""
    monitored = f.monitored(scope)
    return [
        stat_panel(
            "Monitored workers",
            "Distinct workers who wore a device in the range (hourly rollup). Blank when fewer than 5.",
            [table_query("A", monitored)],
            "workers",
            "short",
            0,
            [NEUTRAL],
        ),
        stat_panel(
            "Monitored hours",
            "Hours of sensor wear in the range: the denominator of every rate on this dashboard.",
            [table_query("A", monitored)],
            "hours",
            "h",
            1,
            [NEUTRAL],
        ),
        stat_panel(
            "Violations per 100 monitored hours",
            "Static holds beyond the segment's holding-time limit (ISO 11226), per 100 monitored hours.",
            [table_query("A", f.violations_per_100h(scope))],
            "per_100h",
            "short",
            1,
            GOOD_BAD_PER_100H,
        ),
        stat_panel(
            "Dose per monitored hour",
            "Upper-back strain dose accrued per monitored hour (docs/exposure-model.md); a conditioning"
            " break is due at 600.",
            [table_query("A", f.dose_per_hour(scope))],
            "dose_per_hour",
            "none",
            1,
            DOSE_STEPS,
        ),
        stat_panel(
            "Arms above 90°",
            "Share of each upper arm's measured time elevated above 90° (overhead work).",
            [
                table_query("A", f.cutpoint_percent("arm_elevation_left", [90], scope)),
                table_query("B", f.cutpoint_percent("arm_elevation_right", [90], scope)),
            ],
            "gt90",
            "percent",
            1,
            ARMS_STEPS,
            by_query=[override("A", displayName="left arm"), override("B", displayName="right arm")],
        ),
        stat_panel(
            "Conditioning-break compliance",
            "Conditioning breaks taken, as a percent of the break prompts with a recorded outcome.",
            [table_query("A", f.conditioning_compliance(scope))],
            "compliance",
            "percent",
            0,
            COMPLIANCE_STEPS,
        ),
    ]


def zones(scope: Scope, w: int = 12) -> Placed:
    """Time per zone for every segment: 18 bars `<segment>_<zone>`."""
    targets = [
        table_query(
            chr(ord("A") + i),
            queries.columns(f.zone_percent(segment, scope), {z: f"{segment}_{z}" for z in ZONES}),
        )
        for i, segment in enumerate(SEGMENTS)
    ]
    return bargauge_panel(
        "Time per zone by segment (% of measured time)",
        "ISO 11226 / EN 1005-4 zones: the share of each segment's measured time in the acceptable,"
        " conditional and not-acceptable zone.",
        targets,
        "",
        "percent",
        1,
        ZONE_STEPS,
        w=w,
        h=12,
        max_value=100,
    )


def zones_by_team(scope: Scope) -> Placed:
    targets = [
        table_query(
            chr(ord("A") + i),
            queries.columns(f.zone_percent(segment, scope, by="team"), {"not_acceptable": segment}, ["team"]),
        )
        for i, segment in enumerate(SEGMENTS)
    ]
    return table_panel(
        "Not-acceptable zone by team (% of measured time)",
        "Per team (teams of 5 workers or more), the share of each segment's measured time in the"
        " not-acceptable zone.",
        targets,
        "percent",
        1,
        ZONE_STEPS,
        h=12,
        transformations=[
            transform("filterFieldsByName", {"include": {"names": ["team", *SEGMENTS]}}),
            transform("joinByField", {"byField": "team", "mode": "outer"}),
        ],
        overrides=[override("team", unit="string", displayName="Team")],
    )


def trend(
    title: str,
    description: str,
    figure: str,
    column: str,
    group: str,
    unit: str,
    decimals: int,
    steps: Any,
) -> Placed:
    """One line per `group` value (`team` or `task`) of one column of a figure."""
    return timeseries_panel(
        title,
        description,
        [series_query("A", queries.columns(figure, [column], [group]), f"$tag_{group}")],
        unit,
        decimals,
        steps,
    ).with_interval(HOURLY_MIN_INTERVAL)


def prompts(scope: Scope) -> list[Placed]:
    return [
        bargauge_panel(
            "Prompt decisions by status and reason",
            "Break prompts sent and suppressed (with the delivery policy's reason). A count behind"
            " which fewer than 5 workers stand is not shown.",
            [table_query("A", queries.event_counts(BREAK_PROMPT, scope, ["status", "reason"], "prompts"))],
            "/^prompts$/",
            "short",
            0,
            [NEUTRAL],
        ),
        bargauge_panel(
            "Conditioning-break compliance by team",
            "Per team of 5 workers or more: conditioning breaks taken, as a percent of the break"
            " prompts with a recorded outcome.",
            [table_query("A", f.conditioning_compliance(scope, by="team"))],
            "/^compliance$/",
            "percent",
            0,
            COMPLIANCE_STEPS,
            max_value=100,
        ),
    ]


def build() -> dict[str, Any]:
    scope = Scope.grafana(team=True)
    panels = [
        *stats(scope),
        zones(scope),
        zones_by_team(scope),
        trend(
            "Dose per monitored hour by team",
            "Upper-back dose accrued per monitored hour, per team of 5 workers or more.",
            f.dose_per_hour(scope, by="team", interval=INTERVAL),
            "dose_per_hour",
            "team",
            "none",
            1,
            DOSE_STEPS,
        ),
        trend(
            "Dose per monitored hour by task",
            "Upper-back dose accrued per monitored hour, per task done by 5 workers or more.",
            f.dose_per_hour(scope, by="task", interval=INTERVAL),
            "dose_per_hour",
            "task",
            "none",
            1,
            DOSE_STEPS,
        ),
        trend(
            "Violations per 100 monitored hours by team",
            "Static holds beyond their limit per 100 monitored hours, per team of 5 workers or more.",
            f.violations_per_100h(scope, by="team", interval=INTERVAL),
            "per_100h",
            "team",
            "short",
            1,
            GOOD_BAD_PER_100H,
        ),
        trend(
            "Right arm above 90° by team (% of measured time)",
            "Share of the right upper arm's measured time above 90°, per team of 5 workers or more.",
            f.cutpoint_percent("arm_elevation_right", [90], scope, by="team", interval=INTERVAL),
            "gt90",
            "team",
            "percent",
            1,
            ARMS_STEPS,
        ),
        *prompts(scope),
    ]
    return assemble(
        UID,
        "strainwatch: site overview",
        "Exposure of a site's teams and tasks from the hourly rollup (exposure_hourly); no panel"
        " shows a worker, or a team or task of fewer than 5 workers.",
        panels,
        [site_variable(), team_variable(multi=True)],
        time_from="now-7d",
    )
