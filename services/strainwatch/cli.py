"""The `strainwatch` command: one entry point per service."""

from __future__ import annotations

import orjson
import typer
from pydantic import ValidationError

from strainwatch.config import ConfigError, get_settings
from strainwatch.logs import configure

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Upper-back strain monitoring.")
config_app = typer.Typer(no_args_is_help=True, help="Effective configuration.")
app.add_typer(config_app, name="config")


@app.callback()
def _setup() -> None:
    try:
        settings = get_settings()
    except ValidationError as error:
        # the messages only: pydantic's own text repeats the input, which holds the secrets
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
            for e in error.errors(include_input=False)
        )
        typer.echo(f"error: configuration: {problems}", err=True)
        raise typer.Exit(2) from None
    configure(settings.log_level, settings.log_format)


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration (environment STRAINWATCH_*), secrets masked."""
    typer.echo(orjson.dumps(get_settings().masked(), option=orjson.OPT_INDENT_2).decode())


def _register() -> None:
    # Each service contributes its commands from its own module.
    from strainwatch.alerts.cli import register as register_alerts
    from strainwatch.dashboards.cli import register as register_dashboards
    from strainwatch.demo import register as register_demo
    from strainwatch.exposure_cli import register as register_exposure
    from strainwatch.fleet.cli import register as register_fleet
    from strainwatch.gateway.cli import register as register_gateway
    from strainwatch.incidents.cli import register as register_incidents
    from strainwatch.privacy.cli import register as register_privacy
    from strainwatch.processor.cli import register as register_processor
    from strainwatch.reports.cli import register as register_reports
    from strainwatch.schemas_cli import register as register_schemas
    from strainwatch.stack.cli import register as register_stack

    for register in (
        register_stack,
        register_fleet,
        register_gateway,
        register_processor,
        register_exposure,
        register_schemas,
        register_demo,
        register_alerts,
        register_incidents,
        register_reports,
        register_dashboards,
        register_privacy,
    ):
        register(app)


_register()


def main() -> None:
    try:
        app()
    except ConfigError as error:  # e.g. the local stack's InfluxDB token with a remote URL
        typer.echo(f"error: configuration: {error}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
