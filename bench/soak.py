"""Soak: the faust processor under a live fleet for minutes, killed and its broker restarted midway.

2,000 simulated workers at 10 Hz send one 1-second frame (10 samples) each per second, paced to
the wall clock (2,000 frames/s), to Apache Kafka; `strainwatch processor` (a subprocess, as
deployed) scores them into InfluxDB. The frames are generated before the live phase (the fleet
simulator, seeded, into a file) so that sending them keeps the pace on a busy machine. At a third
of the run the processor is killed with SIGKILL and started again at once; at half the run Apache
Kafka is stopped (SIGTERM) and started again on the same data directory and ports. After the last
frame the run waits until every frame is stored.

The reference: the same frames (the file), in the order each worker's partition holds them, go
offline through the processor's Runtime with the same engine in this process (no broker, no
faust), and its points are written to a second database. `exact` is true when the stored frame
count equals the produced count and every `exposure`, `exposure_hourly` and `break_alert` point
equals the reference's.

Memory (VmRSS of the processor process, from /proc):
- rss_start_bytes: the first processor after the warm-up (`--warmup-s`, default 60 s after the
  first frame was produced: every worker's record and open window exist, the first windows and
  checkpoints are done);
- rss_restart_bytes: the restarted processor, once it has caught up after the kill (its committed
  offsets within 2 checkpoints' worth of frames of the log end), plus the same warm-up;
- rss_end_bytes: the restarted processor at the end, after every frame is stored, before SIGTERM.
rss_growth_pct compares rss_end with rss_start; rss_growth_restarted_pct rss_end with rss_restart
(the same process). max_lag_frames: the largest sum over partitions of log end minus the group's
committed offset, sampled every 2 s (no sample while the broker is down).

    python bench/soak.py [--minutes 10] [--workers 2000] [--rate-hz 10] [--keep]

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from strainwatch.config import Settings  # noqa: E402
from strainwatch.exposure import ExposureEngine, load_thresholds  # noqa: E402
from strainwatch.fleet.simulator import FleetSimulator, SimConfig  # noqa: E402
from strainwatch.processor.runtime import Runtime, RuntimeConfig  # noqa: E402
from strainwatch.processor.sink import InfluxSink  # noqa: E402
from strainwatch.stack import components  # noqa: E402
from strainwatch.stack.manager import create_database  # noqa: E402
from strainwatch.stack.procs import Proc, free_port, port_free, stop  # noqa: E402
from strainwatch.stack.topics import ensure_topics  # noqa: E402
from strainwatch.storage.influxql import InfluxQL  # noqa: E402
from strainwatch.storage.measurements import source  # noqa: E402
from strainwatch.topics import POSTURE_EVENTS  # noqa: E402

PARTITIONS = 4
CHECKPOINT_S = 5.0  # the processor's default checkpoint interval
MEASUREMENTS = ("exposure", "exposure_hourly", "break_alert")


def log(msg: str) -> None:
    print(f"[soak {datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Infra:
    """influxd, the InfluxDB adapter and Apache Kafka from the stack's components, on free ports."""

    def __init__(self, state: Path) -> None:
        self.state = state
        while True:
            self.influxd_port = free_port()
            if port_free(self.influxd_port + 1):
                break
        self.adapter_port, self.kafka_port, self.controller_port = free_port(), free_port(), free_port()
        self.procs: list[Proc] = []
        self.kafka: Proc | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def influx_url(self) -> str:
        return f"http://127.0.0.1:{self.adapter_port}"

    def start(self) -> None:
        self.procs.append(components.start_influxd(self.state, self.influxd_port, self.influxd_port + 1))
        self.procs.append(components.start_adapter(self.state, self.adapter_port, self.influxd_port))
        self.start_kafka()
        ensure_topics(self.bootstrap, PARTITIONS)

    def start_kafka(self) -> None:
        # the same state directory: the same data dir (already formatted) and server.properties
        self.kafka = components.start_kafka(self.state, self.kafka_port, self.controller_port)

    def stop_kafka(self) -> None:
        assert self.kafka is not None
        stop(self.kafka, timeout_s=60)
        self.kafka = None

    def stop(self) -> None:
        if self.kafka is not None:
            stop(self.kafka, timeout_s=60)
        for proc in reversed(self.procs):
            stop(proc)


