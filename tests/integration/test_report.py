"""`strainwatch report monthly` on the real InfluxDB, with a known site written through the pipeline's
own line builders: every number of the report against a value this test computes from what it wrote.

The site: four teams (A: 6 workers, B: 5, C: 3, D: 2) on three tasks (lift: A, pack: B and D, weld:
C), hourly rollup points for October 2026 (the report's month), September and May (3 workers only),
prompts and outcomes, injuries, posture nudges with the 10-second windows after them from
20 September on (earlier windows have expired, as the short retention policy would have it).
"""

from __future__ import annotations

import calendar
import contextlib
import csv
import datetime as dt
import random
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from strainwatch.cli import app
from strainwatch.config import get_settings
from strainwatch.incidents.store import incident_line
from strainwatch.storage.measurements import (
    WINDOWS_RP,
    break_ack_line,
    break_alert_line,
    break_prompt_line,
    exposure_hourly_line,
    exposure_line,
)
from tests.integration.conftest import Influx

pytestmark = pytest.mark.integration

SITE = "plant-r"
SEGMENTS = ("trunk_flexion", "neck_flexion", "arm_elevation_left", "arm_elevation_right")
CUTS = {
    "trunk_flexion": (20, 45, 60),
    "neck_flexion": (20, 45),
    "arm_elevation_left": (30, 60, 90),
    "arm_elevation_right": (30, 60, 90),
}
TEAMS = {"A": 6, "B": 5, "C": 3, "D": 2}
TASK_OF_TEAM = {"A": "lift", "B": "pack", "C": "weld", "D": "pack"}
DOSE_LEVEL = {"A": 3.0, "B": 1.0, "C": 2.0, "D": 2.0}
COMPLIANCE = {"A": (8, 1, 1), "B": (3, 3, 4), "C": (1, 1, 0), "D": (0, 1, 1)}  # taken, acked, ignored
WINDOWS_FROM = calendar.timegm((2026, 9, 20, 0, 0, 0))


