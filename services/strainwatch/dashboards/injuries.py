"""Injury trends: incidents by body part, incidence rate per 200,000 monitored hours, compliance
against the incidence rate.

Incidents (`incident`, default retention) are site-level: the injury log is not per worker, and a
team view would name the few people of a small team, so this dashboard has a site variable only.
The rate's hours basis is the monitored hours of the hourly rollup (`exposure_hourly`), shown beside
it. InfluxQL cannot divide one measurement by another, so Grafana does: the incident count and the
hours are joined on their time and `calculateField` takes incidents × 200,000 / hours.
"""

from __future__ import annotations

from typing import Any

from strainwatch.dashboards import queries, site
from strainwatch.dashboards.panels import (
    EVENTS_MIN_INTERVAL,
    NEUTRAL,
    assemble,
    bargauge_panel,
    override,
    series_query,
    site_variable,
    stat_panel,
    table_query,
    thresholds_value,
    timeseries_panel,
    transform,
)
from strainwatch.storage import figures as f
from strainwatch.storage.figures import HOURS_BASIS, Scope

UID = "strainwatch-injuries"
INTERVAL = "$__interval"
RATE_STEPS = ((None, "green"), (2.0, "orange"), (5.0, "red"))
INCIDENT_STEPS = ((None, "green"), (1.0, "orange"), (3.0, "red"))


def rate_transformations(join_mode: str) -> list[Any]:
    """incidents joined with hours on Time, then incidence_rate = incidents * 200000 / hours."""
    return [
        transform("joinByField", {"byField": "Time", "mode": join_mode}),
        transform(
            "calculateField",
            {
                "mode": "binary",
                "binary": {"left": "incidents", "operator": "*", "right": str(HOURS_BASIS)},
                "alias": "incidents_x_basis",
                "replaceFields": False,
            },
        ),
        transform(
            "calculateField",
            {
                "mode": "binary",
                "binary": {"left": "incidents_x_basis", "operator": "/", "right": "hours"},
                "alias": "incidence_rate",
                "replaceFields": False,
            },
        ),
    ]


def build() -> dict[str, Any]:
    scope = Scope.grafana(team=False)
    incidents = f.incident_counts(scope, by=())
    monitored = f.monitored(scope)
    panels = [
        stat_panel(
            "Incidents",
            "Upper-body cases of the injury log in the range (recordable and first aid).",
            [table_query("A", incidents)],
            "incidents",
            "short",
            0,
            INCIDENT_STEPS,
            w=6,
            no_value="0",  # no case in the range
        ),
        stat_panel(
            "Days away from work",
            "Days away of the range's cases, as recorded in the injury log.",
            [table_query("A", incidents)],
            "days_away",
            "d",
            0,
            INCIDENT_STEPS,
            w=6,
            no_value="0",  # no case in the range
        ),
        stat_panel(
            "Monitored hours (rate basis)",
            "Hours of sensor wear in the range (hourly rollup): the hours the incidence rate is per.",
            [table_query("A", monitored)],
            "hours",
            "h",
            0,
            [NEUTRAL],
            w=6,
        ),
        stat_panel(
            "Incidence rate per 200,000 monitored hours",
            "Incidents × 200,000 / monitored hours (200,000 h: 100 full-time workers for a year).",
            [table_query("A", incidents), table_query("B", monitored)],
            "incidence_rate",
            "short",
            2,
            RATE_STEPS,
            w=6,
            transformations=rate_transformations("outer"),
        ),
        bargauge_panel(
            "Incidents by body part",
            "Cases in the range by body part (neck, shoulder, upper back, lower back, other).",
            [table_query("A", f.incident_counts(scope, by=("body_part",)))],
            "/^incidents$/",
            "short",
            0,
            INCIDENT_STEPS,
        ),
        timeseries_panel(
            "Incidents over time by body part",
            "Cases per interval by body part.",
            [
                series_query(
                    "A",
                    queries.columns(
                        f.incident_counts(scope, by=("body_part",), interval=INTERVAL) + " fill(0)",
                        ["incidents"],
                        ["body_part"],
                    ),
                    "$tag_body_part",
                )
            ],
            "short",
            0,
            INCIDENT_STEPS,
            bars=True,
        ).with_interval(EVENTS_MIN_INTERVAL),
        timeseries_panel(
            "Compliance against incidence rate",
            "Per interval with monitored hours and break outcomes: conditioning-break compliance (left,"
            " %) and incidents per 200,000 monitored hours (right).",
            [
                table_query("A", f.conditioning_compliance(scope, interval=INTERVAL)),
                table_query("B", f.incident_counts(scope, by=(), interval=INTERVAL) + " fill(0)"),
                table_query("C", f.monitored(scope, interval=INTERVAL)),
            ],
            "percent",
            1,
            site.COMPLIANCE_STEPS,
            w=24,
            transformations=[
                *rate_transformations("inner"),
                transform(
                    "filterFieldsByName", {"include": {"names": ["Time", "compliance", "incidence_rate"]}}
                ),
            ],
            overrides=[
                override(
                    "incidence_rate",
                    unit="short",
                    decimals=2,
                    custom_axisPlacement="right",
                    thresholds=thresholds_value(*RATE_STEPS),
                ),
                override("compliance", unit="percent", decimals=0),
            ],
        ).with_interval(EVENTS_MIN_INTERVAL),
    ]
    return assemble(
        UID,
        "strainwatch: injury trends",
        "Injury-log cases (incident) against monitored hours (exposure_hourly) and break compliance"
        " (break_ack), site-level.",
        panels,
        [site_variable()],
        time_from="now-90d",
        refresh="1h",
    )
