"""Monthly report generation time against the number of workers, on a real InfluxDB 1.6.7.

For 100, 1,000 and 5,000 workers: a month (30 days) of 8-hour shifts stored as the pipeline stores
it: one `exposure_hourly` point per worker and hour (fields from the processor's own `RollupLayout`,
lines from `measurements.exposure_hourly_line`), plus per worker and shift two posture nudges
(`break_alert` + a `break_prompt`, one sent, one suppressed) and one conditioning break (`break_alert`,
`break_prompt` sent, `break_ack` outcome), and a few incidents. Each size gets its own database. Then
`strainwatch report monthly` for the site in every format (HTML, PDF, CSV), timed in-process from
the first query to the last file written. 10-second windows are not loaded (they are kept for weeks
and only the habituation section reads them, per nudge): the report reads the rollup.

Output: progress on stderr; the last line of stdout is one JSON object:
  seconds_<n>_workers  report generation, all formats
  points_loaded_<n>    points written for that size
  growth_ratio         (seconds at 5,000 / 5,000) ÷ (seconds at 100 / 100): seconds per worker at
                       5,000 relative to 100; ≤ 1 means no worse than linear
  growth_ratio_1000    the same for 1,000 against 100
  target_1000_met      seconds_1000_workers ≤ 30
  seconds_reading_influxdb_<n>  the part of the time spent in queries (the rest: figures, HTML, PDF, CSV)
  cpus, load_average_1m_at_end  how busy the host was (other work slows both InfluxDB and the report)

    python bench/report_scale.py [--sizes 100,1000,5000] [--days 30] [--keep]
"""

from __future__ import annotations

import argparse
import calendar
import datetime as dt
import os
import random
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from strainwatch.exposure.thresholds import load_thresholds  # noqa: E402
from strainwatch.incidents.store import incident_line  # noqa: E402
from strainwatch.processor.rollup import RollupLayout  # noqa: E402
from strainwatch.reports.generate import generate  # noqa: E402
from strainwatch.reports.model import ReportScope  # noqa: E402
from strainwatch.reports.queries import Reader  # noqa: E402
from strainwatch.stack import components  # noqa: E402
from strainwatch.stack.manager import create_database  # noqa: E402
from strainwatch.stack.procs import free_port, port_free, stop  # noqa: E402
from strainwatch.storage.influxql import InfluxQL  # noqa: E402
from strainwatch.storage.measurements import (  # noqa: E402
    break_ack_line,
    break_alert_line,
    break_prompt_line,
    exposure_hourly_line,
)

SITE = "plant-bench"
YEAR, MONTH = 2026, 10
SHIFT_START_H = 6
SHIFT_H = 8
WORKERS_PER_TEAM = 20
TASKS = 30
MEASURED = ("trunk_flexion", "neck_flexion", "arm_elevation_left", "arm_elevation_right")  # 4-sensor kit


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def start_influx(state: Path) -> tuple[str, str, list[Any]]:
    while True:
        influxd_port = free_port()
        if port_free(influxd_port + 1):
            break
    adapter_port = free_port()
    procs = [components.start_influxd(state, influxd_port, influxd_port + 1)]
    procs.append(components.start_adapter(state, adapter_port, influxd_port))
    return f"http://127.0.0.1:{influxd_port}", f"http://127.0.0.1:{adapter_port}", procs


def roster(workers: int) -> list[tuple[str, str, str]]:
    """(team, task, worker): teams of 20, the last team of each 500 only 3 workers (merged into other)."""
    out = []
    for i in range(workers):
        team = f"team-{i // WORKERS_PER_TEAM:03d}"
        if i % 500 >= 497:
            team = f"small-{i // 500:02d}"
        out.append((team, f"task-{i % TASKS:02d}", f"w{i:05d}"))
    return out


def hour_fields(layout: RollupLayout, rng: random.Random) -> dict[str, float | int | str | bool]:
    sums = layout.empty()
    wear = 3600.0 if rng.random() > 0.1 else float(rng.randrange(600, 3600, 10))
    sums[0], sums[1], sums[2], sums[3] = wear / 10, wear, wear, rng.randint(0, 4)
    upper = 0.0
    for segment, base, cut_names in layout.segments:
        if segment not in MEASURED:
            continue
        na = wear * rng.uniform(0.0, 0.12)
        cond = wear * rng.uniform(0.05, 0.35)
        sums[base], sums[base + 1], sums[base + 2] = wear - na - cond, cond, na
        for k in range(len(cut_names)):
            sums[base + 3 + k] = (cond + na) / (k + 1)
        sums[base + 3 + len(cut_names)] = rng.uniform(5, 240)
        accrued = cond + 3 * na
        sums[base + 4 + len(cut_names)] = accrued
        upper += accrued
    sums[4] = upper
    return layout.fields(sums, "default@1")


