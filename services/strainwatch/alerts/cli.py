"""`strainwatch alerts run`: deliver break prompts (docs/alerting.md)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import structlog
import typer

from strainwatch.alerts.channels import ChannelsConfig, ChannelsConfigError, load_channels
from strainwatch.alerts.notify import url_is_valid
from strainwatch.config import get_settings, secret_from_env

log = structlog.get_logger("strainwatch.alerts")

alerts_app = typer.Typer(no_args_is_help=True, help="Break prompt delivery and outcomes.")


def load_or_exit(path: Path | None) -> ChannelsConfig:
    """The validated channels file, or exit 2 with what is wrong (secrets never printed)."""
    if path is None:
        log.warning("no STRAINWATCH_CHANNELS_FILE: defaults, device commands only")
        return ChannelsConfig()
    try:
        config = load_channels(path)
    except ChannelsConfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    bad = [c.label for c in config.all_channels() if not url_is_valid(c.url)]
    if bad:
        typer.echo(f"error: {path}: apprise does not understand the channel URL(s): {bad}", err=True)
        raise typer.Exit(2)
    return config


@alerts_app.command("run")
def run(
    channels_file: Path | None = typer.Option(None, help="channels YAML; default STRAINWATCH_CHANNELS_FILE"),
    grafana_webhook_bind: str = typer.Option(
        "127.0.0.1:8095",
        envvar="STRAINWATCH_GRAFANA_WEBHOOK_BIND",
        help="host:port of Grafana's alert webhook (POST /grafana/alerts; 'off': none); "
        "token in STRAINWATCH_GRAFANA_WEBHOOK_TOKEN",
    ),
) -> None:
    """Consume alerts.break.v1, apply the delivery policy, send device commands and channel messages;
    forward Grafana's manager alerts to the sites' channels."""
    from strainwatch.alerts.grafana_webhook import parse_bind
    from strainwatch.alerts.service import run_service

    webhook_bind = None if grafana_webhook_bind.strip().lower() in ("", "off") else grafana_webhook_bind
    if webhook_bind is not None:
        try:
            parse_bind(webhook_bind)
        except ValueError as error:
            typer.echo(f"error: --grafana-webhook-bind: {error}", err=True)
            raise typer.Exit(2) from None
    webhook_token = secret_from_env("STRAINWATCH_GRAFANA_WEBHOOK_TOKEN")  # or _FILE
    settings = get_settings()
    config = load_or_exit(channels_file or settings.channels_file)
    log.info(
        "alerting starting",
        sites=sorted(config.sites),
        channels=[c.label for c in config.all_channels()],
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_service(settings, config, stop, webhook_bind, webhook_token)

    asyncio.run(main())


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")
