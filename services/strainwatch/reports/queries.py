"""Report-only InfluxQL, and a reader that runs many statements per request.

The report reads the hourly rollup as flat sums: one statement returns every sum a month needs
(`rollup_sums`), one per grouping the sums per team or task (`group_sums`), and a light subquery the
distinct workers per group (`group_workers`). Its ratios are the formulas of the figures in
`strainwatch.storage.figures` (ratios of totals), computed from these sums: InfluxDB 1.x runs one
flat statement over all fields several times faster than one nested figure per ratio, which is what
lets a month of 1,000 workers report in seconds. The integration test checks that both give the same
numbers on the same data.
"""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from strainwatch.storage.figures import HOURLY, WINDOWS, Scope
from strainwatch.storage.influxql import InfluxQL, InfluxQLError
from strainwatch.storage.measurements import BREAK_ACK, BREAK_ALERT, BREAK_PROMPT, EXPOSURE_HOURLY, INCIDENT

Row = dict[str, Any]


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _regex_alternatives(names: Sequence[str]) -> str:
    return "|".join(re.escape(n).replace("/", r"\/") for n in names)


def rollup_sums(scope: Scope, fields: Sequence[str], by: str | None = None) -> str:
    """Columns = `fields`: their sums over the scope (per `by` tag if given), flat (no subquery)."""
    cols = ", ".join(f'SUM("{f}") AS "{f}"' for f in fields)
    group = f' GROUP BY "{by}"' if by else ""
    return f"SELECT {cols} FROM {HOURLY} WHERE {scope.where()}{group}"


def group_workers(scope: Scope, by: str) -> str:
    """Column `workers`: distinct workers with wear time per `by` tag (a worker who changed team or
    task within the month counts in each)."""
    where = scope.where('"wear_s" > 0')
    return (
        f'SELECT COUNT("wear") AS "workers" FROM (SELECT SUM("wear_s") AS "wear" FROM {HOURLY} '
        f'WHERE {where} GROUP BY "{by}", "worker") WHERE {scope.time} GROUP BY "{by}"'
    )


def prompt_counts_by_kind(scope: Scope) -> str:
    """Column `prompts` per `kind`, `status` and `reason`. Counts the integer field `channels_ok`
    (on every prompt point): InfluxDB counts it faster than the
    string `alert_id`."""
    return (
        f'SELECT COUNT("channels_ok") AS "prompts" FROM "{BREAK_PROMPT}" WHERE {scope.where()} '
        'GROUP BY "kind", "status", "reason"'
    )


def conditioning_outcomes(scope: Scope, by: str | None = None) -> str:
    """Columns `taken` and `outcomes` of conditioning breaks (per `by` tag if given), flat: the 0/1
    `taken` field summed and counted (the figure `conditioning_compliance` nests a per-worker
    subquery, which InfluxDB 1.6 runs for seconds even over an empty month)."""
    group = f' GROUP BY "{by}"' if by else ""
    where = scope.where("\"kind\" = 'conditioning_break'")
    return (
        f'SELECT SUM("taken") AS "taken", COUNT("taken") AS "outcomes" FROM "{BREAK_ACK}" '
        f"WHERE {where}{group}"
    )


def outcome_workers(scope: Scope, by: str) -> str:
    """Column `workers`: distinct workers with a conditioning-break outcome per `by` tag."""
    where = scope.where("\"kind\" = 'conditioning_break'")
    return (
        f'SELECT COUNT("n") AS "workers" FROM (SELECT COUNT("taken") AS "n" FROM "{BREAK_ACK}" '
        f'WHERE {where} GROUP BY "{by}", "worker") WHERE {scope.time} GROUP BY "{by}"'
    )


def workers_outside(scope: Scope, by: str, kept: Sequence[str]) -> str:
    """Column `workers`: distinct workers with wear time in groups other than `kept` (the "other" row)."""
    extra = f'"{by}" !~ /^({_regex_alternatives(kept)})$/' if kept else ""
    where = scope.where('"wear_s" > 0', extra)
    return (
        f'SELECT COUNT("wear") AS "workers" FROM (SELECT SUM("wear_s") AS "wear" FROM {HOURLY} '
        f'WHERE {where} GROUP BY "worker") WHERE {scope.time}'
    )


def posture_nudges(scope: Scope) -> str:
    """Every posture nudge (alert second) per worker and segment: the starts of habituation spans."""
    where = scope.where("\"kind\" = 'posture_hold'")
    return f'SELECT "dose" FROM "{BREAK_ALERT}" WHERE {where} GROUP BY "worker", "segment"'


