"""What Grafana does not check when it accepts an alert rule (it answers 201 and the rule fails
later, in its health): the data source of every query exists, the condition and every expression
refer to refIds the rule has, uids are unique, titles, `for` and group intervals are there.

`validate_rules(rules)` takes rules in the provisioning API's shape (`alert_rules.api_rules()`),
`validate_provisioning(doc)` Grafana's alerting file (`alert_rules.provisioning_groups()`). Both
raise `RuleValidationError` listing every problem, each naming its rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from strainwatch.dashboards.alert_rules import DATASOURCE_UID, EXPR_UID

KNOWN_DATASOURCES = frozenset({DATASOURCE_UID})
EXPRESSION_TYPES = frozenset({"math", "reduce", "threshold", "resample", "classic_conditions", "sql"})
REDUCERS = frozenset({"sum", "mean", "min", "max", "count", "last", "median"})
REDUCE_MODES = frozenset({"strict", "dropNN", "replaceNN"})
EVALUATORS = {"gt": 1, "lt": 1, "eq": 1, "ne": 1, "ge": 1, "le": 1, "within_range": 2, "outside_range": 2}
STATES_NO_DATA = frozenset({"Alerting", "NoData", "OK", "KeepLast"})
STATES_EXEC_ERR = frozenset({"Alerting", "Error", "OK", "KeepLast"})

_UID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")
_MATH_REF = re.compile(r"\$\{([^}]+)\}|\$([A-Za-z0-9_]+)")


class RuleValidationError(ValueError):
    """Every problem found, one per line, each naming its rule."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid alert rules:\n  " + "\n  ".join(self.problems))


def _name(rule: Mapping[str, Any], index: int) -> str:
    uid = rule.get("uid")
    title = rule.get("title")
    title = title.strip() if isinstance(title, str) else None
    if uid and title:
        return f"rule {uid!r} ({title})"
    if uid or title:
        return f"rule {uid or title!r}"
    return f"rule #{index + 1} (no uid, no title)"


def duration_s(text: str) -> float:
    """A Grafana duration ('5m', '1h30m', '0s') in seconds; ValueError if it is none."""
    if not isinstance(text, str) or not _DURATION.match(text):
        raise ValueError(f"not a duration: {text!r}")
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800, "y": 31_536_000}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text))


def expression_refs(model: Mapping[str, Any]) -> list[str]:
    """The refIds a server-side expression reads."""
    kind = model.get("type")
    text = model.get("expression")
    if kind == "math":
        return [a or b for a, b in _MATH_REF.findall(text or "")]
    if kind == "classic_conditions":
        refs: list[str] = []
        for condition in model.get("conditions") or []:
            params = ((condition or {}).get("query") or {}).get("params") or []
            refs.extend(p for p in params[:1] if isinstance(p, str))
        return refs
    if kind == "sql":
        return []  # table names in SQL text; not parsed here
    return [text] if isinstance(text, str) else []


