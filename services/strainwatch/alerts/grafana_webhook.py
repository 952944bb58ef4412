"""Grafana's alert webhook: manager alerts to the site's channels.

Grafana's contact point `strainwatch-alerting` (`deploy/grafana/provisioning/alerting/`, or
`strainwatch dashboards publish`) POSTs its webhook payload here (`POST /grafana/alerts`):

    {"receiver": ..., "status": "firing", "alerts": [{"status": "firing" | "resolved",
      "labels": {"alertname": ..., "site": ..., "team": ..., "audience": "manager", ...},
      "annotations": {"summary": ..., "description": ...}, "startsAt": ..., "endsAt": ...,
      "fingerprint": ..., "generatorURL": ...}, ...], ...}

Each alert with `audience=manager` and a `site` label goes, as one message, to that site's channels
in the channels file (the site's own `channels`, not its teams': team channels are for break prompts;
a site not in the file gets the `defaults` channels). Other alerts (`audience=operations`: the
pipeline's health, no site) are acknowledged and logged, not forwarded: they are for whoever runs
the pipeline, who reads them in Grafana.

Grafana repeats a firing alert every repeat interval and sends the whole group again when one alert
of it changes; an alert is forwarded once per change of its status: deduplicated by fingerprint and
status (the last status forwarded per fingerprint, the latest 10,000 fingerprints remembered in
memory, so a restart may forward an alert's current status once more). When a channel fails (after
the sender's retries) the answer is 502, so that Grafana retries; alerts that did reach all their
channels are then not sent again.

With a token configured, a request must carry `Authorization: Bearer <token>` (the contact point's
`authorization_credentials`); without one, bind to loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from strainwatch.alerts.channels import Channel, ChannelsConfig
from strainwatch.alerts.notify import ChannelSender

log = structlog.get_logger("strainwatch.alerts.grafana")

PATH = "/grafana/alerts"
DEFAULT_BIND = "127.0.0.1:8095"
REMEMBERED = 10_000
MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ManagerAlert:
    fingerprint: str
    status: str
    site: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: str
    ends_at: str

    @property
    def title(self) -> str:
        name = self.labels.get("alertname") or self.labels.get("strainwatch_rule") or "Grafana alert"
        where = "/".join(v for v in (self.site, self.labels.get("team", "")) if v)
        return f"[{self.status.upper()}] {name}: {where}"

    @property
    def body(self) -> str:
        lines = [self.annotations.get("summary") or self.labels.get("alertname", "")]
        if self.annotations.get("description"):
            lines.append(self.annotations["description"])
        if self.status == "resolved":
            lines.append(f"Started {self.starts_at}, resolved {self.ends_at}.")
        else:
            lines.append(f"Since {self.starts_at}.")
        return "\n".join(line for line in lines if line)


def parse_bind(text: str) -> tuple[str, int]:
    """'host:port' (IPv6 as '[::1]:8095'); ValueError saying what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bind address {text!r} is not host:port, e.g. {DEFAULT_BIND}")
    return host.strip("[]"), int(port)


def fingerprint(alert: Mapping[str, Any]) -> str:
    """Grafana's fingerprint, or one of the sorted labels when a sender leaves it out."""
    given = alert.get("fingerprint")
    if isinstance(given, str) and given:
        return given
    labels = alert.get("labels") or {}
    text = "\0".join(f"{k}\0{labels[k]}" for k in sorted(labels))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class PayloadError(ValueError):
    pass


def parse_payload(doc: Any) -> list[dict[str, Any]]:
    if not isinstance(doc, dict) or not isinstance(doc.get("alerts"), list):
        raise PayloadError("not a Grafana webhook payload: an object with an 'alerts' list is expected")
    alerts = []
    for i, alert in enumerate(doc["alerts"]):
        if not isinstance(alert, dict):
            raise PayloadError(f"alerts[{i}] is not an object")
        if alert.get("status") not in ("firing", "resolved"):
            raise PayloadError(f"alerts[{i}].status {alert.get('status')!r} is not firing or resolved")
        for key in ("labels", "annotations"):
            value = alert.get(key) or {}
            if not isinstance(value, dict):
                raise PayloadError(f"alerts[{i}].{key} is not an object")
        alerts.append(alert)
    return alerts


