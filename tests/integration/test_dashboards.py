"""Every query of every generated dashboard, run on the real InfluxDB against a month of known data.

Grafana cannot run here, so the test does what Grafana does with a panel's InfluxQL: expands
`$timeFilter`, `$__interval` and the template variables (regex-escaped inside `/.../`, `(a|b)` for
several values, the raw custom all value `.*`), sends the statement to InfluxDB, and, where a panel
computes on the results (the incidence rate), applies its transformations. Each result is compared
with values computed here in Python from the points the test wrote: not "returns something".

The data: site plant-1 with teams `assembly` (6 workers), `line.2` (5) and `linex2` (3: under the
privacy minimum; its name also matches an unescaped `/^line.2$/`), tasks lift (5 workers), pack (6)
and weld (3: under the minimum); site plant-2 with its own `assembly` (5 workers). 30 days of hourly
rollups, prompts, outcomes and incidents; one hour of 10-s windows and pipeline points yesterday.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import re
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from strainwatch.dashboards.build import dashboards
from strainwatch.dashboards.validate import influxql_result_names
from strainwatch.incidents.store import incident_line
from strainwatch.storage.measurements import (
    WINDOWS_RP,
    break_ack_line,
    break_alert_line,
    break_prompt_line,
    dead_letter_line,
    exposure_hourly_line,
    line,
    pipeline_line,
)
from tests.integration.conftest import Influx

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DAY = 86_400
SEGMENTS = (
    "trunk_flexion",
    "trunk_lateral",
    "trunk_twist",
    "neck_flexion",
    "arm_elevation_left",
    "arm_elevation_right",
)
ZONES = ("acceptable", "conditional", "not_acceptable")
MIN_WORKERS = 5
HOURS_BASIS = 200_000

# worker -> (site, team, task)
ROSTER: dict[str, tuple[str, str, str]] = {
    **{f"a{i}": ("plant-1", "assembly", "lift" if i <= 3 else "pack") for i in range(1, 7)},
    **{f"l{i}": ("plant-1", "line.2", "lift" if i <= 2 else "pack") for i in range(1, 6)},
    **{f"s{i}": ("plant-1", "linex2", "weld") for i in range(1, 4)},
    **{f"b{i}": ("plant-2", "assembly", "lift") for i in range(1, 6)},
}
SMALL = {"linex2", "weld"}  # groups of fewer than 5 workers: never shown on their own


# --- the data -------------------------------------------------------------------------------------


@dataclass
class Data:
    start: int  # first day of the month, 00:00 UTC (s)
    end: int  # start + 30 days
    recent: int  # yesterday 08:00 UTC: one hour of windows and pipeline points from here
    hourly: list[dict[str, Any]] = field(default_factory=list)
    windows: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    acks: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    pipeline: list[dict[str, Any]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)


def make_data() -> Data:
    rng = random.Random(13)
    today = int(time.time()) // DAY * DAY
    start = today - 30 * DAY
    data = Data(start, today, today - DAY + 8 * 3600)
    for day in range(30):
        for worker, (site, team, task) in ROSTER.items():
            equal = site == "plant-2"  # plant-2's five workers wear their devices equally long
            if not equal and rng.random() < 0.1:
                continue  # a day off
            for hour in (8, 9):
                t = start + day * DAY + hour * 3600
                wear = 3600.0 if equal else float(rng.choice((3600, 3600, 3600, 1800)))
                fields: dict[str, float | int] = {
                    "wear_s": wear,
                    "frames": int(wear),
                    "windows": int(wear) // 10,
                }
                fields["violations"] = rng.randint(0, 3)
                for seg in SEGMENTS:
                    a = float(rng.randint(0, int(wear) // 10)) * 5
                    c = float(rng.randint(0, int((wear - a) // 10))) * 5
                    fields[f"zone_{seg}_acceptable_s"] = a
                    fields[f"zone_{seg}_conditional_s"] = c
                    fields[f"zone_{seg}_not_acceptable_s"] = wear - a - c
                    fields[f"hold_{seg}_s"] = float(rng.randint(0, 300))
                for side in ("left", "right"):
                    fields[f"cut_arm_elevation_{side}_gt90_s"] = float(rng.randint(0, 60)) * 5
                dose = float(rng.randint(0, 400))
                fields["dose_upper_back"] = dose
                fields["accrued_upper_back"] = dose
                data.hourly.append(
                    {"site": site, "team": team, "task": task, "worker": worker, "t": t, **fields}
                )
            # prompts: up to three alerts a day
            for j in range(rng.randint(0, 3)):
                t = start + day * DAY + 8 * 3600 + 600 * j + rng.randint(0, 500)
                kind = rng.choice(("posture_hold", "conditioning_break"))
                segment = rng.choice(SEGMENTS)
                alert_id = f"{worker}-{t}"
                data.alerts.append(
                    {
                        "site": site,
                        "team": team,
                        "worker": worker,
                        "kind": kind,
                        "segment": segment,
                        "t": t,
                        "alert_id": alert_id,
                    }
                )
                status = "sent" if rng.random() < 0.7 else "suppressed"
                reason = "" if status == "sent" else rng.choice(("budget", "quiet_hours", "not_neutral"))
                data.prompts.append(
                    {
                        "site": site,
                        "team": team,
                        "worker": worker,
                        "kind": kind,
                        "segment": segment,
                        "status": status,
                        "reason": reason,
                        "t": t,
                        "alert_id": alert_id,
                    }
                )
                if status == "sent":
                    outcome = rng.choice(("taken", "taken", "acknowledged", "ignored"))
                    data.acks.append(
                        {
                            "site": site,
                            "team": team,
                            "worker": worker,
                            "kind": kind,
                            "outcome": outcome,
                            "t": t,
                            "alert_id": alert_id,
                        }
                    )
    # the worker timeline's hour: three alerts of a1, two conditioning breaks taken, a nudge ignored
    for j, (kind, outcome) in enumerate(
        (("conditioning_break", "taken"), ("posture_hold", "ignored"), ("conditioning_break", "taken"))
    ):
        t = data.recent + 2400 + 400 * j
        ids = {
            "site": "plant-1",
            "team": "assembly",
            "worker": "a1",
            "kind": kind,
            "t": t,
            "alert_id": f"a1-{t}",
        }
        data.alerts.append(ids | {"segment": "trunk_flexion"})
        data.prompts.append(ids | {"segment": "trunk_flexion", "status": "sent", "reason": ""})
        data.acks.append(ids | {"outcome": outcome})
    for n in range(9):
        site, team = (
            ("plant-2", "assembly") if n == 8 else ("plant-1", ("assembly", "line.2", "linex2")[n % 3])
        )
        body = (
            "neck",
            "shoulder",
            "upper_back",
            "lower_back",
            "other",
            "shoulder",
            "upper_back",
            "shoulder",
            "neck",
        )[n]
        day = 2 + 3 * n
        data.incidents.append(
            {
                "site": site,
                "team": team,
                "case_id": f"C-{n}",
                "body_part": body,
                "t": start + day * DAY,
                "days_away": n % 3,
                "days_restricted": n % 2,
            }
        )
    for k in range(360):
        t = data.recent + 10 * k
        for worker in ("a1", "a2"):
            fields = {
                f"hold_{seg}_s": float((k * (3 + SEGMENTS.index(seg)) + (worker == "a2") * 7) % 97)
                for seg in SEGMENTS
            }
            fields["dose_upper_back"] = float((k * 11 + (worker == "a2") * 50) % 700)
            fields["wear_s"] = 10.0
            data.windows.append({"worker": worker, "t": t, **fields})
        for service, instance in (("processor", "p-0"), ("processor", "p-1"), ("gateway", "g-0")):
            data.pipeline.append(
                {
                    "service": service,
                    "instance": instance,
                    "t": t,
                    "frames_in": rng.randint(50, 150),
                    "frames_processed": rng.randint(40, 150),
                    "dead_lettered": rng.randint(0, 2),
                    "sink_write_errors": int(rng.random() < 0.05),
                    "lag_frames": rng.randint(0, 20_000),
                    "checkpoint_age_s": float(rng.randint(0, 200)),
                    "interval_s": 10.0,
                }
            )
        if k % 7 == 0:
            for service, instance, reason in (
                ("processor", "p-0", "late"),
                ("gateway", "g-0", "unbound_device"),
            ):
                data.dead.append(
                    {"service": service, "instance": instance, "reason": reason, "count": 1 + k % 3, "t": t}
                )
    return data


def lines(data: Data) -> tuple[list[str], list[str]]:
    """(default retention policy lines, windows retention policy lines)."""
    out: list[str] = []
    for r in data.hourly:
        fields = {k: v for k, v in r.items() if k not in {"site", "team", "task", "worker", "t"}}
        out.append(exposure_hourly_line(r["site"], r["team"], r["task"], r["worker"], r["t"], fields))
    for a in data.alerts:
        out.append(
            break_alert_line(
                a["site"], a["team"], a["worker"], a["kind"], a["segment"], 600.0, a["alert_id"], a["t"]
            )
        )
    for p in data.prompts:
        out.append(
            break_prompt_line(
                p["site"],
                p["team"],
                p["worker"],
                p["kind"],
                p["segment"],
                p["status"],
                p["reason"],
                p["alert_id"],
                1,
                0,
                p["t"],
            )
        )
    for a in data.acks:
        out.append(
            break_ack_line(
                a["site"], a["team"], a["worker"], a["kind"], a["outcome"], "device", a["alert_id"], a["t"]
            )
        )
    for i in data.incidents:
        date = dt.datetime.fromtimestamp(i["t"], dt.UTC).date()
        out.append(
            incident_line(
                i["site"],
                i["team"],
                i["case_id"],
                i["body_part"],
                "recordable",
                "strain",
                i["days_away"],
                i["days_restricted"],
                date,
            )
        )
    for p in data.pipeline:
        fields = {k: v for k, v in p.items() if k not in {"service", "instance", "t"}}
        out.append(pipeline_line(p["service"], p["instance"], fields, p["t"]))
    for d in data.dead:
        out.append(dead_letter_line(d["service"], d["instance"], d["reason"], d["count"], d["t"]))
    windows = []
    for w in data.windows:
        site, team, task = ROSTER[w["worker"]]
        fields = {k: v for k, v in w.items() if k not in {"worker", "t"}}
        windows.append(
            line(
                "exposure", {"site": site, "team": team, "task": task, "worker": w["worker"]}, fields, w["t"]
            )
        )
    return out, windows


def write(influx: Influx, database: str, body: list[str], rp: str | None = None) -> None:
    params = {"db": database, "precision": "s"} | ({"rp": rp} if rp else {})
    for i in range(0, len(body), 5000):
        request = urllib.request.Request(
            f"{influx.url}/write?{urllib.parse.urlencode(params)}",
            data="\n".join(body[i : i + 5000]).encode(),
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            assert resp.status == 204


# --- Grafana's expansion --------------------------------------------------------------------------


@dataclass(frozen=True)
class Var:
    value: str | list[str]  # a list: several values chosen
    all_value: bool = False  # the "All" option with the custom all value


def grafana_escape(value: str) -> str:
    """@grafana/data escapeRegex, which the InfluxDB data source applies to values inside /.../."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m.group(), value)


