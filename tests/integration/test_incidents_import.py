"""`incidents import` against a real InfluxDB and a real broker (Tansu and Apache Kafka).

Expected points and messages are computed here from the CSV with the csv module and the calendar,
not with the importer's parser: the case id is the identity, a re-import changes nothing, a corrected
case replaces its point, --skip-invalid imports exactly the valid rows.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import io
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from kafka import KafkaConsumer, TopicPartition
from typer.testing import CliRunner

from strainwatch.config import get_settings
from strainwatch.incidents.cli import register
from strainwatch.incidents.csv_log import parse_log
from strainwatch.incidents.store import IncidentStore, incident_line
from strainwatch.logs import configure
from strainwatch.stack.procs import free_port
from strainwatch.storage.influxql import InfluxQL
from strainwatch.topics import INCIDENTS
from tests.integration.conftest import Broker, Influx
from tests.support import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "incidents-sample.csv"
HEADER = "case_id,date,site,team,worker,body_part,injury_type,classification,days_away,days_restricted"


@pytest.fixture
def importer(
    broker: Broker, influx: Influx, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[typer.Typer, InfluxQL, Broker]]:
    database = influx.new_database()
    monkeypatch.setenv("STRAINWATCH_INFLUX_URL", influx.url)
    monkeypatch.setenv("STRAINWATCH_INFLUX_TOKEN", "test-token")
    monkeypatch.setenv("STRAINWATCH_INFLUX_BUCKET", database)
    monkeypatch.setenv("STRAINWATCH_KAFKA_BOOTSTRAP", broker.bootstrap)
    get_settings.cache_clear()
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        configure("INFO", "json")  # as the strainwatch command does: logs on stderr

    register(app)
    yield app, influx.ql(database), broker
    get_settings.cache_clear()


def run(app: typer.Typer, path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(app, ["incidents", "import", str(path), *args])
    lines = result.stdout.strip().splitlines()
    summary = orjson.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    return result.exit_code, summary, result.stdout + result.stderr


# --- expectations from the CSV, independently -----------------------------------------------------

BODY = {"neck": "neck", "shoulder": "shoulder", "upper_back": "upper_back", "lower_back": "lower_back"}


def expected_points(text: str) -> dict[str, tuple[dict[str, str], int, dict[str, int]]]:
    """case id -> (tags, epoch seconds of the date at 00:00 UTC, fields), for CSVs written in the
    canonical spelling (as the sample and these tests write them)."""
    out = {}
    for r in csv.DictReader(io.StringIO(text)):
        year, month, day = (int(x) for x in r["date"].split("-"))
        tags = {
            "site": r["site"],
            "team": r["team"],
            "case_id": r["case_id"],
            "body_part": r["body_part"],
            "severity": r["classification"],
            "injury_type": r["injury_type"],
        }
        fields = {"count": 1, "days_away": int(r["days_away"]), "days_restricted": int(r["days_restricted"])}
        out[r["case_id"]] = (tags, calendar.timegm((year, month, day, 0, 0, 0)), fields)
    return out


def write_lines(url: str, database: str, lines: list[str]) -> None:
    request = urllib.request.Request(
        f"{url}/api/v2/write?bucket={database}&precision=s", data="\n".join(lines).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 204


def stored_points(ql: InfluxQL) -> list[tuple[str, tuple[dict[str, str], int, dict[str, int]]]]:
    """Every incident point, as (case id, (tags, ts, fields)), one entry per point."""
    points = []
    for s in ql.query('SELECT "count", "days_away", "days_restricted" FROM "incident" GROUP BY *'):
        tags = {k: v for k, v in s["tags"].items() if v}
        for values in s["values"]:
            point = dict(zip(s["columns"], values, strict=True))
            fields = {f: int(point[f]) for f in ("count", "days_away", "days_restricted")}
            points.append((tags["case_id"], (tags, int(point["time"]), fields)))
    return sorted(points, key=lambda p: (p[0], p[1][1]))


class Topic:
    """incidents.v1 from the beginning; records counted (Tansu's offsets do not count records)."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        partitions = self.consumer.partitions_for_topic(INCIDENTS.name) or set()
        self.consumer.assign([TopicPartition(INCIDENTS.name, p) for p in partitions])
        self.records: list[tuple[bytes, dict[str, Any]]] = []

    def read(self, expected: int) -> list[tuple[bytes, dict[str, Any]]]:
        def enough() -> bool:
            for batch in self.consumer.poll(timeout_ms=500).values():
                self.records.extend((r.key, orjson.loads(r.value)) for r in batch)
            return len(self.records) >= expected

        wait_for(enough, timeout_s=60, what=f"{expected} records on {INCIDENTS.name}")
        for batch in self.consumer.poll(timeout_ms=1000).values():  # anything beyond
            self.records.extend((r.key, orjson.loads(r.value)) for r in batch)
        return self.records

    def close(self) -> None:
        self.consumer.close()


def expected_message(tags: dict[str, str], ts: int, fields: dict[str, int]) -> dict[str, Any]:
    date = f"{calendar.timegm((1970, 1, 1, 0, 0, 0)) + ts}"  # seconds; formatted below
    del date

    return {
        "schema_version": 1,
        "incident_id": tags["case_id"],
        "site_id": tags["site"],
        "team": tags["team"],
        "worker_id": None,
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)),
        "body_part": tags["body_part"],
        "severity": tags["severity"],
        "injury_type": tags["injury_type"],
        "days_away": fields["days_away"],
        "days_restricted": fields["days_restricted"],
    }


