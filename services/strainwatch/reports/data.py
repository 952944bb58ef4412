"""Queries to a `MonthlyReport`: every number of the report, read from InfluxDB.

Figures the dashboards show too come from `strainwatch.storage.figures` (one definition each);
report-only statements from `reports/queries.py`. Every statement aggregates inside InfluxDB (sums per
group, per month); the only event-level read is the list of posture nudges for habituation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from strainwatch.exposure.thresholds import load_thresholds
from strainwatch.reports import queries
from strainwatch.reports.model import (
    MIN_GROUP_WORKERS,
    ComplianceSplit,
    Group,
    HabituationMonth,
    Incidents,
    MonthlyReport,
    Prompts,
    ReportScope,
    SegmentExposure,
    SplitGroup,
    Totals,
    TrendMonth,
    incidence_rate,
)
from strainwatch.reports.privacy import RawGroup, merge_small
from strainwatch.reports.queries import Reader, Row
from strainwatch.reports.roster import Roster
from strainwatch.storage import figures
from strainwatch.storage.figures import SEGMENTS, ZONES, Scope

TREND_MONTHS = 12  # the report's month and the 11 before it
HABITUATION_SPAN_S = 600  # the 10 minutes after a posture nudge
MAX_NUDGES_PER_MONTH = 3000  # above this, every k-th nudge (in time order) is measured
BODY_PARTS = ("neck", "shoulder", "upper_back", "lower_back", "other")
SEVERITIES = ("recordable", "first_aid")
SPLIT_BODY_PARTS = ("neck", "shoulder")

Progress = Callable[[str], None]


class ScopeError(ValueError):
    """The scope cannot be reported: an unknown site or team, or fewer workers than privacy allows."""


def cutpoints(segment: str) -> list[int]:
    return [int(c) for c in load_thresholds("default").segments[segment].cutpoints]


@dataclass
class _Batch:
    """Named statements run in one go."""

    statements: dict[str, str]
    heavy: bool = False  # one statement per request, so each runs on its own (and within timeouts)

    def run(self, reader: Reader) -> dict[str, list[Row]]:
        names = list(self.statements)
        results = reader.run([self.statements[n] for n in names], per_request=1 if self.heavy else None)
        return dict(zip(names, results, strict=True))


def _num(row: Row | None, column: str) -> float | None:
    if row is None:
        return None
    value = row.get(column)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return float(value)


def _first(rows: list[Row]) -> Row | None:
    return rows[0] if rows else None


def _r(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def check_scope(reader: Reader, scope: ReportScope, roster: Roster | None) -> None:
    """Unknown site or team: no data ever written for it and not in the roster."""
    for tag, value in (("site", scope.site), ("team", scope.team)):
        if value is None:
            continue
        known = {str(r["value"]) for r in reader.rows(queries.tag_values(tag))}
        if roster is not None:
            known |= roster.sites() if tag == "site" else roster.teams()
        if value not in known:
            listed = ", ".join(sorted(known)[:20]) or "none"
            raise ScopeError(
                f"unknown {tag} {value!r}: no data in InfluxDB and not in the roster (known: {listed})"
            )


def build_report(
    reader: Reader,
    scope: ReportScope,
    roster: Roster | None = None,
    progress: Progress | None = None,
) -> MonthlyReport:
    step = progress or (lambda _: None)
    check_scope(reader, scope, roster)
    step("scope checked")
    month = figures.Scope.between(scope.start_s, scope.end_s, scope.site, scope.team)

    first = _Batch(_month_statements(month), heavy=True).run(reader)
    first["sums"] = [
        _merged([row for name, rows in first.items() if name.startswith("sums/") for row in rows])
    ]
    scope_workers = int(_num(_first(first["scope_workers"]), "workers") or 0)
    if 0 < scope_workers < MIN_GROUP_WORKERS:
        raise ScopeError(
            f"{_scope_name(scope)} has fewer than {MIN_GROUP_WORKERS} monitored workers in {scope.label}: "
            "reports never show a group that small (choose the site, or a larger team)"
        )
    step("month read")
    sums = _first(first["sums"])
    totals = _totals(sums, scope_workers)
    teams = _groups(reader, month, "team", first["team_sums"], first["team_workers"])
    tasks = _groups(reader, month, "task", first["task_sums"], first["task_workers"])
    segments = _segments(sums)
    prompts = _prompts(first["prompts"], first["outcomes"])
    roster_hours = roster.hours_worked(scope.year, scope.month, scope.site, scope.team) if roster else None
    incidents = _incidents(first["incidents"], totals.hours, roster_hours)
    step("groups read")

    split = _split(reader, scope)
    step("compliance split read")
    trend = _trend(reader, scope, first)
    step("trend read")
    habituation, habituation_note = _habituation(reader, scope)
    step("habituation read")

    notes = []
    if roster is not None and roster_hours is None:
        notes.append(
            "A roster was given, but not every rostered worker in scope has hours per week: "
            "rates use monitored hours."
        )
    return MonthlyReport(
        scope=scope,
        totals=totals,
        roster_hours=_r(roster_hours),
        segments=segments,
        teams=teams,
        tasks=tasks,
        prompts=prompts,
        incidents=incidents,
        split=split,
        trend=trend,
        habituation=habituation,
        habituation_note=habituation_note,
        notes=notes,
    )


def _scope_name(scope: ReportScope) -> str:
    if scope.team:
        return f"team {scope.team}" + (f" at site {scope.site}" if scope.site else "")
    return f"site {scope.site}" if scope.site else "the scope"


def _rollup_fields() -> list[str]:
    fields = ["wear_s", "violations", "accrued_upper_back"]
    for segment in SEGMENTS:
        fields += [f"zone_{segment}_{zone}_s" for zone in ZONES]
        fields += [f"cut_{segment}_gt{d}_s" for d in cutpoints(segment)]
    return fields


GROUP_FIELDS = ["wear_s", "accrued_upper_back"]


def _merged(rows: list[Row]) -> Row:
    """The columns of several one-row results (the month's sums, read in parts) as one row."""
    out: Row = {}
    for row in rows:
        out.update({k: v for k, v in row.items() if v is not None or k not in out})
    return out


def _month_statements(month: Scope) -> dict[str, str]:
    """The month's statements; the rollup's sums in parts (the base fields, then one part per two
    segments), which InfluxDB runs in parallel requests."""
    fields = _rollup_fields()
    base = ["wear_s", "violations", "accrued_upper_back"]
    parts = [base] + [
        [f for f in fields if any(f.startswith(f"zone_{s}_") or f.startswith(f"cut_{s}_") for s in pair)]
        for pair in zip(SEGMENTS[::2], SEGMENTS[1::2], strict=True)
    ]
    sums = {f"sums/{i}": queries.rollup_sums(month, part) for i, part in enumerate(parts)}
    return sums | {
        "scope_workers": queries.scope_workers(month),
        "team_sums": queries.rollup_sums(month, GROUP_FIELDS, by="team"),
        "team_workers": queries.group_workers(month, "team"),
        "task_sums": queries.rollup_sums(month, GROUP_FIELDS, by="task"),
        "task_workers": queries.group_workers(month, "task"),
        "prompts": queries.prompt_counts_by_kind(month),
        "outcomes": figures.outcome_counts(month),
        "incidents": figures.incident_counts(month, by=("body_part", "severity")),
    }


def _ratio(numerator: float | None, denominator: float | None, scale: float = 1.0) -> float | None:
    if numerator is None or not denominator:
        return None
    return _r(scale * numerator / denominator)


def _totals(sums: Row | None, workers: int) -> Totals:
    wear = _num(sums, "wear_s") or 0.0
    hours = wear / 3600.0
    violations = _num(sums, "violations") or 0.0
    return Totals(
        workers=workers,
        hours=_r(hours) or 0.0,
        violations=int(violations),
        violations_per_100h=_ratio(violations, hours, 100.0),
        dose_per_hour=_ratio(_num(sums, "accrued_upper_back"), hours),
    )


def _groups(reader: Reader, month: Scope, by: str, sums: list[Row], workers: list[Row]) -> list[Group]:
    counts = {str(row.get(by)): int(_num(row, "workers") or 0) for row in workers}
    raw = [
        RawGroup(
            str(row.get(by)),
            counts.get(str(row.get(by)), 0),
            _num(row, "wear_s") or 0.0,
            _num(row, "accrued_upper_back") or 0.0,
        )
        for row in sums
        if (_num(row, "wear_s") or 0.0) > 0
    ]
    shown = [g.name for g in raw if g.workers >= MIN_GROUP_WORKERS]

    def distinct(_names: list[str]) -> int:
        return int(_num(_first(reader.rows(queries.workers_outside(month, by, shown))), "workers") or 0)

    return merge_small(raw, distinct)


def _segments(sums: Row | None) -> list[SegmentExposure]:
    out = []
    for segment in SEGMENTS:
        zones = {zone: _num(sums, f"zone_{segment}_{zone}_s") or 0.0 for zone in ZONES}
        measured = sum(zones.values())
        if measured <= 0:
            continue  # no device in scope measured this segment this month (the rollup writes zeros)
        out.append(
            SegmentExposure(
                segment,
                {z: _ratio(v, measured, 100.0) for z, v in zones.items()},
                {
                    f"gt{d}": _ratio(_num(sums, f"cut_{segment}_gt{d}_s") or 0.0, measured, 100.0)
                    for d in cutpoints(segment)
                },
            )
        )
    return out


def _prompts(prompt_rows: list[Row], outcome_rows: list[Row]) -> Prompts:
    sent: dict[str, int] = {}
    suppressed: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for row in prompt_rows:
        kind = str(row.get("kind") or "")
        count = int(_num(row, "prompts") or 0)
        if row.get("status") == "sent":
            sent[kind] = sent.get(kind, 0) + count
        else:
            suppressed[kind] = suppressed.get(kind, 0) + count
            reason = str(row.get("reason") or "unknown")
            reasons[reason] = reasons.get(reason, 0) + count
    outcomes: dict[str, dict[str, int]] = {}
    for row in outcome_rows:
        kind = str(row.get("kind") or "")
        by_kind = outcomes.setdefault(kind, {})
        outcome = str(row.get("outcome") or "")
        by_kind[outcome] = by_kind.get(outcome, 0) + int(_num(row, "outcomes") or 0)
    return Prompts(
        _sorted(sent),
        _sorted(suppressed),
        _sorted(reasons),
        {k: _sorted(v) for k, v in sorted(outcomes.items())},
    )


def _sorted(d: dict[str, int]) -> dict[str, int]:
    return dict(sorted(d.items()))


def _incidents(rows: list[Row], monitored_hours: float, roster_hours: float | None) -> Incidents:
    by_part = dict.fromkeys(BODY_PARTS, 0)
    by_severity = dict.fromkeys(SEVERITIES, 0)
    away = restricted = 0
    for row in rows:
        n = int(_num(row, "incidents") or 0)
        part = str(row.get("body_part") or "other")
        severity = str(row.get("severity") or "")
        by_part[part] = by_part.get(part, 0) + n
        by_severity[severity] = by_severity.get(severity, 0) + n
        away += int(_num(row, "days_away") or 0)
        restricted += int(_num(row, "days_restricted") or 0)
    if roster_hours is not None:
        hours, basis = roster_hours, "roster hours worked"
    else:
        hours, basis = monitored_hours, "monitored hours"
    return Incidents(sum(by_part.values()), by_part, by_severity, away, restricted, _r(hours) or 0.0, basis)


def _split(reader: Reader, scope: ReportScope) -> ComplianceSplit:
    """Neck and shoulder incident rate of teams with high vs low conditioning-break compliance, over
    the report's month and the 11 before it (one month holds too few incidents to compare)."""
    start = scope.shifted(-(TREND_MONTHS - 1))
    period = f"{start.label} to {scope.label}"
    span = figures.Scope.between(start.start_s, scope.end_s, scope.site, scope.team)
    r = _Batch(
        {
            "outcomes": queries.conditioning_outcomes(span, by="team"),
            "outcome_workers": queries.outcome_workers(span, "team"),
            "sums": queries.rollup_sums(span, ["wear_s"], by="team"),
            "workers": queries.group_workers(span, "team"),
            "incidents": figures.incident_counts(span, by=("team", "body_part")),
        },
        heavy=True,
    ).run(reader)
    # teams of 5 or more workers with outcomes (and monitored): the privacy rule, as in every table
    with_outcomes = {
        str(row["team"]) for row in r["outcome_workers"] if (_num(row, "workers") or 0) >= MIN_GROUP_WORKERS
    }
    compliance = {
        str(row["team"]): (
            _ratio(_num(row, "taken") or 0.0, _num(row, "outcomes"), 100.0),
            int(_num(row, "outcomes") or 0),
        )
        for row in r["outcomes"]
        if str(row["team"]) in with_outcomes and (_num(row, "outcomes") or 0) > 0
    }
    hours = {str(row["team"]): (_num(row, "wear_s") or 0.0) / 3600.0 for row in r["sums"]}
    monitored = {
        str(row["team"]): (int(_num(row, "workers") or 0), hours.get(str(row["team"]), 0.0))
        for row in r["workers"]
        if (_num(row, "workers") or 0) >= MIN_GROUP_WORKERS
    }
    ns_incidents: dict[str, int] = {}
    for row in r["incidents"]:
        if row.get("body_part") in SPLIT_BODY_PARTS:
            team = str(row.get("team"))
            ns_incidents[team] = ns_incidents.get(team, 0) + int(_num(row, "incidents") or 0)
    teams = sorted(t for t in compliance if t in monitored)
    without = len([t for t in monitored if t not in compliance])
    if len(teams) < 2:
        return ComplianceSplit(
            period,
            None,
            [],
            without,
            "A comparison needs at least two teams of 5 or more workers with recorded break outcomes; "
            f"this scope has {len(teams)}.",
        )
    values = sorted(compliance[t][0] or 0.0 for t in teams)
    mid = len(values) // 2
    median = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    high = [t for t in teams if (compliance[t][0] or 0.0) > median]
    low = [t for t in teams if (compliance[t][0] or 0.0) <= median]
    if not high:
        return ComplianceSplit(
            period,
            _r(median),
            [],
            without,
            "Every team has the same compliance: there is nothing to compare.",
        )

    def group(label: str, members: list[str]) -> SplitGroup:
        workers = sum(monitored[t][0] for t in members)
        hours = sum(monitored[t][1] for t in members)
        outcomes = sum(compliance[t][1] for t in members)
        taken = sum((compliance[t][0] or 0.0) * compliance[t][1] / 100.0 for t in members)
        incidents = sum(ns_incidents.get(t, 0) for t in members)
        return SplitGroup(
            label,
            len(members),
            workers,
            _r(hours) or 0.0,
            outcomes,
            _r(taken / outcomes * 100.0) if outcomes else None,
            incidents,
            _r(incidence_rate(incidents, hours)),
        )

    note = (
        f"Teams split at the median team compliance ({median:.1f} %): above it is high, at or below it low. "
        "Teams of fewer than 5 workers with outcomes are not part of the comparison."
    )
    return ComplianceSplit(
        period, _r(median), [group("high compliance", high), group("low compliance", low)], without, note
    )


TREND_FIELDS = ["wear_s", "violations", "accrued_upper_back"] + [
    f"zone_{segment}_{zone}_s" for segment in SEGMENTS for zone in ZONES
]


def _trend(reader: Reader, scope: ReportScope, month_rows: dict[str, list[Row]]) -> list[TrendMonth]:
    """The 12 months; the report's own month reuses the rows already read for it."""
    months = [scope.shifted(-i) for i in range(TREND_MONTHS - 1, -1, -1)]
    statements: dict[str, str] = {}
    for m in months:
        s = figures.Scope.between(m.start_s, m.end_s, scope.site, scope.team)
        if m != scope:
            statements[f"{m.label}/workers"] = queries.scope_workers(s)
            statements[f"{m.label}/sums"] = queries.rollup_sums(s, TREND_FIELDS)
        statements[f"{m.label}/compliance"] = queries.conditioning_outcomes(s)
        statements[f"{m.label}/incidents"] = figures.incident_counts(s, by=("severity",))
    r = _Batch(statements, heavy=True).run(reader)
    r[f"{scope.label}/workers"] = month_rows["scope_workers"]
    r[f"{scope.label}/sums"] = month_rows["sums"]
    out = []
    for m in months:
        workers = int(_num(_first(r[f"{m.label}/workers"]), "workers") or 0)
        incidents = {
            str(row.get("severity")): int(_num(row, "incidents") or 0) for row in r[f"{m.label}/incidents"]
        }
        recordable = incidents.get("recordable", 0)
        if workers < MIN_GROUP_WORKERS:  # no data, or too few workers to show (privacy)
            out.append(
                TrendMonth(
                    m.label, None, None, None, None, None, None, sum(incidents.values()), recordable, None
                )
            )
            continue
        sums = _first(r[f"{m.label}/sums"])
        hours = (_num(sums, "wear_s") or 0.0) / 3600.0
        measured = sum(_num(sums, f"zone_{seg}_{z}_s") or 0.0 for seg in SEGMENTS for z in ZONES)
        at_risk = sum(_num(sums, f"zone_{seg}_not_acceptable_s") or 0.0 for seg in SEGMENTS)
        compliance = _first(r[f"{m.label}/compliance"])
        out.append(
            TrendMonth(
                m.label,
                workers,
                _r(hours) or 0.0,
                _ratio(at_risk, measured, 100.0),
                _ratio(_num(sums, "violations") or 0.0, hours, 100.0),
                _ratio(_num(sums, "accrued_upper_back"), hours),
                _ratio(_num(compliance, "taken") or 0.0, _num(compliance, "outcomes"), 100.0),
                sum(incidents.values()),
                recordable,
                _r(incidence_rate(recordable, hours)),
            )
        )
    return out


def _habituation(reader: Reader, scope: ReportScope) -> tuple[list[HabituationMonth], str]:
    """Time at risk after each posture nudge, per month. Nudges are only listed (one row each) where
    10-second windows exist to measure them; elsewhere they are only counted."""
    months = [scope.shifted(-i) for i in range(TREND_MONTHS - 1, -1, -1)]
    everything = figures.Scope.between(0, scope.end_s + HABITUATION_SPAN_S, scope.site, scope.team)
    statements = {"first": queries.first_window(everything)}
    for m in months:
        month = figures.Scope.between(m.start_s, m.end_s, scope.site, scope.team)
        statements[m.label] = queries.posture_nudge_count(month)
    r = _Batch(statements).run(reader)
    first_row = _first(r["first"])
    first_window = int(first_row["time"]) if first_row and first_row.get("first") is not None else None
    counts = {m.label: int(_num(_first(r[m.label]), "nudges") or 0) for m in months}

    def status(m: ReportScope) -> str:
        if first_window is None or first_window >= m.end_s:
            return "none"
        return "partial" if first_window > m.start_s else "full"

    measurable = [m for m in months if status(m) != "none" and counts[m.label]]
    listed = _Batch(
        {
            m.label: queries.posture_nudges(
                figures.Scope.between(max(m.start_s, first_window or 0), m.end_s, scope.site, scope.team)
            )
            for m in measurable
        }
    ).run(reader)
    plans: dict[str, tuple[list[tuple[int, str, str]], bool]] = {}
    spans: list[str] = []
    for m in measurable:
        nudges = sorted(
            (int(row["time"]), str(row["worker"]), str(row["segment"]))
            for row in listed[m.label]
            if row.get("segment") in SEGMENTS
        )
        sampled = len(nudges) > MAX_NUDGES_PER_MONTH
        if sampled:
            nudges = nudges[:: math.ceil(len(nudges) / MAX_NUDGES_PER_MONTH)]
        plans[m.label] = (nudges, sampled)
        spans.extend(queries.after_nudge(w, seg, t, HABITUATION_SPAN_S) for t, w, seg in nudges)
    results = iter(reader.run(spans))
    out = []
    for m in months:
        nudges, sampled = plans.get(m.label, ([], False))
        shares: list[float] = []
        seconds: list[float] = []
        for _nudge in nudges:
            row = _first(next(results))
            observed = _num(row, "observed") or 0.0
            if observed <= 0:
                continue  # the device sent nothing in the 10 minutes after
            at_risk = _num(row, "at_risk") or 0.0
            seconds.append(at_risk)
            shares.append(100.0 * at_risk / observed)
        out.append(
            HabituationMonth(
                m.label,
                counts[m.label],
                len(shares),
                _r(sum(seconds) / len(seconds)) if seconds else None,
                _r(sum(shares) / len(shares)) if shares else None,
                status(m),
                sampled,
            )
        )
    if first_window is None:
        note = "No 10-second windows are kept for this scope, so no month can be measured."
    else:
        lacking = [h.month for h in out if h.window_data == "none" and h.nudges]
        note = "10-second windows are kept for weeks only; " + (
            f"months without window data: {', '.join(lacking)}."
            if lacking
            else "every month with nudges has window data."
        )
    return out, note
