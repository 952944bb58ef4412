"""`strainwatch demo`: the whole pipeline on the local stack, then a readable summary.

Brings the stack up if needed (broker, InfluxDB, Mosquitto), starts the processor, the device
gateway and the alerting service, backfills a couple of days for a small fleet straight to Kafka,
then streams a live period from simulated devices over MQTT (they receive their prompts,
acknowledge some and take some breaks), waits until every frame is accounted for and every alert
decided, prints a summary (with one channel message as the local webhook received it) and, as the
last line, one JSON object. If the wait times out it says what is missing and
exits non-zero instead: the JSON line means every frame was accounted for.
"""

from __future__ import annotations

import os
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
from strainwatch.demo_report import DASHBOARDS, PROVISIONING, PUBLISH_COMMAND, DemoStepFailed, ReportOutcome
from strainwatch.kafka_clients import kafka_python_security
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
            **kafka_python_security(),
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
    from strainwatch.demo_report import import_and_report
    from strainwatch.demo_services import WebhookReceiver, channels_file, start_service
    from strainwatch.fleet.producer import produce, produce_roster
    from strainwatch.fleet.simulator import FleetSimulator, SimConfig, backfill_config
    from strainwatch.stack.manager import Stack, StackConfig
    from strainwatch.topics import POSTURE_EVENTS, ROSTER

    started = time.monotonic()
    settings = get_settings()
    stack_cfg = StackConfig.from_settings(broker)  # type: ignore[arg-type]
    console.rule("1/7 local stack")
    Stack(stack_cfg).up()
    console.print(
        f"broker [bold]{stack_cfg.broker}[/] at {stack_cfg.bootstrap}, InfluxDB at {stack_cfg.influx_url}, "
        f"Mosquitto at 127.0.0.1:{stack_cfg.mqtt_port}"
    )

    run_at = datetime.now(UTC).replace(microsecond=0)
    site = f"demo-{run_at:%Y%m%d%H%M%S}"
    dead_letters = DeadLetterCounter(stack_cfg.bootstrap)  # from where the topic ends now
    state_dir = Path(stack_cfg.state_dir)
    webhook = WebhookReceiver()
    webhook_port = webhook.start()

    console.rule("2/7 processor, device gateway, alerting service")
    env = {
        **os.environ,
        "STRAINWATCH_KAFKA_BOOTSTRAP": stack_cfg.bootstrap,
        "STRAINWATCH_INFLUX_URL": stack_cfg.influx_url,
        "STRAINWATCH_INFLUX_BUCKET": stack_cfg.influx_bucket,
        "STRAINWATCH_POSTURE_PARTITIONS": str(stack_cfg.posture_partitions),
        "STRAINWATCH_MQTT_PORT": str(stack_cfg.mqtt_port),
        # Tansu has no idempotent producers (InitProducerId fails); duplicates are deduplicated downstream
        "STRAINWATCH_KAFKA_IDEMPOTENCE": (
            "false" if stack_cfg.broker == "tansu" and not stack_cfg.own_kafka_bootstrap else "true"
        ),
        "STRAINWATCH_MQTT_PASSWORD": stack_cfg.mqtt_gateway_password,
        "STRAINWATCH_CHANNELS_FILE": str(channels_file(state_dir / "demo-channels.yaml", site, webhook_port)),
        "STRAINWATCH_LOG_FORMAT": "json",
    }
    logs = state_dir / "logs"
    services = [
        start_service("processor", ["processor"], env, logs),
        start_service("gateway", ["gateway", "run"], env, logs),
        start_service("alerting service", ["alerts", "run"], env, logs),
    ]
    for service in services:
        console.print(f"{service.name}: pid {service.popen.pid}, log {service.log_path}")
    try:
        console.rule(f"3/7 backfill: {workers} workers, {days:g} days of history")
        history = FleetSimulator(
            backfill_config(
                days=days, workers=workers, now=run_at, seed=seed, site_id=site, invalid_rate=invalid_rate
            )
        )
        # the roster first: points carry each worker's team, and the gateway binds each device
        rostered = produce_roster(history.roster(), stack_cfg.bootstrap, ROSTER.name)
        console.print(f"roster: {rostered} workers in {len({e['team'] for e in history.roster()})} teams")
        backfill = produce(history.frames(), stack_cfg.bootstrap, POSTURE_EVENTS.name, progress=True)
        console.print(f"backfilled {backfill.frames_produced:,} frames in {backfill.elapsed_s:.1f} s")

        console.rule(f"4/7 live: {live_s:g} s of 1-second frames at 10 Hz from devices over MQTT")
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
        live = run_devices(FleetSimulator(live_cfg), state_dir, stack_cfg.mqtt_port, linger_s=15.0)
        console.print(
            f"devices published {live.frames:,} frames, received {live.stats['commands']} commands, "
            f"sent {live.stats['acks_sent']} acknowledgements, took {live.stats['breaks_taken']} breaks"
        )
        produced = backfill.frames_produced + live.frames
        valid = backfill.valid_frames + live.valid
        invalid = backfill.invalid_frames + live.invalid

        console.rule("5/7 waiting for the processor to account for every frame")
        ql = InfluxQL(stack_cfg.influx_url, settings.influx_token.get_secret_value(), stack_cfg.influx_bucket)
        where = f"\"site\" = '{site}'"

        def poll() -> tuple[int, int]:
            for service in services:
                service.check()
            try:
                processed = int(ql.scalar(influxql.exposure_field_sum("frames", where)))
            except InfluxQLError:
                processed = 0
            return processed, dead_letters.read()

        accounting = await_accounting(poll, valid, invalid)
        console.rule("6/7 waiting for the alerting service to decide every alert")
        decided = await_prompts(ql, where, services)
        summary = _summary(ql, where, site)
        summary["prompts_all_decided"] = decided
        console.rule("7/7 injury log, monthly report, dashboards")
        teams = sorted({str(e["team"]) for e in history.roster()})
        reported = import_and_report(site, teams, run_at.date(), env, state_dir)
    finally:
        for service in services:
            service.stop()
        dead_letters.close()
        webhook.stop()
    by_reason = Counter(backfill.by_reason) + live.by_reason
    processed, dead = accounting.processed, accounting.dead_lettered
    summary["channel_messages"] = list(webhook.bodies)
    summary["devices"] = live.stats
    _print_summary(summary, produced, processed, dead, by_reason, site)
    _print_report(reported)
    verdict(accounting)  # after the summary, which shows the counts; no JSON line on failure
    prompts = summary["prompts"]
    return {
        "frames_produced": produced,
        "frames_processed": processed,
        "dead_lettered": dead,
        "exposure_points": summary["exposure_points"],
        "alerts": sum(summary["alerts"].values()),
        "prompts_sent": prompts.get("sent", 0),
        "prompts_suppressed": sum(v for k, v in prompts.items() if k != "sent"),
        "device_commands_received": sum(live.stats["commands"].values()),
        "channel_messages": len(webhook.bodies),
        "outcomes": summary["outcomes"],
        "influx_url": stack_cfg.influx_url,
        "report_files": [str(p) for p in reported.report_files],
        "elapsed_s": round(time.monotonic() - started, 1),
    }


