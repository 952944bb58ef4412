"""Shared pieces of every strainwatch dashboard, on grafana-foundation-sdk's builders.

The SDK ships no InfluxDB query builder, so `InfluxQL` is one: a raw InfluxQL target (`rawQuery`,
`resultFormat`, `alias`) on the strainwatch data source. Every panel helper here requires a unit,
decimals and thresholds, so no panel goes out without them. `assemble` lays panels out left to right
on Grafana's 24-column grid, numbers them, and returns the dashboard as a plain dict.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, dashboard

from strainwatch.dashboards import queries
from strainwatch.dashboards.alert_rules import DATASOURCE_UID  # the provisioned data source, one uid

DATASOURCE = dashboard.DataSourceRef(type_val="influxdb", uid=DATASOURCE_UID)
TAGS = ["strainwatch"]

Format = Literal["table", "time_series"]
Step = tuple[float | None, str]  # (threshold value, colour); the first value is None (the base)


class InfluxQLQuery(cogvariants.Dataquery):
    """A raw InfluxQL target of Grafana's InfluxDB data source (InfluxQL mode)."""

    def __init__(self, ref_id: str, query: str, result_format: Format, alias: str | None) -> None:
        self.ref_id = ref_id
        self.query = query
        self.result_format = result_format
        self.alias = alias

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "datasource": DATASOURCE.to_json(),
            "query": self.query,
            "rawQuery": True,
            "refId": self.ref_id,
            "resultFormat": self.result_format,
        }
        if self.alias:
            payload["alias"] = self.alias
        return payload


class InfluxQL(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, ref_id: str, query: str, result_format: Format = "table", alias: str | None = None):
        self._internal = InfluxQLQuery(ref_id, query, result_format, alias)

    def build(self) -> InfluxQLQuery:
        return self._internal


def table_query(ref_id: str, query: str) -> InfluxQL:
    """Columns as fields, GROUP BY tags as string fields, one frame (stat, bar gauge, table panels)."""
    return InfluxQL(ref_id, query, "table")


def series_query(ref_id: str, query: str, alias: str) -> InfluxQL:
    """One series per GROUP BY tag set, named by `alias` (`$tag_team`, `$col`, ...)."""
    return InfluxQL(ref_id, query, "time_series", alias)


def thresholds(*steps: Step) -> dashboard_builders.ThresholdsConfig:
    if not steps or steps[0][0] is not None:
        raise ValueError("thresholds start with the base step (None, colour)")
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(dashboard.ThresholdsMode.ABSOLUTE)
        .steps([dashboard.Threshold(value=v, color=c) for v, c in steps])
    )


NEUTRAL = (None, "blue")  # a count or a basis, not good or bad

# Minimum intervals of time-grouped panels. The rollup has one point per worker and hour, so a
# shorter interval shows nothing more; and every bucket keeps the privacy rule on its own, so
# counts of prompts and outcomes need buckets long enough to hold 5 workers' events.
HOURLY_MIN_INTERVAL = "1h"
EVENTS_MIN_INTERVAL = "1d"


def override(name: str, **props: object) -> tuple[str, list[dashboard.DynamicConfigValue]]:
    """Field properties by name (`custom_axisPlacement` stands for `custom.axisPlacement`)."""
    return name, [dashboard.DynamicConfigValue(id_val=k.replace("_", "."), value=v) for k, v in props.items()]


def thresholds_value(*steps: Step) -> dict[str, object]:
    """Thresholds as an override's value."""
    return thresholds(*steps).build().to_json()


def transform(tid: str, options: dict[str, Any]) -> dashboard.DataTransformerConfig:
    return dashboard.DataTransformerConfig(id_val=tid, options=options)


@dataclass
class Placed:
    """A panel builder and its size on the grid."""

    panel: Any
    w: int
    h: int

    def with_interval(self, interval: str) -> Placed:
        """The panel's minimum interval: `$__interval` is never shorter (e.g. whole days)."""
        self.panel = self.panel.interval(interval)
        return self


def _common(
    builder: Any,
    title: str,
    description: str,
    targets: Sequence[InfluxQL],
    unit: str,
    decimals: int,
    steps: Sequence[Step],
    overrides: Sequence[tuple[str, list[dashboard.DynamicConfigValue]]] = (),
    transformations: Sequence[dashboard.DataTransformerConfig] = (),
    by_query: Sequence[tuple[str, list[dashboard.DynamicConfigValue]]] = (),
) -> Any:
    builder = (
        builder.title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(list(targets))
        .unit(unit)
        .decimals(decimals)
        .thresholds(thresholds(*steps))
    )
    for name, props in overrides:
        builder = builder.override_by_name(name, props)
    for ref_id, props in by_query:
        builder = builder.override_by_query(ref_id, props)
    for t in transformations:
        builder = builder.with_transformation(t)
    return builder


