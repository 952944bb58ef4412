"""InfluxDB over HTTPS with CA verification: influxdb-client's writes (the processor's sink), the
InfluxQL reads (urllib) and the incident store's requests go through a TLS endpoint in front of the
real InfluxDB, verified against STRAINWATCH_INFLUX_CA_FILE; a certificate from an unknown CA is
refused with a message that says so."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from strainwatch.config import get_settings
from strainwatch.incidents.store import IncidentStore
from strainwatch.processor.sink import InfluxSink
from strainwatch.stack.procs import free_port
from strainwatch.storage.influxql import InfluxQL, InfluxQLError
from tests.integration.conftest import Influx
from tests.integration.security_support import Pki, make_pki

pytestmark = pytest.mark.integration

TOKEN = "test-token"
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


class HttpsProxy:
    """A TLS endpoint (aiohttp, the test's certificate) forwarding every request to `upstream`."""

    def __init__(self, upstream: str, pki: Pki) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(str(pki.cert), str(pki.key))
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="https-proxy", daemon=True)
        self._runner: web.AppRunner | None = None

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method, f"{self.upstream}{request.path_qs}", data=body, headers=headers
            ) as resp,
        ):
            payload = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP}
            return web.Response(status=resp.status, body=payload, headers=out)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._forward)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.context).start()
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "the https proxy did not start"

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def https_influx(influx: Influx, pki: Pki) -> Iterator[HttpsProxy]:
    proxy = HttpsProxy(influx.url, pki)
    proxy.start()
    yield proxy
    proxy.stop()


def _use_ca(monkeypatch: pytest.MonkeyPatch, ca: Path | None) -> None:
    if ca is None:
        monkeypatch.delenv("STRAINWATCH_INFLUX_CA_FILE", raising=False)
    else:
        monkeypatch.setenv("STRAINWATCH_INFLUX_CA_FILE", str(ca))
    get_settings.cache_clear()


async def _write(url: str, database: str, lines: list[str]) -> None:
    sink = InfluxSink(url, TOKEN, "strainwatch", database, max_backoff_s=0.5)
    sink.add(lines)
    try:
        assert await asyncio.wait_for(sink.flush(), 30) == len(lines)
    finally:
        await sink.close()


def test_writes_and_reads_over_https_verified_with_the_ca_file(
    influx: Influx, https_influx: HttpsProxy, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_ca(monkeypatch, pki.ca)
    database = influx.new_database()
    lines = [f"tls_probe,worker=w-{i} value={i} {1_700_000_000 + i}" for i in range(5)]
    asyncio.run(_write(https_influx.url, database, lines))  # influxdb-client, /api/v2/write
    ql = InfluxQL(https_influx.url, TOKEN, database)  # urllib, /query
    assert ql.context is not None
    assert ql.scalar('SELECT COUNT("value") FROM "tls_probe"') == 5
    store = IncidentStore(https_influx.url, TOKEN, "strainwatch", database)
    assert store.server_major_version() == 1  # /ping through the same verified context
    get_settings.cache_clear()


def test_a_certificate_from_an_unknown_ca_is_refused_clearly(
    influx: Influx, https_influx: HttpsProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = influx.new_database()
    other = make_pki(tmp_path / "other", cn="some-other-ca")
    for ca in (other.ca, None):  # another CA's file, and the system's CAs
        _use_ca(monkeypatch, ca)
        with pytest.raises(InfluxQLError, match=r"TLS certificate of https://127\.0\.0\.1:\d+ not trusted"):
            InfluxQL(https_influx.url, TOKEN, database).query("SHOW MEASUREMENTS")

        async def write_once() -> None:
            sink = InfluxSink(https_influx.url, TOKEN, "strainwatch", database)
            try:
                await sink._api().write_api().write(bucket=database, org="strainwatch", record=["x v=1 1"])
            finally:
                await sink.close()

        with pytest.raises(aiohttp.ClientConnectorCertificateError, match="certificate verify failed"):
            asyncio.run(write_once())
    get_settings.cache_clear()
