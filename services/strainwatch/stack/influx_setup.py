"""The InfluxDB a stack or an operator points at: which kind it is (1.x, 2.x, 3.x), and strainwatch's
database layout on it (docs/architecture.md, "Volume, rollups and retention"; docs/deploy.md).

- 1.x: `CREATE DATABASE` and two retention policies, `autogen` (the default, everything but the
  10-second windows) and `windows`, over InfluxQL with the token.
- 2.x: `CREATE DATABASE` is not implemented there; the buckets API makes the main bucket and
  `<bucket>/windows` with their retention rules, and DBRP mappings let InfluxQL read them as
  database `<bucket>`, retention policies `autogen` and `windows` (what deploy/influxdb's init
  script does with the `influx` CLI).
- 3.x: not provisioned here (its databases and retention are set with its own CLI); a clear error.

Every request carries `Authorization: Token <token>`; a 401/403 is reported as a token problem, never
retried.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from strainwatch.stack.procs import StackError
from strainwatch.storage.measurements import WINDOWS_RP

log = structlog.get_logger("strainwatch.stack")

Kind = Literal["1", "2", "3"]
DAY_S = 86_400


class InfluxAuthError(StackError):
    """The server refused the token (401/403): retrying cannot help."""


@dataclass(frozen=True)
class InfluxServer:
    url: str
    token: str
    kind: Kind
    version: str


def request(
    url: str,
    token: str,
    method: str,
    path: str,
    what: str,
    *,
    params: dict[str, str] | None = None,
    body: Any = None,
    form: dict[str, str] | None = None,
    ok: tuple[int, ...] = (200, 201, 204),
) -> tuple[int, Any, dict[str, str]]:
    """One HTTP request; returns (status, parsed JSON body or None, headers). 401/403 raise
    InfluxAuthError, other statuses outside `ok` raise StackError with the server's message."""
    full = url.rstrip("/") + path + ("?" + urllib.parse.urlencode(params) if params else "")
    headers = {"Authorization": f"Token {token}"} if token else {}
    data: bytes | None = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    elif form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(full, data=data, headers=headers, method=method)
    context = None
    if full.startswith("https:"):
        from strainwatch.tls import influx_ssl_context

        context = influx_ssl_context()
    try:
        with urllib.request.urlopen(req, timeout=15, context=context) as resp:
            status, raw, got = int(resp.status), resp.read(), dict(resp.headers.items())
    except urllib.error.HTTPError as error:
        status, raw, got = int(error.code), error.read(), dict(error.headers.items())
    except OSError as error:
        raise StackError(f"{what}: InfluxDB at {url} unreachable: {error}") from error
    parsed: Any = None
    if raw:
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
    if status in (401, 403):
        detail = parsed.get("message") if isinstance(parsed, dict) else raw[:200].decode(errors="replace")
        raise InfluxAuthError(
            f"{what}: InfluxDB at {url} refused the token (HTTP {status}: {detail}); set "
            "STRAINWATCH_INFLUX_TOKEN (or _FILE) to a token with read and write access to the buckets"
            + (" and the org's buckets/DBRP permissions" if path.startswith("/api/v2/") else "")
        )
    if status not in ok:
        detail = parsed.get("message") if isinstance(parsed, dict) else raw[:300].decode(errors="replace")
        raise StackError(f"{what}: InfluxDB at {url} answered HTTP {status}: {detail}")
    return status, parsed, got


def detect(url: str, token: str) -> InfluxServer:
    """The server's kind from `/ping`'s X-Influxdb-Version header (`/ping` needs no token)."""
    _, _, headers = request(url, "", "GET", "/ping", "detecting the InfluxDB version")
    version = next((v for k, v in headers.items() if k.lower() == "x-influxdb-version"), "")
    major = version.lstrip("vV").split(".", 1)[0]
    if major not in ("1", "2", "3"):
        raise StackError(
            f"{url} does not look like InfluxDB 1.x, 2.x or 3.x (/ping's X-Influxdb-Version: {version!r})"
        )
    return InfluxServer(url.rstrip("/"), token, major, version)  # type: ignore[arg-type]


def split_windows_bucket(bucket: str, windows_bucket: str | None) -> tuple[str, str]:
    """The windows bucket as (database, retention policy) for 1.x: `<db>/<rp>`."""
    name = windows_bucket or f"{bucket}/{WINDOWS_RP}"
    database, _, rp = name.partition("/")
    return database, rp or "autogen"


def provision(
    server: InfluxServer,
    *,
    org: str,
    bucket: str,
    windows_bucket: str | None = None,
    windows_retention_days: int = 35,
    retention_days: int = 1825,
) -> dict[str, Any]:
    """strainwatch's layout on the server, creating what is missing and setting retention; idempotent."""
    if server.kind == "1":
        windows_db, windows_rp = split_windows_bucket(bucket, windows_bucket)
        if windows_db != bucket:
            raise StackError(
                f"on InfluxDB 1.x the windows bucket must be '{bucket}/<retention policy>', "
                f"not {windows_bucket!r}"
            )
        create_database(server.url, bucket, windows_retention_days, retention_days, server.token, windows_rp)
        return {"kind": "1.x", "database": bucket, "retention_policies": ["autogen", windows_rp]}
    if server.kind == "2":
        return _provision_v2(
            server,
            org=org,
            bucket=bucket,
            windows_bucket=windows_bucket or f"{bucket}/{WINDOWS_RP}",
            windows_retention_days=windows_retention_days,
            retention_days=retention_days,
        )
    raise StackError(
        f"InfluxDB {server.version} at {server.url} is 3.x: create its databases yourself "
        f"(`influxdb3 create database {bucket}` and `{windows_bucket or bucket + '/' + WINDOWS_RP}` with "
        "their retention) and run without `stack up` provisioning it"
    )