class Processor:
    """`strainwatch processor` as deployed, restarted with the same settings (group, state dir)."""

    def __init__(self, infra: Infra, database: str, state: Path) -> None:
        self.env = {
            **os.environ,
            "STRAINWATCH_KAFKA_BOOTSTRAP": infra.bootstrap,
            "STRAINWATCH_INFLUX_URL": infra.influx_url,
            "STRAINWATCH_INFLUX_BUCKET": database,
            "STRAINWATCH_POSTURE_PARTITIONS": str(PARTITIONS),
            "STRAINWATCH_PROCESSOR_GROUP": f"soak-{uuid.uuid4().hex[:6]}",
            "STRAINWATCH_CHECKPOINT_INTERVAL_S": str(CHECKPOINT_S),
            # a killed member's partitions go to its successor after this: keep the gap short
            "STRAINWATCH_BROKER_SESSION_TIMEOUT_S": "10",
            "STRAINWATCH_STATE_DIR": str(state / "processor"),
            "STRAINWATCH_LOG_FORMAT": "json",
            "STRAINWATCH_LOG_LEVEL": "WARNING",
        }
        self.group = self.env["STRAINWATCH_PROCESSOR_GROUP"]
        self.log_path = state / "processor.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "strainwatch.cli", "processor"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(30)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class Lag:
    """Sum over posture partitions of log end minus the group's committed offset."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self.bootstrap, self.group = bootstrap, group
        self._admin: Any = None
        self._consumer: Any = None

    def sample(self) -> int | None:
        from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

        try:
            if self._admin is None:
                self._admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5_000)
                self._consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, request_timeout_ms=5_000)
            tps = [TopicPartition(POSTURE_EVENTS.name, p) for p in range(PARTITIONS)]
            ends = self._consumer.end_offsets(tps)
            committed = self._admin.list_group_offsets({self.group: None}).get(self.group, {})
            total = 0
            for tp in tps:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset is not None and meta.offset >= 0 else 0
                total += ends[tp] - done
            return total
        except Exception:  # the broker is restarting: no sample, new clients next time
            self.close()
            return None

    def close(self) -> None:
        for client in (self._admin, self._consumer):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        self._admin = self._consumer = None


def stored_frames(ql: InfluxQL) -> int:
    try:
        return int(ql.scalar('SELECT SUM("frames") FROM "windows"."exposure"'))
    except Exception:
        return 0


def all_points(ql: InfluxQL, measurement: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Every point of a measurement keyed by (tags..., time), fields as a dict."""
    points: dict[tuple[Any, ...], dict[str, Any]] = {}
    for series in ql.query(f"SELECT * FROM {source(measurement)} GROUP BY *"):
        tags = tuple(sorted((series.get("tags") or {}).items()))
        columns = series["columns"]
        for row in series["values"]:
            fields = {c: v for c, v in zip(columns, row, strict=True) if c != "time" and v is not None}
            points[(tags, row[0])] = fields
    return points


async def write_lines(url: str, database: str, lines: list[str]) -> None:
    sink = InfluxSink(url, "t", "strainwatch", database)
    try:
        sink.add(lines)
        await sink.flush()
    finally:
        await sink.close()