def month_lines(workers: int, days: int) -> list[str]:
    rng = random.Random(workers)
    layout = RollupLayout(load_thresholds("default"))
    start = calendar.timegm((YEAR, MONTH, 1, 0, 0, 0))
    lines: list[str] = []
    people = roster(workers)
    for day in range(days):
        shift = start + day * 86_400 + SHIFT_START_H * 3600
        for team, task, worker in people:
            for h in range(SHIFT_H):
                lines.append(
                    exposure_hourly_line(SITE, team, task, worker, shift + h * 3600, hour_fields(layout, rng))
                )
            for k in range(2):  # posture nudges: alert and its prompt (one sent, one suppressed)
                t = shift + rng.randrange(0, SHIFT_H * 3600)
                segment = MEASURED[(k + day) % len(MEASURED)]
                alert_id = f"{worker}-{day}-n{k}"
                lines.append(break_alert_line(SITE, team, worker, "posture_hold", segment, 40.0, alert_id, t))
                status, reason = ("sent", None) if k == 0 else ("suppressed", "budget")
                lines.append(
                    break_prompt_line(
                        SITE, team, worker, "posture_hold", segment, status, reason, alert_id, 1, 0, t
                    )
                )
            t = shift + 4 * 3600 + rng.randrange(0, 3600)  # one conditioning break, with its outcome
            alert_id = f"{worker}-{day}-b"
            outcome = rng.choice(("taken", "taken", "acknowledged", "ignored"))
            lines.append(
                break_alert_line(SITE, team, worker, "conditioning_break", "neck_flexion", 600.0, alert_id, t)
            )
            lines.append(
                break_prompt_line(
                    SITE, team, worker, "conditioning_break", "neck_flexion", "sent", None, alert_id, 1, 0, t
                )
            )
            lines.append(
                break_ack_line(SITE, team, worker, "conditioning_break", outcome, "device", alert_id, t)
            )
    for n in range(max(1, workers // 100)):  # about one injury per 100 workers and month
        team, _task, _worker = people[rng.randrange(len(people))]
        day = dt.date(YEAR, MONTH, 1 + n % days)
        part = ("neck", "shoulder", "upper_back", "lower_back", "other")[n % 5]
        severity = "recordable" if n % 2 else "first_aid"
        lines.append(incident_line(SITE, team, f"bench-{n}", part, severity, "strain", n % 3, n % 4, day))
    return lines


def write(influxd: str, database: str, lines: list[str]) -> None:
    batch = 5_000

    def post(chunk: list[str]) -> None:
        params = urllib.parse.urlencode({"db": database, "precision": "s"})
        request = urllib.request.Request(
            f"{influxd}/write?{params}", data="\n".join(chunk).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=300) as resp:
            if resp.status != 204:
                raise RuntimeError(f"write answered {resp.status}")

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(post, (lines[i : i + batch] for i in range(0, len(lines), batch))))


def run_size(influxd: str, adapter: str, workers: int, days: int, out: Path) -> dict[str, Any]:
    database = f"bench_report_{workers}"
    create_database(adapter, database)
    started = time.monotonic()
    lines = month_lines(workers, days)
    log(f"{workers} workers: {len(lines):,} points built in {time.monotonic() - started:.1f} s")
    started = time.monotonic()
    write(influxd, database, lines)
    log(f"{workers} workers: written in {time.monotonic() - started:.1f} s")
    reader = Reader(InfluxQL(adapter, "bench", database))
    scope = ReportScope(YEAR, MONTH, SITE, None)
    marks: dict[str, float] = {}
    started = time.monotonic()
    output = generate(
        reader,
        scope,
        ("html", "pdf", "csv"),
        out / str(workers),
        advance=lambda what: marks.setdefault(what, time.monotonic()),
    )
    seconds = time.monotonic() - started
    reading = marks.get("habituation read", started) - started
    log(
        f"{workers} workers: report in {seconds:.2f} s, {reading:.2f} s of it reading InfluxDB "
        f"({reader.statements} statements in "
        f"{reader.requests} requests, {output.report.totals.workers} workers, "
        f"{output.report.totals.hours:,.0f} monitored hours)"
    )
    return {
        "seconds": round(seconds, 3),
        "reading": round(reading, 3),
        "points": len(lines),
        "statements": reader.statements,
    }


def warm_up(adapter: str, out: Path) -> None:
    """One report over an empty database first: imports, matplotlib's and fontconfig's caches and
    WeasyPrint's first layout are not part of any size's time."""
    create_database(adapter, "bench_report_warmup")
    reader = Reader(InfluxQL(adapter, "bench", "bench_report_warmup"))
    generate(reader, ReportScope(YEAR, MONTH, None, None), ("html", "pdf", "csv"), out / "warmup")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the state directory and reports")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    state = Path(tempfile.mkdtemp(prefix="bench-report-"))
    influxd, adapter, procs = start_influx(state)
    results: dict[int, dict[str, Any]] = {}
    try:
        warm_up(adapter, state / "reports")
        for workers in sizes:
            results[workers] = run_size(influxd, adapter, workers, args.days, state / "reports")
    finally:
        for proc in reversed(procs):
            stop(proc)
        if not args.keep:
            import shutil

            shutil.rmtree(state, ignore_errors=True)
        else:
            log(f"state and reports kept in {state}")
    summary: dict[str, Any] = {"days": args.days, "shift_hours": SHIFT_H}
    for workers, r in results.items():
        summary[f"seconds_{workers}_workers"] = r["seconds"]
        summary[f"seconds_reading_influxdb_{workers}"] = r["reading"]
        summary[f"points_loaded_{workers}"] = r["points"]
        summary[f"statements_{workers}"] = r["statements"]
    smallest = min(results)

    def growth(n: int) -> float | None:
        if n not in results or n == smallest:
            return None
        return round((results[n]["seconds"] / n) / (results[smallest]["seconds"] / smallest), 4)

    summary["growth_ratio"] = growth(max(results))
    summary["growth_ratio_definition"] = (
        f"(seconds at {max(results)} / {max(results)}) / (seconds at {smallest} / {smallest}); "
        "<= 1: at most linear"
    )
    if 1000 in results:
        summary["growth_ratio_1000"] = growth(1000)
        summary["target_1000_met"] = results[1000]["seconds"] <= 30.0
    # other work on the host slows InfluxDB and the report alike: say how busy it was
    summary["cpus"] = os.cpu_count()
    summary["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(orjson.dumps(summary).decode(), flush=True)


if __name__ == "__main__":
    main()