class GrafanaWebhook:
    def __init__(self, config: ChannelsConfig, token: str = "", remembered: int = REMEMBERED) -> None:
        self.config = config
        self.token = token
        self.remembered = remembered
        self._last_status: OrderedDict[str, str] = OrderedDict()
        self._senders: dict[str, ChannelSender] = {}
        self._lock = asyncio.Lock()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(PATH, self.handle)
        return app

    def channels(self, site: str) -> list[Channel]:
        out: dict[str, Channel] = {}
        for channel in self.config.site(site).channels:
            out.setdefault(channel.url, channel)
        return list(out.values())

    def _sender(self, channel: Channel) -> ChannelSender:
        sender = self._senders.get(channel.url)
        if sender is None:
            sender = self._senders[channel.url] = ChannelSender(channel)
        return sender

    def _authorized(self, request: web.Request) -> bool:
        if not self.token:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())

    async def handle(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            log.warning("grafana webhook: unauthorized request", peer=request.remote)
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            alerts = parse_payload(await request.json())
        except (ValueError, PayloadError) as error:
            message = str(error) if isinstance(error, PayloadError) else "body is not JSON"
            return web.json_response({"error": message}, status=400)
        async with self._lock:  # one payload at a time: the dedupe state stays consistent
            counts = await self._forward(alerts)
        status = 502 if counts["failed"] else 200
        return web.json_response(counts, status=status)

    async def _forward(self, alerts: list[dict[str, Any]]) -> dict[str, int]:
        counts = {"forwarded": 0, "duplicates": 0, "ignored": 0, "failed": 0}
        jobs: list[tuple[ManagerAlert, list[Channel]]] = []
        seen_now: set[tuple[str, str]] = set()
        for raw in alerts:
            labels = {str(k): str(v) for k, v in (raw.get("labels") or {}).items()}
            site = labels.get("site", "")
            if labels.get("audience") != "manager" or not site:
                counts["ignored"] += 1
                log.info(
                    "grafana alert not forwarded (not a manager alert with a site)",
                    alertname=labels.get("alertname"),
                    status=raw["status"],
                    audience=labels.get("audience"),
                )
                continue
            alert = ManagerAlert(
                fingerprint=fingerprint(raw),
                status=raw["status"],
                site=site,
                labels=labels,
                annotations={str(k): str(v) for k, v in (raw.get("annotations") or {}).items()},
                starts_at=str(raw.get("startsAt", "")),
                ends_at=str(raw.get("endsAt", "")),
            )
            key = (alert.fingerprint, alert.status)
            if self._last_status.get(alert.fingerprint) == alert.status or key in seen_now:
                counts["duplicates"] += 1
                continue
            seen_now.add(key)
            channels = self.channels(site)
            if not channels:
                counts["ignored"] += 1
                log.warning("grafana alert for a site without channels", site=site, alertname=alert.title)
                continue
            jobs.append((alert, channels))
        results = await asyncio.gather(
            *(asyncio.gather(*(self._sender(c).send(a.title, a.body) for c in chans)) for a, chans in jobs)
        )
        for (alert, channels), oks in zip(jobs, results, strict=True):
            if all(oks):
                counts["forwarded"] += 1
                self._remember(alert.fingerprint, alert.status)
            else:
                counts["failed"] += 1
                failed = [c.label for c, ok in zip(channels, oks, strict=True) if not ok]
                log.warning(
                    "grafana alert not delivered", site=alert.site, title=alert.title, channels=failed
                )
        return counts

    def _remember(self, fp: str, status: str) -> None:
        self._last_status[fp] = status
        self._last_status.move_to_end(fp)
        while len(self._last_status) > self.remembered:
            self._last_status.popitem(last=False)


async def serve(webhook: GrafanaWebhook, bind: str, stop: asyncio.Event) -> None:
    """Serve the webhook on `bind` until `stop` is set. A port that cannot be bound is logged and
    the webhook stays off: break prompts to workers must not stop for a manager alert channel."""
    host, port = parse_bind(bind)
    runner = web.AppRunner(webhook.app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as error:
            log.error("grafana webhook NOT serving: cannot bind", bind=bind, error=str(error))
            await stop.wait()
            return
        log.info("grafana webhook serving", bind=bind, path=PATH, token=bool(webhook.token))
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
