"""`incident` points in InfluxDB (docs/incidents.md).

The line builder is here rather than in storage/measurements.py because the incidents intake owns
the measurement; it uses that module's `line` and `INCIDENT`, so the line protocol stays one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from strainwatch.processor.sink import InfluxSink, SinkStopped
from strainwatch.storage.influxql import InfluxQL
from strainwatch.storage.measurements import INCIDENT, line

INCIDENT_TAGS = ("site", "team", "case_id", "body_part", "severity", "injury_type")
INCIDENT_FIELDS = ("count", "days_away", "days_restricted")


def date_ts_s(date: dt.date) -> int:
    """The incident date at 00:00 UTC, in whole seconds."""
    return int(dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC).timestamp())


def incident_line(
    site: str,
    team: str,
    case_id: str,
    body_part: str,
    severity: str,
    injury_type: str,
    days_away: int,
    days_restricted: int,
    date: dt.date,
) -> str:
    """One injury-log case as an `incident` point: count=1i, days as ints, ts = date 00:00 UTC (s)."""
    tags = {
        "site": site,
        "team": team,
        "case_id": case_id,
        "body_part": body_part,
        "severity": severity,
        "injury_type": injury_type,
    }
    fields: dict[str, float | int | str | bool] = {
        "count": 1,
        "days_away": int(days_away),
        "days_restricted": int(days_restricted),
    }
    return line(INCIDENT, tags, fields, date_ts_s(date))


# --- the writer --------------------------------------------------------------------------------
#
# InfluxDB identifies a point by measurement, tag set and time. An incident's body part, severity,
# injury type, site and team are tags (the report groups by them), so a corrected case is a point
# of another series: writing it would add a second point beside the old one. The case id is the
# identity, hence per case:
#   - no point stored                           -> write it                      (imported)
#   - exactly the point the row makes is stored -> write nothing                 (unchanged)
#   - anything else (other tags, date or days,  -> delete every `incident` point (replaced)
#     or several points)                           of the case id, then write it
# After writing, the store reads every case back and checks that each has exactly its one point.
#
# Deleting by case id: InfluxDB 1.x runs InfluxQL `DELETE FROM "incident" WHERE "case_id" = '...'`
# (POST /query). 2.x's InfluxQL is read-only: it deletes through POST /api/v2/delete with a
# predicate `_measurement="incident" AND case_id="..."`. 3.x cannot delete points at all, so a
# correction is refused there (new and unchanged cases still import). The server's major version
# comes from the X-Influxdb-Version header of /ping.

QUERY_CHUNK = 100  # case ids per InfluxQL read
# /api/v2/delete needs a time range: InfluxDB's whole range of nanosecond timestamps
_V2_DELETE_START = "1677-09-21T00:12:43.145224194Z"
_V2_DELETE_STOP = "2262-04-11T23:47:16.854775806Z"


class IncidentStoreError(RuntimeError):
    pass


class RowLike(Protocol):
    """What the store needs of a validated row (csv_log.IncidentRow)."""

    @property
    def case_id(self) -> str: ...
    @property
    def site(self) -> str: ...
    @property
    def team(self) -> str: ...
    @property
    def body_part(self) -> str: ...
    @property
    def classification(self) -> str: ...
    @property
    def injury_type(self) -> str: ...
    @property
    def days_away(self) -> int: ...
    @property
    def days_restricted(self) -> int: ...
    @property
    def date(self) -> dt.date: ...


@dataclass(frozen=True)
class StoredIncident:
    """One `incident` point as InfluxDB holds it."""

    tags: tuple[tuple[str, str], ...]  # sorted (name, value), INCIDENT_TAGS only
    ts_s: int
    fields: tuple[tuple[str, int], ...]  # sorted (name, value)

    @classmethod
    def of(cls, row: RowLike) -> StoredIncident:
        """The point a row makes."""
        tags = {
            "site": row.site,
            "team": row.team,
            "case_id": row.case_id,
            "body_part": row.body_part,
            "severity": row.classification,
            "injury_type": row.injury_type,
        }
        fields = {"count": 1, "days_away": int(row.days_away), "days_restricted": int(row.days_restricted)}
        return cls(tuple(sorted(tags.items())), date_ts_s(row.date), tuple(sorted(fields.items())))

    def describe_change(self, new: StoredIncident) -> str:
        """What differs from `new`, e.g. 'body_part neck → shoulder'."""
        old_tags, new_tags = dict(self.tags), dict(new.tags)
        old_fields, new_fields = dict(self.fields), dict(new.fields)
        changes = [
            f"{name} {old_tags.get(name, '')} → {new_tags.get(name, '')}"
            for name in INCIDENT_TAGS
            if old_tags.get(name) != new_tags.get(name)
        ]
        if self.ts_s != new.ts_s:
            old_day = dt.datetime.fromtimestamp(self.ts_s, dt.UTC).date()
            new_day = dt.datetime.fromtimestamp(new.ts_s, dt.UTC).date()
            changes.append(f"date {old_day} → {new_day}")
        changes += [
            f"{name} {old_fields.get(name)} → {new_fields.get(name)}"
            for name in INCIDENT_FIELDS
            if old_fields.get(name) != new_fields.get(name)
        ]
        return ", ".join(changes)


@dataclass(frozen=True)
class Replacement:
    row: Any  # RowLike
    old: tuple[StoredIncident, ...]

    def describe(self) -> str:
        new = StoredIncident.of(self.row)
        if len(self.old) == 1:
            return f"case {self.row.case_id}: {self.old[0].describe_change(new)}"
        return f"case {self.row.case_id}: {len(self.old)} stored points replaced by one"


@dataclass
class Plan:
    new: list[Any] = field(default_factory=list)  # RowLike
    unchanged: list[Any] = field(default_factory=list)
    replaced: list[Replacement] = field(default_factory=list)

    def lines(self) -> list[str]:
        rows = [*self.new, *(r.row for r in self.replaced)]
        return [_row_line(row) for row in rows]


def _row_line(row: RowLike) -> str:
    return incident_line(
        row.site,
        row.team,
        row.case_id,
        row.body_part,
        row.classification,
        row.injury_type,
        row.days_away,
        row.days_restricted,
        row.date,
    )


def _ql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _flux_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class IncidentStore:
    """`incident` points: read by case id, plan an import, delete and write (see above)."""

    def __init__(self, url: str, token: str, org: str, bucket: str, *, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.org = org
        self.bucket = bucket
        self.timeout_s = timeout_s
        self.ql = InfluxQL(self.url, token, bucket, timeout_s=timeout_s)
        self._major: int | None = None

    # -- reads
    def stored(self, case_ids: Iterable[str]) -> dict[str, list[StoredIncident]]:
        """Every `incident` point of these case ids (any retention policy's default reads)."""
        ids = sorted(set(case_ids))
        found: dict[str, list[StoredIncident]] = {}
        for start in range(0, len(ids), QUERY_CHUNK):
            chunk = ids[start : start + QUERY_CHUNK]
            where = " OR ".join(f'"case_id" = {_ql_string(c)}' for c in chunk)
            series = self.ql.query(
                f'SELECT "count", "days_away", "days_restricted" FROM "{INCIDENT}" WHERE {where} GROUP BY *'
            )
            for s in series:
                tags = {k: v for k, v in (s.get("tags") or {}).items() if k in INCIDENT_TAGS and v}
                columns = s["columns"]
                for values in s.get("values") or []:
                    point = dict(zip(columns, values, strict=True))
                    fields = tuple(
                        sorted((f, int(point[f])) for f in INCIDENT_FIELDS if point.get(f) is not None)
                    )
                    found.setdefault(tags.get("case_id", ""), []).append(
                        StoredIncident(tuple(sorted(tags.items())), int(point["time"]), fields)
                    )
        return found

    def plan(self, rows: Sequence[RowLike]) -> Plan:
        stored = self.stored(row.case_id for row in rows)
        plan = Plan()
        for row in rows:
            old = stored.get(row.case_id, [])
            if not old:
                plan.new.append(row)
            elif old == [StoredIncident.of(row)]:
                plan.unchanged.append(row)
            else:
                plan.replaced.append(Replacement(row, tuple(old)))
        return plan

    # -- writes
    def apply(self, plan: Plan) -> None:
        """Delete the replaced cases' points, write new and replaced ones, check every case."""
        if plan.replaced:
            deleter = self._deleter()
            for replacement in plan.replaced:
                deleter(replacement.row.case_id)
        lines = plan.lines()
        if lines:
            asyncio.run(self._write(lines))
        self.verify([*plan.new, *plan.unchanged, *(r.row for r in plan.replaced)])

    def verify(self, rows: Sequence[RowLike]) -> None:
        stored = self.stored(row.case_id for row in rows)
        wrong = [row.case_id for row in rows if stored.get(row.case_id, []) != [StoredIncident.of(row)]]
        if wrong:
            raise IncidentStoreError(
                f"after writing, {len(wrong)} case(s) do not hold exactly their one point: "
                + ", ".join(wrong[:10])
                + (" …" if len(wrong) > 10 else "")
            )

    async def _write(self, lines: list[str]) -> None:
        # the services' sink (the same /api/v2/write, precision s); it retries while InfluxDB is
        # down, so a command gives up after timeout_s instead of waiting forever
        sink = InfluxSink(self.url, self.token, self.org, self.bucket, max_backoff_s=2.0)
        sink.add(lines)
        loop = asyncio.get_running_loop()
        give_up = loop.call_later(self.timeout_s, sink.request_stop)
        try:
            await sink.flush(give_up_when_stopping=True)
        except SinkStopped:
            raise IncidentStoreError(
                f"InfluxDB at {self.url} did not accept the points within {self.timeout_s:.0f} s "
                f"(bucket {self.bucket}); nothing more was written, run the import again"
            ) from None
        finally:
            give_up.cancel()
            await sink.close()

    def server_major_version(self) -> int | None:
        """1, 2 or 3 from /ping's X-Influxdb-Version ('1.6.7', 'v2.7.10', '3.0.1'); None if unsaid."""
        if self._major is None:
            request = urllib.request.Request(
                f"{self.url}/ping", headers={"Authorization": f"Token {self.token}"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s, context=self.ql.context) as resp:
                    version = resp.headers.get("X-Influxdb-Version", "")
            except urllib.error.HTTPError as error:
                version = error.headers.get("X-Influxdb-Version", "") if error.headers else ""
            except OSError as error:
                raise IncidentStoreError(f"InfluxDB unreachable at {self.url}: {error}") from error
            digits = version.lstrip("vV").split(".", 1)[0]
            self._major = int(digits) if digits.isdigit() else 0
        return self._major or None

    def _deleter(self) -> Callable[[str], None]:
        major = self.server_major_version()
        if major == 2:
            return self.delete_case_v2
        if major is not None and major >= 3:
            raise IncidentStoreError(
                "InfluxDB 3 cannot delete points, so a corrected case cannot replace its old point; "
                "import corrections on InfluxDB 1.x or 2.x"
            )
        return self.delete_case_influxql

    def delete_case_influxql(self, case_id: str) -> None:
        """InfluxDB 1.x: InfluxQL DELETE (POST /query: 1.x refuses writes over GET)."""
        statement = f'DELETE FROM "{INCIDENT}" WHERE "case_id" = {_ql_string(case_id)}'
        body = urllib.parse.urlencode({"db": self.bucket, "q": statement}).encode()
        request = urllib.request.Request(
            f"{self.url}/query",
            data=body,
            method="POST",
            headers={
                "Authorization": f"Token {self.token}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        answer = self._send(request, "InfluxQL DELETE")
        results = (answer or {}).get("results") or [{}]
        if answer and ("error" in answer or results[0].get("error")):
            raise IncidentStoreError(
                f"InfluxQL DELETE of case {case_id}: {answer.get('error') or results[0].get('error')}"
            )

    def delete_case_v2(self, case_id: str) -> None:
        """InfluxDB 2.x: POST /api/v2/delete with a predicate (2.x's InfluxQL cannot delete)."""
        params = urllib.parse.urlencode({"org": self.org, "bucket": self.bucket})
        payload = {
            "start": _V2_DELETE_START,
            "stop": _V2_DELETE_STOP,
            "predicate": f"_measurement={_flux_string(INCIDENT)} AND case_id={_flux_string(case_id)}",
        }
        request = urllib.request.Request(
            f"{self.url}/api/v2/delete?{params}",
            data=orjson.dumps(payload),
            method="POST",
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
        )
        self._send(request, "/api/v2/delete")

    def _send(self, request: urllib.request.Request, what: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=self.ql.context) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as error:
            raise IncidentStoreError(f"{what}: HTTP {error.code}: {error.read()[:500]!r}") from error
        except OSError as error:
            raise IncidentStoreError(f"InfluxDB unreachable at {self.url}: {error}") from error
        return orjson.loads(raw) if raw.strip() else None


__all__ = [
    "INCIDENT_FIELDS",
    "INCIDENT_TAGS",
    "IncidentStore",
    "IncidentStoreError",
    "Plan",
    "Replacement",
    "StoredIncident",
    "date_ts_s",
    "incident_line",
]
