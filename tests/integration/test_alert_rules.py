"""Each generated Grafana alert rule fires on data made to breach it and stays quiet on data that
does not, with its queries run on the real InfluxDB.

No Grafana runs here, so the test does what Grafana's alert evaluation does with a rule:

1. every data source query: Grafana's InfluxQL macros expanded for the query's relativeTimeRange
   as Grafana's InfluxDB backend expands them (`$timeFilter` -> `time >= <from>ms and time <=
   <to>ms`, `$__interval` -> the query's intervalMs formatted like Grafana's gtime), then run on
   InfluxDB; each value column of each series becomes a series labelled with the series' tags;
2. the server-side expressions the rule defines (reduce, math, threshold), by a small evaluator
   below that follows Grafana's semantics for the parts these rules use (reduce modes, label
   matching between sets in math, comparisons and logic giving 1/0);
3. the condition: an instance per result, firing when its value is non-zero; no result at all is
   "no data", which the rule's noDataState turns into a state.

The expected values are computed here from the points the test wrote, not read back.
"""

from __future__ import annotations

import math
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from strainwatch.dashboards import alert_rules
from strainwatch.dashboards.rules_validate import validate_rules
from strainwatch.storage.influxql import InfluxQL
from strainwatch.storage.measurements import (
    EXPOSURE,
    WINDOWS_RP,
    exposure_hourly_line,
    line,
    pipeline_line,
)
from tests.integration.conftest import Influx

pytestmark = pytest.mark.integration

RULES = {rule["uid"]: rule for rule in alert_rules.api_rules()}
HOUR = 3600
DAY = 86_400

Labels = frozenset[tuple[str, str]]


# --- Grafana's evaluation, as far as these rules use it ------------------------------------------


def format_interval(ms: int) -> str:
    """Grafana's gtime.FormatInterval (the text of $__interval)."""
    for unit, size in (("y", 365 * DAY * 1000), ("d", DAY * 1000), ("h", HOUR * 1000), ("m", 60_000)):
        if ms >= size:
            return f"{ms // size}{unit}"
    if ms >= 1000:
        return f"{ms // 1000}s"
    return f"{ms}ms" if ms >= 1 else "1ms"


def expand(model: dict[str, Any], relative: dict[str, int], now_ms: int) -> str:
    """The InfluxDB backend's macro expansion for an alert query (models/query.go, Build)."""
    start_ms = now_ms - relative["from"] * 1000
    end_ms = now_ms - relative.get("to", 0) * 1000
    interval_ms = max(int(model.get("intervalMs", 1000)), 1)
    query: str = model["query"]
    query = query.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
    query = query.replace("$interval", format_interval(interval_ms))
    query = query.replace("$__interval_ms", str(interval_ms))
    return query.replace("$__interval", format_interval(interval_ms))


@dataclass
class Series:
    labels: Labels
    points: list[tuple[int, float | None]]


@dataclass
class Number:
    labels: Labels
    value: float


Value = list[Series] | list[Number] | float


def run_query(ql: InfluxQL, text: str) -> list[Series]:
    out = []
    for series in ql.query(text):
        labels: Labels = frozenset((series.get("tags") or {}).items())
        columns = series["columns"]
        for col in range(1, len(columns)):
            points = [
                (int(row[0]), None if row[col] is None else float(row[col])) for row in series["values"]
            ]
            out.append(Series(labels, points))
    return out


REDUCERS: dict[str, Callable[[list[float]], float]] = {
    "last": lambda v: v[-1],
    "mean": lambda v: sum(v) / len(v),
    "sum": sum,
    "min": min,
    "max": max,
    "count": lambda v: float(len(v)),
}


def reduce(model: dict[str, Any], value: Value) -> list[Number]:
    assert isinstance(value, list)
    mode = (model.get("settings") or {}).get("mode", "strict")
    out = []
    for series in value:
        assert isinstance(series, Series), "reduce takes series"
        values = [v for _, v in series.points]
        if mode == "dropNN":
            values = [v for v in values if v is not None and not math.isnan(v)]
        elif mode == "replaceNN":
            repl = float(model["settings"]["replaceWithValue"])
            values = [repl if v is None or math.isnan(v) else v for v in values]
        elif any(v is None or math.isnan(v) for v in values):
            out.append(Number(series.labels, math.nan))
            continue
        fn = REDUCERS[model["reducer"]]
        result = fn([v for v in values if v is not None]) if values else math.nan
        if model["reducer"] == "count" and not values:
            result = 0.0
        out.append(Number(series.labels, float(result)))
    return out