def seconds(duration: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([smhdw])", duration).groups()  # type: ignore[union-attr]
    return int(number) * {"s": 1, "m": 60, "h": 3600, "d": DAY, "w": 7 * DAY}[unit]


def expand(query: str, variables: dict[str, Var], t_from: int, t_to: int, interval: str) -> str:
    """The statement Grafana sends for a panel query over [t_from, t_to] (epoch seconds)."""
    query = query.replace("$timeFilter", f"time >= {t_from * 1000}ms and time <= {t_to * 1000 - 1}ms")
    query = query.replace("$__interval", interval)
    regexes = [(m.start(), m.end()) for m in re.finditer(r"(?<=~ )/(?:[^/\\]|\\.)*/", query)]

    def value(m: re.Match[str]) -> str:
        name = next(g for g in m.groups() if g)
        var = variables[name]  # KeyError: a variable the dashboard does not define
        in_regex = any(s < m.start() < e for s, e in regexes)
        if var.all_value:
            return ".*"  # a custom all value goes in raw
        if isinstance(var.value, list):
            escaped = [grafana_escape(v) for v in var.value]
            return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
        return grafana_escape(var.value) if in_regex else var.value

    return re.sub(r"\$\{(\w+)\}|\[\[(\w+)\]\]|\$(\w+)", value, query)


# --- InfluxDB results as rows ----------------------------------------------------------------------


def rows(series: list[dict[str, Any]], with_time: bool) -> list[dict[str, Any]]:
    out = []
    for s in series:
        for values in s.get("values") or []:
            row = dict(s.get("tags") or {})
            for col, v in zip(s["columns"], values, strict=True):
                if col != "time" or with_time:
                    row[col] = v
            out.append(row)
    return out


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, v) for k, v in row.items() if isinstance(v, str) or k == "time"))


