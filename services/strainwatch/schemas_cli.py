"""`strainwatch schemas export|check`: the contracts in schemas/, generated from the event models."""

from __future__ import annotations

from pathlib import Path

import typer

schemas_app = typer.Typer(no_args_is_help=True, help="JSON Schema and AsyncAPI contracts in schemas/.")


@schemas_app.command("export")
def export(
    out: Path = typer.Option(Path("schemas"), "--out", help="directory to write into"),
) -> None:
    """Write one JSON Schema per message model and asyncapi.yaml of the topics."""
    from strainwatch.contracts_export import write

    written, removed = write(out)
    for path in written:
        typer.echo(f"wrote {path}")
    for path in removed:
        typer.echo(f"removed {path} (no model produces it)")


@schemas_app.command("check")
def check(
    directory: Path = typer.Option(Path("schemas"), "--dir", help="directory holding the exported files"),
) -> None:
    """Exit 1, listing them, when files differ from a fresh export."""
    from strainwatch.contracts_export import stale

    differ = stale(directory)
    if differ:
        for name in differ:
            typer.echo(f"differs: {directory / name}", err=True)
        typer.echo("run `strainwatch schemas export` and commit the result", err=True)
        raise typer.Exit(1)
    typer.echo(f"{directory}: current")


def register(app: typer.Typer) -> None:
    app.add_typer(schemas_app, name="schemas")
