"""`strainwatch incidents import FILE.csv`: the injury log intake (docs/incidents.md).

Exit codes: 0 imported (or, with --dry-run, checked); 1 the log has invalid rows (and no
--skip-invalid), the file cannot be read as a log, or InfluxDB or Kafka failed; 2 a bad command-line
argument (for instance a FILE that does not exist), as for every strainwatch command.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
import structlog
import typer

from strainwatch.config import get_settings
from strainwatch.incidents.csv_log import CsvLogError, ParsedLog, read_log

log = structlog.get_logger("strainwatch.incidents")

incidents_app = typer.Typer(no_args_is_help=True, help="Injury log intake.")

MAX_LISTED = 200  # invalid rows listed one per line; the rest are counted


@dataclass
class Summary:
    rows_read: int = 0
    imported: int = 0  # new cases written
    unchanged: int = 0  # cases InfluxDB already held exactly so
    replaced: int = 0  # corrected cases: the old point deleted, the new one written
    invalid: int = 0
    duplicates: int = 0  # rows repeating an earlier row of the same case identically
    published: int = 0  # Incident messages acknowledged on incidents.v1
    dry_run: bool = False

    def text(self) -> str:
        verb = "would be " if self.dry_run else ""
        return (
            f"rows read {self.rows_read}: {verb}imported {self.imported}, unchanged {self.unchanged}, "
            f"{verb}replaced {self.replaced}, invalid {self.invalid}, duplicate rows {self.duplicates}; "
            f"published {self.published}"
        )


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _list_invalid(parsed: ParsedLog) -> None:
    for row in parsed.invalid[:MAX_LISTED]:
        typer.echo(f"{parsed.source}: {row.describe()}", err=True)
    if len(parsed.invalid) > MAX_LISTED:
        typer.echo(f"{parsed.source}: … and {len(parsed.invalid) - MAX_LISTED} more invalid rows", err=True)


def _finish(summary: Summary) -> None:
    typer.echo(summary.text())
    typer.echo(orjson.dumps(asdict(summary)).decode())


@incidents_app.command("import")
def import_(
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, readable=True, help="the injury log, CSV (docs/incidents.md)"
    ),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="import the valid rows and skip the invalid ones (listed)"
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="validate and compare with InfluxDB; write and publish nothing"
    ),
) -> None:
    """Validate an injury log and store its cases as `incident` points and on incidents.v1.

    The case id is the identity: importing the same file again changes nothing, and a corrected case
    replaces its earlier point. Without --skip-invalid, any invalid row means nothing is imported.
    """
    from strainwatch.fleet.producer import ProduceError
    from strainwatch.incidents.publish import publish
    from strainwatch.incidents.store import IncidentStore, IncidentStoreError
    from strainwatch.storage.influxql import InfluxQLError

    try:
        parsed = read_log(file)
    except CsvLogError as error:
        raise _fail(str(error)) from None
    summary = Summary(
        rows_read=parsed.rows_read,
        invalid=len(parsed.invalid),
        duplicates=len(parsed.duplicates),
        dry_run=dry_run,
    )
    _list_invalid(parsed)
    if parsed.invalid and not skip_invalid:
        _finish(summary)
        raise _fail(
            f"{len(parsed.invalid)} invalid row(s) in {file}: nothing imported "
            "(fix them, or --skip-invalid to import the other rows)"
        )
    rows = [p.row for p in parsed.rows]
    settings = get_settings()
    store = IncidentStore(
        settings.influx_url,
        settings.influx_token.get_secret_value(),
        settings.influx_org,
        settings.influx_bucket,
    )
    try:
        plan = store.plan(rows)
        summary.imported, summary.unchanged, summary.replaced = (
            len(plan.new),
            len(plan.unchanged),
            len(plan.replaced),
        )
        for replacement in plan.replaced:
            typer.echo(("would replace " if dry_run else "replaced ") + replacement.describe())
        if dry_run:
            _finish(summary)
            return
        store.apply(plan)
    except (IncidentStoreError, InfluxQLError) as error:
        raise _fail(f"{error} (bucket {settings.influx_bucket}); run the import again once fixed") from None
    log.info(
        "incidents stored",
        file=str(file),
        imported=summary.imported,
        unchanged=summary.unchanged,
        replaced=summary.replaced,
        invalid=summary.invalid,
    )
    try:
        summary.published = publish(
            [row.to_event() for row in rows], settings.kafka_bootstrap, progress=sys.stderr.isatty()
        )
    except ProduceError as error:
        _finish(summary)
        raise _fail(
            f"InfluxDB holds the cases, but publishing failed: {error}; run the import again "
            "(it changes nothing in InfluxDB and publishes every case again)"
        ) from None
    log.info("incidents published", file=str(file), published=summary.published)
    _finish(summary)


def register(app: typer.Typer) -> None:
    app.add_typer(incidents_app, name="incidents")
