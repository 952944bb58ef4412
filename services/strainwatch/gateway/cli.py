"""`strainwatch gateway run`: the device gateway (MQTT <-> Kafka)."""

from __future__ import annotations

import asyncio
import signal

import typer

gateway_app = typer.Typer(no_args_is_help=True, help="Device gateway: MQTT devices <-> Kafka.")


@gateway_app.command("run")
def run(
    bootstrap: str = typer.Option(None, help="Kafka host:port (default STRAINWATCH_KAFKA_BOOTSTRAP)"),
) -> None:
    """Forward device frames and acks to Kafka and commands to devices until SIGTERM/SIGINT."""
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
    gateway = Gateway(bootstrap or s.kafka_bootstrap, mqtt)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, gateway.stop)
        await gateway.run()

    asyncio.run(main())


def register(app: typer.Typer) -> None:
    app.add_typer(gateway_app, name="gateway")
