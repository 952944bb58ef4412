"""`strainwatch dashboards build | publish`."""

from __future__ import annotations

from pathlib import Path

import typer

from strainwatch.dashboards.validate import DashboardInvalid


def _repo_root() -> Path:
    """The checkout this package runs from (services/strainwatch/dashboards -> the repository)."""
    return Path(__file__).resolve().parents[3]


def build_command(
    out: Path = typer.Option(
        None,
        "--out",
        help="Root to write dashboards/ and deploy/grafana/provisioning/ under (default: the repository).",
    ),
    worker_timeline: bool = typer.Option(
        False, "--worker-timeline", help="Include the per-worker timeline (off unless the site enables it)."
    ),
) -> None:
    """Write dashboards/*.json and the Grafana provisioning files from code (refuses invalid ones)."""
    from strainwatch.dashboards.build import build

    root = out if out is not None else _repo_root()
    try:
        written = build(root, worker_timeline=worker_timeline)
    except DashboardInvalid as error:
        typer.echo(f"dashboards build: invalid dashboard, nothing written:\n{error}", err=True)
        raise typer.Exit(1) from error
    for path in written:
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        no_args_is_help=True, help="Grafana dashboards and provisioning, generated from code."
    )
    group.command("build")(build_command)
    try:  # imported here, not at module import: publishing pulls in the Grafana HTTP client
        from strainwatch.dashboards.publish import publish_command
    except ModuleNotFoundError as error:
        if error.name != "strainwatch.dashboards.publish":
            raise
    else:
        group.command("publish")(publish_command)
    app.add_typer(group, name="dashboards")
