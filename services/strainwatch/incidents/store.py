"""`incident` points in InfluxDB (docs/incidents.md).

The line builder is here rather than in storage/measurements.py because the incidents intake owns
the measurement; it uses that module's `line` and `INCIDENT`, so the line protocol stays one.
"""

from __future__ import annotations

import datetime as dt

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
