"""Worker timeline: one pseudonymous worker's holds, dose, prompts and outcomes.

Off unless the site enables it: `strainwatch dashboards build --worker-timeline` (the committed
build leaves it out). It never ranks workers: it shows the one worker chosen by pseudonym. Holds and
dose read the 10-second windows (`"windows"."exposure"`, short retention: the last weeks only).
"""

from __future__ import annotations

from typing import Any

from strainwatch.dashboards import queries
from strainwatch.dashboards.panels import (
    NEUTRAL,
    assemble,
    series_query,
    site_variable,
    table_query,
    team_variable,
    timeseries_panel,
    worker_variable,
)
from strainwatch.storage.figures import Scope
from strainwatch.storage.measurements import BREAK_ACK, BREAK_PROMPT

UID = "strainwatch-worker"


def build() -> dict[str, Any]:
    scope = Scope.grafana(team=True)
    panels = [
        timeseries_panel(
            "Longest hold by segment",
            "The longest static hold of each segment per interval (10-s windows).",
            [table_query("A", queries.worker_holds(scope))],
            "s",
            0,
            ((None, "green"), (60.0, "orange"), (240.0, "red")),
            w=24,
        ),
        timeseries_panel(
            "Upper-back dose",
            "The worker's upper-back strain dose; a conditioning break is prompted at 600.",
            [table_query("A", queries.worker_dose(scope))],
            "none",
            0,
            ((None, "green"), (450.0, "orange"), (600.0, "red")),
            w=24,
        ),
        timeseries_panel(
            "Prompts",
            "The worker's break prompts per interval, sent or suppressed.",
            [
                series_query(
                    "A", queries.worker_events(BREAK_PROMPT, scope, "status", "prompts"), "$tag_status"
                )
            ],
            "short",
            0,
            [NEUTRAL],
            bars=True,
        ),
        timeseries_panel(
            "Outcomes",
            "The worker's break outcomes per interval (taken, acknowledged, ignored).",
            [
                series_query(
                    "A", queries.worker_events(BREAK_ACK, scope, "outcome", "outcomes"), "$tag_outcome"
                )
            ],
            "short",
            0,
            [NEUTRAL],
            bars=True,
        ),
    ]
    return assemble(
        UID,
        "strainwatch: worker timeline",
        "One worker's timeline by pseudonym (holds, dose, prompts, outcomes). Enabled per site only.",
        panels,
        [site_variable(), team_variable(multi=False), worker_variable()],
        time_from="now-12h",
        refresh="1m",
    )
