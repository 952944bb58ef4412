"""Break-prompt latency, end to end: a device publishes the frame that crosses the break rule, and
the same device receives its command over MQTT.

Everything runs on this machine: Apache Kafka 4.4, InfluxDB, Mosquitto (the local stack in a temp
directory), `strainwatch processor`, `strainwatch gateway run` and `strainwatch alerts run` as
subprocesses, and simulated devices over MQTT in this process (strainwatch.fleet.devices). Each
load is a number of devices sending 1-second frames at 10 Hz (10 samples/s each); every device is
both background and probe: each conditioning-break command it receives is one measurement.

So that a load yields hundreds of prompts within minutes, the processor runs a bench profile: the
default thresholds with a break dose of 30 (30 s in a conditional zone) and a 45-s cooldown. The
pipeline's work per prompt is the same as with the default profile; only how often prompts come
changes.

Latency of a prompt = the device's receipt time of the command - the time it published the frame
holding the alert's sample. Where the time goes, from the Kafka record timestamps (CreateTime,
set by each producer): device -> gateway -> posture.events.v1; -> processor -> alerts.break.v1;
-> alerting -> device.commands.v1; -> gateway -> MQTT -> device.

    python bench/alert_latency.py [--loads 2000,5000,10000] [--prompts 500]

The last line of output is one JSON object: p50_ms, p95_ms, p99_ms, max_ms, prompts and
background_samples_per_s of the largest load, `by_load` with the same keys for every load, and
`stages_ms` (median per stage) per load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
FRAME_S, RATE_HZ = 1.0, 10.0


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def configure_environment(state: Path) -> dict[str, str]:
    """Free ports and a temp state dir for the stack, set before strainwatch reads its settings."""
    from strainwatch.stack.procs import free_port, port_free

    while True:
        influxd = free_port()
        if port_free(influxd + 1):
            break
    kafka, influx = free_port(), free_port()
    env = {
        "STRAINWATCH_STATE_DIR": str(state),
        "STRAINWATCH_BROKER": "kafka",
        "STRAINWATCH_KAFKA_PORT": str(kafka),
        "STRAINWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka}",
        "STRAINWATCH_KAFKA_CONTROLLER_PORT": str(free_port()),
        "STRAINWATCH_INFLUXD_PORT": str(influxd),
        "STRAINWATCH_INFLUX_PORT": str(influx),
        "STRAINWATCH_INFLUX_URL": f"http://127.0.0.1:{influx}",
        "STRAINWATCH_MQTT_PORT": str(free_port()),
        "STRAINWATCH_LOG_FORMAT": "json",
        "STRAINWATCH_LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    return env


def bench_profile(state: Path) -> Path:
    from importlib import resources

    profile = json.loads(
        resources.files("strainwatch.exposure").joinpath("profiles/default.json").read_text()
    )
    profile.update(
        profile="bench-latency",
        description="default thresholds, frequent conditioning breaks (bench/alert_latency.py)",
        break_dose=30,
        break_cooldown_s=45,
        max_breaks_per_shift=100_000,
    )
    path = state / "bench-latency.json"
    path.write_text(json.dumps(profile))
    return path


@dataclass
class Service:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(35)
            except subprocess.TimeoutExpired:
                self.popen.kill()


def start_service(name: str, args: list[str], env: dict[str, str], state: Path) -> Service:
    log_path = state / f"{name}.log"
    with open(log_path, "ab") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "strainwatch.cli", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Service(name, popen, log_path)


@dataclass
class LoadRun:
    load: int  # background samples/s
    published: dict[tuple[str, float], tuple[float, bytes]] = field(default_factory=dict)
    receipts: list[Any] = field(default_factory=list)


async def run_load(load: int, prompts: int, timeout_s: float, mqtt_port: int, seed: int) -> LoadRun:
    """Devices enough for `load` samples/s, until `prompts` break commands arrived (or timeout)."""
    from strainwatch.fleet.behaviour import DevicePolicy
    from strainwatch.fleet.devices import MqttFleet, MqttTarget
    from strainwatch.fleet.simulator import FleetSimulator, SimConfig

    devices = int(load / (RATE_HZ * FRAME_S) * FRAME_S)
    start = datetime.fromtimestamp(time.time() // 1 + 1, UTC)
    sim = FleetSimulator(
        SimConfig(
            workers=devices,
            rate_hz=RATE_HZ,
            frame_s=FRAME_S,
            duration_s=timeout_s,
            start=start,
            seed=seed,
            site_id="bench",
            shifts=False,
        )
    )
    run = LoadRun(load)
    stop = asyncio.Event()

    def on_receipt(receipt: Any) -> None:
        if receipt.command == "break_prompt" and not receipt.duplicate:
            run.receipts.append(receipt)
            if len(run.receipts) >= prompts:
                stop.set()

    # acks and breaks off: the devices keep their simulated postures, so prompts keep coming
    fleet = MqttFleet(
        sim, MqttTarget(port=mqtt_port), DevicePolicy(ack_share=0.0, take_share=0.0), on_receipt=on_receipt
    )
    from strainwatch.fleet import devices as fleet_devices

    original = fleet_devices.SimDevice.publish_frame

    def publish_frame(device: Any, item: Any) -> None:
        run.published[(item.worker_id, item.start_s)] = (time.time(), item.value)
        original(device, item)

    fleet_devices.SimDevice.publish_frame = publish_frame  # type: ignore[method-assign]
    try:
        stats = await fleet.run(paced=True, stop=stop, linger_s=0.0)
    finally:
        fleet_devices.SimDevice.publish_frame = original  # type: ignore[method-assign]
    log(f"load {load}: {devices} devices, {stats.as_dict()}")
    return run


def read_topic(bootstrap: str, topic: str) -> list[Any]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=3_000)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list[Any] = []
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            for batch in consumer.poll(timeout_ms=1_000, max_records=20_000).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def analyse(runs: list[LoadRun], bootstrap: str) -> list[dict[str, Any]]:
    """Latency per prompt, and per stage from the Kafka record timestamps."""
    alerts: dict[str, tuple[str, float, float]] = {}  # alert_id -> worker, sample ts, record ts
    for record in read_topic(bootstrap, "alerts.break.v1"):
        doc = orjson.loads(record.value)
        sample_ts = datetime.fromisoformat(doc["ts"].replace("Z", "+00:00")).timestamp()
        alerts[doc["alert_id"]] = (doc["worker_id"], sample_ts, record.timestamp / 1000)
    commands = {
        orjson.loads(r.value)["alert_id"]: r.timestamp / 1000
        for r in read_topic(bootstrap, "device.commands.v1")
    }
    wanted: dict[str, str] = {}  # event_id of a crossing frame -> alert id
    crossing: dict[str, tuple[LoadRun, float]] = {}  # alert id -> run, publish time
    for run in runs:
        for receipt in run.receipts:
            worker, sample_ts, _ = alerts.get(receipt.alert_id, (None, 0.0, 0.0))
            if worker is None:
                continue
            frame_start = float(int(sample_ts // FRAME_S * FRAME_S))  # frames start on whole seconds
            key = (worker, frame_start)
            published = run.published.get(key)
            if published is None:  # the sample sat exactly on a frame boundary
                published = run.published.get((worker, frame_start - FRAME_S))
            if published is None:
                continue
            crossing[receipt.alert_id] = (run, published[0])
            wanted[orjson.loads(published[1])["event_id"]] = receipt.alert_id
    produced: dict[str, float] = {}  # alert id -> the gateway's record time of its crossing frame
    for record in read_topic(bootstrap, "posture.events.v1"):
        if b'"event_id"' not in record.value:
            continue
        event_id = orjson.loads(record.value).get("event_id")
        if event_id in wanted:
            produced[wanted[event_id]] = record.timestamp / 1000
    results = []
    for run in runs:
        latencies: list[float] = []
        stages: dict[str, list[float]] = {
            "device_to_kafka": [],
            "processor": [],
            "alerting": [],
            "kafka_to_device": [],
        }
        for receipt in run.receipts:
            if receipt.alert_id not in crossing:
                continue
            _, published_at = crossing[receipt.alert_id]
            latencies.append((receipt.received_at - published_at) * 1000)
            alert_at = alerts[receipt.alert_id][2]
            command_at = commands.get(receipt.alert_id)
            gateway_at = produced.get(receipt.alert_id)
            if command_at is not None and gateway_at is not None:
                stages["device_to_kafka"].append((gateway_at - published_at) * 1000)
                stages["processor"].append((alert_at - gateway_at) * 1000)
                stages["alerting"].append((command_at - alert_at) * 1000)
                stages["kafka_to_device"].append((receipt.received_at - command_at) * 1000)
        if not latencies:
            results.append({"background_samples_per_s": run.load, "prompts": 0})
            continue
        results.append(
            {
                "background_samples_per_s": run.load,
                "prompts": len(latencies),
                "p50_ms": round(percentile(latencies, 50), 1),
                "p95_ms": round(percentile(latencies, 95), 1),
                "p99_ms": round(percentile(latencies, 99), 1),
                "max_ms": round(max(latencies), 1),
                "stages_ms": {k: round(statistics.median(v), 1) for k, v in stages.items() if v},
                "stages_p99_ms": {k: round(percentile(v, 99), 1) for k, v in stages.items() if v},
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--loads", default="2000,5000,10000", help="background samples/s, comma-separated")
    parser.add_argument("--prompts", type=int, default=500, help="break prompts to measure per load")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="longest a load may run")
    parser.add_argument(
        "--keep-logs", type=Path, default=None, help="copy the services' logs here at the end"
    )
    args = parser.parse_args()
    try:
        loads = sorted(int(x) for x in args.loads.split(","))
        if not loads or min(loads) < 10 or args.prompts < 1:
            raise ValueError
    except ValueError:
        parser.error(
            "--loads takes positive samples/s values of at least 10 (e.g. 2000,5000) and --prompts >= 1"
        )

    with tempfile.TemporaryDirectory(prefix="strainwatch-latency-") as tmp:
        state = Path(tmp)
        env = configure_environment(state)
        from strainwatch.config import get_settings
        from strainwatch.fleet.devices import device_password
        from strainwatch.fleet.producer import produce_roster
        from strainwatch.fleet.simulator import FleetSimulator, SimConfig
        from strainwatch.stack import mosquitto
        from strainwatch.stack.manager import Stack, StackConfig

        settings = get_settings()
        stack = Stack(StackConfig.from_settings("kafka"))
        log("stack up (Apache Kafka, InfluxDB, Mosquitto)")
        stack.up()
        services: list[Service] = []
        try:
            largest = max(loads) // int(RATE_HZ * FRAME_S)
            roster_sim = FleetSimulator(SimConfig(workers=largest, site_id="bench", shifts=False, seed=7))
            produce_roster(roster_sim.roster(), settings.kafka_bootstrap, "roster.v1")
            mosquitto.provision_devices(
                state, {w.device_id: device_password(w.device_id) for w in roster_sim.workers}
            )
            service_env = {
                **env,
                "STRAINWATCH_THRESHOLDS": str(bench_profile(state)),
                "STRAINWATCH_PROCESSOR_GROUP": f"bench-{uuid.uuid4().hex[:6]}",
                "STRAINWATCH_CHECKPOINT_INTERVAL_S": "5",
            }
            services = [
                start_service("processor", ["processor"], service_env, state),
                start_service("gateway", ["gateway", "run"], service_env, state),
                start_service("alerts", ["alerts", "run"], service_env, state),
            ]
            runs = []
            for n, load in enumerate(loads):
                if n:
                    # The next load's devices are the previous ones plus more. A worker whose frames
                    # resume within the allowed lateness (30 s) has a gap that late frames could
                    # still fill, so the processor holds its frames until the lateness has passed:
                    # prompts of those workers came 26-30 s late in a first run. Start each load
                    # after that, so every load measures the steady pipeline.
                    time.sleep(settings.allowed_lateness_s + 2)
                log(f"load {load} samples/s: until {args.prompts} break prompts reach their devices")
                for service in services:
                    if service.popen.poll() is not None:
                        raise RuntimeError(f"{service.name} exited; see {service.log_path}")
                # a seed per load: frames (and their event ids) differ from one load to the next, so a
                # crossing frame's record on posture.events.v1 is found by its event id alone
                runs.append(
                    asyncio.run(run_load(load, args.prompts, args.timeout_s, settings.mqtt_port, seed=7 + n))
                )
            results = analyse(runs, settings.kafka_bootstrap)
        finally:
            for service in services:
                service.stop()
            stack.down()
            if args.keep_logs is not None:
                import shutil

                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for path in [*state.glob("*.log"), *(state / "logs").glob("*.log")]:
                    shutil.copy(path, args.keep_logs / path.name)
    top = results[-1]
    print(json.dumps({**{k: v for k, v in top.items() if not k.startswith("stages")}, "by_load": results}))


if __name__ == "__main__":
    main()