def stat_panel(
    title: str,
    description: str,
    targets: Sequence[InfluxQL],
    field: str,
    unit: str,
    decimals: int,
    steps: Sequence[Step],
    w: int = 4,
    h: int = 4,
    no_value: str | None = None,
    **kwargs: Any,
) -> Placed:
    """One number per target: `field` of the query's (single) row (`no_value` when it has none)."""
    builder = _common(stat.Panel(), title, description, targets, unit, decimals, steps, **kwargs)
    if no_value is not None:
        builder = builder.no_value(no_value)
    builder = (
        builder.reduce_options(
            common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields(f"/^{field}$/").values(False)
        )
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.VALUE)
        .text_mode(common.BigValueTextMode.AUTO)
    )
    return Placed(builder, w, h)


def bargauge_panel(
    title: str,
    description: str,
    targets: Sequence[InfluxQL],
    fields: str,
    unit: str,
    decimals: int,
    steps: Sequence[Step],
    w: int = 12,
    h: int = 8,
    max_value: float | None = None,
    **kwargs: Any,
) -> Placed:
    """One bar per row of the queries (`fields`: the reduce options' field regex, e.g. /^incidents$/)."""
    builder = _common(bargauge.Panel(), title, description, targets, unit, decimals, steps, **kwargs)
    builder = (
        builder.reduce_options(
            common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields(fields).values(True)
        )
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .min(0)
    )
    if max_value is not None:
        builder = builder.max(max_value)
    return Placed(builder, w, h)


def timeseries_panel(
    title: str,
    description: str,
    targets: Sequence[InfluxQL],
    unit: str,
    decimals: int,
    steps: Sequence[Step],
    w: int = 12,
    h: int = 8,
    bars: bool = False,
    **kwargs: Any,
) -> Placed:
    builder = _common(timeseries.Panel(), title, description, targets, unit, decimals, steps, **kwargs)
    builder = (
        builder.legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE)
        )
        .span_nulls(False)
        .min(0)
    )
    if bars:
        builder = builder.draw_style(common.GraphDrawStyle.BARS).fill_opacity(60)
    return Placed(builder, w, h)


def table_panel(
    title: str,
    description: str,
    targets: Sequence[InfluxQL],
    unit: str,
    decimals: int,
    steps: Sequence[Step],
    w: int = 12,
    h: int = 8,
    **kwargs: Any,
) -> Placed:
    builder = _common(table.Panel(), title, description, targets, unit, decimals, steps, **kwargs)
    return Placed(builder.show_header(True), w, h)


# --- template variables ---------------------------------------------------------------------------


def _query_variable(
    name: str, label: str, query: str, multi: bool, include_all: bool
) -> dashboard_builders.QueryVariable:
    variable = (
        dashboard_builders.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(dashboard.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(include_all)
        .allow_custom_value(False)  # the listed values only (no typed regex)
    )
    if include_all:
        # a custom all value goes into the query raw: `=~ /^.*$/` rather than a list of every team
        variable = variable.all_value(".*")
    return variable


def site_variable() -> dashboard_builders.QueryVariable:
    return _query_variable("site", "Site", queries.site_values(), multi=False, include_all=False)


def team_variable(multi: bool = True) -> dashboard_builders.QueryVariable:
    return _query_variable("team", "Team", queries.team_values(), multi=multi, include_all=multi)


def worker_variable() -> dashboard_builders.QueryVariable:
    return _query_variable("worker", "Worker (pseudonym)", queries.worker_values(), False, False)


# --- the dashboard -----------------------------------------------------------------------------------


def assemble(
    uid: str,
    title: str,
    description: str,
    panels: Sequence[Placed],
    variables: Sequence[dashboard_builders.QueryVariable] = (),
    time_from: str = "now-7d",
    refresh: str = "5m",
) -> dict[str, Any]:
    """The dashboard as a JSON-ready dict: panels laid out in rows of 24 columns, ids 1, 2, ..."""
    builder = (
        dashboard_builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .timezone("utc")
        .time(time_from, "now")
        .refresh(refresh)
        .readonly()
        .tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
    )
    for variable in variables:
        builder = builder.with_variable(variable)
    positions = _positions(panels)
    for pid, (placed, pos) in enumerate(zip(panels, positions, strict=True), start=1):
        builder = builder.with_panel(
            placed.panel.id(pid).grid_pos(dashboard.GridPos(h=pos["h"], w=pos["w"], x=pos["x"], y=pos["y"]))
        )
    result: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    # the SDK's with_panel re-places a panel it finds at (0, 0); ours are placed already
    for panel, pos in zip(result["panels"], positions, strict=True):
        panel["gridPos"] = pos
    return result


def _positions(panels: Sequence[Placed]) -> list[dict[str, int]]:
    out: list[dict[str, int]] = []
    x = y = row_h = 0
    for placed in panels:
        if x + placed.w > 24:
            x, y, row_h = 0, y + row_h, 0
        out.append({"h": placed.h, "w": placed.w, "x": x, "y": y})
        x += placed.w
        row_h = max(row_h, placed.h)
    return out
