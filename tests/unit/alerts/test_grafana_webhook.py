"""Grafana's alert webhook in the alerting service: real HTTP to the handler (aiohttp on 127.0.0.1),
channel messages through apprise's json:// to a local receiver that records every request, as the
alerting tests do. Asserts the exact channel requests: which site's channels, the JSON apprise
posts, once per alert status."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import pytest
from typer.testing import CliRunner

from strainwatch.alerts.channels import ChannelsConfig
from strainwatch.alerts.grafana_webhook import PATH, GrafanaWebhook, serve
from strainwatch.stack.procs import free_port

pytestmark = pytest.mark.integration  # loopback sockets (the unit marker promises none)

TOKEN = "hook-secret"


class Receiver:
    """Records (path, JSON body) of every POST; answers 200."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            out, self.requests = self.requests, []
        return sorted(out, key=lambda r: (r[0], r[1]["title"]))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    handle = Receiver()
    yield handle
    handle.close()


def config(port: int) -> ChannelsConfig:
    def channel(path: str) -> dict[str, Any]:
        return {"url": f"json://127.0.0.1:{port}/{path}", "rate_per_s": 1000}

    return ChannelsConfig.model_validate(
        {
            "defaults": {"channels": [channel("defaults")]},
            "sites": {
                "plant-1": {
                    "channels": [channel("plant-1"), channel("plant-1-ehs")],
                    "teams": {"assembly": {"channels": [channel("assembly-prompts")]}},
                },
                "plant-2": {"channels": [channel("plant-2")]},
                "plant-down": {
                    "channels": [{"url": f"json://127.0.0.1:{free_port()}/nobody", "rate_per_s": 1000}]
                },
            },
        }
    )


RISING = {
    "alertname": "Team exposure rising against its 4-week baseline",
    "audience": "manager",
    "grafana_folder": "strainwatch",
    "site": "plant-1",
    "strainwatch_rule": "team_exposure_rising",
    "team": "assembly",
}
RISING_NOTES = {
    "summary": "Team assembly at plant-1: upper-back dose per monitored hour 14 over the last 24 h, "
    "against 10 over the 28 days before",
    "description": "The team's upper-back strain dose per monitored hour rose above 1.25 times its own "
    "4-week baseline (teams of at least 5 workers).",
}
SILENT = {
    "alertname": "Site devices silent",
    "audience": "manager",
    "grafana_folder": "strainwatch",
    "site": "plant-9",
    "strainwatch_rule": "site_devices_silent",
}
LAG = {
    "alertname": "Processor lag or stale checkpoints",
    "audience": "operations",
    "grafana_folder": "strainwatch",
    "instance": "processor-0",
    "strainwatch_rule": "processor_lag",
}


def alert(
    status: str, labels: dict[str, str], fp: str, notes: dict[str, str] | None = None, ends: str | None = None
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": labels,
        "annotations": notes or {"summary": f"{labels['alertname']} summary"},
        "startsAt": "2026-11-29T09:00:00Z",
        "endsAt": ends or "0001-01-01T00:00:00Z",
        "generatorURL": "http://grafana:3000/alerting/grafana/x/view",
        "fingerprint": fp,
        "silenceURL": "http://grafana:3000/alerting/silence/new",
        "dashboardURL": "",
        "panelURL": "",
        "values": {"RA": 14.0, "RB": 10.0},
        "valueString": "[ var='RA' value=14 ], [ var='RB' value=10 ]",
    }


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    firing = [a for a in alerts if a["status"] == "firing"]
    return {
        "receiver": "strainwatch-alerting",
        "status": "firing" if firing else "resolved",
        "orgId": 1,
        "alerts": list(alerts),
        "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://grafana:3000/",
        "version": "1",
        "groupKey": '{}/{strainwatch_rule=~".+"}:{alertname="x"}',
        "truncatedAlerts": 0,
        "title": "[FIRING:1] x",
        "state": "alerting" if firing else "ok",
        "message": "...",
    }


def apprise_json(title: str, message: str) -> dict[str, Any]:
    return {"version": "1.0", "title": title, "message": message, "attachments": [], "type": "info"}


async def post_all(
    port: int, webhook: GrafanaWebhook, bodies: list[Any], headers: dict[str, str] | None = None
) -> list[tuple[int, Any]]:
    stop = asyncio.Event()
    server = asyncio.create_task(serve(webhook, f"127.0.0.1:{port}", stop))
    answers = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):  # until the server listens (no fixed sleep)
                try:
                    async with session.post(f"http://127.0.0.1:{port}/nothing"):
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.02)
            for body in bodies:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                send = {"Content-Type": "application/json"} | (headers or {})
                async with session.post(f"http://127.0.0.1:{port}{PATH}", data=data, headers=send) as resp:
                    answers.append((resp.status, await resp.json()))
    finally:
        stop.set()
        await server
    return answers


