"""`strainwatch alerts run`: deliver break prompts (docs/alerting.md)."""

from __future__ import annotations

import asyncio
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
    ops_bind: str | None = typer.Option(
        None,
        "--ops-bind",
        help="host:port of /healthz, /readyz and /metrics (default STRAINWATCH_OPS_BIND, else "
        "127.0.0.1:9311; a host alone keeps port 9311; 'off': none)",
    ),
) -> None:
    """Consume alerts.break.v1, apply the delivery policy, send device commands and channel messages;
    forward Grafana's manager alerts to the sites' channels."""
    from strainwatch.alerts.grafana_webhook import parse_bind
    from strainwatch.alerts.service import run_service
    from strainwatch.ops.metrics import ServiceMetrics
    from strainwatch.ops.readiness import Readiness
    from strainwatch.ops.server import resolve_bind
    from strainwatch.service_signals import exit_on_next_signal, install_stop_signals, start_ops_server

    try:
        ops = resolve_bind(ops_bind, "alerting")
    except ValueError as error:
        typer.echo(f"error: --ops-bind / STRAINWATCH_OPS_BIND: {error}", err=True)
        raise typer.Exit(2) from None

    webhook_bind = None if grafana_webhook_bind.strip().lower() in ("", "off") else grafana_webhook_bind
    if webhook_bind is not None:
        try:
            parse_bind(webhook_bind)
        except ValueError as error:
            typer.echo(f"error: --grafana-webhook-bind: {error}", err=True)
            raise typer.Exit(2) from None
    webhook_token = secret_from_env("STRAINWATCH_GRAFANA_WEBHOOK_TOKEN")  # or _FILE
    from strainwatch.gateway.log_limits import limit_kafka_client_logs

    limit_kafka_client_logs()  # with the broker gone aiokafka logs every reconnect attempt
    settings = get_settings()
    config = load_or_exit(channels_file or settings.channels_file)
    log.info(
        "alerting starting",
        sites=sorted(config.sites),
        channels=[c.label for c in config.all_channels()],
    )

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_signals(asyncio.get_running_loop(), stop.set, service="alerting")
        readiness = Readiness()
        metrics = ServiceMetrics("alerting")
        server = await start_ops_server("alerting", ops, readiness, metrics.registry, ops_bind)
        try:
            await run_service(
                settings, config, stop, webhook_bind, webhook_token, readiness=readiness, metrics=metrics
            )
        finally:
            await server.stop()

    try:
        asyncio.run(main())
    finally:
        exit_on_next_signal("alerting")  # asyncio.run restored the handlers it replaced


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")
