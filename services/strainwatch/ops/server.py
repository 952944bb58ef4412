"""The ops HTTP server every service runs next to its work: /healthz, /readyz, /metrics.

- `/healthz`: 200 `{"alive": true}` while the event loop answers (503 if the service declared itself
  dead); a liveness probe restarts a service whose loop is stuck.
- `/readyz`: 200 when every readiness check is ok, else 503; the body is always the readiness
  snapshot as JSON (which check failed, since when, whether it is fatal).
- `/metrics`: the service's prometheus-client registry in the text exposition format.

The bind address comes from `--ops-bind`, else `STRAINWATCH_OPS_BIND`, else 127.0.0.1 on the
service's default port; `off` disables the server. Binding is loopback by default: exposing it is a
deployment decision (compose and k8s set 0.0.0.0 inside the container's own network namespace).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Mapping
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from strainwatch.ops.readiness import Readiness

log = structlog.get_logger("strainwatch.ops")

ENV_VAR = "STRAINWATCH_OPS_BIND"
DEFAULT_HOST = "127.0.0.1"
# One default port per service so that services on one host do not collide.
DEFAULT_PORTS = {"processor": 9310, "alerting": 9311, "gateway": 9312}


def parse_bind(value: str, default_port: int = 9310) -> tuple[str, int] | None:
    """'host:port', 'host', ':port', '[v6]:port' or 'off' → (host, port) or None. ValueError if bad."""
    v = value.strip()
    if not v:
        raise ValueError("empty ops bind address (use host:port or 'off')")
    if v.lower() in ("off", "none", "disabled"):
        return None
    host, port_s = v, ""
    if v.startswith("["):
        end = v.find("]")
        if end < 0:
            raise ValueError(f"bad ops bind address {value!r}: unclosed '['")
        host, rest = v[1:end], v[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad ops bind address {value!r}")
        port_s = rest[1:]
    elif v.count(":") == 1:
        host, port_s = v.split(":")
    elif v.count(":") > 1:
        raise ValueError(f"bad ops bind address {value!r}: write IPv6 addresses as [addr]:port")
    if not host:
        host = DEFAULT_HOST
    if not port_s:
        return host, default_port
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"bad ops bind address {value!r}: port must be 0-65535")
    return host, int(port_s)


def resolve_bind(
    cli_value: str | None, service: str, env: Mapping[str, str] | None = None
) -> tuple[str, int] | None:
    """The CLI value, else STRAINWATCH_OPS_BIND, else loopback on the service's default port."""
    environ = os.environ if env is None else env
    default_port = DEFAULT_PORTS.get(service, 9310)
    value = cli_value if cli_value is not None else environ.get(ENV_VAR)
    if value is None:
        return DEFAULT_HOST, default_port
    return parse_bind(value, default_port)


class OpsServer:
    def __init__(
        self,
        service: str,
        bind: str | tuple[str, int] | None,
        readiness: Readiness,
        registry: CollectorRegistry | None = None,
        *,
        fallback_to_free_port: bool = False,
    ) -> None:
        """`fallback_to_free_port`: when the (default) port is taken, e.g. by a second instance on
        the same host, bind a free port instead of failing (logged with the URL)."""
        self.service = service
        self.fallback_to_free_port = fallback_to_free_port
        self.readiness = readiness
        self.registry = registry
        if isinstance(bind, str):
            bind = parse_bind(bind, DEFAULT_PORTS.get(service, 9310))
        self.bind = bind
        self._runner: web.AppRunner | None = None
        self.port: int | None = None  # the bound port once started (useful with port 0)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def healthz(self, _request: web.Request) -> web.Response:
        alive = self.readiness.alive
        return _json({"service": self.service, "alive": alive}, 200 if alive else 503)

    async def readyz(self, _request: web.Request) -> web.Response:
        snap = self.readiness.snapshot()
        snap["service"] = self.service
        return _json(snap, 200 if snap["ready"] else 503)

    async def metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry) if self.registry is not None else b""
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def start(self) -> None:
        if self.bind is None or self._runner is not None:
            return
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        host, port = self.bind
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            try:
                await _start_site(site, host, port)
            except OSError as error:
                if not (self.fallback_to_free_port and port and error.errno == errno.EADDRINUSE):
                    raise
                log.warning("ops port taken, binding a free one", port=port, service=self.service)
                site = web.TCPSite(runner, host, 0, reuse_address=True)
                await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def url(self) -> str | None:
        if self.bind is None or self.port is None:
            return None
        host = self.bind[0]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"


def _json(payload: dict[str, Any], status: int) -> web.Response:
    return web.Response(
        text=json.dumps(payload, sort_keys=True), status=status, content_type="application/json"
    )


async def _start_site(site: web.TCPSite, host: str, port: int) -> None:
    """`site.start()`, where a lost race for the port is always EADDRINUSE: under uvloop, of two
    processes starting together, the loser's server comes back without sockets, which aiohttp
    reads as None (AttributeError)."""
    try:
        await site.start()
    except AttributeError:
        with contextlib.suppress(Exception):
            await site.stop()
        raise OSError(errno.EADDRINUSE, f"address in use: {host}:{port}") from None
