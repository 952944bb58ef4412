"""Is InfluxDB writable for the alerting service? (`influx` on /readyz, docs/operations.md)

The alerting service writes rarely (a point per decision and per outcome), so its writes alone
would find a bad token or a missing bucket only at the first alert, hours after a start. This
check writes an empty batch to the bucket through the write API the sink uses (`/api/v2/write`,
nothing is stored): InfluxDB authenticates the token and looks the bucket up before it reads the
body. 401/403/404 are fatal (retrying cannot fix them: the service stops consuming until it is
restarted with a fixed configuration); no answer or a 5xx is an outage, checked again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ssl
from dataclasses import dataclass

import aiohttp
import structlog

from strainwatch.config import Settings
from strainwatch.ops.readiness import Readiness

log = structlog.get_logger("strainwatch.alerts")

FATAL_STATUSES = (401, 403, 404)
CHECK_INTERVAL_S = 30.0
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class InfluxState:
    ok: bool
    fatal: bool
    detail: str


def _ssl_context(url: str) -> ssl.SSLContext | None:
    if not url.startswith("https"):
        return None
    cafile = None
    with contextlib.suppress(ImportError, AttributeError):  # the CA file setting (docs/security.md)
        found = importlib.import_module("strainwatch.tls").influx_ca_file()
        cafile = str(found) if found else None
    return ssl.create_default_context(cafile=cafile)


async def check_influx(settings: Settings, bucket: str | None = None) -> InfluxState:
    """One empty write to the bucket."""
    url = settings.influx_url.rstrip("/") + "/api/v2/write"
    params = {"bucket": bucket or settings.influx_bucket, "org": settings.influx_org, "precision": "s"}
    headers = {"Authorization": f"Token {settings.influx_token.get_secret_value()}"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session,
            session.post(
                url, params=params, data=b"", headers=headers, ssl=_ssl_context(url) or True
            ) as resp,
        ):
            body = (await resp.text())[:300]
            status = resp.status
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        return InfluxState(False, False, f"InfluxDB unreachable at {settings.influx_url}: {error!r}"[:300])
    if status < 300 or (status == 400 and "requires points" in body):  # 2.x refuses empty batches
        return InfluxState(True, False, "writable")
    if status in FATAL_STATUSES:
        what = "token refused" if status in (401, 403) else "bucket or database not found"
        detail = f"InfluxDB answered {status} ({what}) for bucket {params['bucket']}: {body}"
        return InfluxState(False, True, detail)
    return InfluxState(False, False, f"InfluxDB answered {status}: {body}")


async def watch_influx(
    settings: Settings, readiness: Readiness, stop: asyncio.Event, on_fatal: asyncio.Event
) -> None:
    """Sets `influx` on `readiness` every CHECK_INTERVAL_S (and at once); on a fatal answer logs
    one error, marks the check fatal, sets `on_fatal` and stops checking."""
    readiness.expect("influx")
    outage_logged = False
    while not stop.is_set():
        state = await check_influx(settings)
        if state.fatal:
            log.error("influx_refused", detail=state.detail, hint="check the token and the bucket")
            readiness.set("influx", False, state.detail, fatal=True)
            on_fatal.set()
            return
        if state.ok:
            if outage_logged:
                log.info("influx_recovered")
                outage_logged = False
            readiness.set("influx", True, state.detail)
        else:
            if not outage_logged:
                log.warning("influx_unavailable", detail=state.detail)
                outage_logged = True
            readiness.set("influx", False, state.detail)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), CHECK_INTERVAL_S)
