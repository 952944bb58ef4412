"""`strainwatch gateway run`: the device gateway (MQTT <-> Kafka)."""

from __future__ import annotations

import asyncio

import structlog
import typer

log = structlog.get_logger("strainwatch.gateway")

gateway_app = typer.Typer(no_args_is_help=True, help="Device gateway: MQTT devices <-> Kafka.")


@gateway_app.command("run")
def run(
    bootstrap: str = typer.Option(None, help="Kafka host:port (default STRAINWATCH_KAFKA_BOOTSTRAP)"),
    ops_bind: str | None = typer.Option(
        None,
        "--ops-bind",
        help="host:port of /healthz, /readyz and /metrics (default STRAINWATCH_OPS_BIND, else "
        "127.0.0.1:9312; a host alone keeps port 9312; 'off': none)",
    ),
) -> None:
    """Forward device frames and acks to Kafka and commands to devices until SIGTERM/SIGINT
    (a second one exits at once)."""
    from strainwatch.ops.metrics import ServiceMetrics
    from strainwatch.ops.readiness import Readiness
    from strainwatch.ops.server import resolve_bind

    try:
        bind = resolve_bind(ops_bind, "gateway")
    except ValueError as error:
        typer.echo(f"error: --ops-bind / STRAINWATCH_OPS_BIND: {error}", err=True)
        raise typer.Exit(2) from None
    from strainwatch.config import get_settings
    from strainwatch.gateway.log_limits import limit_kafka_client_logs
    from strainwatch.gateway.mqtt_link import MqttSettings
    from strainwatch.gateway.service import Gateway

    s = get_settings()
    limit_kafka_client_logs()
    mqtt = MqttSettings(
        host=s.mqtt_host,
        port=s.mqtt_port,
        username=s.mqtt_username,
        password=s.mqtt_password.get_secret_value(),
        client_id=s.mqtt_client_id,
        tls=s.mqtt_tls,
        ca_file=str(s.mqtt_ca_file) if s.mqtt_ca_file else None,
    )
    readiness = Readiness()
    metrics = ServiceMetrics("gateway")
    gateway = Gateway(bootstrap or s.kafka_bootstrap, mqtt, readiness=readiness, metrics=metrics)

    async def main() -> None:
        from strainwatch.service_signals import install_stop_signals, start_ops_server

        install_stop_signals(asyncio.get_running_loop(), gateway.stop, service="gateway")
        server = await start_ops_server("gateway", bind, readiness, metrics.registry, ops_bind)
        try:
            await gateway.run()
        finally:
            await server.stop()

    try:
        asyncio.run(main())
    finally:
        from strainwatch.service_signals import exit_on_next_signal

        exit_on_next_signal("gateway")  # asyncio.run restored the handlers it replaced


def register(app: typer.Typer) -> None:
    app.add_typer(gateway_app, name="gateway")
