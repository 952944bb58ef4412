"""Grafana-managed alert rules, generated with grafana-foundation-sdk's alerting builders.

Four rules, in two groups of the `strainwatch` folder:

- `strainwatch-team-exposure-rising` (group `strainwatch-managers`): a team's upper-back dose per
  monitored hour over the last 24 h is above `EXPOSURE_RISE_FACTOR` × the same figure over the 28
  days before (teams of at least 5 workers in both ranges);
- `strainwatch-site-devices-silent` (`strainwatch-managers`): a site that wrote exposure windows in
  the last `SILENT_LOOKBACK_S` has written none for `SILENT_MINUTES`;
- `strainwatch-dead-letter-rate` (`strainwatch-pipeline`): a service dead-lettered more than
  `DEAD_LETTER_PERCENT` % of the frames it took in over `DEAD_LETTER_WINDOW_S` (at least
  `DEAD_LETTER_MIN_FRAMES` frames);
- `strainwatch-processor-lag` (`strainwatch-pipeline`): a processor instance's consumer lag is above
  `LAG_FRAMES_MAX` frames or its last checkpoint is older than `CHECKPOINT_AGE_MAX_S`.

Each rule: InfluxQL queries (`rule_queries.py`) against the strainwatch InfluxDB data source, then
server-side expressions (`__expr__`): reduce every series to its last value, a math expression
comparing them, and a threshold on that (> 0), the rule's condition. The labels route them:
`audience=manager` rules go to the site's channels through the alerting service's Grafana webhook;
`audience=operations` rules are for whoever runs the pipeline.

Two renderings of the same rules: `provisioning_groups()` (Grafana's file provisioning format,
`deploy/grafana/provisioning/alerting/rules.yaml`) and `api_rules()` (the provisioning HTTP API's
`/api/v1/provisioning/alert-rules` bodies, for `publish`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from grafana_foundation_sdk.builders import alerting, expr
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import alerting as alerting_models

from strainwatch.dashboards import rule_queries
from strainwatch.storage.figures import MIN_WORKERS

DATASOURCE_UID = "strainwatch-influxdb"
DATASOURCE_TYPE = "influxdb"
EXPR_UID = "__expr__"
FOLDER_UID = "strainwatch"
FOLDER_TITLE = "strainwatch"
ORG_ID = 1

GROUP_MANAGERS = "strainwatch-managers"
GROUP_PIPELINE = "strainwatch-pipeline"
GROUP_INTERVALS_S = {GROUP_MANAGERS: 300, GROUP_PIPELINE: 60}

DAY_S = 86_400
EXPOSURE_RISE_FACTOR = 1.25
EXPOSURE_BASELINE_DAYS = 28
SILENT_MINUTES = 15
SILENT_LOOKBACK_S = 2 * 3600
DEAD_LETTER_PERCENT = 1.0
DEAD_LETTER_WINDOW_S = 600
DEAD_LETTER_MIN_FRAMES = 100
LAG_FRAMES_MAX = 50_000
CHECKPOINT_AGE_MAX_S = 60.0
GAUGE_WINDOW_S = 300

# Grafana gives an alerting data source query `intervalMs` as its interval ($__interval); set it
# explicitly so a rule never depends on the default (1 s).
QUERY_INTERVAL_MS = 60_000
MAX_DATA_POINTS = 43_200

NoData = Literal["Alerting", "NoData", "OK"]
ExecErr = Literal["OK", "Alerting", "Error"]


class InfluxQLQuery(cogvariants.Dataquery):
    """The InfluxDB data source's query model in raw InfluxQL mode (the SDK has no InfluxDB types)."""

    def __init__(self, ref_id: str, query: str, interval_ms: int, max_data_points: int) -> None:
        self.ref_id = ref_id
        self.query = query
        self.interval_ms = interval_ms
        self.max_data_points = max_data_points

    def to_json(self) -> dict[str, object]:
        return {
            "datasource": {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID},
            "intervalMs": self.interval_ms,
            "maxDataPoints": self.max_data_points,
            "query": self.query,
            "rawQuery": True,
            "refId": self.ref_id,
            "resultFormat": "time_series",
        }


class InfluxQLQueryBuilder(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, ref_id: str, query: str) -> None:
        self._ref_id = ref_id
        self._query = query

    def build(self) -> cogvariants.Dataquery:
        return InfluxQLQuery(self._ref_id, self._query, QUERY_INTERVAL_MS, MAX_DATA_POINTS)