def rule_problems(
    rule: Mapping[str, Any], index: int = 0, known_datasources: Iterable[str] = KNOWN_DATASOURCES
) -> list[str]:
    """The problems of one rule (empty when it is fine)."""
    known = set(known_datasources)
    name = _name(rule, index)
    out: list[str] = []
    uid = rule.get("uid")
    if not isinstance(uid, str) or not uid:
        out.append(
            f"{name}: no uid (Grafana would make one up, and a second publish would duplicate the rule)"
        )
    elif not _UID.match(uid):
        out.append(f"{name}: uid {uid!r} must be 1-40 letters, digits, '-' or '_'")
    title = rule.get("title")
    if not isinstance(title, str) or not title.strip():
        out.append(f"{name}: no title")
    for_ = rule.get("for")
    if for_ is None or for_ == "":
        out.append(f"{name}: no 'for' duration")
    else:
        try:
            duration_s(for_)
        except ValueError:
            out.append(f"{name}: 'for' {for_!r} is not a duration like 0s, 5m, 1h")
    if rule.get("noDataState") not in STATES_NO_DATA:
        out.append(f"{name}: noDataState {rule.get('noDataState')!r} is not one of {sorted(STATES_NO_DATA)}")
    if rule.get("execErrState") not in STATES_EXEC_ERR:
        out.append(
            f"{name}: execErrState {rule.get('execErrState')!r} is not one of {sorted(STATES_EXEC_ERR)}"
        )
    for key, value in (rule.get("labels") or {}).items():
        if "$" in str(key) or "$" in str(value):
            out.append(f"{name}: label {key}={value!r} has a '$' (Grafana's provisioning replaces it)")

    data = rule.get("data")
    if not isinstance(data, list) or not data:
        out.append(f"{name}: no data (queries and expressions)")
        return out
    refs: list[str] = []
    for i, query in enumerate(data):
        ref = query.get("refId") if isinstance(query, dict) else None
        if not isinstance(ref, str) or not ref:
            out.append(f"{name}: data[{i}] has no refId")
            continue
        if ref in refs:
            out.append(f"{name}: refId {ref!r} is used twice")
        refs.append(ref)
    ref_set = set(refs)
    condition = rule.get("condition")
    if not condition:
        out.append(f"{name}: no condition")
    elif condition not in ref_set:
        out.append(f"{name}: condition {condition!r} is not a refId of its data ({', '.join(refs)})")

    for i, query in enumerate(data):
        if not isinstance(query, dict):
            out.append(f"{name}: data[{i}] is not an object")
            continue
        ref = query.get("refId") or f"data[{i}]"
        ds = query.get("datasourceUid")
        model = query.get("model")
        if not isinstance(model, dict):
            out.append(f"{name}: {ref}: no model")
            continue
        if model.get("refId") not in (None, query.get("refId")):
            out.append(f"{name}: {ref}: its model says refId {model.get('refId')!r}")
        if ds == EXPR_UID:
            out.extend(_expression_problems(name, ref, model, ref_set))
            continue
        if ds not in known:
            out.append(
                f"{name}: {ref}: data source {ds!r} does not exist (known: {', '.join(sorted(known))}, "
                f"or {EXPR_UID} for expressions)"
            )
        model_ds = (model.get("datasource") or {}).get("uid")
        if model_ds is not None and model_ds != ds:
            out.append(f"{name}: {ref}: model data source {model_ds!r} differs from datasourceUid {ds!r}")
        if model.get("rawQuery") and not str(model.get("query") or "").strip():
            out.append(f"{name}: {ref}: raw query is empty")
        span = query.get("relativeTimeRange") or {}
        start, end = span.get("from"), span.get("to", 0)
        if not isinstance(start, int) or not isinstance(end, int) or start <= end or end < 0:
            out.append(
                f"{name}: {ref}: relativeTimeRange {span!r} must have from > to >= 0 (seconds before now)"
            )
    return out


def _expression_problems(name: str, ref: str, model: Mapping[str, Any], refs: set[str]) -> list[str]:
    out = []
    kind = model.get("type")
    if kind not in EXPRESSION_TYPES:
        return [f"{name}: {ref}: expression type {kind!r} is not one of {sorted(EXPRESSION_TYPES)}"]
    used = expression_refs(model)
    if kind != "sql" and not used:
        out.append(f"{name}: {ref}: {kind} expression refers to no refId")
    for target in used:
        if target == ref:
            out.append(f"{name}: {ref}: {kind} expression refers to itself")
        elif target not in refs:
            out.append(f"{name}: {ref}: {kind} expression refers to {target!r}, which is not in the rule")
    if kind == "reduce":
        if model.get("reducer") not in REDUCERS:
            out.append(f"{name}: {ref}: reducer {model.get('reducer')!r} is not one of {sorted(REDUCERS)}")
        mode = (model.get("settings") or {}).get("mode", "strict")
        if mode not in REDUCE_MODES:
            out.append(f"{name}: {ref}: reduce mode {mode!r} is not one of {sorted(REDUCE_MODES)}")
    if kind == "threshold":
        conditions = model.get("conditions") or []
        if not conditions:
            out.append(f"{name}: {ref}: threshold without conditions")
        for condition in conditions:
            evaluator = (condition or {}).get("evaluator") or {}
            etype, params = evaluator.get("type"), evaluator.get("params") or []
            if etype not in EVALUATORS:
                out.append(f"{name}: {ref}: threshold type {etype!r} is not one of {sorted(EVALUATORS)}")
            elif len(params) < EVALUATORS[etype] or not all(isinstance(p, int | float) for p in params):
                out.append(
                    f"{name}: {ref}: threshold {etype} needs {EVALUATORS[etype]} number(s), got {params!r}"
                )
    return out