@dataclass
class LiveRun:
    frames: int
    valid: int
    invalid: int
    by_reason: Counter[str]
    stats: dict[str, Any]


def run_devices(sim: Any, state_dir: Path, mqtt_port: int, linger_s: float) -> LiveRun:
    """The live fleet as MQTT devices: each publishes its frames with its own account, acknowledges
    half of its prompts and takes half of its breaks (its posture then goes neutral)."""
    import asyncio

    from strainwatch.fleet import devices as fleet_devices
    from strainwatch.fleet.behaviour import DevicePolicy
    from strainwatch.fleet.devices import MqttFleet, MqttTarget, device_password
    from strainwatch.stack import mosquitto

    mosquitto.provision_devices(state_dir, {w.device_id: device_password(w.device_id) for w in sim.workers})
    counts: Counter[str] = Counter()
    original = fleet_devices.SimDevice.publish_frame

    def publish_frame(device: Any, item: Any) -> None:  # count what each device sends, by validity
        counts[item.expected_reason.value if item.expected_reason else "valid"] += 1
        original(device, item)

    fleet = MqttFleet(
        sim, MqttTarget(port=mqtt_port), DevicePolicy(ack_share=0.5, take_share=0.5, report_rest=True, seed=3)
    )
    fleet_devices.SimDevice.publish_frame = publish_frame  # type: ignore[method-assign]
    try:
        stats = asyncio.run(fleet.run(paced=True, linger_s=linger_s))
    finally:
        fleet_devices.SimDevice.publish_frame = original  # type: ignore[method-assign]
    valid = counts.pop("valid", 0)
    return LiveRun(valid + sum(counts.values()), valid, sum(counts.values()), counts, stats.as_dict())


