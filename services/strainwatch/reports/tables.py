"""Every table of the report, once: HTML and PDF print them formatted, CSV writes their raw values.

A column is (csv name, heading, kind); kinds: text, int, num (1 decimal), num2, pct. A table with no
rows carries the sentence that says why (an honest empty section, never a missing one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from strainwatch.reports import fmt
from strainwatch.reports.model import OTHER, MonthlyReport, compliance_pct

Column = tuple[str, str, str]


@dataclass(frozen=True)
class Table:
    key: str  # CSV file name without extension
    title: str
    columns: list[Column]
    rows: list[list[object]]
    empty: str = "No data for this scope and month."
    notes: list[str] = field(default_factory=list)

    def cell(self, row: list[object], index: int) -> str:
        kind = self.columns[index][2]
        value = row[index]
        if kind == "text":
            return fmt.DASH if value is None else str(value)
        if kind == "pct":
            return fmt.percent(value if isinstance(value, (int, float)) else None)
        if kind == "int" or (isinstance(value, int) and not isinstance(value, bool)):
            return fmt.number(int(value) if isinstance(value, (int, float)) else None)
        digits = 2 if kind == "num2" else 1
        return fmt.number(float(value) if isinstance(value, (int, float)) else None, digits)


def summary(r: MonthlyReport) -> Table:
    t, p, i = r.totals, r.prompts, r.incidents
    rows: list[list[object]] = [
        ["monitored_workers", "Monitored workers (distinct, with wear time)", t.workers],
        ["monitored_hours", "Monitored hours (device wear time)", t.hours],
        ["roster_hours", "Hours worked (roster)", r.roster_hours],
        ["violations", "Violations (holds beyond their limit)", t.violations],
        ["violations_per_100h", "Violations per 100 monitored hours", t.violations_per_100h],
        ["dose_per_hour", "Upper-back dose per monitored hour", t.dose_per_hour],
        ["prompts_sent", "Prompts sent", sum(p.sent.values())],
        ["prompts_suppressed", "Prompts suppressed", sum(p.suppressed.values())],
        ["conditioning_compliance_pct", "Conditioning-break compliance (%)", p.conditioning_compliance_pct],
        ["incidents", "Incidents (all)", i.total],
        ["recordable_rate", f"Recordable incidence rate per 200,000 {i.hours_basis}", i.recordable_rate],
    ]
    return Table(
        "summary",
        "Summary",
        [("metric", "", "text"), ("label", "Measure", "text"), ("value", "Value", "num2")],
        rows if not r.empty else [],
        empty="No monitored hours for this scope and month: no device of this scope was worn.",
    )


def zones(r: MonthlyReport) -> Table:
    rows: list[list[object]] = [
        [
            s.segment,
            fmt.segment_name(s.segment),
            s.zone_pct.get("acceptable"),
            s.zone_pct.get("conditional"),
            s.zone_pct.get("not_acceptable"),
        ]
        for s in r.segments
    ]
    return Table(
        "zones",
        "Time per zone, per segment",
        [
            ("segment", "", "text"),
            ("segment_name", "Segment", "text"),
            ("acceptable_pct", "Acceptable", "pct"),
            ("conditional_pct", "Conditional", "pct"),
            ("not_acceptable_pct", "Not acceptable", "pct"),
        ],
        rows,
        empty="No segment was measured in this scope and month.",
        notes=["Percent of the time each segment was measured (ISO 11226 / EN 1005-4 zones)."],
    )


def cutpoints(r: MonthlyReport) -> Table:
    rows: list[list[object]] = []
    for s in r.segments:
        for cut, pct in s.cut_pct.items():
            rows.append([s.segment, fmt.segment_name(s.segment), cut, f"> {cut[2:]}°", pct])
    return Table(
        "cutpoints",
        "Time beyond the study cut-points",
        [
            ("segment", "", "text"),
            ("segment_name", "Segment", "text"),
            ("cutpoint", "", "text"),
            ("angle", "Angle", "text"),
            ("time_pct", "Time", "pct"),
        ],
        rows,
        empty="No segment was measured in this scope and month.",
        notes=["Percent of measured time above each cut-point used by wearable field studies."],
    )


def _groups(r: MonthlyReport, which: str) -> Table:
    groups = r.teams if which == "team" else r.tasks
    rows: list[list[object]] = []
    rank = 0
    for g in groups:
        if g.name == OTHER:
            note = "fewer than 5 workers: withheld" if g.withheld else "groups of fewer than 5 workers"
            rows.append(
                [
                    None,
                    f"other ({note})",
                    None if g.withheld else g.workers,
                    None if g.withheld else g.hours,
                    g.dose_per_hour,
                ]
            )
            continue
        rank += 1
        rows.append([rank, g.name, g.workers, g.hours, g.dose_per_hour])
    return Table(
        f"hotspots_{which}s",
        f"Hotspots: {which}s by upper-back dose per monitored hour",
        [
            ("rank", "Rank", "int"),
            (which, which.capitalize(), "text"),
            ("workers", "Workers", "int"),
            ("monitored_hours", "Monitored hours", "num"),
            ("dose_per_hour", "Dose per monitored hour", "num2"),
        ],
        rows,
        empty=f"No {which} has monitored hours this month.",
        notes=[
            f"{which.capitalize()}s of fewer than 5 workers are merged into 'other'; "
            "if 'other' itself has fewer than 5, its values are withheld."
        ],
    )


def teams(r: MonthlyReport) -> Table:
    return _groups(r, "team")


def tasks(r: MonthlyReport) -> Table:
    return _groups(r, "task")


def prompts(r: MonthlyReport) -> Table:
    p = r.prompts
    kinds = sorted(set(p.sent) | set(p.suppressed) | set(p.outcomes))
    rows: list[list[object]] = []
    for kind in kinds:
        outcomes = p.outcomes.get(kind, {})
        rows.append(
            [
                kind,
                fmt.label(kind),
                p.sent.get(kind, 0),
                p.suppressed.get(kind, 0),
                outcomes.get("taken", 0),
                outcomes.get("acknowledged", 0),
                outcomes.get("ignored", 0),
                compliance_pct(outcomes),
            ]
        )
    return Table(
        "prompts",
        "Prompts and their outcomes",
        [
            ("kind", "", "text"),
            ("kind_name", "Kind", "text"),
            ("sent", "Sent", "int"),
            ("suppressed", "Suppressed", "int"),
            ("taken", "Taken", "int"),
            ("acknowledged", "Acknowledged only", "int"),
            ("ignored", "Ignored", "int"),
            ("compliance_pct", "Taken of outcomes", "pct"),
        ],
        rows,
        empty="No prompts were decided for this scope this month.",
        notes=[
            "Compliance = taken / (taken + acknowledged + ignored). A break counts as taken when the "
            "worker stays in acceptable zones (or rests) for 2 minutes within 10 minutes of the prompt."
        ],
    )


def suppressed(r: MonthlyReport) -> Table:
    rows: list[list[object]] = [[k, fmt.label(k), v] for k, v in r.prompts.suppressed_by_reason.items()]
    return Table(
        "suppressed_reasons",
        "Suppressed prompts by reason",
        [("reason", "", "text"), ("reason_name", "Reason", "text"), ("prompts", "Prompts", "int")],
        rows,
        empty="No prompt was suppressed this month.",
    )


def incidents(r: MonthlyReport) -> Table:
    i = r.incidents
    rows: list[list[object]] = [[k, fmt.label(k), v] for k, v in i.by_body_part.items()]
    return Table(
        "incidents_body_part",
        "Incidents by body part",
        [
            ("body_part", "", "text"),
            ("body_part_name", "Body part", "text"),
            ("incidents", "Incidents", "int"),
        ],
        rows if i.total else [],
        empty="No incident was logged for this scope this month.",
    )


def incident_summary(r: MonthlyReport) -> Table:
    i = r.incidents
    rows: list[list[object]] = [
        ["incidents", "Incidents (all)", i.total],
        ["recordable", "Recordable", i.recordable],
        ["first_aid", "First aid only", i.by_severity.get("first_aid", 0)],
        ["days_away", "Days away from work", i.days_away],
        ["days_restricted", "Days of restricted work", i.days_restricted],
        ["hours", f"Hours basis: {i.hours_basis}", i.hours],
        ["recordable_rate", "Recordable incidents per 200,000 hours", i.recordable_rate],
        ["all_rate", "All incidents per 200,000 hours", i.all_rate],
    ]
    return Table(
        "incidents_summary",
        "Incidents and incidence rate",
        [("metric", "", "text"), ("label", "Measure", "text"), ("value", "Value", "num2")],
        rows,
        notes=[
            f"Incidence rate = incidents × 200,000 / hours (OSHA), on {i.hours_basis}"
            + (
                " because no roster supplies hours worked."
                if i.hours_basis == "monitored hours"
                else " from the roster's hours per week."
            )
        ],
    )


def split(r: MonthlyReport) -> Table:
    s = r.split
    rows: list[list[object]] = [
        [
            g.label,
            g.teams,
            g.workers,
            g.hours,
            g.outcomes,
            g.compliance_pct,
            g.neck_shoulder_incidents,
            g.rate,
        ]
        for g in s.groups
    ]
    return Table(
        "compliance_split",
        f"Neck and shoulder incidents by team compliance ({s.period})",
        [
            ("group", "Teams", "text"),
            ("teams", "Teams (n)", "int"),
            ("workers", "Workers", "int"),
            ("monitored_hours", "Monitored hours", "num"),
            ("outcomes", "Break outcomes", "int"),
            ("compliance_pct", "Compliance", "pct"),
            ("neck_shoulder_incidents", "Neck/shoulder incidents", "int"),
            ("rate_per_200k_h", "Per 200,000 monitored hours", "num2"),
        ],
        rows,
        empty=s.note,
        notes=[s.note] if s.groups else [],
    )


def trend(r: MonthlyReport) -> Table:
    rows: list[list[object]] = [
        [
            m.month,
            m.workers,
            m.hours,
            m.not_acceptable_pct,
            m.violations_per_100h,
            m.dose_per_hour,
            m.compliance_pct,
            m.incidents,
            m.recordable,
            m.recordable_rate,
        ]
        for m in r.trend
    ]
    return Table(
        "trend",
        "Trend: this month and the 11 before",
        [
            ("month", "Month", "text"),
            ("workers", "Workers", "int"),
            ("monitored_hours", "Monitored hours", "num"),
            ("not_acceptable_pct", "Not accept­able", "pct"),
            ("violations_per_100h", "Violations / 100 h", "num2"),
            ("dose_per_hour", "Dose / h", "num2"),
            ("compliance_pct", "Compliance", "pct"),
            ("incidents", "Incidents", "int"),
            ("recordable", "Recordable", "int"),
            ("recordable_rate", "Recordable / 200,000 h", "num2"),
        ],
        rows,
        notes=[
            "Months with fewer than 5 monitored workers in scope show no exposure figures (privacy), "
            "as do months without data. Not acceptable: share of measured time, all segments pooled. "
            "Rates per 200,000 monitored hours."
        ],
    )


def habituation(r: MonthlyReport) -> Table:
    rows: list[list[object]] = [
        [
            h.month,
            h.nudges,
            h.nudges_measured,
            h.mean_at_risk_s,
            h.mean_at_risk_pct,
            h.window_data,
            "yes" if h.sampled else "no",
        ]
        for h in r.habituation
    ]
    return Table(
        "habituation",
        "Habituation: time at risk in the 10 minutes after a posture nudge",
        [
            ("month", "Month", "text"),
            ("nudges", "Nudges", "int"),
            ("nudges_measured", "Measured", "int"),
            ("mean_at_risk_s", "Mean seconds not acceptable", "num"),
            ("mean_at_risk_pct", "Mean share not acceptable", "pct"),
            ("window_data", "10-s window data", "text"),
            ("sampled", "Sampled", "text"),
        ],
        rows,
        notes=[r.habituation_note],
    )


def all_tables(r: MonthlyReport) -> list[Table]:
    return [
        summary(r),
        zones(r),
        cutpoints(r),
        teams(r),
        tasks(r),
        prompts(r),
        suppressed(r),
        incidents(r),
        incident_summary(r),
        split(r),
        trend(r),
        habituation(r),
    ]
