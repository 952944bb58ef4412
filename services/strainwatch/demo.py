"""`strainwatch demo`: the whole pipeline on the local stack, then a readable summary.

Brings the stack up if needed, starts the processor, backfills a couple of days for a small fleet,
streams a short live period in real time, waits until every frame is accounted for, prints a
summary and, as the last line, one JSON object. If the wait times out it says what is missing and
exits non-zero instead: the JSON line means every frame was accounted for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from strainwatch.config import get_settings
from strainwatch.storage import influxql
from strainwatch.storage.influxql import InfluxQL, InfluxQLError

console = Console(stderr=True)

ACCOUNT_TIMEOUT_S = 300.0


class DemoIncomplete(RuntimeError):
    """The processor did not account for every frame in time; the message says what is missing."""


@dataclass(frozen=True)
class Accounting:
    """Frames the pipeline accounted for against what the gateway delivered."""

    processed: int
    dead_lettered: int
    expected_processed: int
    expected_dead_lettered: int
    waited_s: float = 0.0

    @property
    def complete(self) -> bool:
        return self.processed >= self.expected_processed and self.dead_lettered >= self.expected_dead_lettered

    def shortfall(self) -> str:
        """What is missing, in words (empty when complete)."""
        missing = []
        if self.processed < self.expected_processed:
            missing.append(
                f"processed {self.processed:,} of {self.expected_processed:,} valid frames "
                f"({self.expected_processed - self.processed:,} missing in InfluxDB)"
            )
        if self.dead_lettered < self.expected_dead_lettered:
            missing.append(
                f"dead-lettered {self.dead_lettered:,} of {self.expected_dead_lettered:,} invalid frames "
                f"({self.expected_dead_lettered - self.dead_lettered:,} missing on the dead-letter topic)"
            )
        return "; ".join(missing)


def await_accounting(
    poll: Callable[[], tuple[int, int]],
    expected_processed: int,
    expected_dead_lettered: int,
    timeout_s: float = ACCOUNT_TIMEOUT_S,
    *,
    interval_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Accounting:
    """Poll (processed, dead-lettered) until both reach what is expected or timeout_s passes.

    Returns the last counts either way; `complete` tells which. poll() may raise to abort (the
    processor exited).
    """
    started = clock()
    while True:
        processed, dead = poll()
        waited = clock() - started
        result = Accounting(processed, dead, expected_processed, expected_dead_lettered, waited)
        if result.complete or waited >= timeout_s:
            return result
        sleep(interval_s)


def verdict(accounting: Accounting, timeout_s: float = ACCOUNT_TIMEOUT_S) -> None:
    """Raise DemoIncomplete unless every frame was accounted for."""
    if not accounting.complete:
        raise DemoIncomplete(
            f"demo failed: after waiting {accounting.waited_s:.0f} s (limit {timeout_s:.0f} s) the processor "
            f"had not accounted for every frame: {accounting.shortfall()}"
        )


class DeadLetterCounter:
    """Counts the records that reach the dead-letter topic after it was created, by reading them.

    Not from end offsets: Tansu's end offset is the last record *batch*'s base offset + 1 (three
    batches of 5 records end at 11, while the records take offsets 0..14), so a difference of end
    offsets undercounts whenever batches hold more than one record. Record offsets are exact on
    both brokers, and so is a consumer's position after it read them.

    A consumer without a group, assigned every partition, first reads from one before the listed
    end to where the topic really ends now (on Tansu, the rest of the last batch) without counting.
    "Caught up" means position >= listed end: on Tansu that end is the last batch's first offset
    + 1, and a fetch returns whole batches, which one poll hands over entirely (max_poll_records is
    large), so a position past it has read the last batch to its end. (Checked on Tansu: batches of
    5, 3 and 7 records list end 9; reading from any offset returns the records up to 14.)
    """

    def __init__(self, bootstrap: str, topic: str | None = None, *, catch_up_s: float = 10.0) -> None:
        from kafka import KafkaConsumer, TopicPartition

        from strainwatch.topics import POSTURE_DEADLETTER

        name = topic or POSTURE_DEADLETTER.name
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            max_poll_records=1_000_000,
        )
        self._catch_up_s = catch_up_s
        self.count = 0
        try:
            partitions = self._consumer.partitions_for_topic(name) or set()
            self._tps = [TopicPartition(name, p) for p in sorted(partitions)]
            self._consumer.assign(self._tps)
            begins = self._consumer.beginning_offsets(self._tps)
            for tp, end in self._consumer.end_offsets(self._tps).items():
                self._consumer.seek(tp, max(end - 1, begins[tp]))
            if not self._read(time.monotonic() + catch_up_s):
                raise TimeoutError(f"could not read to the end of {name} within {catch_up_s:g} s")
        except BaseException:
            self._consumer.close()
            raise
        self.count = 0  # records before the run are not the demo's

    def read(self) -> int:
        """Read what arrived since the last call; returns the total counted so far. Stops after
        catch_up_s even if not caught up (the next call goes on from there)."""
        self._read(time.monotonic() + self._catch_up_s)
        return self.count

    def _read(self, deadline: float) -> bool:
        consumer = self._consumer
        ends = consumer.end_offsets(self._tps)
        while any(consumer.position(tp) < ends[tp] for tp in self._tps):
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                return False
            for records in consumer.poll(timeout_ms=min(remaining_ms, 500)).values():
                self.count += len(records)
        return True

    def close(self) -> None:
        self._consumer.close()


def run_demo(
    workers: int, days: float, live_s: float, invalid_rate: float, seed: int, broker: str | None
) -> dict[str, Any]:
    from strainwatch.fleet.cli import paced
    from strainwatch.fleet.producer import produce, produce_roster
    from strainwatch.fleet.simulator import FleetSimulator, SimConfig, backfill_config
    from strainwatch.stack.manager import Stack, StackConfig
    from strainwatch.topics import POSTURE_EVENTS, ROSTER

    started = time.monotonic()
    settings = get_settings()
    stack_cfg = StackConfig.from_settings(broker)  # type: ignore[arg-type]
    console.rule("1/5 local stack")
    Stack(stack_cfg).up()
    console.print(
        f"broker [bold]{stack_cfg.broker}[/] at {stack_cfg.bootstrap}, InfluxDB at {stack_cfg.influx_url}"
    )

    run_at = datetime.now(UTC).replace(microsecond=0)
    site = f"demo-{run_at:%Y%m%d%H%M%S}"
    dead_letters = DeadLetterCounter(stack_cfg.bootstrap)  # from where the topic ends now

    console.rule("2/5 processor")
    log_path = Path(stack_cfg.state_dir) / "logs" / "processor.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "STRAINWATCH_KAFKA_BOOTSTRAP": stack_cfg.bootstrap,
        "STRAINWATCH_INFLUX_URL": stack_cfg.influx_url,
        "STRAINWATCH_INFLUX_BUCKET": stack_cfg.influx_bucket,
        "STRAINWATCH_POSTURE_PARTITIONS": str(stack_cfg.posture_partitions),
        "STRAINWATCH_LOG_FORMAT": "json",
    }
    with open(log_path, "ab") as log_file:
        processor = subprocess.Popen(
            [sys.executable, "-m", "strainwatch.cli", "processor"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    console.print(f"processor pid {processor.pid}, log {log_path}")
    try:
        console.rule(f"3/5 backfill: {workers} workers, {days:g} days of history")
        history = FleetSimulator(
            backfill_config(
                days=days, workers=workers, now=run_at, seed=seed, site_id=site, invalid_rate=invalid_rate
            )
        )
        # the roster first: points carry each worker's team from the first frame on
        rostered = produce_roster(history.roster(), stack_cfg.bootstrap, ROSTER.name)
        console.print(f"roster: {rostered} workers in {len({e['team'] for e in history.roster()})} teams")
        backfill = produce(history.frames(), stack_cfg.bootstrap, POSTURE_EVENTS.name, progress=True)
        console.print(f"backfilled {backfill.frames_produced:,} frames in {backfill.elapsed_s:.1f} s")

        console.rule(f"4/5 live: {live_s:g} s of 1-second frames at 10 Hz")
        live_cfg = SimConfig(
            workers=workers,
            rate_hz=10.0,
            frame_s=1.0,
            duration_s=live_s,
            start=datetime.fromtimestamp(time.time() // 1, UTC),
            seed=seed + 1,
            invalid_rate=invalid_rate,
            site_id=site,
        )
        live = produce(
            paced(FleetSimulator(live_cfg).frames(), 1.0),
            stack_cfg.bootstrap,
            POSTURE_EVENTS.name,
            progress=True,
        )
        produced = backfill.frames_produced + live.frames_produced
        valid = backfill.valid_frames + live.valid_frames
        invalid = backfill.invalid_frames + live.invalid_frames

        console.rule("5/5 waiting for the processor to account for every frame")
        ql = InfluxQL(stack_cfg.influx_url, settings.influx_token.get_secret_value(), stack_cfg.influx_bucket)
        where = f"\"site\" = '{site}'"

        def poll() -> tuple[int, int]:
            if processor.poll() is not None:
                raise RuntimeError(f"the processor exited ({processor.returncode}); see {log_path}")
            try:
                processed = int(ql.scalar(influxql.exposure_field_sum("frames", where)))
            except InfluxQLError:
                processed = 0
            return processed, dead_letters.read()

        accounting = await_accounting(poll, valid, invalid)
        summary = _summary(ql, where, site)
    finally:
        processor.send_signal(signal.SIGTERM)
        try:
            processor.wait(40)
        except subprocess.TimeoutExpired:
            processor.kill()
        dead_letters.close()
    by_reason = Counter(backfill.by_reason) + Counter(live.by_reason)
    processed, dead = accounting.processed, accounting.dead_lettered
    _print_summary(summary, produced, processed, dead, by_reason, site)
    verdict(accounting)  # after the summary, which shows the counts; no JSON line on failure
    return {
        "frames_produced": produced,
        "frames_processed": processed,
        "dead_lettered": dead,
        "exposure_points": summary["exposure_points"],
        "influx_url": stack_cfg.influx_url,
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def _summary(ql: InfluxQL, where: str, site: str) -> dict[str, Any]:
    points = int(ql.scalar(f'SELECT COUNT("wear_s") FROM "exposure" WHERE {where}'))
    alerts = {
        s["tags"]["kind"]: int(s["values"][0][1])
        for s in ql.query(influxql.break_alert_counts("kind", where))
    }
    fields = [
        "wear_s",
        "zone_trunk_flexion_conditional_s",
        "zone_trunk_flexion_not_acceptable_s",
        "zone_neck_flexion_conditional_s",
        "zone_neck_flexion_not_acceptable_s",
        "zone_arm_elevation_right_not_acceptable_s",
        "cut_arm_elevation_right_gt90_s",
        "violations",
    ]
    cols = ", ".join(f'SUM("{f}")' for f in fields)
    teams = {}
    for s in ql.query(f'SELECT {cols} FROM "exposure" WHERE {where} GROUP BY "team"'):
        values = dict(zip(fields, s["values"][0][1:], strict=True))
        teams[s["tags"]["team"]] = {k: float(v or 0) for k, v in values.items()}
    return {"site": site, "exposure_points": points, "alerts": alerts, "teams": teams}


def _print_summary(
    summary: dict[str, Any], produced: int, processed: int, dead: int, by_reason: Counter[str], site: str
) -> None:
    out = Console()
    out.rule(f"strainwatch demo: site {site}")
    out.print(
        f"frames produced {produced:,} = processed {processed:,} + dead-lettered {dead:,}"
        + (
            "  [green]✓ every frame accounted for[/]"
            if produced == processed + dead
            else "  [red]✗ mismatch[/]"
        )
    )
    if by_reason:
        out.print("dead-letter reasons: " + ", ".join(f"{r} {n}" for r, n in sorted(by_reason.items())))
    out.print(f"exposure points in InfluxDB: {summary['exposure_points']:,}")
    alerts = summary["alerts"]
    out.print(
        f"break alerts: {alerts.get('conditioning_break', 0)} conditioning breaks, "
        f"{alerts.get('posture_hold', 0)} posture nudges"
    )
    table = Table(title="Exposure by team (share of wear time)")
    for column in (
        "team",
        "wear h",
        "trunk 20-60°",
        "trunk ≥60°",
        "neck cond.",
        "neck n/a",
        "arm ≥60°",
        "arm >90°",
        "violations",
    ):
        table.add_column(column, justify="right")
    for team, v in sorted(summary["teams"].items()):
        wear = v["wear_s"] or 1.0
        table.add_row(
            team,
            f"{v['wear_s'] / 3600:.1f}",
            f"{100 * v['zone_trunk_flexion_conditional_s'] / wear:.1f} %",
            f"{100 * v['zone_trunk_flexion_not_acceptable_s'] / wear:.1f} %",
            f"{100 * v['zone_neck_flexion_conditional_s'] / wear:.1f} %",
            f"{100 * v['zone_neck_flexion_not_acceptable_s'] / wear:.1f} %",
            f"{100 * v['zone_arm_elevation_right_not_acceptable_s'] / wear:.1f} %",
            f"{100 * v['cut_arm_elevation_right_gt90_s'] / wear:.1f} %",
            f"{int(v['violations'])}",
        )
    out.print(table)
    out.print(
        "The stack keeps running for inspection: `strainwatch stack status`; stop it with `make stack-down`."
    )


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        workers: int = typer.Option(10, min=1, max=2_000, help="simulated workers"),
        days: float = typer.Option(2.0, min=0, max=31, help="days of history to backfill"),
        live_s: float = typer.Option(30.0, "--live-s", min=0, max=3_600, help="seconds of live streaming"),
        invalid_rate: float = typer.Option(0.01, min=0, max=1, help="share of malformed frames"),
        seed: int = typer.Option(7, help="simulation seed"),
        broker: str = typer.Option(None, help="tansu (default) or kafka"),
    ) -> None:
        """Local stack, simulated fleet, processor, alerts and a summary; the last line is JSON."""
        if broker is not None and broker not in ("tansu", "kafka"):
            raise typer.BadParameter(
                f"unknown broker {broker!r}: choose tansu or kafka", param_hint="--broker"
            )
        from strainwatch.fleet.producer import ProduceError

        try:
            result = run_demo(workers, days, live_s, invalid_rate, seed, broker)
        except (DemoIncomplete, ProduceError) as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(1) from None
        typer.echo(orjson.dumps(result).decode())
