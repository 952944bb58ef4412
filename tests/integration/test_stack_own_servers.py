"""`strainwatch stack up` with the site's own servers: an InfluxDB and a Kafka the user already runs.

- InfluxDB 1.x: a real InfluxDB 1.6.7 started by the test on its own ports, behind a recording
  proxy (1.6.7 has no token authentication; the proxy shows the token was sent);
- InfluxDB 2.x: no 2.x binary can run here, so a local HTTP server imitates its ping, orgs, buckets,
  DBRP and delete endpoints and the test asserts the exact requests;
- Kafka: a Tansu broker started by the test, on which `stack up` creates the topics.

`stack up` must start neither InfluxDB nor a broker in their place (only Mosquitto, which is missing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient

from strainwatch.config import Settings
from strainwatch.privacy.erase import count_points, delete_points
from strainwatch.stack import components
from strainwatch.stack.influx_setup import InfluxAuthError, detect, provision
from strainwatch.stack.procs import free_port, port_free, stop, tcp_open
from strainwatch.topics import ALL_TOPICS, PRIVACY_ERASURES

pytestmark = pytest.mark.integration

TOKEN = "site-token-0123456789"


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    auth: str | None


@dataclass
class Recorder:
    requests: list[Seen] = field(default_factory=list)


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _proxy_to(upstream: str, recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Proxy(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            parsed = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parsed.query))
            if body and self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                query.update(urllib.parse.parse_qsl(body.decode()))
            recorder.requests.append(
                Seen(self.command, parsed.path, query, None, self.headers.get("Authorization"))
            )
            req = urllib.request.Request(upstream + self.path, data=body, method=self.command)
            for name in ("Content-Type",):
                if self.headers.get(name):
                    req.add_header(name, self.headers[name])
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    status, data, headers = resp.status, resp.read(), resp.headers
            except urllib.error.HTTPError as error:
                status, data, headers = error.code, error.read(), error.headers
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in (
                    "content-length",
                    "transfer-encoding",
                    "connection",
                    "date",
                    "server",
                ):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _forward

    return Proxy


class Influx2:
    """What InfluxDB 2.7 answers on the endpoints strainwatch uses, with its state in memory."""

    def __init__(self, org: str = "site-org", buckets: dict[str, int] | None = None) -> None:
        self.org = org
        self.buckets: dict[str, dict[str, Any]] = {}
        self.dbrps: list[dict[str, Any]] = []
        self.requests: list[Seen] = []
        for name, seconds in (buckets or {}).items():
            self._add_bucket(name, seconds)
        self.server, self.url = _serve(self._handler())

    def _add_bucket(self, name: str, seconds: int) -> dict[str, Any]:
        bucket = {
            "id": f"b{len(self.buckets) + 1:015d}",
            "orgID": "o000000000000001",
            "name": name,
            "retentionRules": [{"type": "expire", "everySeconds": seconds}] if seconds else [],
        }
        self.buckets[name] = bucket
        return bucket

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        mock = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parsed = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(parsed.query))
                if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                    query.update(urllib.parse.parse_qsl(raw.decode()))
                    body: Any = None
                else:
                    body = json.loads(raw) if raw else None
                auth = self.headers.get("Authorization")
                mock.requests.append(Seen(self.command, parsed.path, query, body, auth))
                if parsed.path == "/ping":
                    return self._reply(
                        204, headers={"X-Influxdb-Version": "v2.7.12", "X-Influxdb-Build": "OSS"}
                    )
                if auth != f"Token {TOKEN}":
                    return self._reply(401, {"code": "unauthorized", "message": "unauthorized access"})
                return self._route(self.command, parsed.path, query, body)

            def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> None:
                if (method, path) == ("GET", "/api/v2/orgs"):
                    orgs = (
                        [{"id": "o000000000000001", "name": mock.org}] if query.get("org") == mock.org else []
                    )
                    return self._reply(
                        200 if orgs else 404, {"orgs": orgs} if orgs else {"code": "not found"}
                    )
                if (method, path) == ("GET", "/api/v2/buckets"):
                    found = [b for b in mock.buckets.values() if b["name"] == query.get("name")]
                    return self._reply(200, {"buckets": found})
                if (method, path) == ("POST", "/api/v2/buckets"):
                    rules = body["retentionRules"]
                    bucket = mock._add_bucket(body["name"], rules[0]["everySeconds"] if rules else 0)
                    return self._reply(201, bucket)
                if method == "PATCH" and path.startswith("/api/v2/buckets/"):
                    bucket = next(b for b in mock.buckets.values() if b["id"] == path.rsplit("/", 1)[1])
                    bucket["retentionRules"] = body["retentionRules"]
                    return self._reply(200, bucket)
                if (method, path) == ("GET", "/api/v2/dbrps"):
                    content = [d for d in mock.dbrps if d["database"] == query.get("db")]
                    return self._reply(200, {"content": content})
                if (method, path) == ("POST", "/api/v2/dbrps"):
                    mapping = {**body, "id": f"d{len(mock.dbrps) + 1:015d}"}
                    mock.dbrps.append(mapping)
                    return self._reply(201, {"content": mapping})
                if (method, path) == ("POST", "/api/v2/delete"):
                    return self._reply(204)
                if (method, path) == ("POST", "/query"):
                    series = [
                        {"name": "exposure_hourly", "columns": ["time", "count_windows"], "values": [[0, 3]]}
                    ]
                    return self._reply(200, {"results": [{"statement_id": 0, "series": series}]})
                return self._reply(404, {"code": "not found", "message": f"{method} {path}"})

            do_GET = do_POST = do_PATCH = _handle

        return Handler

    def calls(self) -> list[tuple[str, str, dict[str, str], Any]]:
        return [(r.method, r.path, r.query, r.body) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def influx2() -> Iterator[Influx2]:
    mock = Influx2()
    yield mock
    mock.close()


def _stack_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Local stack ports on free ports: whatever `stack up` starts, it starts there."""
    return {
        "STRAINWATCH_STATE_DIR": str(tmp_path / "stack"),
        "STRAINWATCH_KAFKA_PORT": str(free_port()),
        "STRAINWATCH_KAFKA_CONTROLLER_PORT": str(free_port()),
        "STRAINWATCH_INFLUX_PORT": str(free_port()),
        "STRAINWATCH_INFLUXD_PORT": str(free_port()),
        "STRAINWATCH_MQTT_PORT": str(free_port()),
        "STRAINWATCH_LOG_FORMAT": "json",
        **extra,
    }


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STRAINWATCH_")}
    return subprocess.run(
        [sys.executable, "-m", "strainwatch.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[str]:
    """The site's Kafka: a Tansu broker the test starts, with no topics yet."""
    port = free_port()
    proc = components.start_tansu(tmp_path / "site-kafka", port)
    yield f"127.0.0.1:{port}"
    stop(proc)


def _started(env: dict[str, str]) -> set[str]:
    state = json.loads((Path(env["STRAINWATCH_STATE_DIR"]) / "stack.json").read_text())
    return set(state["procs"])


def _nothing_local(env: dict[str, str]) -> None:
    for name in ("STRAINWATCH_KAFKA_PORT", "STRAINWATCH_INFLUX_PORT", "STRAINWATCH_INFLUXD_PORT"):
        assert port_free(int(env[name])), f"{name}: something was started on the local port"


def test_stack_up_uses_the_sites_influxdb_1x_and_kafka(tmp_path: Path, own_kafka: str) -> None:
    influxd_port = free_port()
    while not port_free(influxd_port + 1):
        influxd_port = free_port()
    influxd = components.start_influxd(tmp_path / "site-influx", influxd_port, influxd_port + 1)
    recorder = Recorder()
    proxy, url = _serve(_proxy_to(f"http://127.0.0.1:{influxd_port}", recorder))
    env = _stack_env(
        tmp_path,
        STRAINWATCH_INFLUX_URL=url,
        STRAINWATCH_INFLUX_TOKEN=TOKEN,
        STRAINWATCH_INFLUX_BUCKET="site_db",
        STRAINWATCH_KAFKA_BOOTSTRAP=own_kafka,
        STRAINWATCH_WINDOWS_RETENTION_DAYS="20",
        STRAINWATCH_RETENTION_DAYS="400",
    )
    try:
        result = _cli(env, "stack", "up")
        assert result.returncode == 0, result.stdout + result.stderr
        assert _started(env) == {"mosquitto"}
        _nothing_local(env)
        out = json.loads(result.stdout)
        assert out["bootstrap"] == own_kafka and out["influx_url"] == url
        assert out["influx"]["kind"] == "1.x"

        # the database and its retention policies, on the site's InfluxDB, created with the token
        creates = [r for r in recorder.requests if r.query.get("q", "").startswith("CREATE")]
        assert [r.query["q"] for r in creates] == [
            'CREATE DATABASE "site_db"',
            'CREATE RETENTION POLICY "windows" ON "site_db" DURATION 20d REPLICATION 1',
        ]
        assert all(r.auth == f"Token {TOKEN}" for r in recorder.requests if r.path == "/query")
        with urllib.request.urlopen(
            f"http://127.0.0.1:{influxd_port}/query?q=SHOW+RETENTION+POLICIES+ON+site_db", timeout=5
        ) as resp:
            rps = {row[0]: row[1] for row in json.loads(resp.read())["results"][0]["series"][0]["values"]}
        assert rps == {"autogen": "9600h0m0s", "windows": "480h0m0s"}

        # every topic on the site's broker
        admin = KafkaAdminClient(bootstrap_servers=own_kafka)
        topics = set(admin.list_topics())
        admin.close()
        assert {spec.name for spec in (*ALL_TOPICS, PRIVACY_ERASURES)} <= topics

        # idempotent: a second `stack up` starts nothing new
        again = _cli(env, "stack", "up")
        assert again.returncode == 0, again.stdout + again.stderr
        assert _started(env) == {"mosquitto"}
    finally:
        _cli(env, "stack", "down")
        proxy.shutdown()
        stop(influxd)


def test_stack_up_provisions_influxdb_2x_through_its_apis(
    tmp_path: Path, own_kafka: str, influx2: Influx2
) -> None:
    env = _stack_env(
        tmp_path,
        STRAINWATCH_INFLUX_URL=influx2.url,
        STRAINWATCH_INFLUX_TOKEN=TOKEN,
        STRAINWATCH_INFLUX_ORG="site-org",
        STRAINWATCH_INFLUX_BUCKET="sw",
        STRAINWATCH_KAFKA_BOOTSTRAP=own_kafka,
    )
    try:
        result = _cli(env, "stack", "up")
        assert result.returncode == 0, result.stdout + result.stderr
        assert _started(env) == {"mosquitto"}
        _nothing_local(env)
        org = "o000000000000001"
        assert influx2.calls() == [
            ("GET", "/ping", {}, None),  # reachable, and which kind (no token needed)
            ("GET", "/api/v2/orgs", {"org": "site-org"}, None),
            ("GET", "/api/v2/buckets", {"orgID": org, "name": "sw"}, None),
            (
                "POST",
                "/api/v2/buckets",
                {},
                {
                    "orgID": org,
                    "name": "sw",
                    "retentionRules": [{"type": "expire", "everySeconds": 1825 * 86400}],
                },
            ),
            ("GET", "/api/v2/buckets", {"orgID": org, "name": "sw/windows"}, None),
            (
                "POST",
                "/api/v2/buckets",
                {},
                {
                    "orgID": org,
                    "name": "sw/windows",
                    "retentionRules": [{"type": "expire", "everySeconds": 35 * 86400}],
                },
            ),
            ("GET", "/api/v2/dbrps", {"orgID": org, "db": "sw"}, None),
            (
                "POST",
                "/api/v2/dbrps",
                {},
                {
                    "orgID": org,
                    "bucketID": influx2.buckets["sw"]["id"],
                    "database": "sw",
                    "retention_policy": "autogen",
                    "default": True,
                },
            ),
            (
                "POST",
                "/api/v2/dbrps",
                {},
                {
                    "orgID": org,
                    "bucketID": influx2.buckets["sw/windows"]["id"],
                    "database": "sw",
                    "retention_policy": "windows",
                    "default": False,
                },
            ),
        ]
        assert all(r.auth == f"Token {TOKEN}" for r in influx2.requests if r.path != "/ping")

        # again, with a retention changed: lookups, one PATCH, no creations
        influx2.requests.clear()
        again = _cli({**env, "STRAINWATCH_WINDOWS_RETENTION_DAYS": "40"}, "stack", "up")
        assert again.returncode == 0, again.stdout + again.stderr
        writes = [(m, p, b) for m, p, _, b in influx2.calls() if m != "GET"]
        assert writes == [
            (
                "PATCH",
                f"/api/v2/buckets/{influx2.buckets['sw/windows']['id']}",
                {"retentionRules": [{"type": "expire", "everySeconds": 40 * 86400}]},
            )
        ]
    finally:
        _cli(env, "stack", "down")


def test_a_refused_token_is_a_clear_error_and_starts_nothing(
    tmp_path: Path, own_kafka: str, influx2: Influx2
) -> None:
    env = _stack_env(
        tmp_path,
        STRAINWATCH_INFLUX_URL=influx2.url,
        STRAINWATCH_INFLUX_TOKEN="wrong-token-123456",
        STRAINWATCH_INFLUX_ORG="site-org",
        STRAINWATCH_KAFKA_BOOTSTRAP=own_kafka,
    )
    try:
        result = _cli(env, "stack", "up")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "refused the token (HTTP 401" in result.stderr
        assert "STRAINWATCH_INFLUX_TOKEN" in result.stderr
        assert "wrong-token-123456" not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        _nothing_local(env)
        with pytest.raises(InfluxAuthError):
            provision(detect(influx2.url, "wrong"), org="site-org", bucket="sw")
    finally:
        _cli(env, "stack", "down")


def test_an_unreachable_site_server_is_reported_not_replaced(tmp_path: Path) -> None:
    dead = free_port()
    env = _stack_env(
        tmp_path, STRAINWATCH_INFLUX_URL=f"http://127.0.0.1:{dead}", STRAINWATCH_INFLUX_TOKEN=TOKEN
    )
    result = _cli(env, "stack", "up")
    assert result.returncode == 1
    assert f"InfluxDB at http://127.0.0.1:{dead} unreachable" in result.stderr
    _nothing_local(env)
    assert not tcp_open(int(env["STRAINWATCH_MQTT_PORT"]))


def test_privacy_erase_on_influxdb_2x_deletes_per_bucket(influx2: Influx2) -> None:
    settings = Settings(
        influx_url=influx2.url,
        influx_token=TOKEN,  # type: ignore[arg-type]
        influx_org="site-org",
        influx_bucket="sw",
    )
    server = detect(influx2.url, TOKEN)
    assert (server.kind, server.version) == ("2", "v2.7.12")
    counts = count_points(server, settings, "w-7", "plant-2")
    assert counts == {"autogen.exposure_hourly": 3, "windows.exposure_hourly": 3}
    influx2.requests.clear()
    delete_points(server, settings, "w-7", "plant-2")
    window = {"start": "1970-01-01T00:00:00Z", "stop": "2262-04-11T00:00:00Z"}
    predicate = 'worker="w-7" AND site="plant-2"'
    assert influx2.calls() == [
        ("POST", "/api/v2/delete", {"org": "site-org", "bucket": "sw"}, {**window, "predicate": predicate}),
        (
            "POST",
            "/api/v2/delete",
            {"org": "site-org", "bucket": "sw/windows"},
            {**window, "predicate": predicate},
        ),
    ]
    assert all(r.auth == f"Token {TOKEN}" for r in influx2.requests)
