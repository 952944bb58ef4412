"""One report run: read the data, draw the figures, write the requested formats, with progress."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from strainwatch.reports import charts, csv_out, html, tables
from strainwatch.reports.data import build_report
from strainwatch.reports.model import MonthlyReport, ReportScope
from strainwatch.reports.queries import Reader
from strainwatch.reports.roster import Roster

FORMATS = ("html", "pdf", "csv")
DATA_STEPS = 6  # progress steps build_report reports


@dataclass(frozen=True)
class Output:
    report: MonthlyReport
    paths: list[Path]


def base_name(scope: ReportScope) -> str:
    return f"injury-risk-{scope.site or 'all-sites'}-{scope.team or 'all-teams'}-{scope.label}"


def steps(formats: Sequence[str]) -> int:
    return DATA_STEPS + 1 + len(formats)


def generate(
    reader: Reader,
    scope: ReportScope,
    formats: Sequence[str],
    out_dir: Path,
    roster: Roster | None = None,
    advance: Callable[[str], None] | None = None,
) -> Output:
    step = advance or (lambda _: None)
    report = build_report(reader, scope, roster, step)
    figures = charts.all_charts(report)
    step("figures drawn")
    out_dir.mkdir(parents=True, exist_ok=True)
    name = base_name(scope)
    paths: list[Path] = []
    for fmt in formats:
        if fmt == "html":
            path = out_dir / f"{name}.html"
            path.write_text(html.render(report, figures, images="svg"), encoding="utf-8")
            paths.append(path)
        elif fmt == "pdf":
            from strainwatch.reports.pdf import render_pdf

            path = out_dir / f"{name}.pdf"
            path.write_bytes(render_pdf(html.render(report, figures, images="png")))
            paths.append(path)
        elif fmt == "csv":
            paths.extend(csv_out.write_csvs(tables.all_tables(report), out_dir / f"{name}-csv"))
        else:
            raise ValueError(f"unknown format {fmt!r}")
        step(f"{fmt} written")
    return Output(report, paths)