def await_prompts(ql: InfluxQL, where: str, services: list[Any], timeout_s: float = 120.0) -> bool:
    """Until the alerting service has written a decision for every alert of the site."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for service in services:
            service.check()
        try:
            alerts = sum(int(s["values"][0][1]) for s in ql.query(influxql.break_alert_counts("kind", where)))
            decided = sum(int(s["values"][0][1]) for s in ql.query(influxql.break_prompt_counts(where)))
        except InfluxQLError:
            alerts = decided = 0
        if decided >= alerts:
            return True
        time.sleep(0.5)
    return False


def _summary(ql: InfluxQL, where: str, site: str) -> dict[str, Any]:
    points = int(ql.scalar(f'SELECT COUNT("wear_s") FROM "windows"."exposure" WHERE {where}'))
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
    for s in ql.query(f'SELECT {cols} FROM "windows"."exposure" WHERE {where} GROUP BY "team"'):
        values = dict(zip(fields, s["values"][0][1:], strict=True))
        teams[s["tags"]["team"]] = {k: float(v or 0) for k, v in values.items()}
    prompts: Counter[str] = Counter()
    for series in ql.query(influxql.break_prompt_counts(where)):
        tags = series.get("tags") or {}
        key = "sent" if tags.get("status") == "sent" else f"suppressed: {tags.get('reason') or '?'}"
        prompts[key] += int(series["values"][0][1])
    outcomes = {
        (s.get("tags") or {}).get("outcome", "?"): int(s["values"][0][1])
        for s in ql.query(influxql.break_ack_counts(where))
    }
    return {
        "site": site,
        "exposure_points": points,
        "alerts": alerts,
        "teams": teams,
        "prompts": dict(prompts),
        "outcomes": outcomes,
    }


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
    prompts = summary["prompts"]
    out.print(
        "break prompts: "
        + (", ".join(f"{k} {v}" for k, v in sorted(prompts.items())) or "none decided")
        + ("" if summary.get("prompts_all_decided", True) else "  [yellow](not every alert decided yet)[/]")
    )
    devices = summary.get("devices") or {}
    commands = devices.get("commands") or {}
    out.print(
        f"simulated devices received {sum(commands.values())} commands "
        f"({', '.join(f'{k} {v}' for k, v in sorted(commands.items())) or 'none'}), "
        f"acknowledged {devices.get('acks_sent', 0)}, took {devices.get('breaks_taken', 0)} breaks"
    )
    messages = summary.get("channel_messages") or []
    out.print(f"channel messages received by the local webhook: {len(messages)}")
    if messages:
        example = messages[-1]
        out.print(
            "  example: " + str(example.get("title", "")) + " | " + str(example.get("message", example))
        )
    outcomes = summary["outcomes"]
    out.print(
        "break outcomes: "
        + (", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "none decided yet")
        + " (a prompt's outcome is decided within 10 minutes of event time)"
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


def _print_report(reported: ReportOutcome) -> None:
    out = Console()
    out.rule("injury log, monthly report, dashboards")
    out.print(f"injury log imported: {reported.incidents_summary}")
    out.print("monthly injury-risk report:")
    for path in reported.report_files:
        if path.suffix in (".html", ".pdf"):
            out.print(f"  {path}")
    csv_dirs = sorted({p.parent for p in reported.report_files if p.suffix == ".csv"})
    for folder in csv_dirs:
        out.print(f"  {folder}/ ({sum(1 for p in reported.report_files if p.parent == folder)} CSV tables)")
    out.print(f"Grafana dashboards (generated): {DASHBOARDS}/")
    out.print(f"Grafana provisioning (data source, alert rules, contact point, policy): {PROVISIONING}/")
    out.print(f"load both into a running Grafana: {PUBLISH_COMMAND}")


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        workers: int = typer.Option(
            24, min=1, max=2_000, help="simulated workers (devices over MQTT); teams and tasks of 6"
        ),
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
        except (DemoIncomplete, ProduceError, DemoStepFailed) as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(1) from None
        typer.echo(orjson.dumps(result).decode())