def assert_rows(actual: list[dict[str, Any]], expected: list[dict[str, Any]], what: str) -> None:
    a = {_key(r): r for r in actual}
    e = {_key(r): r for r in expected}
    assert len(a) == len(actual), (what, "duplicate rows", actual)
    assert sorted(a) == sorted(e), (what, "rows differ", sorted(a), sorted(e))
    for key, row in e.items():
        got = a[key]
        assert set(got) == set(row), (what, key, got, row)
        for col, value in row.items():
            if isinstance(value, float | int) and not isinstance(value, bool):
                assert got[col] == pytest.approx(value, rel=1e-9, abs=1e-9), (what, key, col, got[col], value)
            else:
                assert got[col] == value, (what, key, col)


# --- expected values, computed from the data -------------------------------------------------------


@dataclass(frozen=True)
class Sel:
    site: str | None
    teams: frozenset[str] | None  # None: every team
    t_from: int
    t_to: int  # exclusive
    interval: int | None = None  # seconds; None: one group for the range

    def take(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            r
            for r in records
            if (self.site is None or r["site"] == self.site)
            and (self.teams is None or r["team"] in self.teams)
            and self.t_from <= r["t"] < self.t_to
        ]

    def bucket(self, t: int) -> int | None:
        return t // self.interval * self.interval if self.interval else None


def _with_time(row: dict[str, Any], bucket: int | None) -> dict[str, Any]:
    return row | ({"time": bucket} if bucket is not None else {})


def figure(
    sel: Sel,
    records: list[dict[str, Any]],
    parts: dict[str, Callable[[list[dict[str, Any]]], float]],
    ratios: Callable[[dict[str, float]], dict[str, float]],
    by: str | None = None,
    keep: Callable[[dict[str, Any]], bool] = lambda r: True,
) -> list[dict[str, Any]]:
    """A figure's rows: per worker and group, then per group (workers counted), groups of fewer than
    5 workers dropped, then the ratios of the group's totals."""
    per_worker: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in sel.take(records):
        if keep(r):
            per_worker[(sel.bucket(r["t"]), r[by] if by else None, r["worker"])].append(r)
    groups: dict[tuple[Any, ...], list[dict[str, float]]] = defaultdict(list)
    for (bucket, group, _worker), rs in per_worker.items():
        groups[(bucket, group)].append({alias: fn(rs) for alias, fn in parts.items()})
    out = []
    for (bucket, group), workers in groups.items():
        if len(workers) < MIN_WORKERS:
            continue
        totals = {alias: sum(w[alias] for w in workers) for alias in parts}
        row = ratios(totals) | {"workers": len(workers)}
        if by:
            row[by] = group
        out.append(_with_time(row, bucket))
    return out


