"""`publish` against a local HTTP server that imitates Grafana's HTTP API (real sockets on
127.0.0.1): every request's method, path and body is checked, and the server keeps state the way
Grafana does (ids and versions added, secrets not returned), so idempotence is tested for real.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import typer
from typer.testing import CliRunner

from strainwatch.dashboards import alert_rules, provisioning, publish
from strainwatch.dashboards.publish import InfluxTarget, PublishError, WebhookTarget

pytestmark = pytest.mark.integration  # loopback sockets (the unit marker promises none)

TOKEN = "glsa_test-token"
INFLUX = InfluxTarget("http://influxdb:8086", "strainwatch", "influx-secret")
WEBHOOK = WebhookTarget("http://alerting:8095/grafana/alerts", "hook-secret")
DEFAULT_POLICY = {"receiver": "grafana-default-email", "group_by": ["grafana_folder", "alertname"]}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any

    @property
    def write(self) -> bool:
        return self.method != "GET"


class FakeGrafana:
    """The endpoints publish calls, with Grafana's answers and state."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self.folders: dict[str, dict[str, Any]] = {}
        self.datasources: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.rules: dict[str, dict[str, Any]] = {}
        self.groups: dict[tuple[str, str], int] = {}
        self.contact_points: dict[str, dict[str, Any]] = {}
        self.policy: dict[str, Any] = copy.deepcopy(DEFAULT_POLICY)
        self._next_id = 1
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                body = json.loads(raw) if raw else None
                with fake._lock:
                    fake.requests.append(Request(self.command, parts.path, parse_qs(parts.query), body))
                    if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                        auth = self.headers.get("Authorization")
                        fake.errors.append(f"{self.command} {parts.path}: Authorization {auth!r}")
                        status, answer = 401, {"message": "Unauthorized"}
                    elif raw and "application/json" not in (self.headers.get("Content-Type") or ""):
                        fake.errors.append(f"{self.command} {parts.path}: body without JSON content type")
                        status, answer = 415, {"message": "content type"}
                    else:
                        status, answer = fake.route(self.command, parts.path, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        p = path.split("/")
        not_found = (404, {"message": "not found"})
        if path.startswith("/api/folders"):
            if method == "GET" and len(p) == 4:
                return (200, self.folders[p[3]]) if p[3] in self.folders else not_found
            if method == "POST" and len(p) == 3:
                folder = {"uid": body["uid"], "title": body["title"], "id": self.new_id(), "version": 1}
                self.folders[body["uid"]] = folder
                return 200, folder
            if method == "PUT" and len(p) == 4 and p[3] in self.folders:
                self.folders[p[3]] |= {"title": body["title"], "version": self.folders[p[3]]["version"] + 1}
                return 200, self.folders[p[3]]
        if path.startswith("/api/datasources"):
            if method == "GET" and p[3] == "uid":
                return (200, self.datasources[p[4]]) if p[4] in self.datasources else not_found
            if method in ("POST", "PUT"):
                stored = {k: v for k, v in body.items() if k != "secureJsonData"}
                stored |= {"id": self.new_id(), "orgId": 1, "readOnly": False, "basicAuth": False}
                stored["secureJsonFields"] = dict.fromkeys(body.get("secureJsonData") or {}, True)
                self.datasources[body["uid"]] = stored
                return 200, {"datasource": stored, "id": stored["id"], "message": "Datasource added"}
        if path.startswith("/api/dashboards"):
            if method == "GET" and p[3] == "uid":
                return (200, self.dashboards[p[4]]) if p[4] in self.dashboards else not_found
            if method == "POST" and path == "/api/dashboards/db":
                dash = body["dashboard"]
                old = self.dashboards.get(dash["uid"])
                version = old["dashboard"]["version"] + 1 if old else 1
                stored = dash | {"id": old["dashboard"]["id"] if old else self.new_id(), "version": version}
                self.dashboards[dash["uid"]] = {
                    "dashboard": stored,
                    "meta": {"folderUid": body.get("folderUid")},
                }
                return 200, {"status": "success", "uid": dash["uid"], "version": version}
        if path.startswith("/api/v1/provisioning/alert-rules"):
            if method == "GET" and len(p) == 5:
                return 200, list(self.rules.values())
            if method in ("POST", "PUT"):
                uid = body["uid"] if method == "POST" else p[5]
                stored = body | {"id": self.new_id(), "orgID": 1, "provenance": "api", "isPaused": False}
                stored["updated"] = "2026-11-29T09:00:00Z"
                self.rules[uid] = stored
                key = (body["folderUID"], body["ruleGroup"])
                self.groups.setdefault(key, 60)  # Grafana's default interval for a new group
                return (201 if method == "POST" else 200), stored
        if path.startswith("/api/v1/provisioning/folder/"):
            key = (p[5], p[7])
            if method == "GET":
                if key not in self.groups:
                    return not_found
                rules = [r for r in self.rules.values() if (r["folderUID"], r["ruleGroup"]) == key]
                return 200, {
                    "title": key[1],
                    "folderUid": key[0],
                    "interval": self.groups[key],
                    "rules": rules,
                }
            if method == "PUT":
                self.groups[key] = body["interval"]
                return 200, body
        if path.startswith("/api/v1/provisioning/contact-points"):
            if method == "GET":
                return 200, [
                    cp | {"settings": cp["settings"] | {"authorization_credentials": "[REDACTED]"}}
                    for cp in self.contact_points.values()
                ]
            if method in ("POST", "PUT"):
                self.contact_points[body["uid"]] = copy.deepcopy(body) | {"provenance": "api"}
                return 202, self.contact_points[body["uid"]]
        if path == "/api/v1/provisioning/policies":
            if method == "GET":
                return 200, self.policy
            if method == "PUT":
                self.policy = copy.deepcopy(body) | {"provenance": "api"}
                return 202, {"message": "policies updated"}
        self.errors.append(f"unexpected {method} {path}")
        return 404, {"message": f"no route {method} {path}"}

    def take(self) -> list[Request]:
        with self._lock:
            out, self.requests = self.requests, []
        return out


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana()
    yield fake
    fake.close()
    assert fake.errors == []


def dashboard(uid: str, title: str) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "schemaVersion": 39,
        "templating": {"list": []},
        "panels": [
            {
                "id": 1,
                "type": "stat",
                "title": "Monitored workers",
                "gridPos": {"x": 0, "y": 0, "w": 6, "h": 4},
                "datasource": {"type": "influxdb", "uid": alert_rules.DATASOURCE_UID},
                "targets": [
                    {
                        "refId": "A",
                        "datasource": {"type": "influxdb", "uid": alert_rules.DATASOURCE_UID},
                        "rawQuery": True,
                        "resultFormat": "time_series",
                        "query": (
                            'SELECT COUNT("wear_s") AS "workers" FROM "exposure_hourly" WHERE $timeFilter'
                        ),
                    }
                ],
            }
        ],
    }