class Soak:
    def __init__(self, args: argparse.Namespace, state: Path) -> None:
        self.args = args
        self.state = state
        self.duration_s = int(args.minutes * 60)
        self.warmup_s = min(args.warmup_s, self.duration_s / 5)
        self.infra = Infra(state)
        self.database = f"soak_{uuid.uuid4().hex[:6]}"
        self.reference_db = f"soak_ref_{uuid.uuid4().hex[:6]}"
        self.produced = 0
        self.failed = 0
        self.behind_max_s = 0.0
        self.max_lag: int = 0
        self.lag_samples = 0
        self.rss: dict[str, int | None] = {"start": None, "restart": None, "end": None}
        self.events: dict[str, float] = {}
        self._done = threading.Event()
        self._lag_sample: tuple[float, int] | None = None  # (asked at, frames behind)
        self._error: BaseException | None = None

    # --- the fleet ----------------------------------------------------------------------------

    def generate(self, path: Path) -> datetime:
        """The fleet's frames for the whole run, written to `path` before the live phase: the
        simulator costs about as much CPU per frame as the processor, and the live phase must keep
        the wall-clock pace. Returns the event time of the first frames (they are sent at or after
        it, never ahead of the clock)."""
        start = datetime.now(UTC).replace(microsecond=0)
        cfg = SimConfig(
            workers=self.args.workers,
            rate_hz=self.args.rate_hz,
            frame_s=1.0,
            duration_s=self.duration_s,
            start=start,
            seed=23,
            shifts=False,  # everyone wears the device all the time: every worker sends every second
        )
        t0 = start.timestamp()
        with open(path, "wb", buffering=4 * 1024 * 1024) as out:
            for item in FleetSimulator(cfg).frames():
                tick = int(item.start_s - t0)
                out.write(FRAME_HEADER.pack(tick, len(item.key), len(item.value)))
                out.write(item.key)
                out.write(item.value)
        return start

    def produce(self, t0: float, path: Path) -> None:
        """Every frame of tick k is sent from wall-clock second k of the live phase (2,000 frames/s)."""
        from kafka import KafkaProducer

        producer = KafkaProducer(
            bootstrap_servers=self.infra.bootstrap,
            acks="all",
            enable_idempotence=True,  # retried batches across the broker restart: once, in order
            linger_ms=20,
            batch_size=262_144,
            max_block_ms=120_000,
            delivery_timeout_ms=600_000,
            request_timeout_ms=30_000,
            retry_backoff_ms=200,
        )
        failures: list[BaseException] = []

        def failed(error: BaseException) -> None:
            failures.append(error)

        current = -1
        for tick, key, value in read_frames(path):
            if tick != current:
                current = tick
                if self._error is not None:
                    raise self._error
                wait = t0 + tick - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                else:
                    self.behind_max_s = max(self.behind_max_s, -wait)
            producer.send(POSTURE_EVENTS.name, key=key, value=value).add_errback(failed)
            self.produced += 1
        self.events["last_frame_sent"] = time.monotonic() - t0
        producer.flush(600)
        producer.close(60)
        self.failed = len(failures)

    def reference(self, path: Path) -> list[str]:
        """Offline: the same frames, in the order each worker's partition holds them, through the
        processor's Runtime and engine (no broker, no faust); the points it would write."""
        settings = Settings()
        engine = ExposureEngine(load_thresholds(settings.thresholds), window_s=settings.window_s)
        runtime = Runtime(engine, RuntimeConfig(), load=lambda _worker: None, log_dead_letters=False)
        # the partition changes no point, and offsets only need to grow per worker
        for offset, (_tick, key, value) in enumerate(read_frames(path), start=1):
            runtime.on_message(key, value, 0, offset)
        _dirty, lines = runtime.snapshot()
        self.reference_counters = runtime.counters.as_dict()
        return lines

    # --- faults, memory and lag ---------------------------------------------------------------

    def watch(self, t0: float, processor: Processor, lag: Lag) -> None:
        try:
            kill_at = t0 + self.duration_s / 3
            broker_at = t0 + self.duration_s / 2
            restarted_caught_up: float | None = None
            while not self._done.is_set():
                now = time.monotonic()
                if self.rss["start"] is None and now >= t0 + self.warmup_s:
                    self.rss["start"] = rss_bytes(processor.pid)
                    log(f"warm: rss {self.rss['start']}")
                if "kill" not in self.events and now >= kill_at:
                    processor.kill9()
                    processor.start()
                    self.events["kill"] = now - t0
                    log("processor killed (SIGKILL) and started again")
                if "broker_stop" not in self.events and now >= broker_at:
                    self.events["broker_stop"] = time.monotonic() - t0
                    log("stopping Apache Kafka")
                    self.infra.stop_kafka()
                    self.events["broker_down_s"] = time.monotonic() - t0 - self.events["broker_stop"]
                    self.infra.start_kafka()
                    self.events["broker_up"] = time.monotonic() - t0
                    log("Apache Kafka is back")
                if not processor.running():
                    raise RuntimeError(f"the processor exited:\n{processor.tail()}")
                latest, self._lag_sample = self._lag_sample, None
                if latest is not None and "kill" in self.events and restarted_caught_up is None:
                    asked, sample = latest
                    threshold = 2 * CHECKPOINT_S * self.args.workers * self.args.rate_hz / 10
                    if asked > t0 + self.events["kill"] + CHECKPOINT_S and sample <= threshold:
                        restarted_caught_up = now
                        self.events["caught_up_after_kill"] = now - t0
                if (
                    restarted_caught_up is not None
                    and self.rss["restart"] is None
                    and now >= restarted_caught_up + self.warmup_s
                ):
                    self.rss["restart"] = rss_bytes(processor.pid)
                    log(f"restarted and warm: rss {self.rss['restart']}")
                time.sleep(0.2)
        except BaseException as error:
            self._error = error
            self._done.set()

    def sample_lag(self, lag: Lag) -> None:
        """Every 2 s, in a thread of its own: a client call may hang while the group rebalances."""
        while not self._done.wait(2.0):
            asked = time.monotonic()
            sample = lag.sample()
            if sample is not None:
                self.lag_samples += 1
                self.max_lag = max(self.max_lag, sample)
                self._lag_sample = (asked, sample)
        lag.close()

    # --- the run ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        log(f"state in {self.state}")
        self.infra.start()
        create_database(self.infra.influx_url, self.database)
        create_database(self.infra.influx_url, self.reference_db)
        ql = InfluxQL(self.infra.influx_url, "t", self.database)
        processor = Processor(self.infra, self.database, self.state)
        processor.start()
        lag = Lag(self.infra.bootstrap, processor.group)
        frames_path = self.state / "frames.bin"
        log("generating the fleet's frames")
        began = time.monotonic()
        self.generate(frames_path)
        self.events["generate_s"] = time.monotonic() - began
        t0 = time.monotonic()
        watcher = threading.Thread(target=self.watch, args=(t0, processor, lag), daemon=True)
        watcher.start()
        lagger = threading.Thread(target=self.sample_lag, args=(lag,), daemon=True)
        lagger.start()
        log(f"{self.args.workers} workers x {self.args.rate_hz:g} Hz for {self.duration_s} s")
        try:
            self.produce(t0, frames_path)
            log(f"produced {self.produced} frames ({self.failed} refused); waiting until all are stored")
            # the reference meanwhile, in this process (the processor has its own)
            reference_lines: list[str] = []
            referee = threading.Thread(
                target=lambda: reference_lines.extend(self.reference(frames_path)), daemon=True
            )
            referee.start()
            deadline = time.monotonic() + self.args.drain_timeout_s
            while stored_frames(ql) < self.produced - self.failed and time.monotonic() < deadline:
                if self._error is not None:
                    raise self._error
                time.sleep(1.0)
            caught_up_s = time.monotonic() - t0 - self.events["last_frame_sent"]
            referee.join()
        finally:
            self._done.set()
            watcher.join(30)
            lagger.join(30)
        if self._error is not None:
            raise self._error
        self.rss["end"] = rss_bytes(processor.pid)
        stored = stored_frames(ql)
        exit_code = processor.terminate()

        log("writing the reference and comparing points")
        asyncio.run(write_lines(self.infra.influx_url, self.reference_db, reference_lines))
        reference = InfluxQL(self.infra.influx_url, "t", self.reference_db)
        differing: dict[str, int] = {}
        counts: dict[str, int] = {}
        for measurement in MEASUREMENTS:
            want, have = all_points(reference, measurement), all_points(ql, measurement)
            counts[measurement] = len(want)
            differing[measurement] = sum(1 for k in want.keys() | have.keys() if want.get(k) != have.get(k))
        exact = stored == self.produced and self.failed == 0 and not any(differing.values())
        start_rss, end_rss, restart_rss = self.rss["start"], self.rss["end"], self.rss["restart"]
        return {
            "bench": "soak",
            "minutes": self.args.minutes,
            "workers": self.args.workers,
            "rate_hz": self.args.rate_hz,
            "frames_produced": self.produced,
            "frames_refused_by_broker": self.failed,
            "frames_stored": stored,
            "exact": exact,
            "points_compared": counts,
            "points_differing": differing,
            "rss_start_bytes": start_rss,
            "rss_restart_bytes": restart_rss,
            "rss_end_bytes": end_rss,
            "rss_growth_pct": _pct(start_rss, end_rss),
            "rss_growth_restarted_pct": _pct(restart_rss, end_rss),
            "max_lag_frames": self.max_lag,
            "lag_samples": self.lag_samples,
            "producer_behind_max_s": round(self.behind_max_s, 3),
            "kill_at_s": round(self.events.get("kill", -1), 1),
            "caught_up_after_kill_at_s": round(self.events.get("caught_up_after_kill", -1), 1),
            "broker_stopped_at_s": round(self.events.get("broker_stop", -1), 1),
            "broker_back_at_s": round(self.events.get("broker_up", -1), 1),
            "stored_all_s_after_last_frame": round(caught_up_s, 1),
            "frames_generated_in_s": round(self.events["generate_s"], 1),
            "processor_exit_code": exit_code,
            "reference_counters": self.reference_counters,
            "load_avg_1m_end": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
        }


