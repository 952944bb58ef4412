"""`strainwatch dashboards publish`: load strainwatch's folder, data source, dashboards, alert rules,
contact point and notification policy into a running Grafana through its HTTP API (grafana-client),
idempotently.

Everything is validated first (dashboards by `validate.validate_dashboard`, rules by
`rules_validate`); a problem stops the publish before any request. Then, per object, the current
state is read and only what differs is written:

| object | read | create | update |
|---|---|---|---|
| folder `strainwatch` | GET /api/folders/{uid} | POST /api/folders | PUT /api/folders/{uid} |
| data source | GET /api/datasources/uid/{uid} | POST /api/datasources | PUT /api/datasources/uid/{uid} |
| contact point | GET /api/v1/provisioning/contact-points | POST …/contact-points | PUT …/{uid} |
| each dashboard | GET /api/dashboards/uid/{uid} | POST /api/dashboards/db (overwrite, in the folder) | same |
| each alert rule | GET /api/v1/provisioning/alert-rules | POST …/alert-rules | PUT …/alert-rules/{uid} |
| each rule group's interval | GET …/folder/{folder}/rule-groups/{group} | PUT the group | PUT the group |
| notification policy | GET /api/v1/provisioning/policies | PUT with strainwatch's route first | same |

Rules, contact point and policy are written without `X-Disable-Provenance`: Grafana marks them as
provisioned, so they cannot be edited in its UI and drift from the code (change the code and publish
again). A Grafana that loads `deploy/grafana/provisioning/` from files owns those objects already;
publish is for a Grafana without them. The policy keeps the org's root and other routes and puts
strainwatch's route (rules with a `strainwatch_rule` label to the webhook) first.

Secrets are never returned by Grafana (the data source's token header, the webhook's credentials),
so they are not compared: a changed InfluxDB token or webhook token is not detected as a change.
A dry run reads the same state and lists what would change; it writes nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import typer

from strainwatch.config import secret_from_env
from strainwatch.dashboards import alert_rules, provisioning
from strainwatch.dashboards.rules_validate import (
    RuleValidationError,
    duration_s,
    validate_provisioning,
    validate_rules,
)

Action = Literal["create", "update", "unchanged"]

REPO = Path(__file__).resolve().parents[3]
DASHBOARDS_DIR = REPO / "dashboards"
DEFAULT_WEBHOOK_URL = "http://127.0.0.1:8095" + provisioning.WEBHOOK_PATH
MESSAGE = "strainwatch dashboards publish"


class PublishError(RuntimeError):
    """Publishing cannot start (invalid input, bad URL) or Grafana refused a request."""


@dataclass(frozen=True)
class Change:
    kind: str  # folder, datasource, contact-point, dashboard, alert-rule, rule-group, policy
    name: str
    action: Action

    def line(self) -> str:
        return f"{self.action:<9} {self.kind:<13} {self.name}"


@dataclass
class PublishReport:
    url: str
    dry_run: bool
    changes: list[Change] = field(default_factory=list)

    @property
    def writes(self) -> int:
        """Objects created or updated (or that would be, in a dry run)."""
        return sum(1 for c in self.changes if c.action != "unchanged")

    def lines(self) -> list[str]:
        return [c.line() for c in self.changes]


@dataclass(frozen=True)
class InfluxTarget:
    """InfluxDB as Grafana reaches it (not necessarily as this machine does)."""

    url: str
    database: str
    token: str


@dataclass(frozen=True)
class WebhookTarget:
    """The alerting service's Grafana webhook as Grafana reaches it."""

    url: str
    token: str = ""


