"""The faust wiring of the processor: app, topics, tables, agents, rebalance hooks.

What happens to a frame lives elsewhere: `runtime.py` (validate, order, deduplicate, score),
`checkpoint.py` (persist, then commit), `positions.py` (how far each partition is consumed),
`broker_reads.py` (where partitions resume; the frames themselves). docs/processor.md tells the
whole protocol and why it is exact.

The rules this module keeps: faust's consumer is the group member (assignment, the table, its
changelog and recovery, the roster and erasure streams, the commits) but it neither delivers nor
commits a posture frame. Its aiokafka consumer is paused on the posture topic at every assignment,
and the frames are read in runs by a `FrameReader` from the processor's own positions: faust's
per-event delivery cost more than the scoring itself (docs/processor.md). The topic is also
declared with `acks=False`, so faust keeps no ack bookkeeping for it and has nothing to commit
there; the checkpoint commits its offsets, after everything below them is persisted.
State reaches the table once per worker per checkpoint, not per frame: a table write is the
costliest thing faust does per event (about 150 µs measured, docs/processor.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import faust
import structlog
from aiokafka.errors import CommitFailedError
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from faust.serializers import codecs
from faust.types import TP

from strainwatch.config import Settings
from strainwatch.events import RosterEntry
from strainwatch.exposure import ExposureEngine, load_thresholds
from strainwatch.kafka_clients import aiokafka_security, faust_credentials
from strainwatch.logs import RateLimitedLog
from strainwatch.ops.kafka import KafkaProbe
from strainwatch.ops.metrics import ServiceMetrics
from strainwatch.ops.readiness import Readiness
from strainwatch.ops.retry import OutageLog, RetryPolicy, RetryStopped
from strainwatch.privacy.services import forget_in_processor
from strainwatch.processor.broker_reads import FrameReader, start_positions
from strainwatch.processor.checkpoint import Checkpointer
from strainwatch.processor.positions import PartitionPositions
from strainwatch.processor.record import WorkerRecord
from strainwatch.processor.runtime import Runtime, RuntimeConfig
from strainwatch.processor.sink import InfluxSink, SinkFatal, SinkStopped
from strainwatch.storage.health import HealthPoints
from strainwatch.topics import (
    ALERTS_BREAK,
    EXPOSURE_WINDOWS,
    POSTURE_DEADLETTER,
    POSTURE_EVENTS,
    PRIVACY_ERASURES,
    ROSTER,
)

log = structlog.get_logger("strainwatch.processor")

STATE_TABLE = "worker-state"
ROSTER_TABLE = "roster"
ROSTER_SEPARATOR = "\x1f"
HEALTH_S = 10.0  # a `pipeline` point this often
RECORD_CODEC = "strainwatch-record"
PUBLISH_BATCH = 500  # window messages and dead letters sent together (alerts at once)
READ_BATCH = 2_000  # frames read (and scored) in one run, at most
READ_WAIT_S = 0.05  # a read waits this long for frames when none are there
CAUGHT_UP_S = 0.25  # no frame read for this long: checkpoint now, not at the interval
WATCH_S = 2.0  # readiness: Kafka probed and the checkpoint's age checked this often


class _RecordCodec(codecs.Codec):
    """Table values are WorkerRecord objects in memory and their compact bytes on the changelog."""

    def _dumps(self, obj: Any) -> bytes:
        return obj.to_bytes() if isinstance(obj, WorkerRecord) else bytes(obj)

    def _loads(self, s: bytes) -> Any:
        return WorkerRecord.from_bytes(s)


codecs.register(RECORD_CODEC, _RecordCodec())


class _RecordType:
    """The table's value type: faust takes a type's serializer from `_options.serializer` (so the
    changelog topic decodes with our codec during recovery) and rebuilds values with `from_data`."""

    class _options:
        serializer = RECORD_CODEC

    @classmethod
    def from_data(cls, data: Any, preferred_type: Any = None) -> Any:
        return data  # the codec already produced the WorkerRecord


def app_options(settings: Settings, datadir: Path) -> dict[str, Any]:
    """The faust App's settings (also the benchmark's bare-faust baseline, so both run alike)."""
    return {
        "broker": ";".join(f"kafka://{hp.strip()}" for hp in settings.kafka_bootstrap.split(",")),
        "broker_credentials": faust_credentials(settings),  # TLS/SASL (kafka_clients.py)
        "store": "memory://",
        "key_serializer": "raw",
        "value_serializer": "raw",
        "topic_partitions": settings.posture_partitions,
        "topic_disable_leader": True,
        "web_enabled": False,
        # faust's worker opens its web port even with web_enabled=False: keep it on loopback
        "web_bind": "127.0.0.1",
        "web_host": "127.0.0.1",
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": settings.broker_session_timeout_s,
        "broker_heartbeat_interval": min(3.0, settings.broker_session_timeout_s / 4),
        "broker_commit_interval": 1.0,  # the roster's offsets; posture offsets are ours
        "stream_wait_empty": False,
        "stream_buffer_maxsize": 8_192,
        "broker_max_poll_records": 2_000,
        "producer_max_request_size": 4 * 1024 * 1024,
        "table_standby_replicas": 0,
        "logging_config": None,
        # faust's data dir defaults to ./{app id}-data in the working directory
        "datadir": str(datadir),
    }


class Processor:
    """One processor instance: the faust app, its runtime, positions, sink and checkpoints."""

    def __init__(self, settings: Settings, thresholds: str | None = None) -> None:
        self.settings = settings
        self.thresholds = load_thresholds(thresholds or settings.thresholds)
        self.engine = ExposureEngine(self.thresholds, window_s=settings.window_s)
        datadir = Path(settings.state_dir) / "faust"
        datadir.mkdir(parents=True, exist_ok=True)
        self.app = faust.App(settings.processor_group, **app_options(settings, datadir))
        # acks=False: faust records no acks and no gaps for posture frames, so it never commits
        # their offsets; the checkpoint does (module docstring)
        self.source = self.app.topic(
            POSTURE_EVENTS.name, key_serializer="raw", value_serializer="raw", acks=False
        )
        outputs = {
            "dead_letter": POSTURE_DEADLETTER.name,
            "window": EXPOSURE_WINDOWS.name,
            "alert": ALERTS_BREAK.name,
        }
        # declared as faust topics (faust creates them if missing); sent through its producer
        self._outputs = {
            role: self.app.topic(name, key_serializer="raw", value_serializer="raw")
            for role, name in outputs.items()
        }
        self._output_topics = outputs
        self.table = self.app.Table(
            STATE_TABLE,
            partitions=settings.posture_partitions,
            key_type=bytes,  # raw keys: the worker id's bytes, as on the source topic
            value_type=_RecordType,
            # records are written at checkpoints, outside stream iteration, each on its source
            # partition, so table and source stay co-partitioned
            use_partitioner=True,
        )
        self.table.on_recover(self._on_table_recovered)
        self.roster_topic = self.app.topic(ROSTER.name, key_serializer="raw", value_serializer="raw")
        # erasure requests (strainwatch privacy erase), co-partitioned with the posture topic
        self.erasures = self.app.topic(PRIVACY_ERASURES.name, key_serializer="raw", value_serializer="raw")
        # roster.v1 is keyed by worker id with the posture topic's partition count, so the instance
        # that scores a worker also owns its roster entry; the table survives restarts
        self.roster = self.app.Table(
            ROSTER_TABLE, partitions=settings.posture_partitions, key_type=bytes, value_type=bytes
        )
        self._roster_errors = RateLimitedLog(log, interval_s=30.0)
        self._ops_log = RateLimitedLog(log, interval_s=60.0)  # outages: the outage log says more
        # ops: /healthz, /readyz, /metrics (docs/operations.md); the server itself runs in cli.py
        self.readiness = Readiness(expected=("kafka", "partitions", "sink", "checkpoint"))
        self.metrics = ServiceMetrics("processor")
        self._stop_event = asyncio.Event()
        self._kafka_seen = asyncio.Event()
        self.kafka_probe = KafkaProbe(settings.kafka_bootstrap, aiokafka_security(settings))
        self._retry = RetryPolicy(initial_s=0.2, cap_s=5.0, reminder_s=60.0)
        self.runtime = Runtime(
            self.engine,
            RuntimeConfig(
                source_topic=POSTURE_EVENTS.name,
                allowed_lateness_s=settings.allowed_lateness_s,
                max_future_s=settings.max_future_s,
                max_frame_bytes=settings.max_frame_bytes,
                max_samples_per_frame=settings.max_samples_per_frame,
            ),
            load=self._load,
            team_of=self._team_of,
            task_of=self._task_of,
        )
        self.sink = InfluxSink(
            settings.influx_url,
            settings.influx_token.get_secret_value(),
            settings.influx_org,
            settings.influx_bucket,
            windows_bucket=settings.influx_windows_bucket or None,
            readiness=self.readiness,
        )
        # service health as points (storage/health.py): best effort, on a sink of its own so that a
        # slow health write never holds up a checkpoint
        self.health = HealthPoints("processor")
        self._health_sink = InfluxSink(
            settings.influx_url,
            settings.influx_token.get_secret_value(),
            settings.influx_org,
            settings.influx_bucket,
            max_backoff_s=1.0,
            readiness=self.readiness,
            share_fatal_with=self.sink,
        )
        self._last_checkpoint_done = time.monotonic()
        self.positions = PartitionPositions()
        self.frames = FrameReader(
            settings.kafka_bootstrap, POSTURE_EVENTS.name, max_records=READ_BATCH, wait_s=READ_WAIT_S
        )
        self._read_errors = RateLimitedLog(log, interval_s=30.0)
        self.checkpointer = Checkpointer(
            self.runtime,
            self.positions,
            self.sink,
            write_records=self._write_records,
            send_output=self._send_output,
            commit=self._commit,
        )
        self._assigned: set[int] = set()
        self._generation = 0  # bumped at every assignment and revocation
        self._frames_since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._checkpoint_task: asyncio.Future[None] | None = None  # the reader's, running behind it
        self._last_delivery = time.monotonic()
        # posture frames faust delivered anyway (between an assignment and its pause): ignored, the
        # reader reads every offset from the positions
        self.faust_deliveries = 0
        self.clean_stop = False  # the final checkpoint persisted and committed everything
        self._stopping = False
        self.runtime.delay_observer = self.metrics.end_to_end_delay.observe
        self.metrics.on_scrape(self._sync_metrics)
        self.metrics.read_checkpoint_age(self.checkpoint_age)
        self._wire()

    # --- table and outputs (the checkpoint's I/O) ------------------------------------------------

    def _load(self, worker: str) -> WorkerRecord | None:
        value = self.table.get(worker.encode())
        return value if isinstance(value, WorkerRecord) else None

    async def _on_table_recovered(self) -> None:
        """Workers restored with frames in their reorder buffer may never send again: hand them to
        the runtime, which releases the buffer once the lateness has passed (only records of
        partitions this instance owns: the table may still hold others' until faust drops them)."""
        assigned = self._assigned
        self.runtime.adopt_restored(
            (key.decode(), value)
            for key, value in list(self.table.data.items())
            if isinstance(value, WorkerRecord) and value.buffer and value.partition in assigned
        )

    # roster table values: b"team" or b"team\x1ftask" (the unit separator cannot occur in either)
    def _assignment(self, worker: str) -> tuple[str, str | None] | None:
        value = self.roster.get(worker.encode())
        if not isinstance(value, bytes):
            return None
        team, _, task = value.decode().partition(ROSTER_SEPARATOR)
        return team, task or None

    def _team_of(self, worker: str) -> str | None:
        assignment = self._assignment(worker)
        return assignment[0] if assignment else None

    def _task_of(self, worker: str) -> str | None:
        assignment = self._assignment(worker)
        return assignment[1] if assignment else None

    async def _write_records(self, payloads: list[tuple[str, WorkerRecord, bytes]]) -> list[Any]:
        # Straight to the changelog topic, on the record's source partition, with a delivery
        # future each: the table's own `__setitem__` buffers in faust's producer, whose flush()
        # gives up after 0.1 s, so a checkpoint could not know its records were stored.
        # faust's producer itself rather than `Topic.send`: the same aiokafka send and delivery
        # future, without a FutureMessage and its callbacks per record
        changelog = self.table.changelog_topic.get_topic_name()
        send = (await self.app.maybe_start_producer()).send
        data = self.table.data
        deliveries = []
        for worker, record, value in payloads:
            key = worker.encode()
            data[key] = record
            deliveries.append(await send(changelog, key, value, record.partition, None, None))
        return deliveries

    async def _send_output(self, role: str, key: bytes | None, value: bytes) -> Any:
        producer = await self.app.maybe_start_producer()
        return await producer.send(self._output_topics[role], key, value, None, None, None)

    async def _commit(self, positions: dict[int, int]) -> bool:
        offsets = {TP(POSTURE_EVENTS.name, p): o for p, o in positions.items() if p in self._assigned}
        if not offsets:
            return False
        # the consumer that is the group member commits, so a commit after a rebalance is refused;
        # in faust's consumer thread, but not through faust's `_commit`, which crashes the consumer
        # on any error other than a rebalance (a broker gone, a coordinator moving)
        thread = self.app.consumer._thread
        return bool(await thread.call_thread(_commit_in_consumer_thread, thread, offsets))

    async def _checkpoint_behind(self, reason: str, max_pending: int) -> None:
        """Start a checkpoint that runs behind the agent: it snapshots in one synchronous step, so
        the agent goes on scoring while its points, records and commit are awaited. Once another
        `max_pending` frames have been scored since its snapshot, the agent waits for it: memory
        and a replay after a kill stay within two checkpoints' frames, as when it waited always."""
        task = self._checkpoint_task
        if task is None or task.done():
            self._checkpoint_task = asyncio.ensure_future(self._checkpoint_quietly(reason))
        elif self._frames_since_checkpoint >= max_pending:
            await asyncio.shield(task)

    async def _checkpoint_quietly(self, reason: str) -> None:
        # stopping: the checkpointer logged it; the frames replay on restart
        with contextlib.suppress(SinkStopped, asyncio.CancelledError):
            await self.checkpoint(reason)

    async def checkpoint(self, reason: str, *, final: bool = False) -> bool:
        self._frames_since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        done = await self.checkpointer.run(reason, final=final)
        if done:
            self._last_checkpoint_done = time.monotonic()
        return done

    async def report_health(self) -> None:
        """One `pipeline` point (and `dead_letter` points by reason) for this instance."""
        runtime = self.runtime
        lag = 0
        owned = self.positions.owned()
        if owned:
            try:
                ends = await asyncio.wait_for(
                    self.app.consumer.highwaters(*(TP(POSTURE_EVENTS.name, p) for p in owned)), timeout=5.0
                )
                lag = sum(
                    max(0, int(end) - self.positions.position(tp.partition))
                    for tp, end in ends.items()
                    if end is not None and self.positions.owns(tp.partition)
                )
            except Exception as error:  # health is best effort: the next report tries again
                self._ops_log.warning("health", "log end offsets unavailable", error=repr(error))
            else:
                self.metrics.consumer_lag.set(lag)
        else:
            self.metrics.consumer_lag.set(0)
        age = self.checkpoint_age()
        counters = runtime.counters
        lines = self.health.lines(
            time.time(),
            {
                "frames_in": counters.frames_in,
                "frames_processed": counters.frames_applied,
                "dead_lettered": sum(counters.dead_lettered.values()),
                "sink_write_errors": self.sink.write_failures,
            },
            counters.dead_lettered,
            {"lag_frames": lag, "checkpoint_age_s": round(age, 3)},
        )
        sink = self._health_sink
        if sink.fatal is not None or self.sink.fatal is not None:
            return  # logged once by the sink; /readyz says it
        sink.add(lines)
        try:
            await asyncio.wait_for(sink.flush(), timeout=5.0)
        except SinkFatal:
            sink.discard()  # logged once by the sink, shown on /readyz
        except Exception as error:
            self._ops_log.warning("health-write", "health points not written", error=repr(error))
            if len(sink) > 1_000:  # InfluxDB is away for long: drop old reports, keep memory bounded
                sink.discard()

    # --- positions --------------------------------------------------------------------------------

    async def _ensure_started(self, partitions: list[int]) -> None:
        """Give each assigned partition its start position: the group's committed offset."""
        while True:
            generation = self._generation
            todo = [p for p in partitions if p in self._assigned and not self.positions.owns(p)]
            if not todo:
                return
            try:
                starts = await self._retry.call(
                    start_positions,
                    self.settings.kafka_bootstrap,
                    self.settings.processor_group,
                    POSTURE_EVENTS.name,
                    todo,
                    what="kafka_committed_offsets",
                    logger=log,
                    stop=self._stop_event,
                )
            except RetryStopped:
                return
            if generation != self._generation:
                continue  # a rebalance happened meanwhile: start over with the new assignment
            for partition, start in starts.items():
                if partition in self._assigned and not self.positions.owns(partition):
                    self.positions.start(partition, start)
            log.info("partitions started", positions={p: starts[p] for p in sorted(starts)})
            return

    async def _read_frames(self) -> None:
        """The posture frames of the owned partitions, read in runs from their positions and scored,
        from start to shutdown. Never raises on data or on a broker error (logged, retried)."""
        while not self._stopping:
            if self.sink.fatal is not None:
                # InfluxDB refuses our writes for good (401/403/404): read no more frames, so
                # nothing is committed past what is stored; /readyz shows the fatal check
                log.error("processor halted: not consuming until restarted", cause=str(self.sink.fatal))
                return
            # faust marks a rebalance from its very start (before the revocation) until the table
            # is restored for the new assignment: a frame applied before that would not find its
            # worker's record
            if self.app.rebalancing or not self._assigned:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), READ_WAIT_S)
                continue
            missing = [p for p in sorted(self._assigned) if not self.positions.owns(p)]
            if missing:
                await self._ensure_started(missing)  # its committed offset was unreadable at assignment
                continue  # a rebalance may have begun meanwhile: look again
            generation = self._generation
            positions = self.positions
            wanted = {p: positions.position(p) for p in positions.owned()}
            try:
                runs = await self.frames.read(wanted)
            except Exception as error:  # the broker away or the connection broken: read again
                if self._stopping:
                    return  # shutdown closed the reader under the read
                self._read_errors.warning("read", "posture frames unreadable; retrying", error=repr(error))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), 1.0)
                continue
            if runs:
                self._last_delivery = time.monotonic()
                await self._score_runs(runs, generation)

    async def _score_runs(self, runs: dict[int, list[Any]], generation: int) -> None:
        """Apply each partition's run in offset order. Exactness rests on the positions: a record of
        a partition revoked (or reassigned) since the read is not applied; one below the position
        was applied already. One past the position follows offsets absent from the log (markers,
        compaction): the reader read from the position."""
        runtime, positions = self.runtime, self.positions
        interval, max_pending = self.settings.checkpoint_interval_s, self.settings.max_pending_frames
        monotonic = time.monotonic
        for partition, records in runs.items():
            for record in records:
                if self._stopping or self.sink.fatal is not None:
                    # SIGTERM: the final checkpoint covers what was applied before it; a frame
                    # applied after its snapshot would be stored or committed by nobody
                    return
                if generation != self._generation or not positions.owns(partition):
                    break  # a rebalance since the read: the partition resumes from its position
                offset = record.offset
                if positions.is_redelivery(partition, offset):
                    continue
                runtime.on_message(record.key, record.value, partition, offset)
                positions.advance(partition, offset + 1)
                self._frames_since_checkpoint += 1
                out = runtime.out
                # an alert goes out at once; windows and dead letters in batches (or at the checkpoint)
                if out.alerts or len(out) >= PUBLISH_BATCH:
                    await self.checkpointer.publish()
                if (
                    self._frames_since_checkpoint >= max_pending
                    or monotonic() - self._last_checkpoint >= interval
                ):
                    await self._checkpoint_behind("due", max_pending)

    # --- faust --------------------------------------------------------------------------------------

    def _wire(self) -> None:
        app = self.app
        interval = self.settings.checkpoint_interval_s

        @app.agent(self.source, name="score-posture")
        async def posture(stream: faust.StreamT) -> None:
            # faust's consumer subscribes the posture topic through this agent (the group's
            # assignment, the table's co-partitioning) but is paused on it at each assignment: the
            # reader below reads the frames. Whatever faust delivers before its pause is ignored.
            async for _event in stream.events():
                self.faust_deliveries += 1

        @app.task
        async def read_frames() -> None:
            await self._read_frames()

        @app.agent(self.roster_topic, name="roster")
        async def roster(stream: faust.StreamT) -> None:
            async for event in stream.events():
                if event.message.value is None:  # a tombstone: the worker left the roster (or was erased)
                    if event.message.key is not None and event.message.key in self.roster:
                        del self.roster[event.message.key]
                    continue
                try:
                    entry = RosterEntry.model_validate_json(event.message.value)
                except ValueError as error:
                    self._roster_errors.warning(
                        "roster", "invalid roster entry skipped", error=str(error)[:200]
                    )
                    continue
                value = entry.team + (ROSTER_SEPARATOR + entry.task if entry.task else "")
                self.roster[entry.worker_id.encode()] = value.encode()
                self.runtime.set_team(entry.worker_id, entry.team, entry.task)

        @app.agent(self.erasures, name="privacy-erasures")
        async def erasures(stream: faust.StreamT) -> None:
            async for event in stream.events():
                await forget_in_processor(self, event.message.key)

        @app.timer(interval=min(CAUGHT_UP_S, interval))
        async def tick() -> None:
            if self._stopping:
                return
            runtime = self.runtime
            now = time.monotonic()
            since = now - self._last_checkpoint
            if since >= interval and (
                runtime.dirty or self.positions.uncommitted() or runtime.out or runtime.waiting
            ):
                await self.checkpoint("timer")
            elif (
                since >= CAUGHT_UP_S
                and now - self._last_delivery >= CAUGHT_UP_S
                and (runtime.dirty or self.positions.uncommitted() or runtime.out)
                and (self._checkpoint_task is None or self._checkpoint_task.done())
            ):
                # nothing delivered for a moment (a burst or a backlog worked off): store what was
                # scored now rather than up to `interval` later. A busy stream never pauses this
                # long; a trickle from a few devices checkpoints about once per frame, at most 4/s
                await self.checkpoint("caught up")

        @app.timer(interval=HEALTH_S)
        async def health() -> None:
            if not self._stopping:
                await self.report_health()

        @app.on_partitions_assigned.connect
        async def on_assigned(app: faust.App, assigned: set[Any], **_: Any) -> None:
            mine = {tp.partition for tp in assigned if tp.topic == POSTURE_EVENTS.name}
            if app.topics.acks_enabled_for(POSTURE_EVENTS.name):
                # faust enables acks per topic *name*: one more stream on the posture topic with
                # default acks would let faust commit posture offsets behind the checkpoint's back
                raise RuntimeError(
                    "faust tracks acks for the posture topic; only the checkpoint may commit it"
                )
            self._generation += 1
            self.positions.forget()  # each partition starts again at the group's committed offset
            self.runtime.drop_partitions(self._assigned - mine)
            self._assigned = mine
            log.info("partitions assigned", partitions=sorted(mine))
            self.readiness.set(
                "partitions",
                True,
                f"{len(mine)} partitions assigned" if mine else "group joined, no partition to own",
            )
            if mine:
                # faust's consumer fetches none of the posture topic: the reader does (module doc)
                thread = app.consumer._thread
                await thread.call_thread(_pause_in_consumer_thread, thread, mine)
                _quiet_fetch_checks(thread)
            await self._ensure_started(sorted(mine))

        @app.on_partitions_revoked.connect
        async def on_revoked(app: faust.App, revoked: set[Any], **_: Any) -> None:
            mine = {tp.partition for tp in revoked if tp.topic == POSTURE_EVENTS.name}
            log.info("partitions revoked", partitions=sorted(mine))
            self.readiness.set("partitions", False, "rebalancing: partitions revoked")
            self._generation += 1  # frames read before it are not applied
            await self.checkpoint("revoked")
            self.positions.forget(mine)
            self._assigned -= mine
            self.runtime.drop_partitions(mine)

    # --- ops: readiness and metrics (docs/operations.md) -------------------------------------------

    def checkpoint_age(self) -> float:
        """Seconds the pending work (dirty state, uncommitted positions, unsent outputs) has waited
        since the last complete checkpoint; 0 when nothing is pending."""
        runtime = self.runtime
        pending = bool(runtime.dirty or self.positions.uncommitted() or runtime.out)
        return time.monotonic() - self._last_checkpoint_done if pending else 0.0

    def _sync_metrics(self) -> None:
        counters = self.runtime.counters
        self.metrics.set_totals(
            consumed=counters.frames_in,
            processed=counters.frames_applied,
            sink_write_errors=self.sink.write_failures,
            dead_lettered=counters.dead_lettered,
        )

    def _check_checkpoint(self) -> None:
        age = self.checkpoint_age()
        limit = self.settings.ops_checkpoint_max_age_s
        if age > limit:
            self.readiness.set("checkpoint", False, f"work pending for {age:.0f} s without a checkpoint")
        else:
            self.readiness.set("checkpoint", True, f"pending for {age:.0f} s" if age else "nothing pending")

    async def watch(self) -> None:
        """From start to shutdown: probe Kafka (outage logged once, then a reminder a minute;
        back-off from ops/retry.py), check the checkpoint's age, write a first health point (the
        sink check) once Kafka answers."""

        async def checkpoint_age() -> None:
            while not self._stop_event.is_set():
                self._check_checkpoint()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), 1.0)

        ages = asyncio.ensure_future(checkpoint_age())
        outage = OutageLog(log, "kafka", reminder_s=60.0)
        try:
            while not self._stop_event.is_set():
                try:
                    brokers = await self._retry.call(
                        self.kafka_probe.check,
                        what="kafka",
                        logger=log,
                        outage=outage,
                        stop=self._stop_event,
                        readiness=self.readiness,
                        check="kafka",
                    )
                except RetryStopped:
                    return
                self.readiness.set("kafka", True, f"{brokers} broker(s) reachable")
                if not self._kafka_seen.is_set():
                    self._kafka_seen.set()
                    with contextlib.suppress(Exception):  # best effort; the health timer goes on
                        await asyncio.wait_for(self.report_health(), timeout=5.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), WATCH_S)
        finally:
            ages.cancel()
            await self.kafka_probe.close()

    async def wait_for_kafka(self) -> bool:
        """Until Kafka answers (True) or shutdown begins (False): a processor started while the
        broker is down waits instead of exiting."""
        seen = asyncio.ensure_future(self._kafka_seen.wait())
        stopping = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait({seen, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            seen.cancel()
            stopping.cancel()
        return self._kafka_seen.is_set() and not self._stop_event.is_set()

    async def shutdown(self) -> None:
        """SIGTERM: stop taking frames, persist everything, commit, then let faust stop."""
        if self._stopping:
            return
        self._stopping = True
        self._stop_event.set()
        self.readiness.set("stopping", False, "shutting down")
        self.sink.request_stop()
        try:
            done = await asyncio.wait_for(self.checkpoint("shutdown", final=True), timeout=20.0)
            self.clean_stop = done and self.sink.fatal is None
            if self.sink.fatal is not None:
                log.error("processor stopped with InfluxDB refusing its writes", cause=str(self.sink.fatal))
            elif done:
                log.info(
                    "processor stopped cleanly",
                    faust_deliveries=self.faust_deliveries,
                    **self.runtime.counters.as_dict(),
                )
            else:
                log.warning("final checkpoint incomplete; frames after the last commit replay on restart")
        except (TimeoutError, SinkStopped, asyncio.CancelledError) as error:
            log.warning("final checkpoint incomplete; unacked frames replay on restart", error=repr(error))
        finally:
            with contextlib.suppress(Exception):  # the last counters, best effort
                await asyncio.wait_for(self.report_health(), timeout=5.0)
            await self.sink.close()
            await self._health_sink.close()
            await self.frames.close()


async def _pause_in_consumer_thread(thread: Any, partitions: set[int]) -> None:
    """Runs in faust's consumer thread, whose loop owns the aiokafka consumer (a pause creates a
    future on that loop): stop fetching the posture partitions. aiokafka forgets pauses at each new
    assignment; faust's own pause and resume only choose what it hands to its streams."""
    consumer = thread._ensure_consumer()
    assigned = consumer.assignment()
    tps = [TopicPartition(POSTURE_EVENTS.name, p) for p in sorted(partitions)]
    consumer.pause(*(tp for tp in tps if tp in assigned))


def _quiet_fetch_checks(thread: Any) -> None:
    """faust's livelock detector logs an error every 2.5 s for each assigned partition aiokafka
    has not fetched for `stream_processing_timeout` (5 min): true of every posture partition, by
    design. Leave the posture topic out of that check; every other partition keeps it."""
    if getattr(thread, "_strainwatch_posture_unchecked", False):
        return
    verify = thread.verify_event_path

    def verify_event_path(now: float, tp: TP) -> None:
        if tp.topic != POSTURE_EVENTS.name:
            verify(now, tp)

    thread.verify_event_path = verify_event_path
    thread._strainwatch_posture_unchecked = True


async def _commit_in_consumer_thread(thread: Any, offsets: dict[TP, int]) -> bool:
    """Runs in faust's consumer thread, whose loop owns the aiokafka consumer. As faust's
    `AIOKafkaConsumerThread._commit`, except that an error reaches the checkpoint, which keeps its
    work for the next one, instead of crashing the consumer (faust crashes on anything but a
    rebalance: a broker gone mid-commit would stop the processor)."""
    assignment = thread.assignment()
    commitable = {tp: offset for tp, offset in offsets.items() if tp in assignment}
    if not commitable:
        return False
    try:
        await thread._ensure_consumer().commit(
            {TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(o, "") for tp, o in commitable.items()}
        )
    except CommitFailedError as error:
        if "already rebalanced" in str(error):
            return False  # another member owns them now: it resumes from the last commit
        raise
    now = time.monotonic()
    thread.tp_last_committed_at.update(dict.fromkeys(commitable, now))
    return True
