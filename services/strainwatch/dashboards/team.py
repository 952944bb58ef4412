"""Team: the site overview's figures for one team, and its trend against its site.

Reads the hourly rollup (`exposure_hourly`). A team of fewer than 5 workers shows no figure at all:
each figure drops it, and the site lines beside it are the whole site's.
"""

from __future__ import annotations

from typing import Any

from strainwatch.dashboards import queries, site
from strainwatch.dashboards.panels import (
    EVENTS_MIN_INTERVAL,
    HOURLY_MIN_INTERVAL,
    NEUTRAL,
    Placed,
    assemble,
    bargauge_panel,
    series_query,
    site_variable,
    table_query,
    team_variable,
    timeseries_panel,
)
from strainwatch.storage import figures as f
from strainwatch.storage.figures import Scope
from strainwatch.storage.measurements import BREAK_ACK, BREAK_PROMPT

UID = "strainwatch-team"
INTERVAL = "$__interval"


def against_site(
    title: str,
    description: str,
    team_figure: str,
    site_figure: str,
    column: str,
    unit: str,
    decimals: int,
    steps: Any,
    min_interval: str = HOURLY_MIN_INTERVAL,
) -> Placed:
    """Two lines: the team's and the whole site's value of one column of the same figure."""
    return timeseries_panel(
        title,
        description,
        [
            series_query("A", queries.columns(team_figure, [column]), "team"),
            series_query("B", queries.columns(site_figure, [column]), "site"),
        ],
        unit,
        decimals,
        steps,
    ).with_interval(min_interval)


def build() -> dict[str, Any]:
    team = Scope.grafana(team=True)
    whole = Scope.grafana(team=False)
    panels = [
        *site.stats(team),
        site.zones(team),
        against_site(
            "Dose per monitored hour: team and site",
            "Upper-back dose accrued per monitored hour, the team's against the whole site's.",
            f.dose_per_hour(team, interval=INTERVAL),
            f.dose_per_hour(whole, interval=INTERVAL),
            "dose_per_hour",
            "none",
            1,
            site.DOSE_STEPS,
        ),
        against_site(
            "Violations per 100 monitored hours: team and site",
            "Static holds beyond their limit per 100 monitored hours, the team's against the site's.",
            f.violations_per_100h(team, interval=INTERVAL),
            f.violations_per_100h(whole, interval=INTERVAL),
            "per_100h",
            "short",
            1,
            site.GOOD_BAD_PER_100H,
        ),
        against_site(
            "Trunk flexion not acceptable: team and site (% of measured time)",
            "Share of trunk flexion's measured time in the not-acceptable zone (ISO 11226).",
            f.zone_percent("trunk_flexion", team, interval=INTERVAL),
            f.zone_percent("trunk_flexion", whole, interval=INTERVAL),
            "not_acceptable",
            "percent",
            1,
            site.ZONE_STEPS,
        ),
        against_site(
            "Right arm above 90°: team and site (% of measured time)",
            "Share of the right upper arm's measured time above 90° (overhead work).",
            f.cutpoint_percent("arm_elevation_right", [90], team, interval=INTERVAL),
            f.cutpoint_percent("arm_elevation_right", [90], whole, interval=INTERVAL),
            "gt90",
            "percent",
            1,
            site.ARMS_STEPS,
        ),
        against_site(
            "Conditioning-break compliance: team and site",
            "Conditioning breaks taken, as a percent of the prompts with a recorded outcome.",
            f.conditioning_compliance(team, interval=INTERVAL),
            f.conditioning_compliance(whole, interval=INTERVAL),
            "compliance",
            "percent",
            0,
            site.COMPLIANCE_STEPS,
            EVENTS_MIN_INTERVAL,
        ),
        bargauge_panel(
            "Prompt decisions by status and reason",
            "The team's break prompts sent and suppressed (with the policy's reason); a count behind"
            " which fewer than 5 workers stand is not shown.",
            [table_query("A", queries.event_counts(BREAK_PROMPT, team, ["status", "reason"], "prompts"))],
            "/^prompts$/",
            "short",
            0,
            [NEUTRAL],
        ),
        bargauge_panel(
            "Break outcomes",
            "The team's break prompts by outcome (taken, acknowledged, ignored) and kind.",
            [table_query("A", queries.event_counts(BREAK_ACK, team, ["outcome", "kind"], "outcomes"))],
            "/^outcomes$/",
            "short",
            0,
            [NEUTRAL],
        ),
    ]
    return assemble(
        UID,
        "strainwatch: team",
        "One team's exposure from the hourly rollup (exposure_hourly), against its whole site. A team"
        " of fewer than 5 workers shows nothing.",
        panels,
        [site_variable(), team_variable(multi=False)],
        time_from="now-30d",
    )