BOARDS = [dashboard("sw-one", "One"), dashboard("sw-two", "Two")]


def run(grafana: FakeGrafana, boards: list[dict[str, Any]], dry_run: bool = False) -> publish.PublishReport:
    return publish.publish(grafana.url, TOKEN, copy.deepcopy(boards), dry_run, influx=INFLUX, webhook=WEBHOOK)


def reads(requests: list[Request]) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in requests if not r.write]


EXPECTED_READS = [
    ("GET", "/api/folders/strainwatch"),
    ("GET", "/api/datasources/uid/strainwatch-influxdb"),
    ("GET", "/api/v1/provisioning/contact-points"),
    ("GET", "/api/dashboards/uid/sw-one"),
    ("GET", "/api/dashboards/uid/sw-two"),
    ("GET", "/api/v1/provisioning/alert-rules"),
    ("GET", "/api/v1/provisioning/folder/strainwatch/rule-groups/strainwatch-managers"),
    ("GET", "/api/v1/provisioning/folder/strainwatch/rule-groups/strainwatch-pipeline"),
]


def test_first_publish_creates_everything(grafana: FakeGrafana) -> None:
    report = run(grafana, BOARDS)
    requests = grafana.take()
    rules = alert_rules.api_rules()
    managers = [r for r in rules if r["ruleGroup"] == alert_rules.GROUP_MANAGERS]
    expected = [
        ("GET", "/api/folders/strainwatch", None),
        ("POST", "/api/folders", {"title": "strainwatch", "uid": "strainwatch"}),
        ("GET", "/api/datasources/uid/strainwatch-influxdb", None),
        ("POST", "/api/datasources", provisioning.datasource(INFLUX.url, INFLUX.database, INFLUX.token)),
        ("GET", "/api/v1/provisioning/contact-points", None),
        (
            "POST",
            "/api/v1/provisioning/contact-points",
            provisioning.contact_point(WEBHOOK.url, WEBHOOK.token),
        ),
        *(
            step
            for board in BOARDS
            for step in (
                ("GET", f"/api/dashboards/uid/{board['uid']}", None),
                (
                    "POST",
                    "/api/dashboards/db",
                    {
                        "dashboard": board | {"id": None},
                        "folderUid": "strainwatch",
                        "overwrite": True,
                        "message": "strainwatch dashboards publish",
                    },
                ),
            )
        ),
        ("GET", "/api/v1/provisioning/alert-rules", None),
        ("GET", "/api/v1/provisioning/folder/strainwatch/rule-groups/strainwatch-managers", None),
        ("GET", "/api/v1/provisioning/folder/strainwatch/rule-groups/strainwatch-pipeline", None),
        *(("POST", "/api/v1/provisioning/alert-rules", rule) for rule in rules),
        # new groups get Grafana's default interval: the managers' group is set to 5 minutes
        ("GET", "/api/v1/provisioning/folder/strainwatch/rule-groups/strainwatch-managers", None),
        (
            "PUT",
            "/api/v1/provisioning/folder/strainwatch/rule-groups/strainwatch-managers",
            {"title": "strainwatch-managers", "folderUid": "strainwatch", "interval": 300, "rules": managers},
        ),
        ("GET", "/api/v1/provisioning/folder/strainwatch/rule-groups/strainwatch-pipeline", None),
        ("GET", "/api/v1/provisioning/policies", None),
        (
            "PUT",
            "/api/v1/provisioning/policies",
            DEFAULT_POLICY | {"routes": [provisioning.strainwatch_route()]},
        ),
    ]
    assert [(r.method, r.path, r.body) for r in requests] == expected
    assert requests[4].query == {"name": ["strainwatch-alerting"]}
    assert all(not r.write or r.method in ("POST", "PUT") for r in requests)
    assert {c.action for c in report.changes} == {"create"}
    assert report.writes == len(report.changes) == 1 + 1 + 1 + 2 + 4 + 2 + 1
    assert grafana.groups == {
        ("strainwatch", "strainwatch-managers"): 300,
        ("strainwatch", "strainwatch-pipeline"): 60,
    }
    assert grafana.dashboards["sw-one"]["meta"]["folderUid"] == "strainwatch"


