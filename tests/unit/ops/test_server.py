"""The ops server's handlers and bind parsing, without sockets (tests/integration/test_processor_ops.py
serves them over a real socket)."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import make_mocked_request

from strainwatch.ops.metrics import ServiceMetrics
from strainwatch.ops.readiness import Readiness
from strainwatch.ops.server import OpsServer, parse_bind, resolve_bind

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:9400", ("127.0.0.1", 9400)),
        ("0.0.0.0", ("0.0.0.0", 9310)),
        (":9401", ("127.0.0.1", 9401)),
        ("[::1]:9402", ("::1", 9402)),
        ("[::]", ("::", 9310)),
        ("localhost:0", ("localhost", 0)),
        ("off", None),
        ("OFF", None),
    ],
)
def test_parse_bind(value: str, expected: tuple[str, int] | None) -> None:
    assert parse_bind(value) == expected


@pytest.mark.parametrize("value", ["", "host:port", "h:70000", "::1:80", "[::1", "[::1]x", "h:-1"])
def test_parse_bind_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="ops bind"):
        parse_bind(value)


def test_resolve_bind_cli_over_env_over_default() -> None:
    assert resolve_bind(None, "processor", env={}) == ("127.0.0.1", 9310)
    assert resolve_bind(None, "alerting", env={}) == ("127.0.0.1", 9311)
    assert resolve_bind(None, "gateway", env={"STRAINWATCH_OPS_BIND": "0.0.0.0:9000"}) == ("0.0.0.0", 9000)
    assert resolve_bind("off", "gateway", env={"STRAINWATCH_OPS_BIND": "0.0.0.0:9000"}) is None
    assert resolve_bind(None, "gateway", env={"STRAINWATCH_OPS_BIND": "0.0.0.0"}) == ("0.0.0.0", 9312)


def call(server: OpsServer, path: str) -> tuple[int, str, bytes]:
    handler = {"/healthz": server.healthz, "/readyz": server.readyz, "/metrics": server.metrics}[path]
    resp = asyncio.run(handler(make_mocked_request("GET", path)))
    return resp.status, resp.headers["Content-Type"], resp.body  # type: ignore[return-value]


def test_healthz_readyz_metrics() -> None:
    r = Readiness(expected=["kafka"])
    m = ServiceMetrics("processor")
    m.consumed.inc(3)
    s = OpsServer("processor", "127.0.0.1:0", r, m.registry)
    status, ctype, body = call(s, "/healthz")
    assert status == 200 and ctype.startswith("application/json")
    assert json.loads(body) == {"alive": True, "service": "processor"}

    status, _, body = call(s, "/readyz")
    snap = json.loads(body)
    assert status == 503 and snap["ready"] is False and snap["service"] == "processor"
    assert snap["checks"]["kafka"]["ok"] is False
    r.set("kafka", True, "connected")
    status, _, body = call(s, "/readyz")
    assert status == 200 and json.loads(body)["checks"]["kafka"]["detail"] == "connected"
    r.set("sink", False, "InfluxDB 404: database not found", fatal=True)
    status, _, body = call(s, "/readyz")
    assert status == 503 and json.loads(body)["checks"]["sink"]["fatal"] is True

    status, ctype, body = call(s, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert b'strainwatch_consumed_total{service="processor"} 3.0' in body

    r.set_alive(False, "stuck")
    assert call(s, "/healthz")[0] == 503


def test_off_does_not_start() -> None:
    s = OpsServer("processor", "off", Readiness())
    asyncio.run(s.start())
    assert s.bind is None and s.url is None
    asyncio.run(s.stop())


def test_a_lost_bind_race_falls_back_to_a_free_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes starting together race for the default port; with uvloop the loser's site start
    fails with AttributeError (a server without sockets), which must mean "taken", not a crash."""
    from aiohttp import web

    real_start = web.TCPSite.start
    ports: list[int] = []

    async def start(site: web.TCPSite) -> None:
        ports.append(site._port)
        if site._port != 0:
            raise AttributeError("'NoneType' object has no attribute 'getsockname'")
        await real_start(site)

    monkeypatch.setattr(web.TCPSite, "start", start)

    async def main() -> None:
        s = OpsServer("processor", "127.0.0.1:9310", Readiness(), fallback_to_free_port=True)
        await s.start()
        try:
            assert ports == [9310, 0] and s.port not in (None, 0, 9310)
        finally:
            await s.stop()
        fixed = OpsServer("processor", "127.0.0.1:9310", Readiness(), fallback_to_free_port=False)
        with pytest.raises(OSError, match=r"address in use: 127\.0\.0\.1:9310"):
            await fixed.start()

    asyncio.run(main())