def _duplicates(rules: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    seen: dict[str, int] = {}
    titles: dict[tuple[Any, str], int] = {}
    for i, rule in enumerate(rules):
        uid = rule.get("uid")
        if isinstance(uid, str) and uid:
            if uid in seen:
                out.append(f"{_name(rule, i)}: uid {uid!r} is also rule #{seen[uid] + 1}'s")
            seen.setdefault(uid, i)
        title = rule.get("title")
        if isinstance(title, str) and title:
            key = (rule.get("folderUID"), title)
            if key in titles:
                out.append(
                    f"{_name(rule, i)}: title {title!r} is also rule #{titles[key] + 1}'s in the folder"
                )
            titles.setdefault(key, i)
    return out


def validate_rules(
    rules: Sequence[Mapping[str, Any]], known_datasources: Iterable[str] = KNOWN_DATASOURCES
) -> None:
    """Rules in the provisioning API's shape; raises RuleValidationError with every problem."""
    known = set(known_datasources)
    problems = _duplicates(rules)
    for i, rule in enumerate(rules):
        problems.extend(rule_problems(rule, i, known))
        name = _name(rule, i)
        if not rule.get("folderUID"):
            problems.append(f"{name}: no folderUID")
        if not rule.get("ruleGroup"):
            problems.append(f"{name}: no ruleGroup")
    if problems:
        raise RuleValidationError(problems)


def validate_provisioning(
    doc: Mapping[str, Any], known_datasources: Iterable[str] = KNOWN_DATASOURCES
) -> None:
    """Grafana's alerting provisioning file (apiVersion 1, groups of rules)."""
    known = set(known_datasources)
    problems: list[str] = []
    if doc.get("apiVersion") != 1:
        problems.append(f"apiVersion {doc.get('apiVersion')!r} is not 1")
    groups = doc.get("groups")
    if not isinstance(groups, list) or not groups:
        raise RuleValidationError([*problems, "no groups"])
    every: list[Mapping[str, Any]] = []
    for g, group in enumerate(groups):
        label = f"group {group.get('name') or f'#{g + 1}'!r}"
        if not group.get("name"):
            problems.append(f"{label}: no name")
        if not group.get("folder"):
            problems.append(f"{label}: no folder")
        interval = group.get("interval")
        if not interval:
            problems.append(f"{label}: no interval")
        else:
            try:
                seconds = duration_s(str(interval))
            except ValueError:
                problems.append(f"{label}: interval {interval!r} is not a duration like 1m")
            else:
                if seconds <= 0 or seconds % 10:
                    problems.append(f"{label}: interval {interval!r} must be a positive multiple of 10s")
        rules = group.get("rules")
        if not isinstance(rules, list) or not rules:
            problems.append(f"{label}: no rules")
            continue
        for rule in rules:
            every.append({**rule, "folderUID": group.get("folder")})
    problems.extend(_duplicates(every))
    for i, rule in enumerate(every):
        problems.extend(rule_problems(rule, i, known))
    if problems:
        raise RuleValidationError(problems)