@dataclass(frozen=True)
class Source:
    """One InfluxQL query of a rule, over [now - from_s, now - to_s]."""

    ref: str
    query: str
    from_s: int
    to_s: int = 0


@dataclass(frozen=True)
class RuleSpec:
    uid: str
    title: str
    group: str
    sources: tuple[Source, ...]
    math: str  # over the reduced sources: `$R<ref>`
    for_: str
    summary: str
    description: str
    labels: dict[str, str] = field(default_factory=dict)
    no_data_state: NoData = "OK"
    exec_err_state: ExecErr = "Error"

    @property
    def condition(self) -> str:
        return "T"


def _reduced(ref: str) -> str:
    return f"R{ref}"


def rule_specs() -> list[RuleSpec]:
    baseline_from = (EXPOSURE_BASELINE_DAYS + 1) * DAY_S
    factor = repr(EXPOSURE_RISE_FACTOR)
    return [
        RuleSpec(
            uid="strainwatch-team-exposure-rising",
            title="Team exposure rising against its 4-week baseline",
            group=GROUP_MANAGERS,
            sources=(
                Source("A", rule_queries.team_dose_per_hour(), DAY_S),
                Source("B", rule_queries.team_dose_per_hour(), baseline_from, DAY_S),
            ),
            math=f"$RA > {factor} * $RB",
            for_="0s",
            summary=(
                "Team {{ $labels.team }} at {{ $labels.site }}: upper-back dose per monitored hour "
                "{{ humanize $values.RA.Value }} over the last 24 h, against "
                "{{ humanize $values.RB.Value }} over the 28 days before"
            ),
            description=(
                f"The team's upper-back strain dose per monitored hour rose above {factor} times its "
                f"own 4-week baseline (teams of at least {MIN_WORKERS} workers)."
            ),
            labels={"audience": "manager", "strainwatch_rule": "team_exposure_rising"},
        ),
        RuleSpec(
            uid="strainwatch-site-devices-silent",
            title="Site devices silent",
            group=GROUP_MANAGERS,
            sources=(Source("A", rule_queries.site_recent_windows(SILENT_MINUTES), SILENT_LOOKBACK_S),),
            math="$RA < 1",
            for_="0s",
            summary=(
                f"No exposure data from {{{{ $labels.site }}}} for {SILENT_MINUTES} minutes "
                f"(it sent data in the {SILENT_LOOKBACK_S // 3600} h before)"
            ),
            description=(
                "Every device of the site stopped reporting: the gateway, the site's MQTT broker or "
                "its network may be down (or the shift ended early)."
            ),
            labels={"audience": "manager", "strainwatch_rule": "site_devices_silent"},
        ),
        RuleSpec(
            uid="strainwatch-dead-letter-rate",
            title="Dead-letter rate",
            group=GROUP_PIPELINE,
            sources=(
                Source("A", rule_queries.dead_letter_percent(DEAD_LETTER_MIN_FRAMES), DEAD_LETTER_WINDOW_S),
            ),
            math=f"$RA > {DEAD_LETTER_PERCENT!r}",
            for_="0s",
            summary=(
                "{{ $labels.service }} dead-lettered {{ humanize $values.RA.Value }} % of its frames "
                f"in the last {DEAD_LETTER_WINDOW_S // 60} minutes"
            ),
            description=(
                f"More than {DEAD_LETTER_PERCENT!r} % of the frames a service took in went to the "
                "dead-letter "
                "topic; the pipeline-health dashboard shows the reasons."
            ),
            labels={"audience": "operations", "strainwatch_rule": "dead_letter_rate"},
        ),
        RuleSpec(
            uid="strainwatch-processor-lag",
            title="Processor lag or stale checkpoints",
            group=GROUP_PIPELINE,
            sources=(
                Source("A", rule_queries.processor_gauge("lag_frames"), GAUGE_WINDOW_S),
                Source("B", rule_queries.processor_gauge("checkpoint_age_s"), GAUGE_WINDOW_S),
            ),
            math=f"$RA > {LAG_FRAMES_MAX} || $RB > {CHECKPOINT_AGE_MAX_S!r}",
            for_="2m",
            summary=(
                "Processor {{ $labels.instance }}: lag {{ humanize $values.RA.Value }} frames, "
                "last checkpoint {{ humanize $values.RB.Value }} s ago"
            ),
            description=(
                f"A processor instance is more than {LAG_FRAMES_MAX} frames behind or has not completed a "
                f"checkpoint for {CHECKPOINT_AGE_MAX_S!r} s (checkpoints run every few seconds). No "
                "pipeline points at all means no processor writes them: the rule then alerts as no data."
            ),
            labels={"audience": "operations", "strainwatch_rule": "processor_lag"},
            no_data_state="Alerting",
        ),
    ]