def org_id(server: InfluxServer, org: str) -> str:
    _, body, _ = request(
        server.url,
        server.token,
        "GET",
        "/api/v2/orgs",
        f"looking up org {org}",
        params={"org": org},
        ok=(200, 404),
    )
    orgs = (body or {}).get("orgs") or []
    if not orgs:
        raise StackError(f"org {org!r} not found at {server.url} (set STRAINWATCH_INFLUX_ORG)")
    return str(orgs[0]["id"])


def bucket_id(server: InfluxServer, oid: str, name: str) -> tuple[str, dict[str, Any]] | None:
    _, body, _ = request(
        server.url,
        server.token,
        "GET",
        "/api/v2/buckets",
        f"looking up bucket {name}",
        params={"orgID": oid, "name": name},
        ok=(200, 404),
    )
    buckets = (body or {}).get("buckets") or []
    return (str(buckets[0]["id"]), buckets[0]) if buckets else None


def _rules(days: int) -> list[dict[str, Any]]:
    return [{"type": "expire", "everySeconds": int(days) * DAY_S}] if days else []


def _provision_v2(
    server: InfluxServer,
    *,
    org: str,
    bucket: str,
    windows_bucket: str,
    windows_retention_days: int,
    retention_days: int,
) -> dict[str, Any]:
    oid = org_id(server, org)
    ids: dict[str, str] = {}
    created: list[str] = []
    for name, days in ((bucket, retention_days), (windows_bucket, windows_retention_days)):
        found = bucket_id(server, oid, name)
        if found is None:
            _, body, _ = request(
                server.url,
                server.token,
                "POST",
                "/api/v2/buckets",
                f"creating bucket {name}",
                body={"orgID": oid, "name": name, "retentionRules": _rules(days)},
            )
            ids[name] = str(body["id"])
            created.append(name)
            continue
        ids[name], existing = found
        have = [
            int(r.get("everySeconds", 0))
            for r in existing.get("retentionRules") or []
            if r.get("type") == "expire"
        ]
        if have != [int(days) * DAY_S] * bool(days):
            request(
                server.url,
                server.token,
                "PATCH",
                f"/api/v2/buckets/{ids[name]}",
                f"setting retention of bucket {name}",
                body={"retentionRules": _rules(days)},
            )
    _, body, _ = request(
        server.url,
        server.token,
        "GET",
        "/api/v2/dbrps",
        f"reading InfluxQL mappings of {bucket}",
        params={"orgID": oid, "db": bucket},
    )
    mapped = {str(m.get("retention_policy")) for m in (body or {}).get("content") or []}
    for rp, name, default in (("autogen", bucket, True), (WINDOWS_RP, windows_bucket, False)):
        if rp in mapped:
            continue
        request(
            server.url,
            server.token,
            "POST",
            "/api/v2/dbrps",
            f"mapping InfluxQL {bucket}.{rp}",
            body={
                "orgID": oid,
                "bucketID": ids[name],
                "database": bucket,
                "retention_policy": rp,
                "default": default,
            },
        )
    return {"kind": "2.x", "buckets": [bucket, windows_bucket], "created": created}


def create_database(
    influx_url: str,
    database: str,
    windows_retention_days: int = 35,
    retention_days: int = 1825,
    token: str = "",
    windows_rp: str = WINDOWS_RP,
) -> None:
    """The InfluxDB 1.x database and its two retention policies:

    - `autogen` (the default): everything but the 10-second windows, kept `retention_days`
      (0 = forever): hourly rollups, alerts, prompts, outcomes, incidents, pipeline health;
    - `windows`: the 10-second `exposure` windows, kept `windows_retention_days`.
    """
    influxql(influx_url, token, f'CREATE DATABASE "{database}"', f"creating database {database}")
    existing = influxql(influx_url, token, f'SHOW RETENTION POLICIES ON "{database}"', "reading retention")
    names = {row[0] for series in existing for row in series.get("values") or []}
    for name, days in (("autogen", retention_days), (windows_rp, windows_retention_days)):
        duration = f"{int(days)}d" if days else "INF"
        verb = "ALTER" if name in names else "CREATE"
        influxql(
            influx_url,
            token,
            f'{verb} RETENTION POLICY "{name}" ON "{database}" DURATION {duration} REPLICATION 1',
            f"setting retention {name} of {database}",
        )


def influxql(
    influx_url: str, token: str, statement: str, what: str, database: str | None = None
) -> list[dict[str, Any]]:
    """One InfluxQL statement as a POST to /query (writes and DDL need POST); returns its series."""
    form = {"q": statement}
    if database:
        form["db"] = database
    _, body, _ = request(influx_url, token, "POST", "/query", what, form=form)
    results = (body or {}).get("results", [])
    errors = [r.get("error") for r in results if r.get("error")]
    if (body or {}).get("error"):
        errors.insert(0, body["error"])
    if errors:
        raise StackError(f"{what}: {errors[0]}")
    return list(results[0].get("series") or []) if results else []
