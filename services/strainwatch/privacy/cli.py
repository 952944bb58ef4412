"""`strainwatch privacy erase --worker W [--site S]` (docs/privacy.md)."""

from __future__ import annotations

import re

import orjson
import typer

privacy_app = typer.Typer(no_args_is_help=True, help="Privacy operations: erasing a worker's data.")

# the pseudonym pattern of events.Ident
_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


def _ident(value: str | None, option: str) -> str | None:
    if value is None:
        return None
    if not (1 <= len(value) <= 64) or not _IDENT.match(value):
        raise typer.BadParameter(
            f"{value!r} is not a pseudonym (1-64 characters: letters, digits, '.', '_', ':', '-')",
            param_hint=option,
        )
    return value


@privacy_app.command("erase")
def erase_command(
    worker: str = typer.Option(..., "--worker", help="the worker's pseudonym (site-issued worker id)"),
    site: str = typer.Option(None, "--site", help="only the points tagged with this site"),
    wait_s: float = typer.Option(
        60.0, "--wait-s", min=0, help="how long to wait for running processors to drop the worker"
    ),
) -> None:
    """Erase one worker's points from InfluxDB and its state from every service."""
    from strainwatch.config import get_settings
    from strainwatch.privacy.erase import ErasureError, UnknownWorker, erase

    worker_id = _ident(worker, "--worker")
    assert worker_id is not None
    site_id = _ident(site, "--site")
    try:
        report = erase(get_settings(), worker_id, site_id, wait_s)
    except UnknownWorker as error:
        typer.echo(f"privacy erase: {error}", err=True)
        raise typer.Exit(1) from None
    except ErasureError as error:
        typer.echo(f"privacy erase failed: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
    if report.points_left or report.unconfirmed:
        typer.echo(
            "privacy erase: incomplete: "
            + (f"points left {report.points_left}; " if report.points_left else "")
            + (
                f"processor groups {report.unconfirmed} did not confirm within {wait_s:g} s"
                if report.unconfirmed
                else ""
            ),
            err=True,
        )
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(privacy_app, name="privacy")
