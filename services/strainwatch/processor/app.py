"""The faust processor: agents and the worker-state table; the per-message logic lives in Runtime.

Exactness (DESIGN.md): at-least-once delivery plus idempotent state. Messages are consumed from a
`noack` stream and acknowledged only at a checkpoint, which in one synchronous step snapshots the
dirty worker records (each carrying the source offset it has consumed) and the InfluxDB points that
cover them, then writes the points, then the records to the table's changelog (state must never
say "consumed" before the points of what it consumed are stored), awaits every delivery, and only
then acks. A committed offset therefore never runs ahead of persisted state; a
replay after `kill -9` skips frames at or before each record's offset; points overwrite by key.
State reaches the table once per worker per checkpoint, not per frame: the table write is the
costliest thing faust does per event (about 150 µs, DESIGN.md).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import structlog
from faust.serializers import codecs
from faust.transport import consumer as faust_consumer

from strainwatch.config import Settings
from strainwatch.events import RosterEntry
from strainwatch.exposure import ExposureEngine, load_thresholds
from strainwatch.logs import RateLimitedLog
from strainwatch.processor.record import WorkerRecord
from strainwatch.processor.runtime import Runtime, RuntimeConfig
from strainwatch.processor.sink import InfluxSink, SinkStopped
from strainwatch.topics import ALERTS_BREAK, EXPOSURE_WINDOWS, POSTURE_DEADLETTER, POSTURE_EVENTS, ROSTER

log = structlog.get_logger("strainwatch.processor")

STATE_TABLE = "worker-state"
ROSTER_TABLE = "roster"
RECORD_CODEC = "strainwatch-record"


class _RecordCodec(codecs.Codec):
    """Table values are WorkerRecord objects in memory and their compact bytes on the changelog."""

    def _dumps(self, obj: Any) -> bytes:
        return obj.to_bytes() if isinstance(obj, WorkerRecord) else bytes(obj)

    def _loads(self, s: bytes) -> Any:
        return WorkerRecord.from_bytes(s)


codecs.register(RECORD_CODEC, _RecordCodec())

# Only the checkpoint may acknowledge a posture frame. faust's stream acks, by itself and even on a
# `noack` stream, every event it *skips* (flow control inactive or a consumer generation changed,
# as at start-up); such a frame never reached the agent, and once its offset was committed a
# restart could not replay it: the kill test lost exactly one frame this way (committed offset 1
# on a partition whose offset 0 the agent never saw). With the guard a skipped frame stays
# unacknowledged, so the committed offset cannot pass it.
_CHECKPOINT_ACKING: dict[str, bool] = {"active": False}
_faust_ack = faust_consumer.Consumer.ack


def _guarded_ack(self: Any, message: Any) -> bool:
    if message.topic == POSTURE_EVENTS.name and not _CHECKPOINT_ACKING["active"]:
        return False
    return bool(_faust_ack(self, message))


faust_consumer.Consumer.ack = _guarded_ack  # type: ignore[method-assign]


class _RecordType:
    """The table's value type: faust takes a type's serializer from `_options.serializer` (so the
    changelog topic decodes with our codec during recovery) and rebuilds values with `from_data`."""

    class _options:
        serializer = RECORD_CODEC

    @classmethod
    def from_data(cls, data: Any, preferred_type: Any = None) -> Any:
        return data  # the codec already produced the WorkerRecord


@dataclass
class ProcessorStats:
    checkpoints: int = 0
    acked: int = 0
    last_checkpoint_s: float = 0.0


class Processor:
    """One processor instance: the faust app, its runtime, sink and checkpoint loop."""

    def __init__(self, settings: Settings, thresholds: str | None = None) -> None:
        self.settings = settings
        self.thresholds = load_thresholds(thresholds or settings.thresholds)
        self.engine = ExposureEngine(self.thresholds, window_s=settings.window_s)
        datadir = Path(settings.state_dir) / "faust"
        datadir.mkdir(parents=True, exist_ok=True)
        brokers = ";".join(f"kafka://{hp.strip()}" for hp in settings.kafka_bootstrap.split(","))
        self.app = faust.App(
            settings.processor_group,
            broker=brokers,
            store="memory://",
            key_serializer="raw",
            value_serializer="raw",
            topic_partitions=settings.posture_partitions,
            topic_disable_leader=True,
            web_enabled=False,
            # faust's worker may open its web port anyway (DESIGN.md): keep it on loopback
            web_bind="127.0.0.1",
            web_host="127.0.0.1",
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=settings.broker_session_timeout_s,
            broker_heartbeat_interval=min(3.0, settings.broker_session_timeout_s / 4),
            broker_commit_interval=1.0,
            # we ack at checkpoints ourselves; faust must not wait for acks at shutdown
            stream_wait_empty=False,
            stream_buffer_maxsize=8_192,
            broker_max_poll_records=2_000,
            producer_max_request_size=4 * 1024 * 1024,
            table_standby_replicas=0,
            logging_config=None,
            # faust's data dir defaults to ./{app id}-data in the working directory
            datadir=str(datadir),
        )
        self.source = self.app.topic(POSTURE_EVENTS.name, key_serializer="raw", value_serializer="raw")
        self.dlq = self.app.topic(POSTURE_DEADLETTER.name, key_serializer="raw", value_serializer="raw")
        self.windows = self.app.topic(EXPOSURE_WINDOWS.name, key_serializer="raw", value_serializer="raw")
        self.alerts = self.app.topic(ALERTS_BREAK.name, key_serializer="raw", value_serializer="raw")
        self.table = self.app.Table(
            STATE_TABLE,
            partitions=settings.posture_partitions,
            key_type=bytes,  # raw keys: the worker id's bytes, as on the source topic
            value_type=_RecordType,
            # records are written at checkpoints, outside stream iteration: the partitioner places
            # each under its key, which is the source key (worker_id), so table and source stay
            # co-partitioned (both murmur2 over the same bytes and partition count)
            use_partitioner=True,
        )
        self.roster_topic = self.app.topic(ROSTER.name, key_serializer="raw", value_serializer="raw")
        # roster.v1 is keyed by worker id with the posture topic's partition count, so the instance
        # that scores a worker also owns its roster entry; the table survives restarts
        self.roster = self.app.Table(
            ROSTER_TABLE, partitions=settings.posture_partitions, key_type=bytes, value_type=bytes
        )
        self._roster_errors = RateLimitedLog(log, interval_s=30.0)
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
        )
        self.sink = InfluxSink(
            settings.influx_url,
            settings.influx_token.get_secret_value(),
            settings.influx_org,
            settings.influx_bucket,
        )
        self.pending: list[Any] = []  # messages awaiting the next checkpoint's ack
        self._last_seen: dict[int, int] = {}  # partition -> last offset the agent took
        self._gaps_to_release: list[tuple[Any, int, int]] = []  # recovered holes awaiting a checkpoint
        self._in_flight: list[Any] = []  # delivery futures of outputs sent since the last checkpoint
        self.stats = ProcessorStats()
        self._lock = asyncio.Lock()
        self._last_checkpoint = time.monotonic()
        self._stopping = False
        self._wire()

    async def _start_positions(self, partitions: list[int]) -> dict[int, int]:
        """The group's committed offset per partition (the log start where none), from the broker:
        faust's own cache of it was stale right after assignment."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        if not partitions:
            return {}
        # same group id, never subscribed: only an offset fetch, it does not join the group
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.settings.processor_group,
            enable_auto_commit=False,
        )
        try:
            await reader.start()
            tps = [TopicPartition(POSTURE_EVENTS.name, p) for p in partitions]
            starts = await reader.beginning_offsets(tps)
            positions = {}
            for tp in tps:
                committed = await reader.committed(tp)
                positions[tp.partition] = int(committed) if committed is not None else int(starts[tp])
            return positions
        except Exception as error:  # the check is a safety net: without it, start as before
            log.warning(
                "committed offsets unavailable; hole check starts at the first event", error=repr(error)
            )
            return {}
        finally:
            await reader.stop()

    async def _recover_hole(self, tp: Any, first: int, end: int) -> None:
        """Feed offsets [first, end) of a partition to the runtime from a group-less consumer.

        They were never delivered by faust, so there is no faust message to ack; once a checkpoint
        has persisted them, `_gaps_to_release` tells faust's consumer their offsets are done (its
        gap list is what faust itself uses for offsets it never saw), so commits move on."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        log.warning(
            "offset hole: frames skipped by faust, reading them", partition=tp.partition, first=first, end=end
        )
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False, group_id=None
        )
        await reader.start()
        try:
            part = TopicPartition(tp.topic, tp.partition)
            reader.assign([part])
            reader.seek(part, first)
            offset = first
            while offset < end:
                batches = await reader.getmany(part, timeout_ms=1_000, max_records=end - offset)
                for record in batches.get(part, []):
                    if record.offset >= end:
                        break
                    self.runtime.on_message(record.key, record.value, tp.partition, record.offset)
                    offset = record.offset + 1
        finally:
            await reader.stop()
        self._gaps_to_release.append((tp, first, end))

    def _load(self, worker: str) -> WorkerRecord | None:
        value = self.table.get(worker.encode())
        return value if isinstance(value, WorkerRecord) else None

    def _team_of(self, worker: str) -> str | None:
        team = self.roster.get(worker.encode())
        return team.decode() if isinstance(team, bytes) else None

    def _wire(self) -> None:
        app = self.app
        interval = self.settings.checkpoint_interval_s

        @app.agent(self.source, name="score-posture")
        async def score(stream: faust.StreamT) -> None:
            runtime = self.runtime
            last_seen = self._last_seen
            async for event in stream.noack().events():
                message = event.message
                previous = last_seen.get(message.partition)
                if previous is not None and message.offset > previous + 1:
                    # faust skipped events (it drops events that arrive while flow control is off,
                    # as when table recovery ends): read them straight from the broker, in order,
                    # before this one (seeking faust's own consumer back stalled the partition)
                    await self._recover_hole(message.tp, previous + 1, message.offset)
                last_seen[message.partition] = message.offset
                runtime.on_message(message.key, message.value, message.partition, message.offset)
                self.pending.append(message)
                if runtime.out:
                    await self._publish()
                if len(self.pending) >= self.settings.max_pending_frames or (
                    time.monotonic() - self._last_checkpoint >= interval
                ):
                    await self.checkpoint("due")

        @app.agent(self.roster_topic, name="roster")
        async def roster(stream: faust.StreamT) -> None:
            async for event in stream.events():
                try:
                    entry = RosterEntry.model_validate_json(event.message.value)
                except ValueError as error:
                    self._roster_errors.warning(
                        "roster", "invalid roster entry skipped", error=str(error)[:200]
                    )
                    continue
                self.roster[entry.worker_id.encode()] = entry.team.encode()
                self.runtime.set_team(entry.worker_id, entry.team)

        @app.timer(interval=min(1.0, interval))
        async def idle_checkpoint() -> None:
            if (self.pending or self.runtime.dirty) and time.monotonic() - self._last_checkpoint >= interval:
                await self.checkpoint("timer")

        @app.on_partitions_assigned.connect
        async def on_assigned(app: faust.App, assigned: set[Any], **_: Any) -> None:
            mine = sorted(tp.partition for tp in assigned if tp.topic == POSTURE_EVENTS.name)
            self._last_seen.clear()  # faust resumes each partition at its committed offset
            # ...which is where the hole check starts: faust can skip the very first events too
            for partition, position in (await self._start_positions(mine)).items():
                self._last_seen[partition] = position - 1
            log.info("partitions assigned", partitions=mine)

        @app.on_partitions_revoked.connect
        async def on_revoked(app: faust.App, revoked: set[Any], **_: Any) -> None:
            await self.checkpoint("revoked")
            self.runtime.drop_partitions({tp.partition for tp in revoked if tp.topic == POSTURE_EVENTS.name})

    async def _publish(self) -> None:
        """Send outputs now (alerts must not wait for a checkpoint); their deliveries are awaited
        before the checkpoint acks the frames that produced them."""
        out = self.runtime.take_outputs()
        pending = self._in_flight
        for key, value in out.dead_letters:
            pending.append(await self.dlq.send(key=key, value=value))
        for key, value in out.windows:
            pending.append(await self.windows.send(key=key, value=value))
        for key, value in out.alerts:
            pending.append(await self.alerts.send(key=key, value=value))

    async def _outputs_delivered(self) -> None:
        pending, self._in_flight = self._in_flight, []
        if pending:
            await asyncio.gather(*pending)

    async def checkpoint(self, reason: str, *, final: bool = False) -> None:
        """Persist state, points and outputs, then acknowledge the messages they cover."""
        async with self._lock:
            messages, self.pending = self.pending, []
            gaps, self._gaps_to_release = self._gaps_to_release, []
            dirty, lines = self.runtime.snapshot()  # one synchronous step: states match `messages`
            # Order matters, and a kill can land between any two steps:
            # 1. serialise every record before the first await: a timer checkpoint runs beside the
            #    agent, which goes on scoring meanwhile; a record serialised later would hold frames
            #    (and closed windows) whose points are not in `lines`;
            # 2. points first, state second: state on the changelog says "frames up to offset X are
            #    in me", and replay skips them; if it landed before the points of the windows those
            #    frames closed, a kill in between lost those points for good (the kill test caught
            #    both). Points written without the state are simply rewritten by the replay.
            # 3. The table's own `__setitem__` queues records in faust's producer buffer, whose
            #    flush() gives up after 0.1 s; under load acks ran ahead of the changelog and once
            #    the buffer stalled. So records go straight to the changelog topic, on the source
            #    partition, and their delivery futures are awaited before the ack.
            payloads = [
                (worker.encode(), record.to_bytes(), record.partition) for worker, record in dirty.items()
            ]
            for worker, record in dirty.items():
                self.table.data[worker.encode()] = record
            await self._publish()
            self.sink.add(lines)
            try:
                await self.sink.flush(give_up_when_stopping=final)
                changelog = self.table.changelog_topic
                deliveries = [
                    await changelog.send(key=key, value=value, partition=partition)
                    for key, value, partition in payloads
                ]
                await self._outputs_delivered()
                if deliveries:
                    await asyncio.gather(*deliveries)
            except (SinkStopped, asyncio.CancelledError):
                log.warning("checkpoint abandoned; its frames will be replayed", frames=len(messages))
                raise
            consumer = self.app.consumer
            _CHECKPOINT_ACKING["active"] = True
            try:
                for message in messages:  # synchronous: no faust ack can interleave
                    message.ack(consumer)
                for tp, first, end in gaps:  # recovered holes: persisted now, so done for faust
                    consumer._gap[tp].addi(first, end)
            finally:
                _CHECKPOINT_ACKING["active"] = False
            self.stats.checkpoints += 1
            self.stats.acked += len(messages)
            self._last_checkpoint = time.monotonic()
            self.stats.last_checkpoint_s = time.time()
            if final:
                await consumer.commit()
            log.debug(
                "checkpoint", reason=reason, frames=len(messages), workers=len(dirty), points=len(lines)
            )

    async def shutdown(self) -> None:
        """SIGTERM: stop taking frames, persist everything, commit, then let faust stop."""
        if self._stopping:
            return
        self._stopping = True
        self.sink.request_stop()
        try:
            await asyncio.wait_for(self.checkpoint("shutdown", final=True), timeout=20.0)
            log.info("processor stopped cleanly", **self.runtime.counters.as_dict())
        except (TimeoutError, SinkStopped, asyncio.CancelledError) as error:
            log.warning("final checkpoint incomplete; unacked frames replay on restart", error=repr(error))
        finally:
            await self.sink.close()
