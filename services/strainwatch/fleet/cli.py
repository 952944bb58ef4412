"""`strainwatch simulate`: a simulated wearable fleet publishing posture frames."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

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
        site: str = typer.Option("plant-1", "--site", help="site id"),
        bootstrap: str = typer.Option(
            None, "--bootstrap", help="host:port (default STRAINWATCH_KAFKA_BOOTSTRAP)"
        ),
        topic: str = typer.Option(None, "--topic", help="default posture.events.v1"),
    ) -> None:
        """Produce realistic posture frames: task profiles, holds, shifts and breaks."""
        from strainwatch.config import get_settings
        from strainwatch.fleet.producer import ProduceError, produce
        from strainwatch.fleet.simulator import FleetSimulator, SimConfig, backfill_config
        from strainwatch.topics import POSTURE_EVENTS

        if frame_s * rate_hz < 1:
            raise typer.BadParameter("a frame must hold at least one sample (frame-s × rate-hz ≥ 1)")
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
                )
                totals["live"] = produce(
                    paced(FleetSimulator(live).frames(), frame_s), bootstrap, topic, progress=True
                ).as_dict()
        except ProduceError as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(1) from None
        typer.echo(orjson.dumps(totals).decode())