def _binary(op: str, a: float, b: float) -> float:
    if op in ("&&", "||"):
        ta, tb = a != 0 and not math.isnan(a), b != 0 and not math.isnan(b)
        return float(ta and tb) if op == "&&" else float(ta or tb)
    if op in (">", "<", ">=", "<=", "==", "!="):
        if math.isnan(a) or math.isnan(b):
            return 0.0
        return float({">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b, "==": a == b, "!=": a != b}[op])
    if op == "/":
        return math.nan if b == 0 else a / b
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def _combine(op: str, left: Value, right: Value) -> Value:
    """Grafana math between numbers and sets: a set pairs its items with the other set's items
    whose labels are equal or a subset/superset (the result keeps the larger label set); two
    single items with unrelated labels still pair."""
    if isinstance(left, float) and isinstance(right, float):
        return _binary(op, left, right)
    if isinstance(left, float):
        assert isinstance(right, list)
        return [Number(n.labels, _binary(op, left, n.value)) for n in right if isinstance(n, Number)]
    if isinstance(right, float):
        return [Number(n.labels, _binary(op, n.value, right)) for n in left if isinstance(n, Number)]
    lefts = [n for n in left if isinstance(n, Number)]
    rights = [n for n in right if isinstance(n, Number)]
    assert len(lefts) == len(left) and len(rights) == len(right), "math here works on reduced numbers"
    out = []
    for a in lefts:
        for b in rights:
            if a.labels <= b.labels or b.labels <= a.labels:
                labels = a.labels if len(a.labels) >= len(b.labels) else b.labels
                out.append(Number(labels, _binary(op, a.value, b.value)))
    if not out and len(lefts) == 1 and len(rights) == 1:
        out.append(Number(lefts[0].labels, _binary(op, lefts[0].value, rights[0].value)))
    return out


_TOKEN = re.compile(
    r"\s*(\$\{[^}]+\}|\$[A-Za-z0-9_]+|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|&&|\|\||>=|<=|==|!=|[-+*/()<>!])"
)
_PRECEDENCE = {
    "||": 1,
    "&&": 2,
    "==": 3,
    "!=": 3,
    "<": 3,
    "<=": 3,
    ">": 3,
    ">=": 3,
    "+": 4,
    "-": 4,
    "*": 5,
    "/": 5,
}


def math_expression(text: str, values: dict[str, Value]) -> Value:
    tokens = []
    pos = 0
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        assert match, f"cannot parse math {text!r} at {pos}"
        tokens.append(match.group(1))
        pos = match.end()
    index = 0

    def primary() -> Value:
        nonlocal index
        token = tokens[index]
        index += 1
        if token == "(":
            value = binary(0)
            assert tokens[index] == ")"
            index += 1
            return value
        if token == "-":
            return _combine("-", 0.0, primary())
        if token == "!":
            return _combine("==", primary(), 0.0)
        if token.startswith("$"):
            return values[token.strip("${}")]
        return float(token)

    def binary(min_prec: int) -> Value:
        nonlocal index
        left = primary()
        while index < len(tokens) and _PRECEDENCE.get(tokens[index], 0) > min_prec:
            op = tokens[index]
            index += 1
            right = binary(_PRECEDENCE[op])
            left = _combine(op, left, right)
        return left

    result = binary(0)
    assert index == len(tokens), f"trailing tokens in {text!r}"
    return result


def threshold(model: dict[str, Any], value: Value) -> list[Number]:
    assert isinstance(value, list)
    (condition,) = model["conditions"]
    kind, params = condition["evaluator"]["type"], condition["evaluator"]["params"]
    tests: dict[str, Callable[[float], bool]] = {
        "gt": lambda v: v > params[0],
        "lt": lambda v: v < params[0],
        "within_range": lambda v: params[0] < v < params[1],
        "outside_range": lambda v: v < params[0] or v > params[1],
    }
    return [
        Number(n.labels, float(not math.isnan(n.value) and tests[kind](n.value)))
        for n in value
        if isinstance(n, Number)
    ]


@dataclass
class Evaluation:
    queries: dict[str, str] = field(default_factory=dict)  # refId -> the InfluxQL run
    values: dict[str, Value] = field(default_factory=dict)
    state: str = ""  # Alerting | Normal | NoData
    firing: set[Labels] = field(default_factory=set)

    def numbers(self, ref: str) -> dict[Labels, float]:
        value = self.values[ref]
        assert isinstance(value, list)
        return {n.labels: n.value for n in value if isinstance(n, Number)}


def evaluate(rule: dict[str, Any], ql: InfluxQL, now_s: float) -> Evaluation:
    now_ms = int(now_s * 1000)
    out = Evaluation()
    for query in rule["data"]:
        ref, model = query["refId"], query["model"]
        if query["datasourceUid"] == alert_rules.DATASOURCE_UID:
            text = expand(model, query["relativeTimeRange"], now_ms)
            assert "$" not in text, f"{rule['uid']} {ref}: unexpanded macro in {text}"
            out.queries[ref] = text
            out.values[ref] = list(run_query(ql, text))
        elif model["type"] == "reduce":
            out.values[ref] = list(reduce(model, out.values[model["expression"]]))
        elif model["type"] == "math":
            out.values[ref] = math_expression(model["expression"], out.values)
        elif model["type"] == "threshold":
            out.values[ref] = list(threshold(model, out.values[model["expression"]]))
        else:
            raise AssertionError(f"expression type {model['type']} has no evaluator here")
    result = out.values[rule["condition"]]
    assert isinstance(result, list)
    numbers = [n for n in result if isinstance(n, Number)]
    if not numbers:
        out.state = {"OK": "Normal", "Alerting": "Alerting", "NoData": "NoData"}[rule["noDataState"]]
        return out
    out.firing = {n.labels for n in numbers if n.value != 0 and not math.isnan(n.value)}
    out.state = "Alerting" if out.firing else "Normal"
    return out


def labels(**tags: str) -> Labels:
    return frozenset(tags.items())


def write(influx: Influx, database: str, lines: list[str], rp: str | None = None) -> None:
    params = {"db": database, "precision": "s"} | ({"rp": rp} if rp else {})
    request = urllib.request.Request(
        f"{influx.url}/write?{urllib.parse.urlencode(params)}", data="\n".join(lines).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 204


def test_rules_are_valid_and_use_the_evaluated_expression_types() -> None:
    validate_rules(list(RULES.values()))
    assert set(RULES) == {
        "strainwatch-team-exposure-rising",
        "strainwatch-site-devices-silent",
        "strainwatch-dead-letter-rate",
        "strainwatch-processor-lag",
    }
    for rule in RULES.values():
        kinds = {q["model"]["type"] for q in rule["data"] if q["datasourceUid"] == alert_rules.EXPR_UID}
        assert kinds <= {"reduce", "math", "threshold"}, rule["uid"]


def test_macro_expansion_matches_grafana() -> None:
    model = {
        "query": "SELECT 1 WHERE $timeFilter GROUP BY time($__interval) -- $__interval_ms",
        "intervalMs": 60_000,
    }
    text = expand(model, {"from": 600, "to": 60}, 1_700_000_000_000)
    assert text == (
        "SELECT 1 WHERE time >= 1699999400000ms and time <= 1699999940000ms GROUP BY time(1m) -- 60000"
    )
    assert [format_interval(ms) for ms in (500, 1000, 90_000, 7_200_000, 2 * DAY * 1000)] == [
        "500ms",
        "1s",
        "1m",
        "2h",
        "2d",
    ]


# --- (a) a team's exposure rising against its 4-week baseline --------------------------------------


def test_team_exposure_rising_against_its_baseline(influx: Influx) -> None:
    database = influx.new_database()
    now = time.time()
    site = "plant-1"
    # team -> (workers, dose per worker-hour now, dose per worker-hour in the baseline)
    teams = {
        "rising": (6, 14.0, 10.0),  # 1.4 x baseline: fires
        "steady": (6, 12.0, 10.0),  # 1.2 x: quiet
        "edge": (5, 10.0, 8.0),  # exactly 1.25 x: quiet (the rule says above)
        "small": (3, 30.0, 10.0),  # 3 x but 3 workers: never shown on its own, quiet
        "new": (6, 20.0, None),  # no baseline: quiet
    }
    current_hours = [int(now - k * HOUR) // HOUR * HOUR for k in range(2, 8)]
    baseline_hours = [int(now - d * DAY) // HOUR * HOUR for d in range(2, 29)]
    lines = []
    sums: dict[tuple[str, str], list[float]] = {}
    for team, (workers, dose_now, dose_base) in teams.items():
        for w in range(workers):
            worker = f"{team}-w{w}"
            # worker w wears the device (w+1)/workers of each hour: groups' totals, not averages
            wear = 3600.0 * (w + 1) / workers
            for period, hours, dose in (
                ("now", current_hours, dose_now),
                ("base", baseline_hours, dose_base),
            ):
                if dose is None:
                    continue
                for hour in hours:
                    fields = {
                        "frames": 360,
                        "windows": 360,
                        "wear_s": wear,
                        "dose_upper_back": dose * wear / 3600,
                    }
                    lines.append(exposure_hourly_line(site, team, "assembly", worker, hour, fields))
                    acc = sums.setdefault((team, period), [0.0, 0.0])
                    acc[0] += dose * wear / 3600
                    acc[1] += wear
    # a point 40 days old (outside both ranges) that would raise the baseline above everything
    lines.append(
        exposure_hourly_line(
            site,
            "rising",
            "assembly",
            "rising-w0",
            int(now - 40 * DAY) // HOUR * HOUR,
            {"frames": 360, "windows": 360, "wear_s": 3600.0, "dose_upper_back": 1e6},
        )
    )
    write(influx, database, lines)

    result = evaluate(RULES["strainwatch-team-exposure-rising"], influx.ql(database), now)

    def per_hour(team: str, period: str) -> float:
        dose, wear = sums[(team, period)]
        return dose / (wear / 3600)

    big = [t for t, (n, _, _) in teams.items() if n >= 5]
    assert result.numbers("RA") == pytest.approx({labels(site=site, team=t): per_hour(t, "now") for t in big})
    assert result.numbers("RB") == pytest.approx(
        {labels(site=site, team=t): per_hour(t, "base") for t in big if teams[t][2] is not None}
    )
    assert per_hour("rising", "now") == pytest.approx(14.0) and per_hour("rising", "base") == pytest.approx(
        10.0
    )
    assert result.firing == {labels(site=site, team="rising")}
    assert result.state == "Alerting"


# --- (b) a site's devices silent -------------------------------------------------------------------


def test_site_devices_silent(influx: Influx) -> None:
    database = influx.new_database()
    now = time.time()

    def window(site: str, worker: str, age_s: int) -> str:
        ts = int(now - age_s) // 10 * 10
        tags = {"site": site, "team": "t1", "task": "assembly", "worker": worker}
        return line(EXPOSURE, tags, {"frames": 10, "wear_s": 10.0}, ts)

    lines = [
        # went quiet: windows 60 to 20 minutes ago, none since -> fires
        *(window("quiet-site", f"q{w}", age) for w in range(3) for age in range(20 * 60, 60 * 60, 300)),
        # busy: windows an hour ago and 2 and 5 minutes ago -> quiet
        *(window("busy-site", f"b{w}", age) for w in range(2) for age in (60 * 60, 5 * 60, 2 * 60)),
        # inactive since 3 hours (before the 2-hour lookback): not a site that just went silent
        window("closed-site", "c0", 3 * HOUR),
    ]
    write(influx, database, lines, rp=WINDOWS_RP)

    result = evaluate(RULES["strainwatch-site-devices-silent"], influx.ql(database), now)

    assert result.numbers("RA") == {labels(site="quiet-site"): 0.0, labels(site="busy-site"): 4.0}
    assert result.firing == {labels(site="quiet-site")}

    # the quiet site sends again: the rule goes back to normal
    write(influx, database, [window("quiet-site", "q0", 30)], rp=WINDOWS_RP)
    again = evaluate(RULES["strainwatch-site-devices-silent"], influx.ql(database), time.time())
    assert again.numbers("RA") == {labels(site="quiet-site"): 1.0, labels(site="busy-site"): 4.0}
    assert again.state == "Normal" and not again.firing


# --- (c) dead-letter rate ----------------------------------------------------------------------------


def test_dead_letter_rate(influx: Influx) -> None:
    database = influx.new_database()
    now = time.time()
    # service -> [(age_s, frames_in, dead_lettered)]
    points = {
        "processor": [(500, 1000, 5), (300, 1000, 10), (60, 1000, 20)],  # 35/3000 = 1.17 %: fires
        "gateway": [
            (500, 1000, 10),
            (300, 1000, 5),
            (60, 1000, 5),
            (1500, 1000, 900),
        ],  # 0.67 %; old spike outside
        "alerting": [(300, 40, 4), (60, 40, 6)],  # 12.5 % of 80 frames: too few to count, quiet
    }
    lines = [
        pipeline_line(
            service, f"{service}-1", {"frames_in": n, "dead_lettered": d, "interval_s": 10.0}, int(now - age)
        )
        for service, rows in points.items()
        for age, n, d in rows
    ]
    write(influx, database, lines)

    result = evaluate(RULES["strainwatch-dead-letter-rate"], influx.ql(database), now)

    def pct(service: str) -> float:
        rows = [(n, d) for age, n, d in points[service] if age <= alert_rules.DEAD_LETTER_WINDOW_S]
        return 100 * sum(d for _, d in rows) / sum(n for n, _ in rows)

    assert pct("processor") == pytest.approx(35 / 30)
    assert result.numbers("RA") == pytest.approx(
        {labels(service="processor"): pct("processor"), labels(service="gateway"): pct("gateway")}
    )
    assert result.firing == {labels(service="processor")}


# --- (d) processor lag or stale checkpoints -----------------------------------------------------------


def test_processor_lag_or_stale_checkpoint(influx: Influx) -> None:
    database = influx.new_database()
    now = time.time()
    # instance -> [(age_s, lag_frames, checkpoint_age_s)], the last row is the latest
    points = {
        "p-lagging": [(200, 1_000, 3.0), (20, 60_000, 4.0)],  # lag 60,000 > 50,000: fires
        "p-stale": [(200, 100, 30.0), (20, 100, 95.0)],  # checkpoint 95 s old: fires
        "p-fine": [(200, 70_000, 200.0), (20, 100, 3.0)],  # was bad, fine now: quiet
        "p-old": [(900, 80_000, 500.0), (400, 10, 2.0)],  # bad only before the 5-minute range: quiet
    }
    lines = [
        pipeline_line("processor", instance, {"lag_frames": lag, "checkpoint_age_s": age_s}, int(now - age))
        for instance, rows in points.items()
        for age, lag, age_s in rows
    ]
    # the gateway's own gauges are not the processor's
    lines.append(
        pipeline_line("gateway", "g-1", {"lag_frames": 10**6, "checkpoint_age_s": 10**4 * 1.0}, int(now - 20))
    )
    write(influx, database, lines)

    result = evaluate(RULES["strainwatch-processor-lag"], influx.ql(database), now)

    latest = {i: rows[-1] for i, rows in points.items() if rows[-1][0] <= alert_rules.GAUGE_WINDOW_S}
    assert result.numbers("RA") == {labels(instance=i): float(r[1]) for i, r in latest.items()}
    assert result.numbers("RB") == {labels(instance=i): r[2] for i, r in latest.items()}
    assert result.firing == {labels(instance="p-lagging"), labels(instance="p-stale")}


def test_processor_rule_alerts_when_no_processor_reports(influx: Influx) -> None:
    database = influx.new_database()
    write(influx, database, [pipeline_line("gateway", "g-1", {"frames_in": 5}, int(time.time() - 30))])
    result = evaluate(RULES["strainwatch-processor-lag"], influx.ql(database), time.time())
    assert result.values["RA"] == [] and result.state == "Alerting"
    # the other rules stay quiet without data
    for uid in (
        "strainwatch-team-exposure-rising",
        "strainwatch-site-devices-silent",
        "strainwatch-dead-letter-rate",
    ):
        assert evaluate(RULES[uid], influx.ql(database), time.time()).state == "Normal", uid