def test_second_publish_sends_no_writes(grafana: FakeGrafana) -> None:
    run(grafana, BOARDS)
    grafana.take()
    report = run(grafana, BOARDS)
    requests = grafana.take()
    assert [r for r in requests if r.write] == []
    assert reads(requests) == [*EXPECTED_READS, ("GET", "/api/v1/provisioning/policies")]
    assert {c.action for c in report.changes} == {"unchanged"} and report.writes == 0
    assert [c.line() for c in report.changes][:3] == [
        "unchanged folder        strainwatch",
        "unchanged datasource    strainwatch-influxdb",
        "unchanged contact-point strainwatch-alerting",
    ]


def test_a_changed_dashboard_is_one_update(grafana: FakeGrafana) -> None:
    run(grafana, BOARDS)
    grafana.take()
    changed = [BOARDS[0], dashboard("sw-two", "Two, renamed")]
    report = run(grafana, changed)
    writes = [r for r in grafana.take() if r.write]
    assert [(r.method, r.path, r.body) for r in writes] == [
        (
            "POST",
            "/api/dashboards/db",
            {
                "dashboard": changed[1] | {"id": None},
                "folderUid": "strainwatch",
                "overwrite": True,
                "message": "strainwatch dashboards publish",
            },
        )
    ]
    assert [(c.kind, c.name, c.action) for c in report.changes if c.action != "unchanged"] == [
        ("dashboard", "sw-two (Two, renamed)", "update")
    ]
    assert grafana.dashboards["sw-two"]["dashboard"]["version"] == 2


