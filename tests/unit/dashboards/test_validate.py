"""The dashboard validation rejects each case Grafana accepts but cannot show, naming dashboard and panel."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from strainwatch.dashboards import build as build_module
from strainwatch.dashboards.build import build, dashboards
from strainwatch.dashboards.validate import DashboardInvalid, influxql_result_names, validate_dashboard

pytestmark = pytest.mark.unit

UIDS = {"influx-uid"}
DS = {"type": "influxdb", "uid": "influx-uid"}
QUERY = (
    'SELECT SUM("wear_s") / 3600 AS "hours", COUNT("wear_s") AS "workers" FROM "exposure_hourly" '
    'WHERE $timeFilter AND "site" =~ /^$site$/ GROUP BY "team"'
)


def panel(pid: int = 1, **changes: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "id": pid,
        "type": "stat",
        "title": f"Panel {pid}",
        "datasource": DS,
        "gridPos": {"x": 0, "y": 0, "w": 12, "h": 4},
        "targets": [
            {"refId": "A", "datasource": DS, "rawQuery": True, "resultFormat": "table", "query": QUERY}
        ],
        "fieldConfig": {"defaults": {"unit": "h"}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "/^hours$/"}},
    }
    p.update(changes)
    return p


def dashboard(*panels: dict[str, Any], variables: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "uid": "dash-1",
        "title": "Dash",
        "panels": list(panels) if panels else [panel()],
        "templating": {
            "list": variables
            if variables is not None
            else [
                {
                    "name": "site",
                    "type": "query",
                    "datasource": DS,
                    "query": "SHOW TAG VALUES WITH KEY = site",
                }
            ]
        },
    }


def rejected(d: dict[str, Any], *fragments: str) -> str:
    with pytest.raises(DashboardInvalid) as error:
        validate_dashboard(d, UIDS)
    message = str(error.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_a_valid_dashboard_passes() -> None:
    validate_dashboard(dashboard(panel(1), panel(2, gridPos={"x": 12, "y": 0, "w": 12, "h": 4})), UIDS)


def test_every_generated_dashboard_passes() -> None:
    boards = dashboards(worker_timeline=True)
    assert len(boards) == 6
    for d in boards.values():
        validate_dashboard(d, {"strainwatch-influxdb"})


@pytest.mark.parametrize("panels", ['[{"id": 1}]', {"id": 1}, None])
def test_panels_not_a_list(panels: Any) -> None:
    d = dashboard()
    d["panels"] = panels
    rejected(d, "dash-1", "panels must be a list")


def test_a_panel_given_as_a_string() -> None:
    d = dashboard(panel(1))
    d["panels"].append('{"id": 2, "type": "stat"}')
    rejected(d, "dash-1", "panel #1", "must be an object")


def test_a_panel_without_a_type() -> None:
    p = panel(1)
    del p["type"]
    rejected(dashboard(p), "dash-1", "panel 1 'Panel 1'", "has no type")
    rejected(dashboard(panel(1, type="")), "has no type")


def test_an_unknown_data_source_uid() -> None:
    rejected(
        dashboard(panel(1, datasource={"type": "influxdb", "uid": "nope"})),
        "panel 1",
        "'nope' does not exist",
    )
    p = panel(1)
    p["targets"][0]["datasource"] = {"type": "influxdb", "uid": "typo-uid"}
    rejected(dashboard(p), "panel 1 'Panel 1' target 'A'", "'typo-uid' does not exist")
    variables = [{"name": "site", "type": "query", "datasource": {"uid": "gone"}, "query": "SHOW TAG VALUES"}]
    rejected(dashboard(panel(1), variables=variables), "variable 'site'", "'gone' does not exist")
    rejected(dashboard(panel(1, datasource="strainwatch InfluxDB")), "must be an object with a uid")


def test_grafana_pseudo_data_sources_are_allowed() -> None:
    validate_dashboard(dashboard(panel(1, datasource={"type": "datasource", "uid": "-- Mixed --"})), UIDS)


def test_duplicate_panel_ids() -> None:
    second = panel(1, gridPos={"x": 12, "y": 0, "w": 12, "h": 4}, title="Other")
    rejected(dashboard(panel(1), second), "dash-1", "duplicate panel id 1")


def test_nested_row_panels_count_for_duplicates() -> None:
    row = {
        "id": 2,
        "type": "row",
        "title": "Row",
        "gridPos": {"x": 0, "y": 4, "w": 24, "h": 1},
        "panels": [panel(1)],
    }
    rejected(dashboard(panel(1), row), "duplicate panel id 1")


@pytest.mark.parametrize(
    ("grid", "fragment"),
    [
        ({"x": 12, "y": 0, "w": 13, "h": 4}, "x=12 + w=13 > 24"),
        ({"x": -1, "y": 0, "w": 6, "h": 4}, "must not be negative"),
        ({"x": 0, "y": -2, "w": 6, "h": 4}, "must not be negative"),
        ({"x": 0, "y": 0, "w": 0, "h": 4}, "must be positive"),
        ({"x": 0, "y": 0, "w": 6, "h": -1}, "must be positive"),
        ({"x": 0, "y": 0, "w": "6", "h": 4}, "must be integers"),
        (None, "has no gridPos"),
    ],
)
def test_grid_positions_outside_24_columns(grid: Any, fragment: str) -> None:
    rejected(dashboard(panel(1, gridPos=grid)), "panel 1 'Panel 1'", fragment)


@pytest.mark.parametrize("use", ["$team", "${team}", "${team:regex}", "[[team]]", "[[team:csv]]"])
def test_a_template_variable_used_but_not_defined(use: str) -> None:
    p = panel(1)
    p["targets"][0]["query"] = QUERY.replace('GROUP BY "team"', f'AND "team" =~ /^{use}$/ GROUP BY "team"')
    rejected(dashboard(p), "panel 1 'Panel 1' target 'A'", "$team is used but not defined")


def test_variables_in_titles_and_in_other_variables_count() -> None:
    rejected(dashboard(panel(1, title="Dose of $crew")), "$crew is used but not defined")
    variables = [
        {"name": "site", "type": "query", "datasource": DS, "query": "SHOW TAG VALUES WITH KEY = site"},
        {
            "name": "team",
            "type": "query",
            "datasource": DS,
            "query": 'SHOW TAG VALUES WHERE "plant" =~ /^$plant$/',
        },
    ]
    rejected(dashboard(panel(1), variables=variables), "variable 'team'", "$plant is used but not defined")


def test_grafana_builtins_and_alias_patterns_are_defined() -> None:
    p = panel(1)
    p["targets"][0]["query"] = QUERY.replace("$timeFilter", "$timeFilter AND $__interval = $__range")
    p["targets"][0]["alias"] = "$tag_team $col $m $1"
    validate_dashboard(dashboard(p), UIDS)
    q = panel(1, title="$col")  # alias patterns mean nothing outside an alias
    rejected(dashboard(q), "$col is used but not defined")


def test_a_panel_reading_a_field_its_query_does_not_return() -> None:
    p = panel(1)
    p["options"]["reduceOptions"]["fields"] = "/^dose_per_hour$/"
    rejected(dashboard(p), "panel 1 'Panel 1'", "reads field 'dose_per_hour'", "hours, team, workers")
    q = panel(1)
    q["fieldConfig"]["overrides"] = [{"matcher": {"id": "byName", "options": "sum"}, "properties": []}]
    rejected(dashboard(q), "reads field 'sum'")
    r = panel(1, type="barchart", options={"xField": "task"})
    rejected(dashboard(r), "reads field 'task'")


def test_a_renamed_column_is_no_longer_there() -> None:
    p = panel(1)
    p["targets"][0]["query"] = QUERY.replace('AS "hours"', "")  # now SUM(..) / 3600 is named `sum`
    rejected(dashboard(p), "reads field 'hours'", "sum, team, workers")


def test_transformations_read_and_add_fields() -> None:
    calc = {
        "id": "calculateField",
        "options": {
            "mode": "binary",
            "binary": {"left": "hours", "operator": "*", "right": "60"},
            "alias": "minutes",
        },
    }
    p = panel(1, transformations=[calc])
    p["options"]["reduceOptions"]["fields"] = "/^minutes$/"
    validate_dashboard(dashboard(p), UIDS)
    bad = copy.deepcopy(calc)
    bad["options"]["binary"]["left"] = "hourz"
    rejected(
        dashboard(panel(1, transformations=[bad])), "transformation 'calculateField' reads field 'hourz'"
    )
    join = {"id": "joinByField", "options": {"byField": "worker", "mode": "outer"}}
    rejected(dashboard(panel(1, transformations=[join])), "transformation 'joinByField' reads field 'worker'")
    organize = {"id": "organize", "options": {"renameByName": {"hours": "Hours"}}}
    rejected(dashboard(panel(1, transformations=[organize])), "reads field 'hours'")  # renamed away


def test_open_queries_are_not_checked() -> None:
    p = panel(1)
    p["targets"][0]["query"] = 'SELECT * FROM "exposure_hourly" WHERE $timeFilter'
    p["options"]["reduceOptions"]["fields"] = "/^anything$/"
    validate_dashboard(dashboard(p), UIDS)


def test_every_problem_is_listed() -> None:
    p = panel(1, datasource={"uid": "nope"}, gridPos={"x": 20, "y": 0, "w": 8, "h": 4})
    del p["type"]
    message = rejected(dashboard(p, panel(1, gridPos={"x": 0, "y": 4, "w": 6, "h": 4})))
    assert len(message.splitlines()) == 4, message


@pytest.mark.parametrize(
    ("query", "columns", "tags"),
    [
        ('SELECT SUM("x") FROM m', ("sum",), ()),
        ('SELECT sum("x") AS "y", MAX(x) FROM m GROUP BY "team", task', ("y", "max"), ("team", "task")),
        (
            'SELECT sum("a") / sum("b") * 100 FROM m GROUP BY time($__interval), "team" fill(none)',
            ("sum_sum",),
            ("team",),
        ),
        ("SELECT sum(a), sum(a) AS sum_1, sum(a) FROM m", ("sum", "sum_1", "sum_2"), ()),
        ('SELECT "x"::float, "x" FROM m', ("x", "x_1"), ()),
        ('SELECT count(distinct("w")) FROM m', ("count",), ()),
        (
            'SELECT "h" FROM (SELECT SUM("x") AS "h" FROM m GROUP BY "worker") GROUP BY "team"',
            ("h",),
            ("team",),
        ),
        ("SELECT * FROM m", None, ()),
        ("SELECT /zone_/ FROM m", None, ()),
        ('SELECT sum("x") FROM m GROUP BY *', ("sum",), None),
        ('SHOW TAG VALUES FROM m WITH KEY = "site"', None, None),
    ],
)
def test_result_columns_as_influxdb_names_them(query: str, columns: Any, tags: Any) -> None:
    names = influxql_result_names(query)
    assert (names.columns, names.tags) == (columns, tags)


def test_build_refuses_an_invalid_dashboard_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = dashboard(panel(1, datasource={"type": "influxdb", "uid": "deleted-ds"}))
    monkeypatch.setitem(build_module.BUILDERS, "dash-1", lambda: broken)
    with pytest.raises(DashboardInvalid, match="deleted-ds"):
        build(tmp_path)
    assert not (tmp_path / "dashboards").exists()

    import typer

    from strainwatch.dashboards.cli import register

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["dashboards", "build", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "dashboard 'dash-1' panel 1 'Panel 1'" in result.output
    assert "'deleted-ds' does not exist" in result.output
    assert not (tmp_path / "dashboards").exists()
