"""rules_validate refuses what Grafana accepts with 201 and fails on later: each broken case is
rejected with a message naming the rule and the problem."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from strainwatch.dashboards import alert_rules
from strainwatch.dashboards.rules_validate import (
    RuleValidationError,
    duration_s,
    validate_provisioning,
    validate_rules,
)

pytestmark = pytest.mark.unit

Rule = dict[str, Any]


def _rules() -> list[Rule]:
    return copy.deepcopy(alert_rules.api_rules())


def _query(rule: Rule, ref: str) -> dict[str, Any]:
    (query,) = [q for q in rule["data"] if q["refId"] == ref]
    return query


def test_generated_rules_and_file_are_valid() -> None:
    validate_rules(alert_rules.api_rules())
    validate_provisioning(alert_rules.provisioning_groups())


def _set(path: Callable[[Rule], None]) -> Callable[[list[Rule]], None]:
    def mutate(rules: list[Rule]) -> None:
        path(rules[0])

    return mutate


RISING = "rule 'strainwatch-team-exposure-rising' (Team exposure rising against its 4-week baseline)"


def _unknown_ds(rule: Rule) -> None:
    _query(rule, "A")["datasourceUid"] = "influx-typo"
    _query(rule, "A")["model"]["datasource"]["uid"] = "influx-typo"


def _missing_condition(rule: Rule) -> None:
    rule["condition"] = "Z"


def _math_missing(rule: Rule) -> None:
    _query(rule, "M")["model"]["expression"] = "$RA > 1.25 * $RC"


def _reduce_missing(rule: Rule) -> None:
    _query(rule, "RB")["model"]["expression"] = "C"


def _threshold_self(rule: Rule) -> None:
    _query(rule, "T")["model"]["expression"] = "T"


def _no_title(rule: Rule) -> None:
    rule["title"] = " "


def _no_for(rule: Rule) -> None:
    del rule["for"]


def _bad_for(rule: Rule) -> None:
    rule["for"] = "five minutes"


def _no_uid(rule: Rule) -> None:
    del rule["uid"]


def _dollar_label(rule: Rule) -> None:
    rule["labels"]["site"] = "$site"


def _duplicate_ref(rule: Rule) -> None:
    second = _query(rule, "B")
    second["refId"] = second["model"]["refId"] = "A"


def _no_data(rule: Rule) -> None:
    rule["data"] = []


def _bad_range(rule: Rule) -> None:
    _query(rule, "B")["relativeTimeRange"] = {"from": 3600, "to": 86_400}


def _bad_reducer(rule: Rule) -> None:
    _query(rule, "RA")["model"]["reducer"] = "avg"


def _bad_threshold(rule: Rule) -> None:
    _query(rule, "T")["model"]["conditions"][0]["evaluator"] = {"type": "within_range", "params": [1]}


def _no_folder(rule: Rule) -> None:
    del rule["folderUID"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            _unknown_ds,
            f"{RISING}: A: data source 'influx-typo' does not exist "
            "(known: strainwatch-influxdb, or __expr__ for expressions)",
        ),
        (_missing_condition, f"{RISING}: condition 'Z' is not a refId of its data (A, B, RA, RB, M, T)"),
        (_math_missing, f"{RISING}: M: math expression refers to 'RC', which is not in the rule"),
        (_reduce_missing, f"{RISING}: RB: reduce expression refers to 'C', which is not in the rule"),
        (_threshold_self, f"{RISING}: T: threshold expression refers to itself"),
        (_no_title, "rule 'strainwatch-team-exposure-rising': no title"),
        (_no_for, f"{RISING}: no 'for' duration"),
        (_bad_for, f"{RISING}: 'for' 'five minutes' is not a duration like 0s, 5m, 1h"),
        (
            _no_uid,
            "rule 'Team exposure rising against its 4-week baseline': no uid "
            "(Grafana would make one up, and a second publish would duplicate the rule)",
        ),
        (_dollar_label, f"{RISING}: label site='$site' has a '$' (Grafana's provisioning replaces it)"),
        (_duplicate_ref, f"{RISING}: refId 'A' is used twice"),
        (_no_data, f"{RISING}: no data (queries and expressions)"),
        (
            _bad_range,
            f"{RISING}: B: relativeTimeRange {{'from': 3600, 'to': 86400}} must have from > to >= 0 "
            "(seconds before now)",
        ),
        (
            _bad_reducer,
            f"{RISING}: RA: reducer 'avg' is not one of "
            "['count', 'last', 'max', 'mean', 'median', 'min', 'sum']",
        ),
        (_bad_threshold, f"{RISING}: T: threshold within_range needs 2 number(s), got [1]"),
        (_no_folder, f"{RISING}: no folderUID"),
    ],
)
def test_each_broken_rule_is_refused_with_its_message(mutate: Callable[[Rule], None], message: str) -> None:
    rules = _rules()
    mutate(rules[0])
    with pytest.raises(RuleValidationError) as error:
        validate_rules(rules)
    assert message in error.value.problems, error.value.problems
    assert message in str(error.value)
    # only the broken rule is named
    others = [
        p for p in error.value.problems if "strainwatch-team-exposure-rising" not in p and "Team" not in p
    ]
    assert others == []


def test_duplicate_uids_are_refused() -> None:
    rules = _rules()
    rules[2]["uid"] = rules[0]["uid"]
    with pytest.raises(RuleValidationError) as error:
        validate_rules(rules)
    assert error.value.problems == [
        "rule 'strainwatch-team-exposure-rising' (Dead-letter rate): uid 'strainwatch-team-exposure-rising' "
        "is also rule #1's"
    ]


def test_every_problem_is_listed_at_once() -> None:
    rules = _rules()
    _missing_condition(rules[0])
    _unknown_ds(rules[3])
    with pytest.raises(RuleValidationError) as error:
        validate_rules(rules)
    assert len(error.value.problems) == 2
    assert error.value.problems[1].startswith(
        "rule 'strainwatch-processor-lag' (Processor lag or stale checkpoints): A: data source 'influx-typo'"
    )


def test_another_known_data_source_is_accepted() -> None:
    rules = _rules()
    _unknown_ds(rules[0])
    validate_rules(rules, known_datasources={"strainwatch-influxdb", "influx-typo"})


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda doc: doc["groups"][0].pop("interval"), "group 'strainwatch-managers': no interval"),
        (
            lambda doc: doc["groups"][0].update(interval="45s"),
            "group 'strainwatch-managers': interval '45s' must be a positive multiple of 10s",
        ),
        (
            lambda doc: doc["groups"][1].update(interval="often"),
            "group 'strainwatch-pipeline': interval 'often' is not a duration like 1m",
        ),
        (lambda doc: doc["groups"][0].pop("folder"), "group 'strainwatch-managers': no folder"),
        (lambda doc: doc["groups"][1].update(rules=[]), "group 'strainwatch-pipeline': no rules"),
        (
            lambda doc: doc["groups"][1]["rules"][0].update(condition="X"),
            "rule 'strainwatch-dead-letter-rate' (Dead-letter rate): "
            "condition 'X' is not a refId of its data (A, RA, M, T)",
        ),
        (lambda doc: doc.update(apiVersion=2), "apiVersion 2 is not 1"),
    ],
)
def test_provisioning_file_problems(mutate: Callable[[dict[str, Any]], Any], message: str) -> None:
    doc = copy.deepcopy(alert_rules.provisioning_groups())
    mutate(doc)
    with pytest.raises(RuleValidationError) as error:
        validate_provisioning(doc)
    assert message in error.value.problems, error.value.problems


def test_duplicate_uid_across_groups_of_the_file() -> None:
    doc = copy.deepcopy(alert_rules.provisioning_groups())
    doc["groups"][1]["rules"][0]["uid"] = doc["groups"][0]["rules"][0]["uid"]
    with pytest.raises(RuleValidationError) as error:
        validate_provisioning(doc)
    assert any("uid 'strainwatch-team-exposure-rising' is also rule #1's" in p for p in error.value.problems)


def test_durations() -> None:
    assert [duration_s(d) for d in ("0s", "5m", "1h30m", "2d", "500ms")] == [0, 300, 5400, 172_800, 0.5]
    with pytest.raises(ValueError):
        duration_s("5 minutes")


def test_the_committed_provisioning_is_the_generated_one_and_valid() -> None:
    import yaml

    from strainwatch.dashboards.provisioning import render

    root = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "provisioning"
    for rel, content in render().items():
        assert (root / rel).read_text() == content, f"{rel}: run `strainwatch dashboards build`"
    validate_provisioning(yaml.safe_load((root / "alerting" / "rules.yaml").read_text()))