def test_other_routes_of_the_policy_are_kept_and_a_changed_rule_is_one_update(grafana: FakeGrafana) -> None:
    site_route = {"receiver": "site-oncall", "object_matchers": [["team", "=", "ops"]]}
    grafana.policy["routes"] = [site_route]
    run(grafana, BOARDS)
    assert grafana.policy["routes"] == [provisioning.strainwatch_route(), site_route]
    assert grafana.policy["receiver"] == "grafana-default-email"
    grafana.rules["strainwatch-dead-letter-rate"]["for"] = "10m"  # someone changed it
    grafana.take()
    run(grafana, BOARDS)
    writes = [r for r in grafana.take() if r.write]
    (rule,) = [r for r in alert_rules.api_rules() if r["uid"] == "strainwatch-dead-letter-rate"]
    assert [(r.method, r.path, r.body) for r in writes] == [
        ("PUT", "/api/v1/provisioning/alert-rules/strainwatch-dead-letter-rate", rule)
    ]


def test_dry_run_lists_changes_and_writes_nothing(grafana: FakeGrafana) -> None:
    report = run(grafana, BOARDS, dry_run=True)
    requests = grafana.take()
    assert [r for r in requests if r.write] == []
    assert reads(requests) == [*EXPECTED_READS, ("GET", "/api/v1/provisioning/policies")]
    assert report.dry_run and report.writes == 12
    assert report.lines() == [
        "create    folder        strainwatch",
        "create    datasource    strainwatch-influxdb",
        "create    contact-point strainwatch-alerting",
        "create    dashboard     sw-one (One)",
        "create    dashboard     sw-two (Two)",
        "create    alert-rule    strainwatch-team-exposure-rising",
        "create    alert-rule    strainwatch-site-devices-silent",
        "create    alert-rule    strainwatch-dead-letter-rate",
        "create    alert-rule    strainwatch-processor-lag",
        "create    rule-group    strainwatch-managers every 300s",
        "create    rule-group    strainwatch-pipeline every 60s",
        "create    policy        route to strainwatch-alerting",
    ]
    assert grafana.folders == {} and grafana.rules == {} and grafana.policy == DEFAULT_POLICY

    # after a publish, a dry run with one dashboard changed lists exactly that
    run(grafana, BOARDS)
    grafana.take()
    report = run(grafana, [dashboard("sw-one", "One, renamed"), BOARDS[1]], dry_run=True)
    assert [r for r in grafana.take() if r.write] == []
    assert [line for line in report.lines() if not line.startswith("unchanged")] == [
        "update    dashboard     sw-one (One, renamed)"
    ]


