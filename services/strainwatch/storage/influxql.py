"""InfluxQL reads on `/query` (InfluxDB 1.x, 2.x v1-compat, 3.x) and the queries strainwatch runs.

Errors come back as HTTP 200 with `results[i].error` set on 2.x, so every read checks it. The token
goes in `Authorization: Token ...` (2.x answers `Bearer` with 401).
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson

from strainwatch.storage.measurements import BREAK_ACK, BREAK_ALERT, BREAK_PROMPT, EXPOSURE, source
from strainwatch.tls import describe_tls_error, influx_ssl_context


class InfluxQLError(RuntimeError):
    pass


class InfluxQL:
    def __init__(
        self, url: str, token: str, database: str, timeout_s: float = 30.0, *, ca_file: str | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.database = database
        self.timeout_s = timeout_s
        # https: verified against STRAINWATCH_INFLUX_CA_FILE (or the system's CAs), docs/security.md
        self.context = influx_ssl_context(ca_file) if self.url.startswith("https:") else None

    def query(self, q: str) -> list[dict[str, Any]]:
        """Run one statement; returns its series (name, tags, columns, values), raising on any error."""
        params = urllib.parse.urlencode({"db": self.database, "q": q, "epoch": "s"})
        request = urllib.request.Request(
            f"{self.url}/query?{params}", headers={"Authorization": f"Token {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=self.context) as resp:
                body = orjson.loads(resp.read())
        except urllib.error.HTTPError as error:
            raise InfluxQLError(f"InfluxQL HTTP {error.code}: {error.read()[:500]!r}") from error
        except OSError as error:
            untrusted = describe_tls_error(self.url, error)
            raise InfluxQLError(untrusted or f"InfluxDB unreachable at {self.url}: {error}") from error
        if "error" in body:
            raise InfluxQLError(str(body["error"]))
        results = body.get("results") or [{}]
        if results[0].get("error"):
            raise InfluxQLError(str(results[0]["error"]))
        return list(results[0].get("series") or [])

    def scalar(self, q: str) -> float:
        series = self.query(q)
        if not series or not series[0].get("values"):
            return 0.0
        value = series[0]["values"][0][1]
        return float(value or 0.0)


# --- queries shared by the demo, reports, dashboards and tests -------------------------------


def _where(where: str) -> str:
    return f" WHERE {where}" if where else ""


def exposure_points_count() -> str:
    return f'SELECT COUNT("wear_s") FROM {source(EXPOSURE)}'


def exposure_field_sum(field: str, where: str = "") -> str:
    return f'SELECT SUM("{field}") FROM {source(EXPOSURE)}' + _where(where)


def break_alert_counts(by: str = "kind", where: str = "") -> str:
    """Alerts per tag value: `kind` or `segment` (a tag since two segments can alert in one second)."""
    return f'SELECT COUNT("dose") FROM "{BREAK_ALERT}"{_where(where)} GROUP BY "{by}"'


def break_alert_points(where: str = "") -> str:
    """Every alert point with its tags (segment included) as series tags."""
    return f'SELECT "dose", "alert_id" FROM "{BREAK_ALERT}"{_where(where)} GROUP BY *'


def break_prompt_counts(where: str = "") -> str:
    """Prompt decisions per status and reason (suppressed ones carry their reason)."""
    return f'SELECT COUNT("alert_id") FROM "{BREAK_PROMPT}"{_where(where)} GROUP BY "status", "reason"'


def break_ack_counts(where: str = "") -> str:
    """Break outcomes per outcome (taken, acknowledged, ignored)."""
    return f'SELECT COUNT("alert_id") FROM "{BREAK_ACK}"{_where(where)} GROUP BY "outcome"'