def _rule_builder(spec: RuleSpec) -> alerting.Rule:
    rule = (
        alerting.Rule(spec.title)
        .uid(spec.uid)
        .org_id(ORG_ID)
        .folder_uid(FOLDER_UID)
        .rule_group(spec.group)
        .condition(spec.condition)
        .for_val(spec.for_)
        .no_data_state(spec.no_data_state)
        .exec_err_state(spec.exec_err_state)
        .annotations({"summary": spec.summary, "description": spec.description})
        .labels(dict(spec.labels))
    )
    for source in spec.sources:
        rule = rule.with_query(
            alerting.Query(source.ref)
            .datasource_uid(DATASOURCE_UID)
            .relative_time_range(alerting_models.RelativeTimeRange(from_val=source.from_s, to=source.to_s))
            .model(InfluxQLQueryBuilder(source.ref, source.query))
        )
    for source in spec.sources:
        reduce = (
            expr.TypeReduce()
            .ref_id(_reduced(source.ref))
            .expression(source.ref)
            .reducer("last")
            .settings(expr.ExprTypeReduceSettings().mode("dropNN"))
        )
        rule = rule.with_query(_expression(_reduced(source.ref), reduce))
    math = expr.TypeMath().ref_id("M").expression(spec.math)
    threshold = (
        expr.TypeThreshold()
        .ref_id("T")
        .expression("M")
        .conditions(
            [
                expr.ExprTypeThresholdConditions().evaluator(
                    expr.ExprTypeThresholdConditionsEvaluator().type("gt").params([0.0])
                )
            ]
        )
    )
    return rule.with_query(_expression("M", math)).with_query(_expression("T", threshold))


def _expression(ref: str, model: cogbuilder.Builder[cogvariants.Dataquery]) -> alerting.Query:
    # server-side expressions have no time range of their own
    return (
        alerting.Query(ref)
        .datasource_uid(EXPR_UID)
        .relative_time_range(alerting_models.RelativeTimeRange(from_val=0, to=0))
        .model(model)
    )


def _plain(obj: object) -> Any:
    """The SDK objects as plain JSON data (dicts, lists, numbers, strings)."""
    return json.loads(json.dumps(obj, cls=JSONEncoder, sort_keys=True))


def api_rules() -> list[dict[str, Any]]:
    """The rules as the provisioning API takes them (POST/PUT /api/v1/provisioning/alert-rules)."""
    rules = []
    for spec in rule_specs():
        doc = _plain(_rule_builder(spec).build())
        for query in doc["data"]:  # Grafana adds the data source to expression models itself
            if query["datasourceUid"] == EXPR_UID:
                query["model"]["datasource"] = {"type": EXPR_UID, "uid": EXPR_UID}
        rules.append(doc)
    return rules


def rule_groups() -> list[dict[str, Any]]:
    """The groups as the provisioning API's rule-group endpoint returns them (folderUid, title,
    interval, rules)."""
    out = []
    for name, interval in GROUP_INTERVALS_S.items():
        rules = [r for r in api_rules() if r["ruleGroup"] == name]
        out.append({"folderUid": FOLDER_UID, "interval": interval, "rules": rules, "title": name})
    return out


_FILE_RULE_KEYS = (
    "uid",
    "title",
    "condition",
    "data",
    "noDataState",
    "execErrState",
    "for",
    "annotations",
    "labels",
    "isPaused",
)


def provisioning_groups() -> dict[str, Any]:
    """Grafana's alerting file provisioning document (apiVersion 1, groups)."""
    groups = []
    for group in rule_groups():
        rules = []
        for rule in group["rules"]:
            doc = {key: rule[key] for key in _FILE_RULE_KEYS if key in rule}
            doc.setdefault("isPaused", False)
            rules.append(doc)
        groups.append(
            {
                "orgId": ORG_ID,
                "name": group["title"],
                "folder": FOLDER_TITLE,
                "interval": f"{group['interval']}s",
                "rules": rules,
            }
        )
    return {"apiVersion": 1, "groups": groups}
