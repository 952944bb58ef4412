"""Processor throughput, end to end on Apache Kafka and InfluxDB, against baselines in the same run.

Pre-produces 1-second, 10 Hz frames of 2,000 simulated workers, then times, on the same data:
  0. a bare faust agent with the processor's app settings (bench/faust_bare.py), start to last frame:
     the ceiling faust itself sets;
  1. strainwatch's faust processor (a subprocess, as deployed), start to last window written;
  2. a plain aiokafka `getmany` loop driving the same Runtime, state records and InfluxDB sink;
  3. the same job in Quix Streams (plain dict state, a batching sink).
Then resident memory per tracked worker at 10,000 workers, and a profile of the faust processor.
The last line of output is one JSON object.

    python bench/processor_throughput.py [--workers 2000] [--seconds 60] [--skip-quix]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from strainwatch.config import Settings  # noqa: E402
from strainwatch.exposure import ExposureEngine, load_thresholds  # noqa: E402
from strainwatch.native import engine_kind  # noqa: E402
from strainwatch.processor.record import WorkerRecord  # noqa: E402
from strainwatch.processor.runtime import Runtime, RuntimeConfig  # noqa: E402
from strainwatch.processor.sink import InfluxSink  # noqa: E402
from strainwatch.stack import components  # noqa: E402
from strainwatch.stack.manager import create_database  # noqa: E402
from strainwatch.stack.procs import free_port, port_free, stop  # noqa: E402
from strainwatch.stack.topics import ensure_topics  # noqa: E402
from strainwatch.storage.influxql import InfluxQL  # noqa: E402
from strainwatch.storage.measurements import EXPOSURE, WINDOWS_RP  # noqa: E402
from strainwatch.topics import POSTURE_EVENTS  # noqa: E402

PARTITIONS = 4
CHANGELOG = "bench.worker-state.changelog"
OUTPUT = "bench.outputs"
SAMPLES_PER_FRAME = 10


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def start_infra(state: Path) -> tuple[str, str, list[Any]]:
    while True:
        influxd_port = free_port()
        if port_free(influxd_port + 1):
            break
    adapter_port, kafka_port = free_port(), free_port()
    procs = [components.start_influxd(state, influxd_port, influxd_port + 1)]
    procs.append(components.start_adapter(state, adapter_port, influxd_port))
    procs.append(components.start_kafka(state, kafka_port, free_port()))
    bootstrap = f"127.0.0.1:{kafka_port}"
    ensure_topics(bootstrap, PARTITIONS)
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics(
        [
            NewTopic(CHANGELOG, PARTITIONS, 1, topic_configs={"cleanup.policy": "compact"}),
            NewTopic(OUTPUT, PARTITIONS, 1),
        ]
    )
    admin.close()
    return bootstrap, f"http://127.0.0.1:{adapter_port}", procs


def produce_workload(bootstrap: str, workers: int, seconds: int) -> tuple[int, int]:
    from kafka import KafkaProducer

    from strainwatch.fleet.simulator import FleetSimulator, SimConfig

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    # shifts=False: every worker wears the device all the time, so all of them send every second
    cfg = SimConfig(
        workers=workers, rate_hz=10.0, frame_s=1.0, duration_s=seconds, start=start, seed=11, shifts=False
    )
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=50, batch_size=1_048_576)
    frames = samples = 0
    for item in FleetSimulator(cfg).frames():
        producer.send(POSTURE_EVENTS.name, key=item.key, value=item.value)
        frames += 1
        samples += item.n_samples
    producer.flush(120)
    producer.close()
    return frames, samples


def stored(ql: InfluxQL) -> int:
    try:
        return int(ql.scalar('SELECT SUM("frames") FROM "windows"."exposure"'))
    except Exception:
        return 0


def wait_stored(ql: InfluxQL, frames: int, timeout_s: float, alive: Any = None) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stored(ql) >= frames:
            return time.monotonic()
        if alive is not None and not alive():
            raise RuntimeError("the process under test exited early")
        time.sleep(0.1)
    raise TimeoutError(f"{frames} frames not stored within {timeout_s} s (have {stored(ql)})")


def env_for(bootstrap: str, influx_url: str, database: str, group: str) -> dict[str, str]:
    return {
        **os.environ,
        "STRAINWATCH_KAFKA_BOOTSTRAP": bootstrap,
        "STRAINWATCH_INFLUX_URL": influx_url,
        "STRAINWATCH_INFLUX_BUCKET": database,
        "STRAINWATCH_POSTURE_PARTITIONS": str(PARTITIONS),
        "STRAINWATCH_PROCESSOR_GROUP": group,
        "STRAINWATCH_LOG_FORMAT": "json",
        "STRAINWATCH_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
    }


def run_faust(
    bootstrap: str, influx_url: str, frames: int, state: Path, profile: Path | None
) -> dict[str, Any]:
    database = f"bench_faust_{uuid.uuid4().hex[:6]}"
    create_database(influx_url, database)
    ql = InfluxQL(influx_url, "t", database)
    argv = [sys.executable]
    if profile is not None:
        argv += ["-m", "cProfile", "-o", str(profile)]
    argv += ["-m", "strainwatch.cli", "processor"]
    log_path = state / "faust-processor.log"
    started = time.monotonic()
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            argv,
            env=env_for(bootstrap, influx_url, database, f"bench-faust-{uuid.uuid4().hex[:6]}"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    first = None
    deadline = time.monotonic() + 60
    while first is None and time.monotonic() < deadline:  # when the first points land: start-up is over
        if stored(ql):
            first = time.monotonic()
        time.sleep(0.05)
    try:
        done = wait_stored(ql, frames, 900, alive=lambda: proc.poll() is None)
    except (TimeoutError, RuntimeError):
        # the processor's own account of what it was doing, before the state directory goes
        tail = log_path.read_text(errors="replace").splitlines()[-60:]
        print("\n".join(["[bench] processor log tail:", *tail]), file=sys.stderr)
        proc.kill()
        raise
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    return {
        "elapsed_s": done - started,
        "steady_s": done - (first or started),
        "stored_frames": stored(ql),
        "samples_sum": ql.scalar('SELECT SUM("samples_trunk_flexion") FROM "windows"."exposure"'),
    }


def run_faust_bare(
    bootstrap: str, influx_url: str, frames: int, state: Path, runtime: bool = False
) -> dict[str, Any]:
    """The ceiling faust itself sets: bench/faust_bare.py, a bare agent with the processor's app
    settings, timed like the processor from process start to its last frame (with `runtime`: the
    same agent driving the processor's Runtime, for the per-frame breakdown)."""
    done_path = state / f"faust-bare-{uuid.uuid4().hex[:6]}.json"
    env = env_for(bootstrap, influx_url, "unused", f"bench-faust-bare-{uuid.uuid4().hex[:6]}")
    env.update(BENCH_FRAMES=str(frames), BENCH_DONE=str(done_path), BENCH_RUNTIME="1" if runtime else "0")
    log_path = state / "faust-bare.log"
    started = time.time()
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "faust_bare.py")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 900
        while not done_path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace").splitlines()[-60:]
                print("\n".join(["[bench] faust bare log tail:", *tail]), file=sys.stderr)
                raise RuntimeError("the bare faust agent exited or stalled before its last frame")
            time.sleep(0.05)
        times = orjson.loads(done_path.read_bytes())
    finally:
        proc.kill()
        proc.wait(30)
    return {"elapsed_s": times["done_s"] - started, "steady_s": times["done_s"] - times["first_s"]}