def test_manager_alerts_go_to_their_sites_channels_once_per_status(receiver: Receiver) -> None:
    webhook = GrafanaWebhook(config(receiver.port), token=TOKEN)
    port = free_port()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    firing = payload(alert("firing", RISING, "fp-rising", RISING_NOTES), alert("firing", LAG, "fp-lag"))
    resolved = payload(
        alert("resolved", RISING, "fp-rising", RISING_NOTES, ends="2026-11-29T11:00:00Z"),
        alert("firing", LAG, "fp-lag"),
    )
    silent = payload(alert("firing", SILENT, "fp-silent"))

    async def scenario() -> list[Any]:
        out: list[Any] = []
        for body in (firing, firing, resolved, resolved, firing, silent):
            out.append(await post_all(port, webhook, [body], auth))
            out.append(receiver.take())
        return out

    results = asyncio.run(scenario())
    answers, sent = results[0::2], results[1::2]
    title = "[FIRING] Team exposure rising against its 4-week baseline: plant-1/assembly"
    body = f"{RISING_NOTES['summary']}\n{RISING_NOTES['description']}\nSince 2026-11-29T09:00:00Z."
    # first delivery: the site's two channels, not the team's prompt channel, nothing for the
    # operations alert
    assert answers[0] == [(200, {"forwarded": 1, "duplicates": 0, "ignored": 1, "failed": 0})]
    assert sent[0] == [("/plant-1", apprise_json(title, body)), ("/plant-1-ehs", apprise_json(title, body))]
    # Grafana repeating the group: nothing new
    assert answers[1] == [(200, {"forwarded": 0, "duplicates": 1, "ignored": 1, "failed": 0})]
    assert sent[1] == []
    # resolved: once
    resolved_title = "[RESOLVED] Team exposure rising against its 4-week baseline: plant-1/assembly"
    resolved_body = (
        f"{RISING_NOTES['summary']}\n{RISING_NOTES['description']}\n"
        "Started 2026-11-29T09:00:00Z, resolved 2026-11-29T11:00:00Z."
    )
    assert answers[2] == [(200, {"forwarded": 1, "duplicates": 0, "ignored": 1, "failed": 0})]
    assert sent[2] == [
        ("/plant-1", apprise_json(resolved_title, resolved_body)),
        ("/plant-1-ehs", apprise_json(resolved_title, resolved_body)),
    ]
    assert sent[3] == []
    # firing again after it resolved: a new notification
    assert sent[4] == [("/plant-1", apprise_json(title, body)), ("/plant-1-ehs", apprise_json(title, body))]
    # a site not in the channels file: the defaults' channels
    silent_title = "[FIRING] Site devices silent: plant-9"
    assert sent[5] == [
        ("/defaults", apprise_json(silent_title, "Site devices silent summary\nSince 2026-11-29T09:00:00Z."))
    ]


def test_unauthorized_and_malformed_requests_send_nothing(receiver: Receiver) -> None:
    webhook = GrafanaWebhook(config(receiver.port), token=TOKEN)
    good = payload(alert("firing", RISING, "fp-1", RISING_NOTES))
    answers = asyncio.run(
        post_all(free_port(), webhook, [good], {"Authorization": "Bearer wrong"})
    ) + asyncio.run(
        post_all(
            free_port(),
            webhook,
            [b"not json", {"alerts": "x"}, {"alerts": [{"status": "pending", "labels": {}}]}],
            {"Authorization": f"Bearer {TOKEN}"},
        )
    )
    assert answers == [
        (401, {"error": "unauthorized"}),
        (400, {"error": "body is not JSON"}),
        (400, {"error": "not a Grafana webhook payload: an object with an 'alerts' list is expected"}),
        (400, {"error": "alerts[0].status 'pending' is not firing or resolved"}),
    ]
    assert receiver.take() == []


def test_a_failed_channel_answers_502_and_is_tried_again(receiver: Receiver) -> None:
    webhook = GrafanaWebhook(config(receiver.port))
    down = dict(RISING, site="plant-down")
    body = payload(
        alert("firing", down, "fp-down", RISING_NOTES), alert("firing", dict(RISING, site="plant-2"), "fp-2")
    )
    answers = asyncio.run(post_all(free_port(), webhook, [body, body]))
    assert answers == [
        (502, {"forwarded": 1, "duplicates": 0, "ignored": 0, "failed": 1}),
        # Grafana's retry: the delivered alert is not sent again, the failed one is tried again
        (502, {"forwarded": 0, "duplicates": 1, "ignored": 0, "failed": 1}),
    ]
    assert [path for path, _ in receiver.take()] == ["/plant-2"]


def test_a_bad_bind_address_exits_2() -> None:
    from strainwatch.cli import app

    result = CliRunner().invoke(app, ["alerts", "run", "--grafana-webhook-bind", "localhost"])
    assert result.exit_code == 2
    assert (
        "--grafana-webhook-bind: bind address 'localhost' is not host:port, e.g. 127.0.0.1:8095"
        in result.output
    )