FRAME_HEADER = struct.Struct(">IHI")  # tick, key length, value length


def read_frames(path: Path) -> Iterator[tuple[int, bytes, bytes]]:
    with open(path, "rb", buffering=4 * 1024 * 1024) as data:
        while header := data.read(FRAME_HEADER.size):
            tick, key_len, value_len = FRAME_HEADER.unpack(header)
            yield tick, data.read(key_len), data.read(value_len)


def _pct(before: int | None, after: int | None) -> float | None:
    if not before or after is None:
        return None
    return round(100.0 * (after - before) / before, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the live run (default 10)")
    parser.add_argument("--workers", type=int, default=2_000)
    parser.add_argument("--rate-hz", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=60.0, help="before RSS is first sampled")
    parser.add_argument(
        "--drain-timeout-s", type=float, default=1200.0, help="after the last frame, for all to be stored"
    )
    parser.add_argument("--keep", action="store_true", help="keep the state directory (logs, data)")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if not 1 <= args.rate_hz <= 100:
        parser.error("--rate-hz must be within 1..100")
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid>: every thread's stack on stderr
    # SIGTERM unwinds like Ctrl-C, so the components started here are stopped
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    state = Path(tempfile.mkdtemp(prefix="strainwatch-soak-"))
    soak = Soak(args, state)
    try:
        result = soak.run()
    finally:
        soak.infra.stop()
        if not args.keep:
            shutil.rmtree(state, ignore_errors=True)
    print(orjson.dumps(result).decode(), flush=True)
    return 0 if result["exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
