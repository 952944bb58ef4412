"""The report's figures with matplotlib (Agg, no pyplot state), byte-identical for the same data.

Deterministic: the bundled DejaVu Sans font, text drawn as paths, a fixed `svg.hashsalt` (SVG ids),
no date or software version in the metadata. Each chart comes as SVG (HTML) and PNG (PDF: WeasyPrint
embeds it as an image, which the tests count). A chart without data is not drawn; its section says
why instead.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from strainwatch.reports import fmt
from strainwatch.reports.model import OTHER, MonthlyReport

PNG_DPI = 150
_STYLE: Any = {  # matplotlib types rcParams keys as literals
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "svg.hashsalt": "strainwatch-report",
    "svg.fonttype": "path",
    "path.simplify": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
ZONE_COLOURS = {"acceptable": "#4daf4a", "conditional": "#ffbf00", "not_acceptable": "#d7301f"}
LINE = "#1f4e79"


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    alt: str
    svg: str
    png: bytes


@contextmanager
def _style() -> Iterator[None]:
    with matplotlib.rc_context(_STYLE):
        yield


def _render(key: str, title: str, alt: str, figure: Figure) -> Chart:
    svg = io.BytesIO()
    figure.savefig(svg, format="svg", metadata={"Date": None})
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=PNG_DPI, metadata={"Software": None})
    return Chart(key, title, alt, svg.getvalue().decode(), png.getvalue())


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _top(values: list[float | None]) -> float:
    """An axis from 0 to a little above the highest value: no truncated axis exaggerates a change."""
    present = [v for v in values if v is not None]
    return max(present) * 1.15 if present and max(present) > 0 else 1.0


def trend(r: MonthlyReport) -> Chart | None:
    if not any((m.hours or 0.0) > 0 for m in r.trend):
        return None
    months = [m.month for m in r.trend]
    panels = [
        ("Not acceptable (% of measured time)", [m.not_acceptable_pct for m in r.trend]),
        ("Violations per 100 monitored hours", [m.violations_per_100h for m in r.trend]),
        ("Upper-back dose per monitored hour", [m.dose_per_hour for m in r.trend]),
        ("Conditioning-break compliance (%)", [m.compliance_pct for m in r.trend]),
    ]
    with _style():
        figure = Figure(figsize=(7.2, 4.6))
        axes = figure.subplots(2, 2, sharex=True)
        for ax, (title, values) in zip(axes.flat, panels, strict=True):
            ax.plot(range(len(months)), [_nan(v) for v in values], marker="o", color=LINE, linewidth=1.2)
            ax.set_title(title, fontsize=8)
            ax.set_ylim(bottom=0, top=_top(values))
            ax.set_xticks(range(len(months)), [m[2:] for m in months], rotation=60, fontsize=6)
            ax.grid(axis="y", linewidth=0.3)
        figure.tight_layout()
        return _render("trend", "Monthly trend", "Four monthly trend lines over twelve months", figure)


def zones(r: MonthlyReport) -> Chart | None:
    if not r.segments:
        return None
    names = [fmt.segment_name(s.segment) for s in r.segments]
    with _style():
        figure = Figure(figsize=(7.2, 0.5 + 0.35 * len(names)))
        ax: Axes = figure.subplots()
        left = [0.0] * len(names)
        for zone, colour in ZONE_COLOURS.items():
            values = [s.zone_pct.get(zone) or 0.0 for s in r.segments]
            ax.barh(names, values, left=left, color=colour, label=fmt.label(zone), height=0.6)
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax.set_xlim(0, 100)
        ax.set_xlabel("% of measured time")
        ax.invert_yaxis()
        ax.legend(ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
        figure.tight_layout()
        return _render("zones", "Zone distribution per segment", "Stacked bars of time per zone", figure)


def hotspots(r: MonthlyReport) -> Chart | None:
    groups = {
        "Teams": [g for g in r.teams if not g.withheld and g.dose_per_hour is not None],
        "Tasks": [g for g in r.tasks if not g.withheld and g.dose_per_hour is not None],
    }
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        return None
    rows = max(len(v) for v in groups.values())
    with _style():
        figure = Figure(figsize=(7.2, 0.8 + 0.3 * rows))
        axes = figure.subplots(1, len(groups), squeeze=False)
        for ax, (title, members) in zip(axes[0], groups.items(), strict=True):
            names = [g.name if g.name != OTHER else "other (small groups)" for g in members]
            ax.barh(names, [g.dose_per_hour or 0.0 for g in members], color=LINE, height=0.6)
            ax.invert_yaxis()
            ax.set_title(title, fontsize=8)
            ax.set_xlabel("upper-back dose per monitored hour")
        figure.tight_layout()
        return _render("hotspots", "Hotspots", "Bars of dose per monitored hour by team and task", figure)


def split(r: MonthlyReport) -> Chart | None:
    groups = r.split.groups
    if not groups:
        return None
    with _style():
        figure = Figure(figsize=(7.2, 2.6))
        left, right = figure.subplots(1, 2)
        labels = [g.label for g in groups]
        left.bar(labels, [g.compliance_pct or 0.0 for g in groups], color=LINE, width=0.5)
        left.set_ylabel("break compliance (%)")
        left.set_ylim(0, 100)
        right.bar(labels, [g.rate or 0.0 for g in groups], color="#b2182b", width=0.5)
        right.set_ylabel("neck/shoulder incidents per 200,000 h")
        for i, g in enumerate(groups):
            right.annotate(
                f"{g.neck_shoulder_incidents} in {g.hours:,.0f} h",
                (i, g.rate or 0.0),
                ha="center",
                va="bottom",
                fontsize=7,
            )
        figure.tight_layout()
        return _render(
            "split", "Compliance and incident rate", "Compliance and incident rate of two team groups", figure
        )


def habituation(r: MonthlyReport) -> Chart | None:
    if not any(h.nudges_measured for h in r.habituation):
        return None
    months = [h.month for h in r.habituation]
    with _style():
        figure = Figure(figsize=(7.2, 2.4))
        ax: Axes = figure.subplots()
        values = [_nan(h.mean_at_risk_pct) for h in r.habituation]
        ax.plot(range(len(months)), values, marker="o", color=LINE, linewidth=1.2)
        for i, h in enumerate(r.habituation):
            if h.nudges_measured:
                ax.annotate(f"n={h.nudges_measured}", (i, values[i]), ha="center", va="bottom", fontsize=6)
        ax.set_xticks(range(len(months)), [m[2:] for m in months], rotation=60, fontsize=6)
        ax.set_ylabel("% of the 10 min not acceptable")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", linewidth=0.3)
        figure.tight_layout()
        return _render(
            "habituation", "After a posture nudge", "Mean share of time at risk after nudges by month", figure
        )


def all_charts(r: MonthlyReport) -> dict[str, Chart]:
    out = {}
    for make in (trend, zones, hotspots, split, habituation):
        chart = make(r)
        if chart is not None:
            out[chart.key] = chart
    return out
