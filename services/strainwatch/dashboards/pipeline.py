"""Pipeline health: frames in, dead letters by reason, processor lag, checkpoint age, sink write errors.

Reads the `pipeline` and `dead_letter` points the services write about every 10 s (default
retention). These are per service instance, not per site or team: no template variables.
"""

from __future__ import annotations

from typing import Any

from strainwatch.dashboards import queries
from strainwatch.dashboards.panels import (
    NEUTRAL,
    assemble,
    bargauge_panel,
    series_query,
    table_query,
    timeseries_panel,
)
from strainwatch.storage import figures as f
from strainwatch.storage.figures import Scope

UID = "strainwatch-pipeline"
INTERVAL = "$__interval"


def build() -> dict[str, Any]:
    scope = Scope("$timeFilter")
    rates = f.pipeline_rates(scope, interval=INTERVAL)
    gauges = f.pipeline_gauges(scope, interval=INTERVAL)
    panels = [
        timeseries_panel(
            "Frames in and processed",
            "Frames each service took in, and the processor scored, per interval.",
            [
                series_query(
                    "A",
                    queries.columns(rates, ["frames_in", "frames_processed"], ["service"]),
                    "$tag_service $col",
                )
            ],
            "short",
            0,
            [NEUTRAL],
        ),
        timeseries_panel(
            "Dead letters by reason",
            "Frames set aside on the dead-letter topic per interval, by reason and service.",
            [
                series_query(
                    "A",
                    queries.columns(
                        f.dead_letters_by_reason(scope, interval=INTERVAL),
                        ["dead_letters"],
                        ["reason", "service"],
                    ),
                    "$tag_reason ($tag_service)",
                )
            ],
            "short",
            0,
            ((None, "green"), (1.0, "orange"), (100.0, "red")),
            bars=True,
        ),
        timeseries_panel(
            "Processor lag",
            "Frames not yet processed (end offset minus committed), the worst instance per interval.",
            [series_query("A", queries.columns(gauges, ["lag_frames"], ["service"]), "$tag_service")],
            "short",
            0,
            ((None, "green"), (10_000.0, "orange"), (100_000.0, "red")),
            w=8,
        ),
        timeseries_panel(
            "Checkpoint age",
            "Seconds since the last completed checkpoint, the worst instance per interval.",
            [series_query("A", queries.columns(gauges, ["checkpoint_age_s"], ["service"]), "$tag_service")],
            "s",
            0,
            ((None, "green"), (30.0, "orange"), (120.0, "red")),
            w=8,
        ),
        timeseries_panel(
            "Sink write errors",
            "Failed InfluxDB writes per interval (retried; points are lost only if retries run out).",
            [series_query("A", queries.columns(rates, ["sink_write_errors"], ["service"]), "$tag_service")],
            "short",
            0,
            ((None, "green"), (1.0, "red")),
            w=8,
            bars=True,
        ),
        bargauge_panel(
            "Dead letters in the range by reason",
            "Dead-lettered frames in the whole range, by reason and service.",
            [table_query("A", f.dead_letters_by_reason(scope))],
            "/^dead_letters$/",
            "short",
            0,
            ((None, "green"), (1.0, "orange"), (100.0, "red")),
            w=24,
        ),
    ]
    return assemble(
        UID,
        "strainwatch: pipeline health",
        "Service health from the pipeline and dead_letter points (processor, gateway, alerting).",
        panels,
        [],
        time_from="now-6h",
        refresh="30s",
    )