def total(name: str) -> Callable[[list[dict[str, Any]]], float]:
    return lambda rs: sum(r[name] for r in rs)


def monitored(sel: Sel, d: Data, by: str | None = None) -> list[dict[str, Any]]:
    return figure(
        sel,
        d.hourly,
        {"wear": total("wear_s")},
        lambda t: {"hours": t["wear"] / 3600},
        by,
        lambda r: r["wear_s"] > 0,
    )


def violations(sel: Sel, d: Data, by: str | None = None) -> list[dict[str, Any]]:
    return figure(
        sel,
        d.hourly,
        {"wear": total("wear_s"), "violations": total("violations")},
        lambda t: {"per_100h": 100 * t["violations"] / (t["wear"] / 3600), "violations": t["violations"]},
        by,
        lambda r: r["wear_s"] > 0,
    )


def dose(sel: Sel, d: Data, by: str | None = None) -> list[dict[str, Any]]:
    return figure(
        sel,
        d.hourly,
        {"wear": total("wear_s"), "dose": total("accrued_upper_back")},
        lambda t: {"dose_per_hour": t["dose"] / (t["wear"] / 3600), "hours": t["wear"] / 3600},
        by,
        lambda r: r["wear_s"] > 0,
    )


def zones(seg: str, sel: Sel, d: Data, by: str | None = None) -> list[dict[str, Any]]:
    parts = {z: total(f"zone_{seg}_{z}_s") for z in ZONES}
    return figure(sel, d.hourly, parts, lambda t: {z: 100 * t[z] / sum(t.values()) for z in ZONES}, by)


def gt90(side: str, sel: Sel, d: Data, by: str | None = None) -> list[dict[str, Any]]:
    seg = f"arm_elevation_{side}"
    parts = {
        "measured": lambda rs: sum(r[f"zone_{seg}_{z}_s"] for r in rs for z in ZONES),
        "gt90": total(f"cut_{seg}_gt90_s"),
    }
    return figure(sel, d.hourly, parts, lambda t: {"gt90": 100 * t["gt90"] / t["measured"]}, by)


def compliance(sel: Sel, d: Data, by: str | None = None) -> list[dict[str, Any]]:
    return figure(
        sel,
        d.acks,
        {"prompts": len, "taken": lambda rs: sum(r["outcome"] == "taken" for r in rs)},
        lambda t: {
            "compliance": 100 * t["taken"] / t["prompts"],
            "taken": t["taken"],
            "prompts": t["prompts"],
        },
        by,
        lambda r: r["kind"] == "conditioning_break",
    )