def ts(y: int, m: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return calendar.timegm((y, m, d, h, mi, s))


@dataclass
class Window:
    window_start_s: int
    frames: int
    wear_s: float
    samples: dict[str, int]
    zone_s: dict[str, dict[str, float]]
    cutpoints_s: dict[str, dict[str, float]] = field(default_factory=dict)
    longest_hold_s: dict[str, float] = field(default_factory=dict)
    dose: dict[str, float] = field(default_factory=dict)
    accrued: dict[str, float] = field(default_factory=dict)
    violations: int = 0
    thresholds_version: str = "default@1"


@dataclass
class Site:
    """Everything written, kept to compute the expected report."""

    hourly: list[tuple[str, str, str, int, dict[str, Any]]] = field(
        default_factory=list
    )  # team, task, worker
    prompts: list[tuple[str, str, str, str, str, int]] = field(
        default_factory=list
    )  # team, worker, kind, status, reason
    outcomes: list[tuple[str, str, str, int]] = field(default_factory=list)  # team, kind, outcome, ts
    incidents: list[tuple[str, str, str, int, int, int]] = field(default_factory=list)
    nudges: list[tuple[str, str, str, int, float | None]] = field(
        default_factory=list
    )  # team, worker, seg, ts, share
    lines: list[str] = field(default_factory=list)
    window_lines: list[str] = field(default_factory=list)


def workers() -> list[tuple[str, str, str]]:
    out = []
    for team, n in TEAMS.items():
        for i in range(n):
            out.append((team, TASK_OF_TEAM[team], f"w{team}{i}"))
    return out


def hour_fields(rng: random.Random, team: str) -> dict[str, Any]:
    wear = float(rng.choice([3600, 3600, 3000, 1800]))
    fields: dict[str, Any] = {"frames": int(wear), "wear_s": wear, "violations": rng.randint(0, 3)}
    fields["windows"] = int(wear // 10)
    upper = 0.0
    for seg in SEGMENTS:
        na = round(rng.uniform(0, 0.1) * wear * DOSE_LEVEL[team] / 2, 3)
        cond = round(rng.uniform(0.1, 0.3) * wear, 3)
        acc = round(wear - na - cond, 3)
        fields[f"samples_{seg}"] = int(wear * 10)
        fields[f"zone_{seg}_acceptable_s"] = acc
        fields[f"zone_{seg}_conditional_s"] = cond
        fields[f"zone_{seg}_not_acceptable_s"] = na
        for i, cut in enumerate(CUTS[seg]):
            fields[f"cut_{seg}_gt{cut}_s"] = round((cond + na) / (i + 1), 3)
        fields[f"hold_{seg}_s"] = round(rng.uniform(0, 200), 3)
        dose = round(rng.uniform(50, 150) * DOSE_LEVEL[team] * wear / 3600, 3)
        fields[f"dose_{seg}"] = round(dose * 40, 3)  # the level at window ends, summed (not read)
        fields[f"accrued_{seg}"] = dose  # accrued in the hour: dose per hour's numerator
        upper += dose
    fields["dose_upper_back"] = round(upper * 40, 3)
    fields["accrued_upper_back"] = round(upper, 3)
    return fields


def build_site() -> Site:
    rng = random.Random(14)
    site = Site()
    people = workers()
    # rollup: October, September (every worker), May (3 workers of team A only)
    for year, month, days, who in (
        (2026, 10, range(1, 32, 3), people),
        (2026, 9, range(2, 31, 7), people),
        (2026, 5, range(4, 20, 5), people[:3]),
    ):
        for day in days:
            for team, task, worker in who:
                for hour in (7, 8, 9):
                    fields = hour_fields(rng, team)
                    start = ts(year, month, day, hour)
                    site.hourly.append((team, task, worker, start, fields))
                    site.lines.append(exposure_hourly_line(SITE, team, task, worker, start, fields))
    # prompts and outcomes (conditioning breaks), October and September
    for month in (9, 10):
        for team, _task, worker in people:
            taken, acked, ignored = COMPLIANCE[team]
            outcomes = ["taken"] * taken + ["acknowledged"] * acked + ["ignored"] * ignored
            for i, outcome in enumerate(outcomes[: 2 + (month == 10) * 8]):
                t = ts(2026, month, 5 + i, 10, 0, int(worker[2:]) + 1)
                alert_id = f"{worker}-{month}-{i}"
                site.prompts.append((team, worker, "conditioning_break", "sent", "", t))
                site.lines.append(
                    break_prompt_line(
                        SITE,
                        team,
                        worker,
                        "conditioning_break",
                        "trunk_flexion",
                        "sent",
                        None,
                        alert_id,
                        1,
                        0,
                        t,
                    )
                )
                site.outcomes.append((team, "conditioning_break", outcome, t))
                site.lines.append(
                    break_ack_line(SITE, team, worker, "conditioning_break", outcome, "device", alert_id, t)
                )
            # one suppressed posture nudge per worker and month, for the reasons
            reason = ("budget", "quiet_hours", "not_neutral")[int(worker[2:]) % 3]
            t = ts(2026, month, 25, 11, 0, int(worker[2:]))
            site.prompts.append((team, worker, "posture_hold", "suppressed", reason, t))
            site.lines.append(
                break_prompt_line(
                    SITE,
                    team,
                    worker,
                    "posture_hold",
                    "neck_flexion",
                    "suppressed",
                    reason,
                    f"{worker}-{month}-n",
                    0,
                    0,
                    t,
                )
            )
    # injuries: three in October, none in September (a month without incidents), two earlier
    for team, part, severity, away, restricted, day in (
        ("A", "neck", "recordable", 3, 0, dt.date(2026, 10, 7)),
        ("B", "shoulder", "first_aid", 0, 0, dt.date(2026, 10, 12)),
        ("C", "lower_back", "recordable", 0, 2, dt.date(2026, 10, 20)),
        ("B", "neck", "recordable", 1, 4, dt.date(2026, 6, 9)),
        ("A", "shoulder", "recordable", 0, 0, dt.date(2026, 5, 11)),
    ):
        case = f"case-{team}-{day.isoformat()}"
        site.incidents.append((team, part, severity, away, restricted, ts(day.year, day.month, day.day)))
        site.lines.append(incident_line(SITE, team, case, part, severity, "strain", away, restricted, day))
    # posture nudges: May (no windows), September (before and after the windows begin), October
    nudge_times = [ts(2026, 5, 9, 8, 0, 0), ts(2026, 5, 14, 8, 30, 0)]
    nudge_times += [ts(2026, 9, d, 9, 10 * d, 0) for d in (3, 10, 21, 23, 28)]
    nudge_times += [ts(2026, 10, d, 8, 2 * d, 0) for d in range(2, 29, 3)]
    for n, t in enumerate(nudge_times):
        team, _task, worker = people[(n * 5) % len(people)]
        segment = SEGMENTS[n % len(SEGMENTS)]
        site.lines.append(
            break_alert_line(SITE, team, worker, "posture_hold", segment, 12.0, f"nudge-{n}", t)
        )
        share: float | None = None
        device_off = n == len(nudge_times) - 1  # the device sent nothing after the last nudge
        if t >= WINDOWS_FROM and not device_off:
            at_risk = 0.0
            for k in range(60):
                na = float(rng.randint(0, 10))
                zone = {segment: {"acceptable": 10.0 - na, "conditional": 0.0, "not_acceptable": na}}
                if segment != "trunk_flexion":
                    zone["trunk_flexion"] = {"acceptable": 0.0, "conditional": 0.0, "not_acceptable": 10.0}
                window = Window(t + 10 * k, 1, 10.0, {segment: 100}, zone)
                site.window_lines.append(exposure_line(SITE, team, worker, window, TASK_OF_TEAM[team]))
                at_risk += na
            share = 100.0 * at_risk / 600.0
        site.nudges.append((team, worker, segment, t, share))
    return site


# --- expected values, computed from what was written ---------------------------------------------


def in_month(t: int, year: int, month: int) -> bool:
    start = ts(year, month, 1)
    end = ts(year + month // 12, month % 12 + 1, 1)
    return start <= t < end


def month_rows(site: Site, year: int, month: int) -> list[tuple[str, str, str, int, dict[str, Any]]]:
    return [row for row in site.hourly if in_month(row[3], year, month)]


def dose_per_hour(rows: list[tuple[str, str, str, int, dict[str, Any]]]) -> float:
    return sum(r[4]["accrued_upper_back"] for r in rows) / (sum(r[4]["wear_s"] for r in rows) / 3600)


def hours(rows: list[tuple[str, str, str, int, dict[str, Any]]]) -> float:
    return sum(r[4]["wear_s"] for r in rows) / 3600


# --- the fixture: one database, the site written once ----------------------------------------------


def _post(url: str, params: dict[str, str], body: bytes) -> None:
    request = urllib.request.Request(f"{url}?{urllib.parse.urlencode(params)}", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=60) as resp:
        assert resp.status in (200, 204)


def _query(url: str, q: str) -> None:
    _post(f"{url}/query", {"q": q}, b"")


@dataclass
class Loaded:
    influx: Influx
    database: str
    site: Site


@pytest.fixture(scope="module")
def loaded(influx: Influx) -> Loaded:
    database = influx.new_database()
    # the 10-second windows' policy; infinite here so that September's windows are not expired on write
    with contextlib.suppress(urllib.error.HTTPError):  # the stack's database already has it
        _query(
            influx.url, f'CREATE RETENTION POLICY "{WINDOWS_RP}" ON "{database}" DURATION INF REPLICATION 1'
        )
    _query(influx.url, f'ALTER RETENTION POLICY "{WINDOWS_RP}" ON "{database}" DURATION INF')
    site = build_site()
    for lines, rp in ((site.lines, None), (site.window_lines, WINDOWS_RP)):
        params = {"db": database, "precision": "s"}
        if rp:
            params["rp"] = rp
        for i in range(0, len(lines), 5000):
            _post(f"{influx.url}/write", params, "\n".join(lines[i : i + 5000]).encode())
    return Loaded(influx, database, site)


def run_report(loaded: Loaded, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    monkeypatch.setenv("STRAINWATCH_INFLUX_URL", loaded.influx.url)
    monkeypatch.setenv("STRAINWATCH_INFLUX_BUCKET", loaded.database)
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["report", "monthly", *args])  # the `strainwatch` command
    get_settings.cache_clear()
    return result


def read_csv(directory: Path, name: str) -> list[dict[str, str]]:
    with open(directory / f"{name}.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def october(loaded: Loaded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("october")
    with pytest.MonkeyPatch.context() as mp:
        result = run_report(loaded, mp, "--month", "2026-10", "--site", SITE, "--out", str(out))
    assert result.exit_code == 0, result.output
    yield out


CSV_DIR = f"injury-risk-{SITE}-all-teams-2026-10-csv"
BASE = f"injury-risk-{SITE}-all-teams-2026-10"


def approx(value: float) -> Any:
    return pytest.approx(value, rel=1e-6, abs=1e-6)


def values(rows: list[dict[str, str]], key: str = "metric") -> dict[str, str]:
    return {r[key]: r["value"] for r in rows}


def test_summary(loaded: Loaded, october: Path) -> None:
    site, rows = loaded.site, month_rows(loaded.site, 2026, 10)
    summary = values(read_csv(october / CSV_DIR, "summary"))
    h = hours(rows)
    assert int(summary["monitored_workers"]) == len({r[2] for r in rows}) == 16
    assert float(summary["monitored_hours"]) == approx(h)
    assert summary["roster_hours"] == ""
    violations = sum(r[4]["violations"] for r in rows)
    assert int(summary["violations"]) == violations
    assert float(summary["violations_per_100h"]) == approx(100 * violations / h)
    assert float(summary["dose_per_hour"]) == approx(dose_per_hour(rows))
    october_prompts = [p for p in site.prompts if in_month(p[5], 2026, 10)]
    assert int(summary["prompts_sent"]) == sum(p[3] == "sent" for p in october_prompts)
    assert int(summary["prompts_suppressed"]) == sum(p[3] == "suppressed" for p in october_prompts)
    october_outcomes = [o for o in site.outcomes if in_month(o[3], 2026, 10)]
    taken = sum(o[2] == "taken" for o in october_outcomes)
    assert float(summary["conditioning_compliance_pct"]) == approx(100 * taken / len(october_outcomes))
    october_incidents = [i for i in site.incidents if in_month(i[5], 2026, 10)]
    recordable = sum(i[2] == "recordable" for i in october_incidents)
    assert int(summary["incidents"]) == len(october_incidents) == 3
    assert float(summary["recordable_rate"]) == approx(recordable * 200_000 / h)


def test_zones_and_cutpoints(loaded: Loaded, october: Path) -> None:
    rows = month_rows(loaded.site, 2026, 10)
    zones = {r["segment"]: r for r in read_csv(october / CSV_DIR, "zones")}
    cuts = {
        (r["segment"], r["cutpoint"]): float(r["time_pct"]) for r in read_csv(october / CSV_DIR, "cutpoints")
    }
    assert set(zones) == set(SEGMENTS)
    for seg in SEGMENTS:
        measured = sum(
            r[4][f"zone_{seg}_{z}_s"] for r in rows for z in ("acceptable", "conditional", "not_acceptable")
        )
        for zone in ("acceptable", "conditional", "not_acceptable"):
            expected = 100 * sum(r[4][f"zone_{seg}_{zone}_s"] for r in rows) / measured
            assert float(zones[seg][f"{zone}_pct"]) == approx(expected), (seg, zone)
        for cut in CUTS[seg]:
            expected = 100 * sum(r[4][f"cut_{seg}_gt{cut}_s"] for r in rows) / measured
            assert cuts[(seg, f"gt{cut}")] == approx(expected), (seg, cut)


def test_hotspots_and_privacy(loaded: Loaded, october: Path) -> None:
    rows = month_rows(loaded.site, 2026, 10)
    teams = read_csv(october / CSV_DIR, "hotspots_teams")
    by_team = {t: [r for r in rows if r[0] == t] for t in TEAMS}
    shown = sorted((t for t in TEAMS if TEAMS[t] >= 5), key=lambda t: -dose_per_hour(by_team[t]))
    assert [r["team"] for r in teams[:-1]] == shown == ["A", "B"]
    assert [r["rank"] for r in teams] == ["1", "2", ""]
    for r in teams[:-1]:
        assert float(r["dose_per_hour"]) == approx(dose_per_hour(by_team[r["team"]]))
        assert int(r["workers"]) == TEAMS[r["team"]]
        assert float(r["monitored_hours"]) == approx(hours(by_team[r["team"]]))
    # C (3 workers) and D (2) are merged into "other": 5 workers, shown
    other = teams[-1]
    small = by_team["C"] + by_team["D"]
    assert other["team"].startswith("other")
    assert int(other["workers"]) == 5
    assert float(other["monitored_hours"]) == approx(hours(small))
    assert float(other["dose_per_hour"]) == approx(dose_per_hour(small))
    # tasks: lift (6) and pack (7) ranked, weld (3) alone in "other": fewer than 5, withheld
    tasks = read_csv(october / CSV_DIR, "hotspots_tasks")
    by_task = {k: [r for r in rows if r[1] == k] for k in ("lift", "pack", "weld")}
    assert [r["task"] for r in tasks[:-1]] == sorted(
        ("lift", "pack"), key=lambda k: -dose_per_hour(by_task[k])
    )
    for r in tasks[:-1]:
        assert float(r["dose_per_hour"]) == approx(dose_per_hour(by_task[r["task"]]))
    assert "withheld" in tasks[-1]["task"]
    assert tasks[-1]["workers"] == tasks[-1]["dose_per_hour"] == tasks[-1]["monitored_hours"] == ""
    # no individual anywhere: no worker pseudonym in any output file
    names = {w for _, _, w in workers()}
    for path in october.rglob("*"):
        if path.is_file() and path.suffix in (".html", ".csv"):
            text = path.read_text()
            assert not [n for n in names if n in text], path
    assert "weld" not in (october / f"{BASE}.html").read_text()


def test_prompts_and_outcomes(loaded: Loaded, october: Path) -> None:
    site = loaded.site
    prompts = {r["kind"]: r for r in read_csv(october / CSV_DIR, "prompts")}
    october_prompts = [p for p in site.prompts if in_month(p[5], 2026, 10)]
    october_outcomes = [o for o in site.outcomes if in_month(o[3], 2026, 10)]
    for kind in ("conditioning_break", "posture_hold"):
        row = prompts[kind]
        assert int(row["sent"]) == sum(p[2] == kind and p[3] == "sent" for p in october_prompts)
        assert int(row["suppressed"]) == sum(p[2] == kind and p[3] == "suppressed" for p in october_prompts)
        for outcome in ("taken", "acknowledged", "ignored"):
            assert int(row[outcome]) == sum(o[1] == kind and o[2] == outcome for o in october_outcomes)
    reasons = {r["reason"]: int(r["prompts"]) for r in read_csv(october / CSV_DIR, "suppressed_reasons")}
    expected: dict[str, int] = {}
    for p in october_prompts:
        if p[3] == "suppressed":
            expected[p[4]] = expected.get(p[4], 0) + 1
    assert reasons == expected


def test_incidents(loaded: Loaded, october: Path) -> None:
    october_incidents = [i for i in loaded.site.incidents if in_month(i[5], 2026, 10)]
    parts = {r["body_part"]: int(r["incidents"]) for r in read_csv(october / CSV_DIR, "incidents_body_part")}
    for part in ("neck", "shoulder", "upper_back", "lower_back", "other"):
        assert parts[part] == sum(i[1] == part for i in october_incidents)
    summary = values(read_csv(october / CSV_DIR, "incidents_summary"))
    h = hours(month_rows(loaded.site, 2026, 10))
    assert int(summary["recordable"]) == 2 and int(summary["first_aid"]) == 1
    assert int(summary["days_away"]) == sum(i[3] for i in october_incidents)
    assert int(summary["days_restricted"]) == sum(i[4] for i in october_incidents)
    assert float(summary["hours"]) == approx(h)
    assert float(summary["all_rate"]) == approx(3 * 200_000 / h)
    assert (
        "Incidence rate = incidents × 200,000 / hours (OSHA), on monitored hours"
        in (october / f"{BASE}.html").read_text()
    )


def test_compliance_split(loaded: Loaded, october: Path) -> None:
    site = loaded.site
    start, end = ts(2025, 11, 1), ts(2026, 11, 1)
    year = [r for r in site.hourly if start <= r[3] < end]
    compliance = {}
    for team in ("A", "B"):  # C and D have fewer than 5 workers: not compared
        outcomes = [o for o in site.outcomes if o[0] == team and start <= o[3] < end]
        compliance[team] = 100 * sum(o[2] == "taken" for o in outcomes) / len(outcomes)
    high, low = sorted(compliance, key=lambda t: -compliance[t])
    rows = {r["group"]: r for r in read_csv(october / CSV_DIR, "compliance_split")}
    for label, team in (("high compliance", high), ("low compliance", low)):
        row = rows[label]
        team_hours = hours([r for r in year if r[0] == team])
        incidents = sum(
            1 for i in site.incidents if i[0] == team and i[1] in ("neck", "shoulder") and start <= i[5] < end
        )
        assert int(row["teams"]) == 1 and int(row["workers"]) == TEAMS[team]
        assert float(row["compliance_pct"]) == approx(compliance[team])
        assert int(row["neck_shoulder_incidents"]) == incidents == 2
        assert float(row["monitored_hours"]) == approx(team_hours)
        assert float(row["rate_per_200k_h"]) == approx(incidents * 200_000 / team_hours)
    text = (october / f"{BASE}.html").read_text()
    assert "association" in text and "does not show that breaks prevent injuries" in text
    assert "prevents injur" not in text.replace("does not show that breaks prevent injuries", "")


def test_trend(loaded: Loaded, october: Path) -> None:
    trend = {r["month"]: r for r in read_csv(october / CSV_DIR, "trend")}
    assert list(trend) == [f"{2025 + (10 + i) // 12}-{(10 + i) % 12 + 1:02d}" for i in range(12)]
    # May: 3 workers only, withheld (as months without data)
    assert (
        trend["2026-05"]["workers"]
        == trend["2026-05"]["dose_per_hour"]
        == trend["2026-05"]["monitored_hours"]
        == ""
    )
    assert trend["2026-05"]["recordable"] == "1"  # incidents are not per worker
    for month in (9, 10):
        rows = month_rows(loaded.site, 2026, month)
        row = trend[f"2026-{month:02d}"]
        h = hours(rows)
        assert int(row["workers"]) == 16
        assert float(row["monitored_hours"]) == approx(h)
        assert float(row["dose_per_hour"]) == approx(dose_per_hour(rows))
        assert float(row["violations_per_100h"]) == approx(100 * sum(r[4]["violations"] for r in rows) / h)
        measured = sum(
            r[4][f"zone_{s}_{z}_s"]
            for r in rows
            for s in SEGMENTS
            for z in ("acceptable", "conditional", "not_acceptable")
        )
        na = sum(r[4][f"zone_{s}_not_acceptable_s"] for r in rows for s in SEGMENTS)
        assert float(row["not_acceptable_pct"]) == approx(100 * na / measured)
        outcomes = [o for o in loaded.site.outcomes if in_month(o[3], 2026, month)]
        assert float(row["compliance_pct"]) == approx(
            100 * sum(o[2] == "taken" for o in outcomes) / len(outcomes)
        )
        incidents = [i for i in loaded.site.incidents if in_month(i[5], 2026, month)]
        recordable = sum(i[2] == "recordable" for i in incidents)
        assert int(row["incidents"]) == len(incidents)
        assert float(row["recordable_rate"]) == approx(recordable * 200_000 / h)


def test_habituation(loaded: Loaded, october: Path) -> None:
    rows = {r["month"]: r for r in read_csv(october / CSV_DIR, "habituation")}
    for month, data in ((5, "none"), (9, "partial"), (10, "full")):
        nudges = [n for n in loaded.site.nudges if in_month(n[3], 2026, month)]
        shares = [n[4] for n in nudges if n[4] is not None]
        row = rows[f"2026-{month:02d}"]
        assert int(row["nudges"]) == len(nudges)
        assert int(row["nudges_measured"]) == len(shares)
        assert row["window_data"] == data
        if shares:
            assert float(row["mean_at_risk_pct"]) == approx(sum(shares) / len(shares))
            assert float(row["mean_at_risk_s"]) == approx(sum(s * 6 for s in shares) / len(shares))
        else:
            assert row["mean_at_risk_pct"] == ""
    assert int(rows["2026-10"]["nudges_measured"]) == int(rows["2026-10"]["nudges"]) - 1  # the device was off
    assert "months without window data: 2026-05" in (october / f"{BASE}.html").read_text()


def test_pdf_pages_and_figures(october: Path, tmp_path: Path) -> None:
    from PIL import Image

    pdf = october / f"{BASE}.pdf"
    assert pdf.read_bytes().startswith(b"%PDF")
    subprocess.run(["pdftoppm", "-r", "50", "-png", str(pdf), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page*.png"))
    assert len(pages) >= 3
    for page in pages:
        image = Image.open(page).convert("L")
        dark = sum(image.histogram()[:200])  # pixels darker than light grey
        assert dark / (image.width * image.height) > 0.01, f"{page.name} is blank"
    listing = subprocess.run(["pdfimages", "-list", str(pdf)], check=True, capture_output=True, text=True)
    # one raster image per figure (its alpha channel is listed as an extra "smask" row)
    images = [line for line in listing.stdout.splitlines()[2:] if line.split()[2:3] == ["image"]]
    assert len(images) == 5, listing.stdout  # trend, zones, hotspots, split, habituation
    for line in images:
        width, height = int(line.split()[3]), int(line.split()[4])
        assert width > 500 and height > 200


def test_same_data_same_bytes(
    loaded: Loaded, october: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_report(loaded, monkeypatch, "--month", "2026-10", "--site", SITE, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    first = {p.relative_to(october): p.read_bytes() for p in october.rglob("*") if p.is_file()}
    second = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert len(first) == 2 + 12
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--month", "2026-13"], "--month must be YYYY-MM"),
        (["--month", "October"], "--month must be YYYY-MM"),
        (["--month", "2026-10", "--format", "html,docx"], "--format takes"),
        (["--month", "2026-10", "--site", "plant-nowhere"], "unknown site 'plant-nowhere'"),
        (["--month", "2026-10", "--site", SITE, "--team", "C"], "fewer than 5 monitored workers"),
    ],
)
def test_bad_arguments(
    loaded: Loaded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    result = run_report(loaded, monkeypatch, *args, "--out", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


def test_empty_month(loaded: Loaded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_report(loaded, monkeypatch, "--month", "2025-01", "--site", SITE, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    base = f"injury-risk-{SITE}-all-teams-2025-01"
    html = (tmp_path / f"{base}.html").read_text()
    assert "No device of this scope was worn in this month" in html
    assert "No incident was logged for this scope this month." in html
    assert "No prompts were decided for this scope this month." in html
    assert read_csv(tmp_path / f"{base}-csv", "summary") == []
    assert (tmp_path / f"{base}.pdf").read_bytes().startswith(b"%PDF")


def test_month_without_incidents(loaded: Loaded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_report(
        loaded,
        monkeypatch,
        "--month",
        "2026-09",
        "--site",
        SITE,
        "--out",
        str(tmp_path),
        "--format",
        "html,csv",
    )
    assert result.exit_code == 0, result.output
    base = f"injury-risk-{SITE}-all-teams-2026-09"
    assert "No incident was logged for this scope this month." in (tmp_path / f"{base}.html").read_text()
    summary = values(read_csv(tmp_path / f"{base}-csv", "incidents_summary"))
    assert summary["incidents"] == "0" and float(summary["recordable_rate"]) == 0.0
    assert not (tmp_path / f"{base}.pdf").exists()


def test_roster_hours_are_the_basis(loaded: Loaded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import orjson

    roster = tmp_path / "roster.jsonl"
    roster.write_bytes(
        b"\n".join(
            orjson.dumps(
                {
                    "schema_version": 1,
                    "worker_id": w,
                    "site_id": SITE,
                    "team": team,
                    "shift": "day",
                    "hours_per_week": 40,
                }
            )
            for team, _task, w in workers()
        )
    )
    out = tmp_path / "out"
    result = run_report(
        loaded,
        monkeypatch,
        "--month",
        "2026-10",
        "--site",
        SITE,
        "--out",
        str(out),
        "--format",
        "csv",
        "--roster",
        str(roster),
    )
    assert result.exit_code == 0, result.output
    summary = values(read_csv(out / CSV_DIR, "incidents_summary"))
    roster_hours = 16 * 40 * 31 / 7
    assert float(summary["hours"]) == approx(roster_hours)
    assert float(summary["recordable_rate"]) == approx(2 * 200_000 / roster_hours)
    labels = {r["metric"]: r["label"] for r in read_csv(out / CSV_DIR, "incidents_summary")}
    assert labels["hours"] == "Hours basis: roster hours worked"


def test_report_numbers_are_the_shared_figures(loaded: Loaded, october: Path) -> None:
    """The report computes its ratios from flat sums (fast); the dashboards run storage/figures.py's
    statements. On the same data both give the same numbers."""
    from strainwatch.storage import figures

    ql = loaded.influx.ql(loaded.database)
    scope = figures.Scope.month(2026, 10, SITE)
    summary = values(read_csv(october / CSV_DIR, "summary"))
    monitored = ql.query(figures.monitored(scope))[0]
    row = dict(zip(monitored["columns"], monitored["values"][0], strict=True))
    assert int(summary["monitored_workers"]) == row["workers"]
    assert float(summary["monitored_hours"]) == approx(row["hours"])
    series = ql.query(figures.dose_per_hour(scope))[0]
    assert float(summary["dose_per_hour"]) == approx(series["values"][0][1])
    series = ql.query(figures.violations_per_100h(scope))[0]
    assert float(summary["violations_per_100h"]) == approx(series["values"][0][1])
    zones = {r["segment"]: r for r in read_csv(october / CSV_DIR, "zones")}
    for seg in SEGMENTS:
        series = ql.query(figures.zone_percent(seg, scope))[0]
        row = dict(zip(series["columns"], series["values"][0], strict=True))
        for zone in ("acceptable", "conditional", "not_acceptable"):
            assert float(zones[seg][f"{zone}_pct"]) == approx(row[zone])
    teams = {r["team"]: r for r in read_csv(october / CSV_DIR, "hotspots_teams")}
    shared = ql.query(figures.dose_per_hour(scope, by="team"))
    assert {s["tags"]["team"] for s in shared} == {"A", "B"}  # the figure drops C and D itself
    for s in shared:
        assert float(teams[s["tags"]["team"]]["dose_per_hour"]) == approx(s["values"][0][1])
