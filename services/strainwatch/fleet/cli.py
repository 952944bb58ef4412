"""`strainwatch simulate`: a simulated wearable fleet publishing posture frames.

By default frames go straight to Kafka (benchmarks, backfills); with `--mqtt` the live frames go
over MQTT, each simulated device logged in to Mosquitto as itself, answering break prompts.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import typer

from strainwatch.fleet.simulator import SimFrame


def paced(frames: Iterable[SimFrame], frame_s: float) -> Iterator[SimFrame]:
    """Release each live frame once its last sample has happened, as a wearable would."""
    for item in frames:
        delay = item.start_s + frame_s - time.time()
        if delay > 0:
            time.sleep(delay)
        yield item


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate(
        workers: int = typer.Option(..., "--workers", min=1, max=100_000, help="simulated workers"),
        rate_hz: float = typer.Option(10.0, "--rate-hz", min=1, max=100, help="samples per second"),
        duration: float = typer.Option(
            60.0, "--duration", min=0, help="seconds of live frames, paced in real time"
        ),
        days: float = typer.Option(0.0, "--days", min=0, max=366, help="days of history to backfill first"),
        frame_s: float = typer.Option(1.0, "--frame-s", min=0.01, max=60, help="seconds per live frame"),
        invalid_rate: float = typer.Option(
            0.0, "--invalid-rate", min=0, max=1, help="share of malformed frames"
        ),
        seed: int = typer.Option(42, "--seed", help="reproducible randomness"),
        shifts: bool = typer.Option(
            True,
            "--shifts/--no-shifts",
            help="live workers follow the shift plan (06/14/22 UTC, scheduled breaks); "
            "--no-shifts: every device sends all the time, whatever the hour",
        ),
        site: str = typer.Option("plant-1", "--site", help="site id"),
        bootstrap: str = typer.Option(
            None, "--bootstrap", help="host:port (default STRAINWATCH_KAFKA_BOOTSTRAP)"
        ),
        topic: str = typer.Option(None, "--topic", help="default posture.events.v1"),
        mqtt: bool = typer.Option(
            False,
            "--mqtt",
            help="live frames over MQTT, each device logged in as itself (default: straight to Kafka); "
            "--days history still goes straight to Kafka",
        ),
        ack_share: float = typer.Option(
            1.0, "--ack-share", min=0, max=1, help="with --mqtt: share of prompts workers acknowledge"
        ),
        take_share: float = typer.Option(
            0.0, "--take-share", min=0, max=1, help="with --mqtt: share of break prompts followed by a break"
        ),
        report_rest: bool = typer.Option(
            False, "--report-rest", help="with --mqtt: a device reports a break it sees taken (kind rest)"
        ),
        state_dir: Path = typer.Option(
            None, "--state-dir", help="with --mqtt: the stack whose Mosquitto gets the device accounts"
        ),
        mqtt_host: str = typer.Option(None, "--mqtt-host", help="default STRAINWATCH_MQTT_HOST"),
        mqtt_port: int = typer.Option(
            None, "--mqtt-port", min=1, max=65535, help="default STRAINWATCH_MQTT_PORT"
        ),
        linger: float = typer.Option(
            0.0,
            "--linger",
            min=0,
            help="with --mqtt: seconds to keep listening for commands after the last frame",
        ),
        receipts: Path = typer.Option(
            None, "--receipts", help="with --mqtt: write each command received as a JSON line (latency)"
        ),
    ) -> None:
        """Produce realistic posture frames: task profiles, holds, shifts and breaks."""
        from strainwatch.config import get_settings
        from strainwatch.fleet.producer import ProduceError, produce
        from strainwatch.fleet.simulator import FleetSimulator, SimConfig, backfill_config
        from strainwatch.topics import POSTURE_EVENTS

        if frame_s * rate_hz < 1:
            raise typer.BadParameter("a frame must hold at least one sample (frame-s × rate-hz ≥ 1)")
        if mqtt and duration <= 0:
            raise typer.BadParameter("--mqtt publishes live frames: give a --duration above 0")
        mqtt_only = {
            "--ack-share": ack_share != 1.0,
            "--take-share": take_share != 0.0,
            "--report-rest": report_rest,
            "--linger": linger > 0,
            "--receipts": receipts is not None,
        }
        if not mqtt and any(mqtt_only.values()):
            used = ", ".join(name for name, given in mqtt_only.items() if given)
            raise typer.BadParameter(f"{used} only apply with --mqtt")
        bootstrap = bootstrap or get_settings().kafka_bootstrap
        topic = topic or POSTURE_EVENTS.name
        totals: dict[str, object] = {}
        try:
            now = datetime.now(UTC)
            if days > 0:
                history = backfill_config(
                    days, workers, now, seed=seed, site_id=site, invalid_rate=invalid_rate, rate_hz=rate_hz
                )
                totals["backfill"] = produce(
                    FleetSimulator(history).frames(), bootstrap, topic, progress=True
                ).as_dict()
            if duration > 0:
                live = SimConfig(
                    workers=workers,
                    rate_hz=rate_hz,
                    frame_s=frame_s,
                    duration_s=duration,
                    start=datetime.fromtimestamp(time.time() // 1, UTC),
                    seed=seed + 1,
                    invalid_rate=invalid_rate,
                    site_id=site,
                    shifts=shifts,
                )
                if mqtt:
                    from strainwatch.fleet.behaviour import DevicePolicy

                    policy = DevicePolicy(
                        ack_share=ack_share, take_share=take_share, report_rest=report_rest, seed=seed
                    )
                    totals["live"] = _simulate_mqtt(
                        FleetSimulator(live), policy, state_dir, mqtt_host, mqtt_port, linger, receipts
                    )
                else:
                    totals["live"] = produce(
                        paced(FleetSimulator(live).frames(), frame_s), bootstrap, topic, progress=True
                    ).as_dict()
        except ProduceError as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(1) from None
        typer.echo(orjson.dumps(totals).decode())


def _simulate_mqtt(
    sim: Any,
    policy: Any,
    state_dir: Path | None,
    host: str | None,
    port: int | None,
    linger_s: float,
    receipts_path: Path | None,
) -> dict[str, Any]:
    """Provision the fleet's device accounts, then run the devices until the frames are out."""
    from strainwatch.config import get_settings
    from strainwatch.fleet.devices import FleetError, MqttFleet, MqttTarget, device_password

    settings = get_settings()
    target = MqttTarget(
        host=host or settings.mqtt_host,
        port=port or settings.mqtt_port,
        tls=settings.mqtt_tls,
        ca_file=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None,
    )
    passwords = {w.device_id: device_password(w.device_id) for w in sim.workers}
    try:
        from strainwatch.stack.mosquitto import provision_devices
    except ImportError:
        typer.echo("strainwatch.stack.mosquitto is missing: cannot provision device accounts", err=True)
        raise typer.Exit(1) from None
    try:
        provision_devices(state_dir or settings.state_dir, passwords)
    except (OSError, RuntimeError, ValueError) as error:
        typer.echo(f"provisioning {len(passwords)} device accounts failed: {error}", err=True)
        raise typer.Exit(1) from None

    receipts_file = open(receipts_path, "a", encoding="utf-8") if receipts_path else None  # noqa: SIM115

    def write_receipt(receipt: Any) -> None:
        if receipts_file is not None:
            receipts_file.write(orjson.dumps(receipt.as_dict()).decode() + "\n")

    fleet = MqttFleet(sim, target, policy, passwords, on_receipt=write_receipt)

    async def run() -> dict[str, Any]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):  # stop publishing, disconnect, print the summary
            loop.add_signal_handler(signum, stop.set)
        stats = await fleet.run(paced=True, linger_s=linger_s, stop=stop)
        return {**stats.as_dict(), "stopped_early": stop.is_set()}

    try:
        return asyncio.run(run())
    except FleetError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    finally:
        if receipts_file is not None:
            with contextlib.suppress(OSError):
                receipts_file.close()