# --- the tests ------------------------------------------------------------------------------------


def test_import_and_reimport_of_the_sample(
    importer: tuple[typer.Typer, InfluxQL, Broker], tmp_path: Path
) -> None:
    app, ql, broker = importer
    path = tmp_path / "incidents.csv"
    shutil.copy(SAMPLE, path)
    expected = expected_points(SAMPLE.read_text())
    assert set(BODY) | {"other"} == {tags["body_part"] for tags, _, _ in expected.values()}

    code, summary, output = run(app, path)
    assert code == 0, output
    n = len(expected)
    assert summary == {
        "rows_read": n, "imported": n, "unchanged": 0, "replaced": 0, "invalid": 0,
        "duplicates": 0, "published": n, "dry_run": False,
    }  # fmt: skip
    first = stored_points(ql)
    assert first == sorted(expected.items(), key=lambda p: (p[0], p[1][1]))
    away = sum(f["days_away"] for _, _, f in expected.values())
    assert ql.scalar('SELECT SUM("days_away") FROM "incident"') == away
    assert ql.scalar('SELECT COUNT("count") FROM "incident"') == n

    code, summary, output = run(app, path)
    assert code == 0, output
    assert (summary["imported"], summary["unchanged"], summary["replaced"], summary["published"]) == (
        0,
        n,
        0,
        n,
    )
    assert stored_points(ql) == first  # same points, same values, none added

    topic = Topic(broker.bootstrap)
    try:
        records = topic.read(2 * n)
    finally:
        topic.close()
    assert len(records) == 2 * n  # each import published every case once
    assert records[:n] == records[n:]  # a re-import republishes the same records
    by_id = {value["incident_id"]: (key, value) for key, value in records}
    assert set(by_id) == set(expected)
    for case, (tags, ts, fields) in expected.items():
        key, value = by_id[case]
        assert key == tags["site"].encode()
        assert value == expected_message(tags, ts, fields)


def test_a_corrected_case_replaces_its_point(
    importer: tuple[typer.Typer, InfluxQL, Broker], tmp_path: Path
) -> None:
    app, ql, broker = importer
    original = (
        "\n".join(
            [
                HEADER,
                "C-1,2026-10-05,plant-1,team-a,,neck,strain,recordable,2,0",
                "C-2,2026-10-06,plant-1,team-b,,shoulder,sprain,first_aid,0,0",
                "C-3,2026-10-07,plant-2,team-a,,lower_back,strain,recordable,0,3",
            ]
        )
        + "\n"
    )
    corrected = (
        "\n".join(
            [
                HEADER,
                "C-1,2026-10-05,plant-1,team-a,,shoulder,strain,recordable,2,0",  # body part
                "C-2,2026-10-06,plant-1,team-b,,shoulder,sprain,first_aid,0,0",  # as before
                "C-3,2026-10-09,plant-2,team-a,,lower_back,strain,recordable,5,3",  # date and days
                "C-4,2026-10-10,plant-2,team-b,,other,contusion,first_aid,0,0",  # new
            ]
        )
        + "\n"
    )
    path = tmp_path / "log.csv"
    path.write_text(original)
    code, summary, output = run(app, path)
    assert code == 0 and summary["imported"] == 3, output

    path.write_text(corrected)
    code, summary, output = run(app, path, "--dry-run")
    assert code == 0, output
    assert (summary["imported"], summary["unchanged"], summary["replaced"], summary["published"]) == (
        1,
        1,
        2,
        0,
    )
    assert "would replace case C-1: body_part neck → shoulder" in output
    assert stored_points(ql) == sorted(expected_points(original).items())  # a dry run writes nothing

    code, summary, output = run(app, path)
    assert code == 0, output
    assert (summary["imported"], summary["unchanged"], summary["replaced"]) == (1, 1, 2)
    assert "replaced case C-3: date 2026-10-07 → 2026-10-09, days_away 0 → 5" in output
    assert stored_points(ql) == sorted(expected_points(corrected).items())  # one point per case
    assert ql.scalar('SELECT COUNT("count") FROM "incident" WHERE "body_part" = \'neck\'') == 0

    topic = Topic(broker.bootstrap)
    try:
        records = topic.read(3 + 4)
    finally:
        topic.close()
    assert len(records) == 7
    latest = {value["incident_id"]: value for _, value in records}  # what a consumer keeps
    assert latest == {c: expected_message(*p) for c, p in expected_points(corrected).items()}