def load_dashboards(directory: Path | None = None) -> list[dict[str, Any]]:
    """The repository's generated dashboards (`dashboards/*.json`), by file name."""
    out = []
    for path in sorted((directory or DASHBOARDS_DIR).glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise PublishError(f"{path}: cannot read dashboard JSON: {error}") from None
    return out


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PublishError(
            f"--url {url!r} is not an http(s) URL of a Grafana, e.g. https://grafana.example.com"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise PublishError(f"--url {url!r} has an invalid port") from None
    return url.rstrip("/")


def validate_all(dashboards: Sequence[Mapping[str, Any]]) -> None:
    """Dashboards and rules, before any request; PublishError lists every problem."""
    from strainwatch.dashboards.validate import validate_dashboard

    problems: list[str] = []
    uids: dict[str, int] = {}
    for i, dashboard in enumerate(dashboards):
        if not isinstance(dashboard, Mapping):
            problems.append(f"dashboard #{i + 1}: not a JSON object")
            continue
        uid = dashboard.get("uid")
        if not isinstance(uid, str) or not uid:
            problems.append(f"dashboard #{i + 1} ({dashboard.get('title')!r}): no uid")
        elif uid in uids:
            problems.append(f"dashboard {uid!r}: uid also used by dashboard #{uids[uid] + 1}")
        else:
            uids[uid] = i
        try:
            validate_dashboard(dict(dashboard), {alert_rules.DATASOURCE_UID})
        except ValueError as error:
            problems.append(str(error))
    try:
        validate_rules(alert_rules.api_rules())
        validate_provisioning(alert_rules.provisioning_groups())
    except RuleValidationError as error:
        problems.append(str(error))
    if problems:
        raise PublishError("nothing published:\n" + "\n".join(problems))


def covers(current: Any, desired: Any) -> bool:
    """Whether `current` (as Grafana returns it) holds everything `desired` sets: dicts may have
    more keys (ids, versions, defaults Grafana adds); lists match item by item."""
    if isinstance(desired, Mapping):
        return isinstance(current, Mapping) and all(
            k in current and covers(current[k], v) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(current, list)
            and len(current) == len(desired)
            and all(covers(c, d) for c, d in zip(current, desired, strict=True))
        )
    if isinstance(desired, bool) or isinstance(current, bool):
        return current is desired
    if isinstance(desired, int | float) and isinstance(current, int | float):
        return float(current) == float(desired)
    return bool(current == desired)


def _http_errors() -> tuple[type[Exception], ...]:
    """What grafana-client raises: its own errors, and niquests' (connection refused, TLS, ...)."""
    import niquests
    from grafana_client.client import GrafanaException

    return (GrafanaException, niquests.exceptions.RequestException)


def _status(error: Exception) -> int:
    return int(getattr(error, "status_code", 0) or 0)


def _describe(error: Exception) -> str:
    status = _status(error)
    return f"HTTP {status}: {error}" if status else str(error)


class _Publisher:
    def __init__(self, api: Any, report: PublishReport) -> None:
        self.api = api
        self.report = report

    def record(self, kind: str, name: str, action: Action, write: Callable[[], Any] | None = None) -> None:
        if action != "unchanged" and write is not None and not self.report.dry_run:
            try:
                write()
            except _http_errors() as error:
                raise PublishError(f"Grafana refused to {action} {kind} {name}: {_describe(error)}") from None
        self.report.changes.append(Change(kind, name, action))

    def read(self, what: str, fn: Callable[[], Any]) -> Any:
        """fn()'s answer, None when Grafana answers 404."""
        try:
            return fn()
        except _http_errors() as error:
            if _status(error) == 404:
                return None
            raise PublishError(f"cannot read {what} from Grafana: {_describe(error)}") from None

    def folder(self) -> None:
        api = self.api.folder
        current = self.read("the folder", lambda: api.get_folder(alert_rules.FOLDER_UID))
        title = alert_rules.FOLDER_TITLE
        if current is None:
            self.record(
                "folder", title, "create", lambda: api.create_folder(title, uid=alert_rules.FOLDER_UID)
            )
        elif current.get("title") != title:
            self.record(
                "folder",
                title,
                "update",
                lambda: api.update_folder(alert_rules.FOLDER_UID, title=title, overwrite=True),
            )
        else:
            self.record("folder", title, "unchanged")

    def datasource(self, influx: InfluxTarget) -> None:
        api = self.api.datasource
        desired = provisioning.datasource(influx.url, influx.database, influx.token)
        uid = desired["uid"]
        current = self.read("the data source", lambda: api.get_datasource_by_uid(uid))
        if current is None:
            self.record("datasource", uid, "create", lambda: api.create_datasource(desired))
            return
        public = {k: v for k, v in desired.items() if k != "secureJsonData"}
        secrets_set = all((current.get("secureJsonFields") or {}).get(k) for k in desired["secureJsonData"])
        same = covers(current, public) and secrets_set
        self.record(
            "datasource",
            uid,
            "unchanged" if same else "update",
            lambda: api.update_datasource_by_uid(uid, desired),
        )

    def contact_point(self, webhook: WebhookTarget) -> None:
        api = self.api.alertingprovisioning
        desired = provisioning.contact_point(webhook.url, webhook.token)
        uid = desired["uid"]
        points = self.read("contact points", lambda: api.get_contactpoints(name=desired["name"])) or []
        current = next((p for p in points if p.get("uid") == uid), None)
        if current is None:
            self.record("contact-point", desired["name"], "create", lambda: api.create_contactpoint(desired))
            return
        public = dict(desired)
        public["settings"] = {
            k: v for k, v in desired["settings"].items() if k not in provisioning.SECRET_SETTINGS
        }
        same = covers(current, public)
        self.record(
            "contact-point",
            desired["name"],
            "unchanged" if same else "update",
            lambda: api.update_contactpoint(uid, desired),
        )

    def dashboard(self, dashboard: Mapping[str, Any]) -> None:
        api = self.api.dashboard
        uid = str(dashboard["uid"])
        name = f"{uid} ({dashboard.get('title', '')})"
        desired = {k: v for k, v in dashboard.items() if k not in ("id", "version")}
        body = {
            "dashboard": {**desired, "id": None},
            "folderUid": alert_rules.FOLDER_UID,
            "overwrite": True,
            "message": MESSAGE,
        }
        current = self.read(f"dashboard {uid}", lambda: api.get_dashboard(uid))
        if current is None:
            self.record("dashboard", name, "create", lambda: api.update_dashboard(body))
            return
        stored = {k: v for k, v in (current.get("dashboard") or {}).items() if k not in ("id", "version")}
        in_folder = (current.get("meta") or {}).get("folderUid") == alert_rules.FOLDER_UID
        same = in_folder and stored == desired
        self.record("dashboard", name, "unchanged" if same else "update", lambda: api.update_dashboard(body))

    def rules(self) -> None:
        api = self.api.alertingprovisioning
        existing = {r.get("uid"): r for r in self.read("alert rules", api.get_alertrules_all) or []}
        groups_before = {
            name: self.read(f"rule group {name}", partial(api.get_rule_group, alert_rules.FOLDER_UID, name))
            for name in alert_rules.GROUP_INTERVALS_S
        }
        desired_rules = alert_rules.api_rules()
        for rule in desired_rules:
            uid = rule["uid"]
            current = existing.get(uid)
            if current is None:
                self.record("alert-rule", uid, "create", partial(api.create_alertrule, rule))
                continue
            same = covers(
                {k: v for k, v in current.items() if k != "for"},
                {k: v for k, v in rule.items() if k != "for"},
            ) and _same_duration(current.get("for"), rule["for"])
            self.record(
                "alert-rule",
                uid,
                "unchanged" if same else "update",
                partial(api.update_alertrule, uid, rule),
            )
        for name, interval in alert_rules.GROUP_INTERVALS_S.items():
            before = groups_before[name]
            group = {
                "title": name,
                "folderUid": alert_rules.FOLDER_UID,
                "interval": interval,
                "rules": [r for r in desired_rules if r["ruleGroup"] == name],
            }
            action: Action = (
                "create"
                if before is None
                else "unchanged"
                if before.get("interval") == interval
                else "update"
            )
            if action == "create" and not self.report.dry_run:
                # the rules just created made the group, with Grafana's default interval
                after = self.read(
                    f"rule group {name}", partial(api.get_rule_group, alert_rules.FOLDER_UID, name)
                )
                if after is not None and after.get("interval") == interval:
                    self.report.changes.append(Change("rule-group", f"{name} every {interval}s", "create"))
                    continue
            self.record(
                "rule-group",
                f"{name} every {interval}s",
                action,
                partial(api.update_rule_group, alert_rules.FOLDER_UID, name, group),
            )

    def policy(self) -> None:
        api = self.api.alertingprovisioning
        tree = self.read("the notification policy", api.get_notification_policy_tree) or {}
        routes = list(tree.get("routes") or [])
        ours = [r for r in routes if r.get("receiver") == provisioning.CONTACT_POINT_NAME]
        desired = provisioning.strainwatch_route()
        if len(ours) == 1 and routes[0] is ours[0] and covers(ours[0], desired):
            self.record("policy", f"route to {provisioning.CONTACT_POINT_NAME}", "unchanged")
            return
        others = [r for r in routes if r.get("receiver") != provisioning.CONTACT_POINT_NAME]
        new_tree = {k: v for k, v in tree.items() if k != "provenance"}
        new_tree["routes"] = [desired, *others]
        if not new_tree.get("receiver"):  # an empty Grafana: strainwatch's receiver is the root's too
            new_tree["receiver"] = provisioning.CONTACT_POINT_NAME
        self.record(
            "policy",
            f"route to {provisioning.CONTACT_POINT_NAME}",
            "update" if ours else "create",
            lambda: api.set_notification_policy_tree(new_tree),
        )


def _same_duration(current: Any, desired: str) -> bool:
    try:
        return duration_s(str(current)) == duration_s(desired)
    except ValueError:
        return False


def publish(
    url: str,
    token: str,
    dashboards: list[dict[str, Any]],
    dry_run: bool,
    *,
    influx: InfluxTarget | None = None,
    webhook: WebhookTarget | None = None,
    timeout_s: float = 30.0,
) -> PublishReport:
    """Create or update everything that differs; with `dry_run`, only read and report."""
    url = check_url(url)
    validate_all(dashboards)
    if influx is None:
        from strainwatch.config import get_settings

        settings = get_settings()
        influx = InfluxTarget(
            settings.influx_url, settings.influx_bucket, settings.influx_token.get_secret_value()
        )
    if webhook is None:
        webhook = WebhookTarget(DEFAULT_WEBHOOK_URL)

    from grafana_client.api import GrafanaApi

    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    report = PublishReport(url, dry_run)
    publisher = _Publisher(api, report)
    publisher.folder()
    publisher.datasource(influx)
    publisher.contact_point(webhook)
    for dashboard in dashboards:
        publisher.dashboard(dashboard)
    publisher.rules()
    publisher.policy()
    return report


def publish_command(
    url: str = typer.Option(..., "--url", help="Grafana's base URL, e.g. https://grafana.example.com"),
    token_env: str = typer.Option(
        ..., "--token-env", help="name of the environment variable holding a Grafana service account token"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would change; write nothing"),
    dashboards_dir: Path | None = typer.Option(
        None,
        "--dashboards",
        help="directory of generated dashboard JSON (default: the repository's dashboards/)",
    ),
) -> None:
    """Create or update the folder, data source, dashboards, alert rules, contact point and policy.

    The data source points Grafana at STRAINWATCH_INFLUX_URL / _BUCKET / _TOKEN (or
    STRAINWATCH_GRAFANA_INFLUX_URL when Grafana reaches InfluxDB at another address); the contact
    point at STRAINWATCH_GRAFANA_WEBHOOK_URL (default http://127.0.0.1:8095/grafana/alerts) with the
    token in STRAINWATCH_GRAFANA_WEBHOOK_TOKEN."""
    token = secret_from_env(token_env)  # or the file <token_env>_FILE names
    if not token:
        typer.echo(f"error: --token-env {token_env}: the environment variable is not set or empty", err=True)
        raise typer.Exit(2)
    from strainwatch.config import get_settings

    settings = get_settings()
    influx = InfluxTarget(
        os.environ.get("STRAINWATCH_GRAFANA_INFLUX_URL") or settings.influx_url,
        settings.influx_bucket,
        settings.influx_token.get_secret_value(),
    )
    webhook = WebhookTarget(
        os.environ.get("STRAINWATCH_GRAFANA_WEBHOOK_URL") or DEFAULT_WEBHOOK_URL,
        secret_from_env("STRAINWATCH_GRAFANA_WEBHOOK_TOKEN"),
    )
    try:
        check_url(url)
        if dashboards_dir is not None and not dashboards_dir.is_dir():
            raise PublishError(f"--dashboards {dashboards_dir}: not a directory; nothing published")
        dashboards = load_dashboards(dashboards_dir)
        if not dashboards:
            raise PublishError(f"no dashboard JSON in {dashboards_dir or DASHBOARDS_DIR}; nothing published")
        report = publish(url, token, dashboards, dry_run, influx=influx, webhook=webhook)
    except PublishError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2 if "nothing published" in str(error) or "--url" in str(error) else 1) from None
    verb = "would change" if dry_run else "changed"
    for text in report.lines():
        typer.echo(text)
    typer.echo(f"{report.writes} object(s) {verb} at {report.url}" + (" (dry run)" if dry_run else ""))