@pytest.mark.parametrize(
    ("boards", "message"),
    [
        ([dashboard("sw-one", "One") | {"panels": "[]"}], "panels must be a list of objects, not str"),
        ([BOARDS[0], dashboard("sw-one", "Again")], "dashboard 'sw-one': uid also used by dashboard #1"),
        (
            [
                dashboard("sw-one", "One")
                | {"panels": [dashboard("x", "x")["panels"][0] | {"datasource": {"uid": "nope"}}]}
            ],
            "nope",
        ),
    ],
)
def test_invalid_dashboards_send_no_request(
    grafana: FakeGrafana, boards: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(PublishError) as error:
        run(grafana, boards)
    assert str(error.value).startswith("nothing published:")
    assert message in str(error.value)
    assert grafana.take() == []


def test_an_invalid_rule_sends_no_request(grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = alert_rules.api_rules()
    rules[1]["condition"] = "Z"
    monkeypatch.setattr(alert_rules, "api_rules", lambda: rules)
    with pytest.raises(PublishError) as error:
        run(grafana, BOARDS)
    assert (
        "rule 'strainwatch-site-devices-silent' (Site devices silent): condition 'Z' is not a refId"
        in str(error.value)
    )
    assert grafana.take() == []


def test_a_refusing_grafana_stops_with_its_answer(grafana: FakeGrafana) -> None:
    with pytest.raises(PublishError, match=r"cannot read the folder from Grafana: HTTP 401: Unauthorized"):
        publish.publish(grafana.url, "wrong", BOARDS, False, influx=INFLUX, webhook=WEBHOOK)
    grafana.errors.clear()


def test_an_unreachable_grafana_is_a_clear_error() -> None:
    from strainwatch.stack.procs import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PublishError, match=r"^cannot read the folder from Grafana: .*Connection refused"):
        publish.publish(url, TOKEN, BOARDS, True, influx=INFLUX, webhook=WEBHOOK)


# --- the command ---------------------------------------------------------------------------------


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(publish.publish_command)
    return app


def test_command_missing_token_variable_and_bad_url_exit_2(grafana: FakeGrafana) -> None:
    runner = CliRunner()
    missing = runner.invoke(_app(), ["--url", grafana.url, "--token-env", "NO_SUCH_TOKEN_VAR"], env={})
    assert missing.exit_code == 2
    assert "--token-env NO_SUCH_TOKEN_VAR: the environment variable is not set or empty" in missing.output
    bad = runner.invoke(_app(), ["--url", "grafana.example.com", "--token-env", "T"], env={"T": TOKEN})
    assert bad.exit_code == 2
    assert "--url 'grafana.example.com' is not an http(s) URL of a Grafana" in bad.output
    assert grafana.take() == []


def test_command_dry_run_reads_the_repository_dashboards(
    grafana: FakeGrafana, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for board in BOARDS:
        (tmp_path / f"{board['uid']}.json").write_text(json.dumps(board))
    monkeypatch.setattr(publish, "DASHBOARDS_DIR", tmp_path)
    result = CliRunner().invoke(
        _app(),
        ["--url", grafana.url, "--token-env", "GRAFANA_TOKEN", "--dry-run"],
        env={"GRAFANA_TOKEN": TOKEN, "STRAINWATCH_GRAFANA_WEBHOOK_URL": WEBHOOK.url},
    )
    assert result.exit_code == 0, result.output
    assert "create    dashboard     sw-two (Two)" in result.output
    assert result.output.strip().endswith(f"12 object(s) would change at {grafana.url} (dry run)")
    assert [r for r in grafana.take() if r.write] == []


def test_command_reads_a_given_dashboards_directory_and_refuses_a_missing_one(
    grafana: FakeGrafana, tmp_path: Path
) -> None:
    """A container has no repository checkout: --dashboards names the mounted directory."""
    for board in BOARDS:
        (tmp_path / f"{board['uid']}.json").write_text(json.dumps(board))
    env = {"GRAFANA_TOKEN": TOKEN, "STRAINWATCH_GRAFANA_WEBHOOK_URL": WEBHOOK.url}
    args = ["--url", grafana.url, "--token-env", "GRAFANA_TOKEN", "--dry-run"]
    result = CliRunner().invoke(_app(), [*args, "--dashboards", str(tmp_path)], env=env)
    assert result.exit_code == 0, result.output
    assert "create    dashboard     sw-two (Two)" in result.output
    missing = CliRunner().invoke(_app(), [*args, "--dashboards", str(tmp_path / "nope")], env=env)
    assert missing.exit_code == 2
    assert "not a directory; nothing published" in missing.output
    empty = tmp_path / "empty"
    empty.mkdir()
    none = CliRunner().invoke(_app(), [*args, "--dashboards", str(empty)], env=env)
    assert none.exit_code == 2 and "no dashboard JSON" in none.output
    assert [r for r in grafana.take() if r.write] == []
