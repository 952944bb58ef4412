"""`strainwatch report monthly`: the monthly injury-risk report as HTML, PDF and CSV files."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from strainwatch.config import get_settings
from strainwatch.reports.data import ScopeError
from strainwatch.reports.generate import FORMATS, generate, steps
from strainwatch.reports.model import ReportScope
from strainwatch.reports.queries import Reader
from strainwatch.reports.roster import Roster, RosterError
from strainwatch.storage.influxql import InfluxQL, InfluxQLError

MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def parse_month(value: str) -> tuple[int, int]:
    match = MONTH.match(value.strip())
    if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1970:
        raise ValueError(f"--month must be YYYY-MM (e.g. 2026-10), not {value!r}")
    return int(match.group(1)), int(match.group(2))


def parse_formats(value: str) -> list[str]:
    formats = [f.strip().lower() for f in value.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"--format takes a comma-separated list of {', '.join(FORMATS)}; unknown: {unknown}")
    return list(dict.fromkeys(formats))


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def register(app: typer.Typer) -> None:
    report_app = typer.Typer(no_args_is_help=True, help="Reports for EHS staff.")
    app.add_typer(report_app, name="report")

    @report_app.command("monthly")
    def monthly(
        month: str = typer.Option(..., "--month", help="calendar month, YYYY-MM (UTC)"),
        site: str | None = typer.Option(None, "--site", help="one site (default: all)"),
        team: str | None = typer.Option(None, "--team", help="one team (default: all)"),
        formats: str = typer.Option("html,pdf,csv", "--format", help="comma-separated: html,pdf,csv"),
        out: Path = typer.Option(Path("reports"), "--out", help="output directory"),
        roster: Path | None = typer.Option(
            None, "--roster", help="roster entries as JSON lines: hours worked, known sites and teams"
        ),
    ) -> None:
        """The monthly injury-risk report: exposure, hotspots, prompts, incidents, trend, habituation."""
        try:
            year, month_number = parse_month(month)
            chosen = parse_formats(formats)
            roster_data = Roster.load(roster) if roster else None
        except (ValueError, RosterError) as error:
            raise _fail(str(error)) from None
        settings = get_settings()
        ql = InfluxQL(settings.influx_url, settings.influx_token.get_secret_value(), settings.influx_bucket)
        scope = ReportScope(year, month_number, site, team)
        console = Console(stderr=True)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task(f"report {scope.label}", total=steps(chosen))

            def advance(what: str) -> None:
                progress.update(task, advance=1, description=f"report {scope.label}: {what}")

            try:
                output = generate(Reader(ql), scope, chosen, out, roster_data, advance)
            except ScopeError as error:
                raise _fail(str(error)) from None
            except InfluxQLError as error:
                typer.echo(f"error: {error}", err=True)
                raise typer.Exit(1) from None
        if output.report.empty:
            typer.echo(f"note: no monitored hours in {scope.label} for this scope; sections say so", err=True)
        for path in output.paths:
            typer.echo(str(path))