def events(
    sel: Sel,
    records: list[dict[str, Any]],
    group: list[str],
    alias: str,
    keep: Callable[[dict[str, Any]], bool] = lambda r: True,
) -> list[dict[str, Any]]:
    """Counts per group, dropping groups behind which fewer than 5 workers stand (queries.event_counts)."""
    per: dict[tuple[Any, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in sel.take(records):
        if keep(r):
            per[(sel.bucket(r["t"]), *(r[g] for g in group))][r["worker"]] += 1
    out = []
    for key, workers in per.items():
        if len(workers) < MIN_WORKERS:
            continue
        row = {alias: sum(workers.values()), "workers": len(workers)} | dict(zip(group, key[1:], strict=True))
        out.append(_with_time(row, key[0]))
    return out


def incidents(sel: Sel, d: Data, by: tuple[str, ...] = (), fill_zero: bool = False) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in sel.take(d.incidents):
        groups[(sel.bucket(r["t"]), *(r[b] for b in by))].append(r)
    if fill_zero and sel.interval:
        first = sel.t_from // sel.interval * sel.interval
        for b in range(first, sel.t_to, sel.interval):
            for tags in {k[1:] for k in groups} or {()}:
                groups.setdefault((b, *tags), [])
    out = []
    for key, rs in groups.items():
        row = {
            "incidents": len(rs),
            "days_away": sum(r["days_away"] for r in rs),
            "days_restricted": sum(r["days_restricted"] for r in rs),
        } | dict(zip(by, key[1:], strict=True))
        out.append(_with_time(row, key[0]))
    return out


def only(
    rows_: list[dict[str, Any]], renames: dict[str, str] | list[str], tags: Iterable[str] = ()
) -> list[dict[str, Any]]:
    renames = dict(renames) if isinstance(renames, dict) else {c: c for c in renames}
    keep = {"time", *tags}
    return [{new: r[old] for old, new in renames.items()} | {k: r[k] for k in keep if k in r} for r in rows_]


def pipeline_sums(sel: Sel, d: Data, cols: list[str]) -> list[dict[str, Any]]:
    acc: dict[tuple[Any, ...], dict[str, float]] = defaultdict(lambda: dict.fromkeys(cols, 0))
    for p in d.pipeline:
        if sel.t_from <= p["t"] < sel.t_to:
            for c in cols:
                acc[(sel.bucket(p["t"]), p["service"])][c] += p[c]
    return [_with_time({"service": k[1], **v}, k[0]) for k, v in acc.items()]


def pipeline_max(sel: Sel, d: Data, col: str) -> list[dict[str, Any]]:
    acc: dict[tuple[Any, ...], float] = {}
    for p in d.pipeline:
        if sel.t_from <= p["t"] < sel.t_to:
            key = (sel.bucket(p["t"]), p["service"])
            acc[key] = max(acc.get(key, -math.inf), p[col])
    return [_with_time({"service": k[1], col: v}, k[0]) for k, v in acc.items()]


def dead_letters(sel: Sel, d: Data) -> list[dict[str, Any]]:
    acc: dict[tuple[Any, ...], int] = defaultdict(int)
    for r in d.dead:
        if sel.t_from <= r["t"] < sel.t_to:
            acc[(sel.bucket(r["t"]), r["reason"], r["service"])] += r["count"]
    return [_with_time({"reason": k[1], "service": k[2], "dead_letters": v}, k[0]) for k, v in acc.items()]


def worker_windows(sel: Sel, d: Data, worker: str, cols: dict[str, str]) -> list[dict[str, Any]]:
    acc: dict[int | None, dict[str, float]] = {}
    for w in d.windows:
        if w["worker"] == worker and sel.t_from <= w["t"] < sel.t_to:
            row = acc.setdefault(sel.bucket(w["t"]), {})
            for alias, name in cols.items():
                row[alias] = max(row.get(alias, -math.inf), w[name])
    return [_with_time(v, k) for k, v in acc.items()]


def worker_events(
    sel: Sel, records: list[dict[str, Any]], worker: str, group: str, alias: str
) -> list[dict[str, Any]]:
    acc: dict[tuple[Any, ...], int] = defaultdict(int)
    for r in sel.take(records):
        if r["worker"] == worker:
            acc[(sel.bucket(r["t"]), r[group])] += 1
    return [_with_time({group: k[1], alias: v}, k[0]) for k, v in acc.items()]


# --- Grafana's transformations (the ones the dashboards use) ---------------------------------------


def transform(
    frames: list[list[dict[str, Any]]], transformations: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Table frames (rows with a `Time` field) through filterFieldsByName, joinByField and
    calculateField (binary, with JavaScript's arithmetic: null counts as 0, a missing value is NaN)."""
    for t in transformations:
        opts = t["options"]
        if t["id"] == "joinByField":
            by = opts["byField"]
            keyed = [{r[by]: r for r in frame} for frame in frames]
            keys = (
                set.intersection(*(set(k) for k in keyed)) if opts["mode"] == "inner" else set().union(*keyed)
            )
            joined = []
            for key in sorted(keys):
                merged: dict[str, Any] = {}
                for k in keyed:
                    merged |= k.get(key, {})
                joined.append(merged)
            frames = [joined]
        elif t["id"] == "calculateField":
            b = opts["binary"]
            for frame in frames:
                for r in frame:
                    left, right = _operand(b["left"], r), _operand(b["right"], r)
                    r[opts["alias"]] = _binary(left, b["operator"], right)
        elif t["id"] == "filterFieldsByName":
            names = opts["include"]["names"]
            frames = [[{k: v for k, v in r.items() if k in names} for r in frame] for frame in frames]
        else:
            raise AssertionError(f"transformation {t['id']} not emulated")
    return [row for frame in frames for row in frame]


def _operand(x: str, row: dict[str, Any]) -> float:
    try:
        return float(x)
    except ValueError:
        if x not in row:
            return math.nan  # undefined in JavaScript
        return 0.0 if row[x] is None else float(row[x])  # null counts as 0


def _binary(left: float, op: str, right: float) -> float:
    if op == "*":
        return left * right
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "/":
        if right == 0:
            return math.nan if left == 0 or math.isnan(left) else math.copysign(math.inf, left)
        return left / right
    raise AssertionError(f"operator {op} not emulated")


# --- the test ---------------------------------------------------------------------------------------


@dataclass
class Case:
    """One dashboard run: variable values, range and interval, and the expected rows per query."""

    variables: dict[str, Var]
    t_from: int
    t_to: int
    interval: str
    expected: dict[tuple[str, str], list[dict[str, Any]]]  # (panel title, refId) -> rows
    variable_values: dict[str, set[str]]
    panel_results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # after transformations


def site_cases(d: Data) -> dict[str, Case]:
    full = Sel("plant-1", None, d.start, d.end)
    daily = Sel("plant-1", None, d.start, d.end, DAY)
    expected: dict[tuple[str, str], list[dict[str, Any]]] = {
        ("Monitored workers", "A"): monitored(full, d),
        ("Monitored hours", "A"): monitored(full, d),
        ("Violations per 100 monitored hours", "A"): violations(full, d),
        ("Dose per monitored hour", "A"): dose(full, d),
        ("Arms above 90°", "A"): gt90("left", full, d),
        ("Arms above 90°", "B"): gt90("right", full, d),
        ("Conditioning-break compliance", "A"): compliance(full, d),
        ("Dose per monitored hour by team", "A"): only(dose(daily, d, "team"), ["dose_per_hour"], ["team"]),
        ("Dose per monitored hour by task", "A"): only(dose(daily, d, "task"), ["dose_per_hour"], ["task"]),
        ("Violations per 100 monitored hours by team", "A"): only(
            violations(daily, d, "team"), ["per_100h"], ["team"]
        ),
        ("Right arm above 90° by team (% of measured time)", "A"): only(
            gt90("right", daily, d, "team"), ["gt90"], ["team"]
        ),
        ("Prompt decisions by status and reason", "A"): events(
            full, d.prompts, ["status", "reason"], "prompts"
        ),
        ("Conditioning-break compliance by team", "A"): compliance(full, d, "team"),
    }
    for i, seg in enumerate(SEGMENTS):
        ref = chr(ord("A") + i)
        expected[("Time per zone by segment (% of measured time)", ref)] = only(
            zones(seg, full, d), {z: f"{seg}_{z}" for z in ZONES}
        )
        expected[("Not-acceptable zone by team (% of measured time)", ref)] = only(
            zones(seg, full, d, "team"), {"not_acceptable": seg}, ["team"]
        )
    case = Case(
        {"site": Var("plant-1"), "team": Var(["All"], all_value=True)},
        d.start,
        d.end,
        "1d",
        expected,
        {"site": {"plant-1", "plant-2"}, "team": {"assembly", "line.2", "linex2"}},
    )
    by_team: dict[str, dict[str, Any]] = defaultdict(dict)
    for seg in SEGMENTS:
        for r in zones(seg, full, d, "team"):
            by_team[r["team"]] |= {"team": r["team"], seg: r["not_acceptable"]}
    assert set(by_team) == {"assembly", "line.2"}
    case.panel_results = {"Not-acceptable zone by team (% of measured time)": list(by_team.values())}
    return {"strainwatch-site": case}


def team_cases(d: Data) -> list[Case]:
    cases = []
    for team in ("line.2", "linex2"):
        full = Sel("plant-1", frozenset({team}), d.start, d.end)
        daily = Sel("plant-1", frozenset({team}), d.start, d.end, DAY)
        site_daily = Sel("plant-1", None, d.start, d.end, DAY)
        expected: dict[tuple[str, str], list[dict[str, Any]]] = {
            ("Monitored workers", "A"): monitored(full, d),
            ("Monitored hours", "A"): monitored(full, d),
            ("Violations per 100 monitored hours", "A"): violations(full, d),
            ("Dose per monitored hour", "A"): dose(full, d),
            ("Arms above 90°", "A"): gt90("left", full, d),
            ("Arms above 90°", "B"): gt90("right", full, d),
            ("Conditioning-break compliance", "A"): compliance(full, d),
            ("Prompt decisions by status and reason", "A"): events(
                full, d.prompts, ["status", "reason"], "prompts"
            ),
            ("Break outcomes", "A"): events(full, d.acks, ["outcome", "kind"], "outcomes"),
        }
        for i, seg in enumerate(SEGMENTS):
            expected[("Time per zone by segment (% of measured time)", chr(ord("A") + i))] = only(
                zones(seg, full, d), {z: f"{seg}_{z}" for z in ZONES}
            )
        pairs = {
            "Dose per monitored hour: team and site": (lambda s: dose(s, d), "dose_per_hour"),
            "Violations per 100 monitored hours: team and site": (lambda s: violations(s, d), "per_100h"),
            "Trunk flexion not acceptable: team and site (% of measured time)": (
                lambda s: zones("trunk_flexion", s, d),
                "not_acceptable",
            ),
            "Right arm above 90°: team and site (% of measured time)": (
                lambda s: gt90("right", s, d),
                "gt90",
            ),
            "Conditioning-break compliance: team and site": (lambda s: compliance(s, d), "compliance"),
        }
        for title, (fn, col) in pairs.items():
            expected[(title, "A")] = only(fn(daily), [col])
            expected[(title, "B")] = only(fn(site_daily), [col])
        cases.append(
            Case(
                {"site": Var("plant-1"), "team": Var(team)},
                d.start,
                d.end,
                "1d",
                expected,
                {"site": {"plant-1", "plant-2"}, "team": {"assembly", "line.2", "linex2"}},
            )
        )
    return cases


def prompts_case(d: Data) -> Case:
    teams = frozenset({"assembly", "line.2"})
    full = Sel("plant-1", teams, d.start, d.end)
    daily = Sel("plant-1", teams, d.start, d.end, DAY)
    sent = lambda r: r["status"] == "sent"  # noqa: E731
    suppressed = lambda r: r["status"] == "suppressed"  # noqa: E731
    expected = {
        ("Breaks decided", "A"): events(full, d.alerts, [], "alerts"),
        ("Prompts sent", "A"): events(full, d.prompts, [], "prompts", sent),
        ("Prompts suppressed", "A"): events(full, d.prompts, [], "prompts", suppressed),
        ("Conditioning-break compliance", "A"): compliance(full, d),
        ("Breaks decided by kind", "A"): events(daily, d.alerts, ["kind"], "alerts"),
        ("Prompts sent and suppressed", "A"): events(daily, d.prompts, ["status"], "prompts"),
        ("Suppressed by reason", "A"): events(full, d.prompts, ["reason"], "prompts", suppressed),
        ("Outcomes", "A"): events(full, d.acks, ["outcome", "kind"], "outcomes"),
        ("Compliance by team", "A"): compliance(full, d, "team"),
        ("Compliance over time", "A"): only(compliance(daily, d), ["compliance"]),
    }
    return Case(
        {"site": Var("plant-1"), "team": Var(["assembly", "line.2"])},
        d.start,
        d.end,
        "1d",
        expected,
        {"site": {"plant-1", "plant-2"}, "team": {"assembly", "line.2", "linex2"}},
    )


def injuries_case(d: Data) -> Case:
    full = Sel("plant-1", None, d.start, d.end)
    daily = Sel("plant-1", None, d.start, d.end, DAY)
    totals = incidents(full, d)
    basis = monitored(full, d)
    expected = {
        ("Incidents", "A"): totals,
        ("Days away from work", "A"): totals,
        ("Monitored hours (rate basis)", "A"): basis,
        ("Incidence rate per 200,000 monitored hours", "A"): totals,
        ("Incidence rate per 200,000 monitored hours", "B"): basis,
        ("Incidents by body part", "A"): incidents(full, d, ("body_part",)),
        ("Incidents over time by body part", "A"): only(
            incidents(daily, d, ("body_part",), fill_zero=True), ["incidents"], ["body_part"]
        ),
        ("Compliance against incidence rate", "A"): compliance(daily, d),
        ("Compliance against incidence rate", "B"): incidents(daily, d, fill_zero=True),
        ("Compliance against incidence rate", "C"): monitored(daily, d),
    }
    # what the panels compute from them, independently: incidents x 200,000 / monitored hours
    n = sum(1 for i in d.incidents if i["site"] == "plant-1" and d.start <= i["t"] < d.end)
    hours = basis[0]["hours"]
    rate_rows = [{"incidence_rate": n * HOURS_BASIS / hours}]
    comp = {r["time"]: r["compliance"] for r in compliance(daily, d)}
    day_hours = {r["time"]: r["hours"] for r in monitored(daily, d)}
    day_incidents: dict[int, int] = defaultdict(int)
    for i in d.incidents:
        if i["site"] == "plant-1" and d.start <= i["t"] < d.end:
            day_incidents[i["t"] // DAY * DAY] += 1
    trend = [
        {"Time": t, "compliance": comp[t], "incidence_rate": day_incidents[t] * HOURS_BASIS / day_hours[t]}
        for t in sorted(set(comp) & set(day_hours))
    ]
    case = Case({"site": Var("plant-1")}, d.start, d.end, "1d", expected, {"site": {"plant-1", "plant-2"}})
    case.panel_results = {
        "Incidence rate per 200,000 monitored hours": rate_rows,
        "Compliance against incidence rate": trend,
    }
    return case


def pipeline_case(d: Data) -> Case:
    sel = Sel(None, None, d.recent, d.recent + 3600, 600)
    whole = Sel(None, None, d.recent, d.recent + 3600)
    expected = {
        ("Frames in and processed", "A"): pipeline_sums(sel, d, ["frames_in", "frames_processed"]),
        ("Dead letters by reason", "A"): dead_letters(sel, d),
        ("Processor lag", "A"): pipeline_max(sel, d, "lag_frames"),
        ("Checkpoint age", "A"): pipeline_max(sel, d, "checkpoint_age_s"),
        ("Sink write errors", "A"): pipeline_sums(sel, d, ["sink_write_errors"]),
        ("Dead letters in the range by reason", "A"): dead_letters(whole, d),
    }
    return Case({}, d.recent, d.recent + 3600, "10m", expected, {})


def worker_case(d: Data) -> Case:
    sel = Sel("plant-1", frozenset({"assembly"}), d.recent, d.recent + 3600, 600)
    expected = {
        ("Longest hold by segment", "A"): worker_windows(sel, d, "a1", {s: f"hold_{s}_s" for s in SEGMENTS}),
        ("Upper-back dose", "A"): worker_windows(sel, d, "a1", {"dose_upper_back": "dose_upper_back"}),
        ("Prompts", "A"): worker_events(sel, d.prompts, "a1", "status", "prompts"),
        ("Outcomes", "A"): worker_events(sel, d.acks, "a1", "outcome", "outcomes"),
    }
    assert expected[("Prompts", "A")], "a1 has prompts in the hour of windows"
    return Case(
        {"site": Var("plant-1"), "team": Var("assembly"), "worker": Var("a1")},
        d.recent,
        d.recent + 3600,
        "10m",
        expected,
        {
            "site": {"plant-1", "plant-2"},
            "team": {"assembly", "line.2", "linex2"},
            "worker": {f"a{i}" for i in range(1, 7)},
        },
    )


@pytest.fixture(scope="module")
def loaded(influx: Influx) -> tuple[Influx, str, Data]:
    database = influx.new_database()
    data = make_data()
    default, windows = lines(data)
    write(influx, database, default)
    write(influx, database, windows, rp=WINDOWS_RP)
    return influx, database, data


def committed() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((ROOT / "dashboards").glob("*.json"))}


def test_committed_dashboards_are_the_generated_ones_without_the_worker_timeline() -> None:
    boards = committed()
    assert set(boards) == {
        "strainwatch-site",
        "strainwatch-team",
        "strainwatch-prompts",
        "strainwatch-injuries",
        "strainwatch-pipeline",
    }
    assert boards == dashboards(worker_timeline=False)


def run_case(loaded: tuple[Influx, str, Data], uid: str, board: dict[str, Any], case: Case) -> int:
    influx, database, _ = loaded
    ql = influx.ql(database)
    checked = 0
    visited: set[tuple[str, str]] = set()
    for variable in board.get("templating", {}).get("list", []):
        statement = expand(variable["query"], case.variables, case.t_from, case.t_to, case.interval)
        values = {row[1] for s in ql.query(statement) for row in s["values"]}
        assert values == case.variable_values[variable["name"]], (uid, variable["name"], statement)
        checked += 1
    for panel in board["panels"]:
        frames = []
        for target in panel["targets"]:
            what = f"{uid}: {panel['title']!r} {target['refId']}"
            interval = max(case.interval, panel.get("interval", "0s"), key=seconds)  # the panel's minimum
            statement = expand(target["query"], case.variables, case.t_from, case.t_to, interval)
            series = ql.query(statement)
            key = (panel["title"], target["refId"])
            assert key in case.expected, f"{what}: no expected values in this test"
            visited.add(key)
            grouped_by_time = "GROUP BY time(" in statement
            assert_rows(rows(series, grouped_by_time), case.expected[key], f"{what}\n{statement}")
            # the validator's idea of the result columns is InfluxDB's
            names = influxql_result_names(target["query"])
            for s in series:
                assert tuple(s["columns"][1:]) == names.columns, (what, s["columns"], names)
                assert set((s.get("tags") or {}).keys()) == set(names.tags or ()), (
                    what,
                    s.get("tags"),
                    names,
                )
            # the small team and task never appear
            for row in rows(series, False):
                assert not SMALL & {v for v in row.values() if isinstance(v, str)}, (what, row)
            frames.append([{"Time": r.pop("time"), **r} for r in rows(series, True)])
            checked += 1
        if panel.get("transformations"):
            result = transform(frames, panel["transformations"])
            if panel["type"] == "stat":
                name = panel["options"]["reduceOptions"]["fields"].strip("/^$")
                result = [{name: r[name]} for r in result]
            assert_rows(
                [{("time" if k == "Time" else k): v for k, v in r.items()} for r in result],
                [
                    {("time" if k == "Time" else k): v for k, v in r.items()}
                    for r in case.panel_results[panel["title"]]
                ],
                f"{uid}: {panel['title']!r} after its transformations",
            )
    assert visited == set(case.expected), (
        "expected values for queries the dashboard lacks",
        set(case.expected) - visited,
    )
    return checked


def test_site_overview(loaded: tuple[Influx, str, Data]) -> None:
    _, _, data = loaded
    board = committed()["strainwatch-site"]
    case = site_cases(data)["strainwatch-site"]
    assert run_case(loaded, "strainwatch-site", board, case) == len(case.expected) + 2
    assert case.expected[("Monitored workers", "A")][0]["workers"] == 14
    # "Workers tracked" counts workers, not distinct wear totals: plant-2's five wore theirs equally
    influx, database, _ = loaded
    wear: dict[str, float] = defaultdict(float)
    for r in data.hourly:
        if r["site"] == "plant-2":
            wear[r["worker"]] += r["wear_s"]
    assert len(wear) == 5 and len(set(wear.values())) == 1
    panel = next(p for p in board["panels"] if p["title"] == "Monitored workers")
    statement = expand(
        panel["targets"][0]["query"],
        {"site": Var("plant-2"), "team": Var(["All"], True)},
        data.start,
        data.end,
        "1d",
    )
    assert rows(influx.ql(database).query(statement), False) == [
        {"hours": sum(wear.values()) / 3600, "workers": 5}
    ]


def test_team_and_the_small_team_shows_nothing(loaded: tuple[Influx, str, Data]) -> None:
    _, _, data = loaded
    board = committed()["strainwatch-team"]
    line2, small = team_cases(data)
    run_case(loaded, "strainwatch-team", board, line2)
    assert line2.expected[("Monitored workers", "A")][0]["workers"] == 5  # not linex2's 3 besides
    run_case(loaded, "strainwatch-team", board, small)
    for (title, ref), expected in small.expected.items():
        if ref == "A" or "team and site" not in title:
            assert expected == [], (title, ref, "a team of 3 must show nothing")


def test_break_prompts(loaded: tuple[Influx, str, Data]) -> None:
    _, _, data = loaded
    case = prompts_case(data)
    run_case(loaded, "strainwatch-prompts", committed()["strainwatch-prompts"], case)
    assert case.expected[("Suppressed by reason", "A")], "some reasons have 5 workers or more"


def test_injury_trends(loaded: tuple[Influx, str, Data]) -> None:
    _, _, data = loaded
    case = injuries_case(data)
    run_case(loaded, "strainwatch-injuries", committed()["strainwatch-injuries"], case)
    assert case.expected[("Incidents", "A")][0]["incidents"] == 8


def test_pipeline_health(loaded: tuple[Influx, str, Data]) -> None:
    _, _, data = loaded
    case = pipeline_case(data)
    run_case(loaded, "strainwatch-pipeline", committed()["strainwatch-pipeline"], case)


def test_worker_timeline_when_enabled(loaded: tuple[Influx, str, Data]) -> None:
    _, _, data = loaded
    board = dashboards(worker_timeline=True)["strainwatch-worker"]
    case = worker_case(data)
    run_case(loaded, "strainwatch-worker", board, case)