def posture_nudge_count(scope: Scope) -> str:
    """Column `nudges`: posture nudges in the scope (months without windows are only counted)."""
    where = scope.where("\"kind\" = 'posture_hold'")
    return f'SELECT COUNT("dose") AS "nudges" FROM "{BREAK_ALERT}" WHERE {where}'


def after_nudge(worker: str, segment: str, start_s: int, span_s: int) -> str:
    """Columns `at_risk` (seconds of the segment in its not-acceptable zone) and `observed` (seconds the
    segment was measured) in the 10-second windows starting within [start, start + span)."""
    zones = " + ".join(
        f'SUM("zone_{segment}_{z}_s")' for z in ("acceptable", "conditional", "not_acceptable")
    )
    return (
        f'SELECT SUM("zone_{segment}_not_acceptable_s") AS "at_risk", {zones} AS "observed" '
        f"FROM {WINDOWS} WHERE time >= {int(start_s)}s AND time < {int(start_s + span_s)}s "
        f'AND "worker" = {_quote(worker)}'
    )


def first_window(scope: Scope) -> str:
    """Column `first`: the oldest 10-second window still kept (in the scope's site and team)."""
    return f'SELECT FIRST("wear_s") AS "first" FROM {WINDOWS} WHERE {scope.where()}'


def tag_values(tag: str) -> str:
    """Values of `site` or `team` ever written to the rollup, incidents or prompts."""
    return f'SHOW TAG VALUES FROM "{EXPOSURE_HOURLY}", "{INCIDENT}", "{BREAK_PROMPT}" WITH KEY = "{tag}"'


def scope_workers(scope: Scope) -> str:
    """Column `workers`: distinct workers with wear time, with no privacy floor (the scope check)."""
    return workers_outside(scope, "worker", [])


class Reader:
    """Runs InfluxQL statements in batches (one `/query` request holds many, `;`-separated), a few
    requests at a time. Results come back in statement order, each as rows (tags merged in)."""

    def __init__(self, ql: InfluxQL, batch: int = 40, parallel: int = 4) -> None:
        self.ql = ql
        self.batch = batch
        self.parallel = parallel
        self.statements = 0
        self.requests = 0

    def rows(self, statement: str) -> list[Row]:
        return self.run([statement])[0]

    def run(self, statements: Sequence[str], per_request: int | None = None) -> list[list[Row]]:
        """`per_request`: statements per request (default: spread a few statements over the parallel
        requests, many light ones in batches of `batch`)."""
        size = per_request or max(1, min(self.batch, math.ceil(len(statements) / self.parallel)))
        chunks = [list(statements[i : i + size]) for i in range(0, len(statements), size)]
        if not chunks:
            return []
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(chunks))) as pool:
            answers = list(pool.map(self._request, chunks))
        return [rows for answer in answers for rows in answer]

    def _request(self, statements: list[str]) -> list[list[Row]]:
        data = urllib.parse.urlencode(
            {"db": self.ql.database, "q": ";\n".join(statements), "epoch": "s"}
        ).encode()
        request = urllib.request.Request(
            f"{self.ql.url}/query",
            data=data,
            headers={
                "Authorization": f"Token {self.ql.token}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        try:
            with urllib.request.urlopen(
                request, timeout=max(self.ql.timeout_s, 300.0), context=self.ql.context
            ) as resp:
                body = orjson.loads(resp.read())
        except urllib.error.HTTPError as error:
            raise InfluxQLError(f"InfluxQL HTTP {error.code}: {error.read()[:500]!r}") from error
        except OSError as error:
            raise InfluxQLError(f"InfluxDB unreachable at {self.ql.url}: {error}") from error
        if "error" in body:
            raise InfluxQLError(str(body["error"]))
        self.requests += 1
        self.statements += len(statements)
        results = body.get("results") or []
        out: list[list[Row]] = []
        for i, statement in enumerate(statements):
            result = results[i] if i < len(results) else {}
            if result.get("error"):
                raise InfluxQLError(f"{result['error']} in: {statement[:300]}")
            out.append(series_rows(result.get("series") or []))
        return out


def series_rows(series: list[dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    for s in series:
        tags = s.get("tags") or {}
        columns = s.get("columns") or []
        for values in s.get("values") or []:
            row: Row = dict(zip(columns, values, strict=False))
            row.update(tags)
            row.setdefault("_name", s.get("name"))
            rows.append(row)
    return rows
