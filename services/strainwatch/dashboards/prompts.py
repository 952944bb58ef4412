"""Break prompts: alerts decided, prompts sent and suppressed by reason, outcomes, compliance by team.

Reads `break_alert`, `break_prompt` and `break_ack` (default retention). Each count is dropped when
fewer than 5 distinct workers stand behind it; compliance by team only shows teams of 5 or more.
"""

from __future__ import annotations

from typing import Any

from strainwatch.dashboards import queries, site
from strainwatch.dashboards.panels import (
    EVENTS_MIN_INTERVAL,
    NEUTRAL,
    assemble,
    bargauge_panel,
    series_query,
    site_variable,
    stat_panel,
    table_query,
    team_variable,
    timeseries_panel,
)
from strainwatch.storage import figures as f
from strainwatch.storage.figures import Scope
from strainwatch.storage.measurements import BREAK_ACK, BREAK_ALERT, BREAK_PROMPT

UID = "strainwatch-prompts"
INTERVAL = "$__interval"
SENT = "\"status\" = 'sent'"
SUPPRESSED = "\"status\" = 'suppressed'"


def build() -> dict[str, Any]:
    scope = Scope.grafana(team=True)
    panels = [
        stat_panel(
            "Breaks decided",
            "Posture nudges and conditioning breaks the processor decided (break_alert).",
            [table_query("A", queries.event_counts(BREAK_ALERT, scope, [], "alerts"))],
            "alerts",
            "short",
            0,
            [NEUTRAL],
            w=6,
        ),
        stat_panel(
            "Prompts sent",
            "Decisions to deliver a prompt to the worker's device and channels.",
            [table_query("A", queries.event_counts(BREAK_PROMPT, scope, [], "prompts", where=SENT))],
            "prompts",
            "short",
            0,
            [NEUTRAL],
            w=6,
        ),
        stat_panel(
            "Prompts suppressed",
            "Decisions not to deliver (budget, quiet hours, scheduled break, not neutral, duplicate, stale).",
            [table_query("A", queries.event_counts(BREAK_PROMPT, scope, [], "prompts", where=SUPPRESSED))],
            "prompts",
            "short",
            0,
            [NEUTRAL],
            w=6,
        ),
        stat_panel(
            "Conditioning-break compliance",
            "Conditioning breaks taken, as a percent of the break prompts with a recorded outcome.",
            [table_query("A", f.conditioning_compliance(scope))],
            "compliance",
            "percent",
            0,
            site.COMPLIANCE_STEPS,
            w=6,
        ),
        timeseries_panel(
            "Breaks decided by kind",
            "Alerts per interval by kind (posture_hold, conditioning_break).",
            [
                series_query(
                    "A",
                    queries.event_counts(BREAK_ALERT, scope, ["kind"], "alerts", interval=INTERVAL),
                    "$tag_kind",
                )
            ],
            "short",
            0,
            [NEUTRAL],
            bars=True,
        ).with_interval(EVENTS_MIN_INTERVAL),
        timeseries_panel(
            "Prompts sent and suppressed",
            "Prompt decisions per interval by status.",
            [
                series_query(
                    "A",
                    queries.event_counts(BREAK_PROMPT, scope, ["status"], "prompts", interval=INTERVAL),
                    "$tag_status",
                )
            ],
            "short",
            0,
            [NEUTRAL],
            bars=True,
        ).with_interval(EVENTS_MIN_INTERVAL),
        bargauge_panel(
            "Suppressed by reason",
            "Prompts the delivery policy held back, by its reason.",
            [
                table_query(
                    "A", queries.event_counts(BREAK_PROMPT, scope, ["reason"], "prompts", where=SUPPRESSED)
                )
            ],
            "/^prompts$/",
            "short",
            0,
            [NEUTRAL],
            w=8,
        ),
        bargauge_panel(
            "Outcomes",
            "Break prompts by outcome (taken, acknowledged, ignored) and kind.",
            [table_query("A", queries.event_counts(BREAK_ACK, scope, ["outcome", "kind"], "outcomes"))],
            "/^outcomes$/",
            "short",
            0,
            [NEUTRAL],
            w=8,
        ),
        bargauge_panel(
            "Compliance by team",
            "Per team of 5 workers or more: conditioning breaks taken, in percent of prompts with"
            " an outcome.",
            [table_query("A", f.conditioning_compliance(scope, by="team"))],
            "/^compliance$/",
            "percent",
            0,
            site.COMPLIANCE_STEPS,
            w=8,
            max_value=100,
        ),
        timeseries_panel(
            "Compliance over time",
            "Conditioning-break compliance per interval, for the chosen site and teams.",
            [
                series_query(
                    "A",
                    queries.columns(f.conditioning_compliance(scope, interval=INTERVAL), ["compliance"]),
                    "compliance",
                )
            ],
            "percent",
            0,
            site.COMPLIANCE_STEPS,
            w=24,
        ).with_interval(EVENTS_MIN_INTERVAL),
    ]
    return assemble(
        UID,
        "strainwatch: break prompts",
        "Break alerts decided, prompts sent and suppressed (by reason), outcomes and compliance"
        " (break_alert, break_prompt, break_ack). No count of fewer than 5 workers is shown.",
        panels,
        [site_variable(), team_variable(multi=True)],
        time_from="now-7d",
    )
