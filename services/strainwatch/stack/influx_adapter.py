"""Route adapter for InfluxDB 1.6.7 (local stack only): serves the 1.8+/2.x routes it lacks.

Debian's InfluxDB predates `/api/v2/write` and `/health`. This process serves them by forwarding to
`/write` (as 1.8 does natively) and passes every other request to influxd unchanged, so production
code speaks the 2.x write API and InfluxQL on `/query` without knowing the adapter exists.

Run: python -m strainwatch.stack.influx_adapter --listen-port 18086 --influxd-port 18087
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import ClientSession, ClientTimeout, web

# /api/v2/write precision names -> 1.x /write precision names
_PRECISION = {"ns": "n", "us": "u", "ms": "ms", "s": "s"}
_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "authorization"}


def build_app(influxd: str) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app["session"] = ClientSession(timeout=ClientTimeout(total=600))
        yield
        await app["session"].close()

    app.cleanup_ctx.append(session_ctx)

    async def v2_write(request: web.Request) -> web.StreamResponse:
        bucket = request.query.get("bucket")
        if not bucket:
            return web.json_response({"code": "invalid", "message": "bucket is required"}, status=400)
        precision = _PRECISION.get(request.query.get("precision", "ns"))
        if precision is None:
            return web.json_response({"code": "invalid", "message": "invalid precision"}, status=400)
        db, _, rp = bucket.partition("/")
        params = {"db": db, "precision": precision}
        if rp:
            params["rp"] = rp
        headers = {}
        if "Content-Encoding" in request.headers:
            headers["Content-Encoding"] = request.headers["Content-Encoding"]
        body = await request.read()
        async with request.app["session"].post(
            f"{influxd}/write", params=params, data=body, headers=headers
        ) as resp:
            text = await resp.read()
            if resp.status == 204:
                return web.Response(status=204)
            return web.Response(status=resp.status, body=text, content_type="application/json")

    async def health(request: web.Request) -> web.StreamResponse:
        try:
            async with request.app["session"].get(f"{influxd}/ping") as resp:
                version = resp.headers.get("X-Influxdb-Version", "unknown")
                ok = resp.status == 204
        except OSError as error:
            return web.json_response(
                {"name": "influxdb", "status": "fail", "message": str(error)}, status=503
            )
        status = 200 if ok else 503
        return web.json_response(
            {"name": "influxdb", "status": "pass" if ok else "fail", "version": version}, status=status
        )

    async def passthrough(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        body = await request.read()
        async with request.app["session"].request(
            request.method, f"{influxd}{request.rel_url}", data=body or None, headers=headers
        ) as resp:
            payload = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_HEADERS}
            out.pop("Content-Encoding", None)
            return web.Response(status=resp.status, body=payload, headers=out)

    app.router.add_post("/api/v2/write", v2_write)
    app.router.add_get("/health", health)
    app.router.add_route("*", "/{tail:.*}", passthrough)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--influxd-port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())
    web.run_app(
        build_app(f"http://127.0.0.1:{args.influxd_port}"),
        host="127.0.0.1",
        port=args.listen_port,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
