"""The monthly report as data: what `data.py` computes and every renderer (HTML, PDF, CSV) reads.

Plain frozen dataclasses, no I/O. A value that could not be computed (no monitored hours, no
outcomes, a group withheld for privacy) is `None`, and renderers print it as such, never as 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OTHER = "other"  # the group that small groups are merged into (privacy.py)
MIN_GROUP_WORKERS = 5


@dataclass(frozen=True)
class ReportScope:
    year: int
    month: int
    site: str | None
    team: str | None

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start_s(self) -> int:
        return month_start_s(self.year, self.month)

    @property
    def end_s(self) -> int:
        year, month = shift_month(self.year, self.month, 1)
        return month_start_s(year, month)

    def shifted(self, months: int) -> ReportScope:
        year, month = shift_month(self.year, self.month, months)
        return ReportScope(year, month, self.site, self.team)


def shift_month(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def month_start_s(year: int, month: int) -> int:
    import calendar

    return calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0))


@dataclass(frozen=True)
class Totals:
    """The scope's month from the hourly rollup."""

    workers: int
    hours: float
    violations: int
    violations_per_100h: float | None
    dose_per_hour: float | None


@dataclass(frozen=True)
class SegmentExposure:
    segment: str
    zone_pct: dict[str, float | None]  # zone -> percent of observed time
    cut_pct: dict[str, float | None]  # "gt20" -> percent of observed time


@dataclass(frozen=True)
class Group:
    """A team or task (or "other", the merge of groups below the privacy minimum)."""

    name: str
    workers: int
    hours: float
    dose_per_hour: float | None
    withheld: bool = False  # "other" itself below the minimum: its values are not shown


@dataclass(frozen=True)
class Prompts:
    sent: dict[str, int]  # kind -> prompts sent
    suppressed: dict[str, int]  # kind -> prompts suppressed
    suppressed_by_reason: dict[str, int]
    outcomes: dict[str, dict[str, int]]  # kind -> outcome -> count

    def outcome_total(self, kind: str) -> int:
        return sum(self.outcomes.get(kind, {}).values())

    @property
    def conditioning_compliance_pct(self) -> float | None:
        return compliance_pct(self.outcomes.get("conditioning_break", {}))


def compliance_pct(outcomes: dict[str, int]) -> float | None:
    total = sum(outcomes.get(k, 0) for k in ("taken", "acknowledged", "ignored"))
    return outcomes.get("taken", 0) / total * 100.0 if total else None


@dataclass(frozen=True)
class Incidents:
    total: int
    by_body_part: dict[str, int]
    by_severity: dict[str, int]
    days_away: int
    days_restricted: int
    hours: float  # the basis of the rate
    hours_basis: str  # "monitored hours" or "roster hours worked"

    @property
    def recordable(self) -> int:
        return self.by_severity.get("recordable", 0)

    @property
    def recordable_rate(self) -> float | None:
        return incidence_rate(self.recordable, self.hours)

    @property
    def all_rate(self) -> float | None:
        return incidence_rate(self.total, self.hours)


def incidence_rate(cases: int, hours: float) -> float | None:
    """OSHA convention: cases per 200,000 hours (100 full-time workers for a year)."""
    return cases * 200_000.0 / hours if hours > 0 else None


@dataclass(frozen=True)
class SplitGroup:
    label: str  # "high compliance" / "low compliance"
    teams: int
    workers: int
    hours: float
    outcomes: int
    compliance_pct: float | None
    neck_shoulder_incidents: int
    rate: float | None  # neck and shoulder incidents per 200,000 monitored hours


@dataclass(frozen=True)
class ComplianceSplit:
    period: str  # e.g. "2025-11 to 2026-10"
    threshold_pct: float | None  # the median of the teams' compliance
    groups: list[SplitGroup]
    teams_without_outcomes: int
    note: str


@dataclass(frozen=True)
class TrendMonth:
    month: str
    workers: int | None  # None: no data, or fewer than 5 workers (withheld)
    hours: float | None
    not_acceptable_pct: float | None  # pooled over segments
    violations_per_100h: float | None
    dose_per_hour: float | None
    compliance_pct: float | None
    incidents: int
    recordable: int
    recordable_rate: float | None  # per 200,000 monitored hours


@dataclass(frozen=True)
class HabituationMonth:
    month: str
    nudges: int
    nudges_measured: int  # nudges with window data in the 10 minutes after
    mean_at_risk_s: float | None
    mean_at_risk_pct: float | None  # of observed segment time in the 10 minutes
    window_data: str  # "full", "partial", "none"
    sampled: bool = False


@dataclass(frozen=True)
class MonthlyReport:
    scope: ReportScope
    totals: Totals
    roster_hours: float | None
    segments: list[SegmentExposure]
    teams: list[Group]
    tasks: list[Group]
    prompts: Prompts
    incidents: Incidents
    split: ComplianceSplit
    trend: list[TrendMonth]
    habituation: list[HabituationMonth]
    habituation_note: str
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.totals.hours <= 0
