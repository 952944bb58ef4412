"""Formatting, argument parsing and rendering of the report without InfluxDB."""

from __future__ import annotations

import csv
import io

import pytest

from strainwatch.reports import charts, csv_out, fmt, html, tables
from strainwatch.reports.cli import parse_formats, parse_month
from strainwatch.reports.model import (
    ComplianceSplit,
    HabituationMonth,
    Incidents,
    MonthlyReport,
    Prompts,
    ReportScope,
    Totals,
    TrendMonth,
    incidence_rate,
)

pytestmark = pytest.mark.unit


def test_numbers_and_missing_values() -> None:
    assert fmt.number(1234567) == "1,234,567"
    assert fmt.number(1234.5678, 2) == "1,234.57"
    assert fmt.number(None) == fmt.DASH
    assert fmt.percent(12.345) == "12.3 %"
    assert fmt.percent(None) == fmt.DASH


def test_csv_values_are_raw_and_stable() -> None:
    assert fmt.csv_value(None) == ""
    assert fmt.csv_value(3) == "3"
    assert fmt.csv_value(0.1 + 0.2) == "0.3"
    assert fmt.csv_value(1e-9) == "0"
    assert fmt.csv_value(-1e-9) == "0"
    assert fmt.csv_value(1234.5) == "1234.5"
    assert fmt.csv_value(True) == "true"


def test_incidence_rate_per_200000_hours() -> None:
    assert incidence_rate(2, 100_000.0) == pytest.approx(4.0)
    assert incidence_rate(0, 500.0) == 0.0
    assert incidence_rate(1, 0.0) is None


@pytest.mark.parametrize("value", ["2026-13", "2026-00", "26-10", "2026/10", "October", "", "1969-12"])
def test_malformed_months_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        parse_month(value)


def test_months_and_formats() -> None:
    assert parse_month(" 2026-02 ") == (2026, 2)
    assert parse_formats("PDF, html,pdf") == ["pdf", "html"]
    with pytest.raises(ValueError, match="docx"):
        parse_formats("html,docx")
    with pytest.raises(ValueError):
        parse_formats(" , ")


def test_scope_months_shift_across_years() -> None:
    scope = ReportScope(2026, 2, "s", None)
    assert scope.shifted(-11).label == "2025-03"
    assert scope.shifted(11).label == "2027-01"
    assert scope.end_s - scope.start_s == 28 * 86_400


def empty_report() -> MonthlyReport:
    scope = ReportScope(2025, 1, "plant-1", None)
    months = [scope.shifted(-i).label for i in range(11, -1, -1)]
    return MonthlyReport(
        scope=scope,
        totals=Totals(0, 0.0, 0, None, None),
        roster_hours=None,
        segments=[],
        teams=[],
        tasks=[],
        prompts=Prompts({}, {}, {}, {}),
        incidents=Incidents(0, {}, {}, 0, 0, 0.0, "monitored hours"),
        split=ComplianceSplit("2024-02 to 2025-01", None, [], 0, "A comparison needs at least two teams."),
        trend=[TrendMonth(m, None, None, None, None, None, None, 0, 0, None) for m in months],
        habituation=[HabituationMonth(m, 0, 0, None, None, "none") for m in months],
        habituation_note="No 10-second windows are kept for this scope, so no month can be measured.",
    )


def test_an_empty_month_renders_honest_sections() -> None:
    report = empty_report()
    assert charts.all_charts(report) == {}
    document = html.render(report, {}, images="svg")
    assert "No device of this scope was worn in this month" in document
    assert "No incident was logged for this scope this month." in document
    assert "A comparison needs at least two teams." in document
    assert "No trend figure" in document
    for table in tables.all_tables(report):
        rows = list(csv.reader(io.StringIO(csv_out.table_csv(table))))
        assert rows[0] == [c[0] for c in table.columns]


def test_wording_states_associations_never_prevention() -> None:
    document = html.render(empty_report(), {}, images="svg").lower()
    assert "association" in document
    for claim in ("prompts prevent", "breaks prevent injuries.", "reduces injuries", "prevented"):
        assert claim not in document.replace("not evidence that prompts or breaks prevent", "")
