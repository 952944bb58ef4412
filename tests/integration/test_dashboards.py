"""Every query of the committed Grafana dashboards runs on the real InfluxDB and returns data.

Grafana itself cannot run here; what can break a dashboard without Grafana is its InfluxQL (a field
renamed in storage/measurements.py, a syntax InfluxDB refuses). So: simulate a few workers through
the exposure core, write their points through the processor's sink, and run each panel's query with
Grafana's macros expanded the way Grafana expands them.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from strainwatch.exposure.engine import ExposureEngine
from strainwatch.exposure.thresholds import load_thresholds
from strainwatch.fleet.simulator import FleetSimulator, SimConfig
from strainwatch.processor.sink import InfluxSink
from strainwatch.storage.measurements import break_alert_line, exposure_line
from tests.integration.conftest import Influx

pytestmark = pytest.mark.integration

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"


def _dashboards() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, json.loads(path.read_text())) for path in sorted(DASHBOARDS.glob("*.json"))]


def _expand(query: str, start: datetime, end: datetime) -> str:
    """Grafana's InfluxQL macros and 'All' template values, as Grafana substitutes them."""
    time_filter = f"time >= {int(start.timestamp())}s AND time <= {int(end.timestamp())}s"
    query = query.replace("$timeFilter", time_filter).replace("$__interval", "10m")
    return re.sub(r"/\^\$[a-z_]+\$/", "/^.*$/", query)


def _write_simulated_site(influx: Influx, database: str, start: datetime) -> int:
    cfg = SimConfig(workers=8, frame_s=10.0, duration_s=3 * 3600, start=start, shifts=False)
    sim = FleetSimulator(cfg)
    teams = {entry["worker_id"]: entry["team"] for entry in sim.roster()}
    engine = ExposureEngine(load_thresholds("default"))
    states: dict[str, Any] = {}
    lines: list[str] = []
    for frame in sim.frames():
        doc = orjson.loads(frame.value)
        state = states.setdefault(frame.worker_id, engine.new_state())
        samples = {k: v for k, v in doc["samples"].items() if v}
        out = engine.process(state, frame.start_s, doc["rate_hz"], samples)
        team = teams[frame.worker_id]
        for window in out.closed:
            lines.append(exposure_line(cfg.site_id, team, frame.worker_id, window))
        for i, alert in enumerate(out.alerts):
            alert_id = f"{frame.worker_id}-{alert.ts_s}-{i}"
            lines.append(
                break_alert_line(
                    cfg.site_id,
                    team,
                    frame.worker_id,
                    alert.kind,
                    alert.segment,
                    alert.dose,
                    alert_id,
                    alert.ts_s,
                )
            )

    async def write() -> None:
        sink = InfluxSink(influx.url, "test-token", "strainwatch", database)
        sink.add(lines)
        await sink.flush()
        await sink.close()

    asyncio.run(write())
    return len(lines)


def test_dashboards_exist() -> None:
    assert _dashboards(), "dashboards/ holds no dashboard JSON"
    for name, dash in _dashboards():
        assert dash.get("uid") and dash.get("panels"), name
        for panel in dash["panels"]:
            assert panel["datasource"]["uid"] == "strainwatch-influxdb", (name, panel["title"])


def test_every_dashboard_query_runs_and_returns_data(influx: Influx) -> None:
    database = influx.new_database()
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    written = _write_simulated_site(influx, database, start)
    assert written > 0
    ql = influx.ql(database)
    end = start + timedelta(hours=3)
    checked = 0
    for name, dash in _dashboards():
        for variable in dash["templating"]["list"]:
            values = ql.query(_expand(variable["query"], start, end))
            assert values and values[0]["values"], (name, variable["name"], "template variable has no values")
        for panel in dash["panels"]:
            for target in panel["targets"]:
                series = ql.query(_expand(target["query"], start, end))
                numbers = [row[1] for s in series for row in s["values"] if row[1] is not None]
                assert numbers, (name, panel["title"], target["refId"], "query returned no data")
                assert all(n >= 0 for n in numbers), (name, panel["title"], "negative exposure")
                checked += 1
    assert checked >= 7