async def aiokafka_loop(bootstrap: str, influx_url: str, database: str, frames: int) -> None:
    """The baseline: getmany, the same Runtime, records to a changelog, the same sink, commit."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    settings = Settings()
    engine = ExposureEngine(load_thresholds("default"), window_s=settings.window_s)
    table: dict[str, WorkerRecord] = {}
    runtime = Runtime(engine, RuntimeConfig(), load=table.get)
    sink = InfluxSink(influx_url, "t", "strainwatch", database)
    consumer = AIOKafkaConsumer(
        POSTURE_EVENTS.name,
        bootstrap_servers=bootstrap,
        group_id=f"bench-aiokafka-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1_048_576)
    await consumer.start()
    await producer.start()
    seen = 0
    positions: dict[TopicPartition, int] = {}
    last_checkpoint = time.monotonic()

    async def checkpoint() -> None:
        dirty, lines = runtime.snapshot()
        for worker, record in dirty.items():
            table[worker] = record
            # the faust table's cost: one changelog record per dirty worker per checkpoint
            await producer.send(CHANGELOG, key=worker.encode(), value=record.to_bytes())
        for _role, messages in vars(runtime.take_outputs()).items():
            for key, value in messages:
                await producer.send(OUTPUT, key=key, value=value)
        sink.add(lines)
        await sink.flush()
        await producer.flush()
        if positions:
            await consumer.commit({tp: off + 1 for tp, off in positions.items()})

    try:
        while seen < frames:
            batches = await consumer.getmany(timeout_ms=500, max_records=2_000)
            for tp, records in batches.items():
                for record in records:
                    runtime.on_message(record.key, record.value, record.partition, record.offset)
                positions[tp] = records[-1].offset
                seen += len(records)
            if time.monotonic() - last_checkpoint > 5.0:
                await checkpoint()
                last_checkpoint = time.monotonic()
        await checkpoint()
    finally:
        await consumer.stop()
        await producer.stop()
        await sink.close()


def run_aiokafka(bootstrap: str, influx_url: str, frames: int) -> dict[str, Any]:
    database = f"bench_aiokafka_{uuid.uuid4().hex[:6]}"
    create_database(influx_url, database)
    ql = InfluxQL(influx_url, "t", database)
    started = time.monotonic()
    asyncio.run(aiokafka_loop(bootstrap, influx_url, database, frames))
    return {"elapsed_s": time.monotonic() - started, "stored_frames": stored(ql)}


def run_quix(bootstrap: str, influx_url: str, frames: int, state: Path) -> dict[str, Any]:
    """The same job in Quix Streams: plain dict state, a batching sink flushed at its checkpoints."""
    from influxdb_client import InfluxDBClient, WritePrecision
    from influxdb_client.client.write_api import SYNCHRONOUS
    from quixstreams import Application, message_context
    from quixstreams.sinks.base import BaseSink

    database = f"bench_quix_{uuid.uuid4().hex[:6]}"
    create_database(influx_url, database)
    ql = InfluxQL(influx_url, "t", database)
    engine = ExposureEngine(load_thresholds("default"), window_s=10)
    table: dict[str, WorkerRecord] = {}
    runtime = Runtime(engine, RuntimeConfig(), load=table.get)
    client = InfluxDBClient(url=influx_url, token="t", org="strainwatch")
    writer = client.write_api(write_options=SYNCHRONOUS)

    class LineSink(BaseSink):
        def add(
            self, value: Any, key: Any, timestamp: int, headers: Any, topic: str, partition: int, offset: int
        ) -> None:
            pass  # the Runtime buffers; the checkpoint snapshot takes what is due

        def flush(self) -> None:
            dirty, lines = runtime.snapshot()
            table.update(dirty)
            runtime.take_outputs()
            # the 10-second windows in their own retention policy, as the processor's sink does
            windows = [line for line in lines if line.startswith(f"{EXPOSURE},")]
            others = [line for line in lines if not line.startswith(f"{EXPOSURE},")]
            for bucket, group in ((f"{database}/{WINDOWS_RP}", windows), (database, others)):
                for i in range(0, len(group), 5_000):
                    writer.write(
                        bucket=bucket,
                        org="strainwatch",
                        record=group[i : i + 5_000],
                        write_precision=WritePrecision.S,
                    )

    app = Application(
        broker_address=bootstrap,
        consumer_group=f"bench-quix-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        commit_interval=5.0,
        use_changelog_topics=False,
        consumer_extra_config={"fetch.max.bytes": 8 * 1024 * 1024},
        state_dir=str(state / "quix-state"),
        loglevel="WARNING",
    )
    topic = app.topic(POSTURE_EVENTS.name, value_deserializer="bytes", key_deserializer="bytes")
    seen = [0]

    def on_value(value: bytes, key: bytes, _timestamp: int, _headers: Any) -> None:
        ctx = message_context()
        runtime.on_message(key, value, ctx.partition, ctx.offset)
        seen[0] += 1
        if seen[0] >= frames:
            app.stop()

    sdf = app.dataframe(topic)
    sdf = sdf.update(on_value, metadata=True)
    sdf.sink(LineSink())
    started = time.monotonic()
    app.run()
    elapsed = time.monotonic() - started
    client.close()
    return {"elapsed_s": elapsed, "stored_frames": stored(ql)}


CHECKPOINT_FRAMES = 20_000  # the processor's default max_pending_frames


def checkpoint(runtime: Runtime, table: dict[str, WorkerRecord]) -> None:
    """What the processor keeps after a checkpoint: records in the table; points and outputs go."""
    dirty, lines = runtime.snapshot()
    table.update(dirty)  # the table holds the same record objects
    runtime.take_outputs()
    del dirty, lines


def memory_per_worker(workers: int) -> dict[str, float]:
    """Resident bytes per tracked worker after a 10-second window of 1-second frames from each
    (duplicate-id memory full, one window closed), checkpointing as the processor does.

    RSS right after the run also holds the allocator's high-water mark of *transient* buffers
    (points and window messages between checkpoints: it grows with frames per checkpoint, not
    with workers), which a running processor reuses. So: `bytes_per_worker` is RSS growth after
    malloc_trim(0) returns freed pages; `untrimmed` is without it; `allocated` is what Python
    objects still hold (tracemalloc, a second pass on the same frames). `bytes_per_worker` is the
    larger of resident and allocated.
    """
    import ctypes
    import tracemalloc

    import psutil

    from strainwatch.fleet.simulator import FleetSimulator, SimConfig

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)

    def workload(n: int) -> list[tuple[bytes, bytes]]:
        cfg = SimConfig(
            workers=n, rate_hz=10.0, frame_s=1.0, duration_s=10.0, start=start, seed=3, shifts=False
        )
        return [(f.key, f.value) for f in FleetSimulator(cfg).frames() if f.expected_reason is None]

    def run(messages: list[tuple[bytes, bytes]]) -> tuple[Runtime, dict[str, WorkerRecord]]:
        engine = ExposureEngine(load_thresholds("default"), window_s=10)
        table: dict[str, WorkerRecord] = {}
        runtime = Runtime(engine, RuntimeConfig(), load=table.get)
        for offset, (key, value) in enumerate(messages):
            runtime.on_message(key, value, 0, offset)
            if offset % CHECKPOINT_FRAMES == CHECKPOINT_FRAMES - 1:
                checkpoint(runtime, table)
        checkpoint(runtime, table)
        return runtime, table

    libc = ctypes.CDLL("libc.so.6")
    messages = workload(workers)
    gc.collect()
    libc.malloc_trim(0)
    process = psutil.Process()
    before = process.memory_info().rss
    runtime, _table = run(messages)
    gc.collect()
    untrimmed = process.memory_info().rss
    libc.malloc_trim(0)
    after = process.memory_info().rss
    tracked = len(runtime.records)

    del runtime, _table
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    traced_runtime, _traced_table = run(messages)
    gc.collect()
    allocated = (tracemalloc.get_traced_memory()[0] - base) / max(len(traced_runtime.records), 1)
    tracemalloc.stop()
    resident = (after - before) / max(tracked, 1)
    return {
        "workers_tracked": tracked,
        # conservative: trimmed RSS can read low where the run reused pages freed before it
        "bytes_per_worker": max(resident, allocated),
        "resident_bytes_per_worker": resident,
        "bytes_per_worker_untrimmed": (untrimmed - before) / max(tracked, 1),
        "allocated_bytes_per_worker": allocated,
    }


def memory_in_fresh_process(workers: int) -> dict[str, float]:
    """memory_per_worker in a new interpreter: RSS deltas in this one are blurred by the memory the
    baselines freed (the allocator reuses it, so growth would read low)."""
    out = subprocess.run(
        [sys.executable, __file__, "--memory-only", str(workers)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    result: dict[str, float] = orjson.loads(out.stdout.strip().splitlines()[-1])
    return result


def top_profile(path: Path, n: int = 25) -> list[dict[str, Any]]:
    stats = pstats.Stats(str(path))
    rows = []
    for (file, line, func), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(file).name}:{line}:{func}",
                "calls": calls,
                "tottime_s": round(tottime, 3),
                "cumtime_s": round(cumtime, 3),
            }
        )
    rows.sort(key=lambda r: r["tottime_s"], reverse=True)
    return rows[:n]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2_000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--memory-workers", type=int, default=10_000)
    parser.add_argument("--skip-quix", action="store_true")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--profile-out", type=Path, help="keep the processor's cProfile output here")
    parser.add_argument("--memory-only", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_only:
        print(orjson.dumps(memory_per_worker(args.memory_only)).decode())
        return

    with tempfile.TemporaryDirectory(prefix="strainwatch-bench-") as tmp:
        state = Path(tmp)
        bootstrap, influx_url, procs = start_infra(state)
        try:
            log(f"producing {args.workers} workers x {args.seconds} s of 1-second 10 Hz frames")
            frames, samples = produce_workload(bootstrap, args.workers, args.seconds)
            log(f"{frames} frames, {samples} samples on the topic")
            bare_result = run_faust_bare(bootstrap, influx_url, frames, state)
            log(f"faust bare: {bare_result}")
            runtime_result = run_faust_bare(bootstrap, influx_url, frames, state, runtime=True)
            log(f"faust + runtime: {runtime_result}")
            faust_result = run_faust(bootstrap, influx_url, frames, state, None)
            log(f"faust: {faust_result}")
            # the profile comes from a second run on the same data: cProfile slows the timed run
            profile = None if args.no_profile else state / "faust.prof"
            if profile is not None:
                log(f"faust under cProfile: {run_faust(bootstrap, influx_url, frames, state, profile)}")
            aiokafka_result = run_aiokafka(bootstrap, influx_url, frames)
            log(f"aiokafka: {aiokafka_result}")
            quix_result = None if args.skip_quix else run_quix(bootstrap, influx_url, frames, state)
            log(f"quix: {quix_result}")
            memory = memory_in_fresh_process(args.memory_workers)
            log(f"memory: {memory}")
            profile_rows = top_profile(profile) if profile is not None and profile.exists() else []
            if args.profile_out and profile is not None and profile.exists():
                args.profile_out.write_bytes(profile.read_bytes())
        finally:
            for proc in reversed(procs):
                stop(proc)

    faust_sps = samples / faust_result["elapsed_s"]
    aiokafka_sps = samples / aiokafka_result["elapsed_s"]
    bare_sps = samples / bare_result["elapsed_s"]
    quix_sps = samples / quix_result["elapsed_s"] if quix_result else None
    for row in profile_rows:
        log(f"profile {row}")
    result = {
        "engine": engine_kind(),  # the exposure engine the processor ran: compiled (make native) or python
        "frame_samples": SAMPLES_PER_FRAME,
        "workers": args.workers,
        "frames": frames,
        "samples": samples,
        "strainwatch_samples_per_s": round(faust_sps),
        "strainwatch_steady_samples_per_s": round(samples / faust_result["steady_s"]),
        "faust_bare_samples_per_s": round(bare_sps),
        "faust_bare_steady_samples_per_s": round(samples / bare_result["steady_s"]),
        "ratio_strainwatch_to_faust_bare": round(faust_sps / bare_sps, 3),
        "aiokafka_loop_samples_per_s": round(aiokafka_sps),
        # per frame, each row of the table: the bare faust agent; the Runtime on faust's
        # per-event delivery (the processor's path before it read frames itself); the processor
        # (all three from process start to the last frame); the aiokafka loop (from its first
        # fetch: it runs in this process)
        "us_per_frame": {
            "faust_bare": round(bare_result["elapsed_s"] / frames * 1e6, 1),
            "faust_with_runtime": round(runtime_result["elapsed_s"] / frames * 1e6, 1),
            "strainwatch": round(faust_result["elapsed_s"] / frames * 1e6, 1),
            "aiokafka_loop": round(aiokafka_result["elapsed_s"] / frames * 1e6, 1),
        },
        "quix_samples_per_s": round(quix_sps) if quix_sps else None,
        "ratio_strainwatch_to_aiokafka": round(faust_sps / aiokafka_sps, 3),
        "ratio_strainwatch_to_quix": round(faust_sps / quix_sps, 3) if quix_sps else None,
        "bytes_per_worker": round(memory["bytes_per_worker"]),
        "resident_bytes_per_worker": round(memory["resident_bytes_per_worker"]),
        "bytes_per_worker_untrimmed": round(memory["bytes_per_worker_untrimmed"]),
        "allocated_bytes_per_worker": round(memory["allocated_bytes_per_worker"]),
        "memory_workers": memory["workers_tracked"],
        "exact": faust_result["stored_frames"] == frames
        and faust_result["samples_sum"] == samples
        and aiokafka_result["stored_frames"] == frames
        and (quix_result is None or quix_result["stored_frames"] == frames),
        "profile_top": profile_rows[:8],
    }
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
