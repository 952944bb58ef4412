"""The alerting service's InfluxDB check against a stand-in for an InfluxDB with authentication
(the local InfluxDB 1.6 runs without it, so 401 and 403 cannot happen there): the exact request it
sends, and how each answer is classified."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from strainwatch.alerts.influx_check import check_influx, watch_influx
from strainwatch.config import Settings
from strainwatch.ops.readiness import Readiness

pytestmark = pytest.mark.unit


async def serve(status: int, body: str = "") -> tuple[web.AppRunner, str, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    async def write(request: web.Request) -> web.Response:
        seen.append(
            {
                "path": request.path,
                "query": dict(request.query),
                "authorization": request.headers.get("Authorization"),
                "body": await request.read(),
            }
        )
        return web.Response(status=status, text=body)

    app = web.Application()
    app.router.add_post("/api/v2/write", write)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}", seen


def settings(url: str) -> Settings:
    return Settings(influx_url=url, influx_token="write-token", influx_org="org", influx_bucket="b1")


@pytest.mark.parametrize(
    ("status", "body", "ok", "fatal"),
    [
        (204, "", True, False),
        (400, '{"code":"invalid","message":"writing requires points"}', True, False),  # 2.x, empty batch
        (401, '{"code":"unauthorized","message":"unauthorized access"}', False, True),
        (403, '{"error":"forbidden"}', False, True),
        (404, '{"error":"database not found: \\"b1\\""}', False, True),
        (500, "internal error", False, False),
        (503, "", False, False),
    ],
)
def test_answers_are_classified(status: int, body: str, ok: bool, fatal: bool) -> None:
    async def run() -> None:
        runner, url, seen = await serve(status, body)
        try:
            state = await check_influx(settings(url))
        finally:
            await runner.cleanup()
        assert (state.ok, state.fatal) == (ok, fatal), state
        assert seen == [
            {
                "path": "/api/v2/write",
                "query": {"bucket": "b1", "org": "org", "precision": "s"},
                "authorization": "Token write-token",
                "body": b"",  # nothing is stored
            }
        ]
        if fatal:
            assert str(status) in state.detail and "b1" in state.detail
            assert "write-token" not in state.detail

    asyncio.run(run())


def test_unreachable_is_an_outage_not_fatal() -> None:
    from strainwatch.stack.procs import free_port

    state = asyncio.run(check_influx(settings(f"http://127.0.0.1:{free_port()}")))
    assert (state.ok, state.fatal) == (False, False)
    assert "unreachable" in state.detail


def test_a_fatal_answer_marks_the_check_fatal_once_and_stops_checking() -> None:
    async def run() -> None:
        runner, url, seen = await serve(401, "unauthorized")
        readiness = Readiness()
        stop, fatal = asyncio.Event(), asyncio.Event()
        try:
            await asyncio.wait_for(watch_influx(settings(url), readiness, stop, fatal), 10)
        finally:
            await runner.cleanup()
        assert fatal.is_set() and len(seen) == 1
        snap = readiness.snapshot()
        assert not snap["ready"] and snap["checks"]["influx"]["fatal"]
        readiness.set("influx", True, "a later success cannot clear it")
        assert readiness.snapshot()["checks"]["influx"]["fatal"]

    asyncio.run(run())