def test_invalid_rows_block_the_import_unless_skipped(
    importer: tuple[typer.Typer, InfluxQL, Broker], tmp_path: Path
) -> None:
    app, ql, broker = importer
    text = (
        "\n".join(
            [
                HEADER,
                "V-1,2026-09-01,plant-1,team-a,,neck,strain,recordable,1,0",
                "X-1,2026-09-02,plant-1,team-a,,knee,strain,recordable,0,0",
                "V-2,2026-09-03,plant-1,team-b,,upper_back,strain,recordable,0,2",
                "X-2,2026-09-04,plant-1,team-b,,neck,strain,first_aid,3,0",
                "V-3,2026-09-05,plant-2,team-c,,other,contusion,first_aid,0,0",
            ]
        )
        + "\n"
    )
    path = tmp_path / "log.csv"
    path.write_text(text)

    code, summary, output = run(app, path)
    assert code == 1
    assert "line 3 (case X-1): body_part: unknown body part 'knee'" in output
    assert "line 5 (case X-2): first_aid with 3 days away" in output
    assert summary["invalid"] == 2 and summary["imported"] == 0 and summary["published"] == 0
    assert ql.query("SHOW MEASUREMENTS") == []  # nothing written

    code, summary, output = run(app, path, "--skip-invalid")
    assert code == 0, output
    assert (summary["rows_read"], summary["imported"], summary["invalid"], summary["published"]) == (
        5,
        3,
        2,
        3,
    )
    valid = {c: p for c, p in expected_points(text).items() if c.startswith("V-")}
    assert stored_points(ql) == sorted(valid.items())

    topic = Topic(broker.bootstrap)
    try:
        records = topic.read(3)
    finally:
        topic.close()
    assert len(records) == 3  # the blocked run published nothing
    assert sorted(v["incident_id"] for _, v in records) == ["V-1", "V-2", "V-3"]


def test_a_case_stored_twice_becomes_one_point(influx: Influx) -> None:
    """Two points of one case id (a run killed between two writes of an older version, or a hand-
    written point): the store replaces both with the row's one point."""
    database = influx.new_database()
    ql = influx.ql(database)
    store = IncidentStore(influx.url, "test-token", "strainwatch", database)
    stale = [
        incident_line("plant-1", "team-a", "S-1", "neck", "recordable", "strain", 1, 0, dt.date(2026, 9, 1)),
        incident_line("plant-1", "team-b", "S-1", "neck", "recordable", "strain", 1, 0, dt.date(2026, 9, 2)),
        incident_line("plant-1", "team-a", "S-2", "other", "first_aid", "cut", 0, 0, dt.date(2026, 9, 3)),
    ]
    write_lines(influx.url, database, stale)
    text = HEADER + "\nS-1,2026-09-01,plant-1,team-a,,neck,strain,recordable,1,0\n"
    rows = [p.row for p in parse_log(text, today=dt.date(2026, 11, 29)).rows]
    plan = store.plan(rows)
    assert (len(plan.new), len(plan.unchanged), len(plan.replaced)) == (0, 0, 1)
    assert plan.replaced[0].describe() == "case S-1: 2 stored points replaced by one"
    store.apply(plan)
    s2 = "S-2,2026-09-03,plant-1,team-a,,other,cut,first_aid,0,0"
    expected = expected_points(f"{text}{s2}\n")  # S-2 as it was written above
    assert stored_points(ql) == sorted(expected.items())  # S-2 untouched


def test_influxdb_unreachable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STRAINWATCH_INFLUX_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("STRAINWATCH_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    get_settings.cache_clear()
    try:
        app = typer.Typer()

        @app.callback()
        def _root() -> None:
            pass

        register(app)
        code, summary, output = run(app, SAMPLE)
    finally:
        get_settings.cache_clear()
    assert code == 1
    assert "error: InfluxDB unreachable at http://127.0.0.1:" in output
    assert summary == {}  # no summary claims anything was imported
