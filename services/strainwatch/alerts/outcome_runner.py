"""The outcome tracker's I/O: alerts.prompts.v1 + exposure.windows.v1 + alerts.ack.v1 -> BreakAck
(stage outcome) on alerts.ack.v1 and a `break_ack` InfluxDB point per sent conditioning break.

The rules are pure (alerts/outcomes.py); this module reads, persists and commits. Per batch, in this
order (a kill can land between any two steps):
1. feed every record of the batch to the tracker (prompts, then acks, then windows: the sparse
   topics first, so a replay sees a prompt and its acks before the windows that close it);
2. decide what is due: horizons passed in event time, or idle workers (processing time), only for
   workers whose three input partitions are read up to their end (no evidence still unread);
3. publish the BreakAcks and write their points (awaited);
4. persist the state of every worker the batch touched to the compacted alerts.outcomes.state.v1,
   on the worker's partition number (awaited);
5. commit the batch's offsets.
A kill before 5 re-reads records the state already holds: the tracker is idempotent for them (windows
replace themselves, prompts and acks are deduplicated by alert id), and an outcome published again
is the same message (event-time ts) and the same point. On assignment the partitions' state is read
back from the state topic: the state always covers at least the committed offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError as KafkaPythonError
from kafka.errors import TopicAlreadyExistsError
from pydantic import ValidationError

from strainwatch.alerts.outcomes import DEFAULT_IDLE_TIMEOUT_S, OutcomeRecord, OutcomeTracker
from strainwatch.alerts.state_topic import read_to_end
from strainwatch.config import Settings
from strainwatch.events import BreakAck, ExposureWindow, PromptDecision
from strainwatch.kafka_clients import aiokafka_security, kafka_python_security
from strainwatch.logs import RateLimitedLog
from strainwatch.ops.metrics import ServiceMetrics
from strainwatch.ops.readiness import Readiness
from strainwatch.ops.retry import OutageLog, RetryPolicy, RetryStopped, default_is_permanent, describe
from strainwatch.privacy.services import INBOX, worker_digest
from strainwatch.processor.sink import InfluxSink, SinkStopped
from strainwatch.storage.measurements import break_ack_line
from strainwatch.topics import ALERTS_ACK, ALERTS_OUTCOMES_STATE, ALERTS_PROMPTS, EXPOSURE_WINDOWS

log = structlog.get_logger("strainwatch.outcomes")

GROUP = "strainwatch-outcomes"
# Internal state, one OutcomeState record per worker, co-partitioned with the inputs; created here.
STATE_TOPIC = ALERTS_OUTCOMES_STATE.name
MAX_BATCH = 2_000
# The order records of one batch are fed in (see the module doc).
TOPIC_ORDER = {ALERTS_PROMPTS.name: 0, ALERTS_ACK.name: 1, EXPOSURE_WINDOWS.name: 2}
INPUT_TOPICS = tuple(TOPIC_ORDER)
KAFKA_RETRY = RetryPolicy(initial_s=0.5, cap_s=10.0)  # ops/retry.py
CLOSE_TIMEOUT_S = 5.0


class Stopping(Exception):
    """Asked to stop while waiting for Kafka or InfluxDB."""


class SinkRefused(Exception):
    """InfluxDB refused a write for good (401/403/404)."""

    retryable = False


def ensure_state_topic(bootstrap: str, state_topic: str) -> int:
    """Create the compacted state topic with exposure.windows.v1's partition count if missing;
    returns that count. Raises KafkaError while the broker is unreachable or the inputs are missing."""
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, **kafka_python_security(), request_timeout_ms=10_000
    )
    try:
        described = admin.describe_topics([EXPOSURE_WINDOWS.name])
        partitions = len(described[0].get("partitions") or []) if described else 0
        if not partitions:
            raise KafkaError(f"{EXPOSURE_WINDOWS.name} does not exist yet (strainwatch stack topics)")
        if state_topic not in set(admin.list_topics()):
            config = ALERTS_OUTCOMES_STATE.config()
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [NewTopic(state_topic, partitions, 1, topic_configs=config)], timeout_ms=30_000
                )
            log.info("state topic created", topic=state_topic, partitions=partitions)
        return partitions
    finally:
        admin.close()


def outcome_line(record: OutcomeRecord) -> str:
    ack = record.ack
    return break_ack_line(
        ack.site_id,
        record.team,
        ack.worker_id,
        record.kind,
        ack.outcome,
        ack.source,
        str(ack.alert_id),
        record.alert_ts.timestamp(),
    )


class OutcomeRunner:
    def __init__(
        self,
        settings: Settings,
        stop: asyncio.Event,
        *,
        group: str = GROUP,
        state_topic: str = STATE_TOPIC,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        readiness: Readiness | None = None,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.readiness = readiness if readiness is not None else Readiness()
        self.readiness.expect("outcomes", "state not restored yet")
        self.metrics = metrics if metrics is not None else ServiceMetrics("alerting")
        self._outage = OutageLog(log, "kafka_outcomes")
        self._sink_failures_seen = 0
        self.settings = settings
        self.stop = stop
        self.group = group
        self.state_topic = state_topic
        self.tracker = OutcomeTracker(idle_timeout_s=idle_timeout_s, clock=clock)
        self.sink = InfluxSink(
            settings.influx_url,
            settings.influx_token.get_secret_value(),
            settings.influx_org,
            settings.influx_bucket,
            # the sink sets `influx` itself: not ok while writes retry, fatal on 401/403/404
            readiness=self.readiness,
            check="influx",
        )
        self.partition_of: dict[str, int] = {}  # worker -> partition number (all inputs co-partitioned)
        self.caught_up: set[int] = set()  # partition numbers whose three inputs are read to their end
        self._errors = RateLimitedLog(log, interval_s=10.0)
        # a rebalance (restore, forget) never lands between feeding a batch and persisting it
        self.lock = asyncio.Lock()
        self.published = 0
        self.bad_records = 0
        INBOX.subscribe("outcomes")  # erased workers (strainwatch privacy erase)

    async def run(self) -> None:
        # a flush retrying against an unreachable InfluxDB gives up once asked to stop
        watcher = asyncio.create_task(self._stop_sink_when_stopping())
        try:
            while not self.stop.is_set():
                try:
                    await KAFKA_RETRY.call(
                        self._attempt,
                        what="kafka_outcomes",
                        logger=log,
                        stop=self.stop,
                        # aiokafka's clients and kafka-python's admin (the state topic)
                        retry_on=(KafkaError, KafkaPythonError, OSError),
                        readiness=self.readiness,
                        check="outcomes",
                        outage=self._outage,
                    )
                except (Stopping, SinkStopped, RetryStopped):
                    break
                except SinkRefused as error:
                    log.warning("halted", part="outcomes", reason=str(error))  # the sink logged the error
                    self.readiness.set("influx", False, str(error), fatal=True)
                    await self.stop.wait()
        finally:
            watcher.cancel()
            self.sink.request_stop()
            await self.sink.close()
            log.info("outcome tracker stopped", published=self.published, bad_records=self.bad_records)

    async def _attempt(self) -> None:
        # kafka-python's admin blocks for its bootstrap timeout while the broker is gone: in a
        # daemon thread a SIGTERM does not wait for it (asyncio.to_thread's executor would)
        from strainwatch.alerts.service import _in_daemon_thread

        def ensure() -> None:
            ensure_state_topic(self.settings.kafka_bootstrap, self.state_topic)

        if not await _in_daemon_thread(ensure, self.stop):
            raise Stopping
        await self._session()

    def _count_sink_failures(self) -> None:
        failures = self.sink.write_failures
        if failures > self._sink_failures_seen:
            self.metrics.sink_write_errors.inc(failures - self._sink_failures_seen)
        self._sink_failures_seen = failures

    async def _stop_sink_when_stopping(self) -> None:
        await self.stop.wait()
        self.sink.request_stop()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def _session(self) -> None:
        bootstrap = self.settings.kafka_bootstrap
        session_ms = int(self.settings.broker_session_timeout_s * 1000)
        # a send fails within 15 s while Kafka is down: the service backs off and still stops in time
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            **aiokafka_security(self.settings),
            acks="all",
            linger_ms=5,
            request_timeout_ms=15_000,
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            **aiokafka_security(self.settings),
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(1000, session_ms // 3),
            max_poll_interval_ms=600_000,
        )
        try:
            await producer.start()
            consumer.subscribe(list(INPUT_TOPICS), listener=_Rebalance(self))
            await consumer.start()
            log.info("outcome tracker running", group=self.group, state_topic=self.state_topic)
            while not self.stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=MAX_BATCH)
                await self._process(consumer, producer, batches)
        finally:
            self.readiness.set("outcomes", False, "stopping" if self.stop.is_set() else "Kafka session ended")
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(consumer.stop(), CLOSE_TIMEOUT_S)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(producer.stop(), CLOSE_TIMEOUT_S)
            self.tracker.forget(self.tracker.workers())
            self.partition_of.clear()

    async def _process(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, batches: dict[TopicPartition, list[Any]]
    ) -> None:
        offsets: dict[TopicPartition, int] = {}
        async with self.lock:
            await self._erase(producer)
            outcomes: list[OutcomeRecord] = []
            consumed = sum(len(records) for records in batches.values())
            self.metrics.consumed.inc(consumed)
            for tp in sorted(batches, key=lambda tp: (TOPIC_ORDER.get(tp.topic, 9), tp.partition)):
                for record in batches[tp]:
                    offsets[tp] = record.offset + 1
                    outcomes += self._feed(tp, record.value)
            await self._update_caught_up(consumer)
            outcomes += self.tracker.due(ready=self._ready)
            dirty = self.tracker.take_dirty()
            if not outcomes and not offsets and not dirty:
                return
            await self._publish(producer, outcomes)
            await self._persist_state(producer, dirty)
        # outside the lock: a commit can wait for a rebalance, whose callbacks take the lock
        if offsets:
            try:
                await consumer.commit(offsets)
            except KafkaError as error:  # rebalanced meanwhile: the new owner restores our state
                log.warning("commit refused", error=str(error)[:300])
            else:
                self.metrics.processed.inc(consumed)

    async def _erase(self, producer: AIOKafkaProducer) -> None:
        """Erased workers (privacy/services.py): forgotten and their state record tombstoned before
        the batch, so no later persist brings their state back."""
        for worker in INBOX.take("outcomes"):
            self.tracker.forget([worker])
            partition = self.partition_of.pop(worker, None)
            if partition is not None:
                tombstone = await producer.send(
                    self.state_topic, key=worker.encode(), value=None, partition=partition
                )
                await tombstone
            log.info("erasure applied", service="outcomes", worker_digest=worker_digest(worker))

    def _feed(self, tp: TopicPartition, raw: bytes | None) -> list[OutcomeRecord]:
        try:
            if tp.topic == ALERTS_PROMPTS.name:
                decision = PromptDecision.model_validate_json(raw or b"")
                self.partition_of[decision.worker_id] = tp.partition
                return self.tracker.on_prompt(decision)
            if tp.topic == ALERTS_ACK.name:
                ack = BreakAck.model_validate_json(raw or b"")
                if ack.stage != "acknowledgement":
                    return []  # our own outcomes
                self.partition_of[ack.worker_id] = tp.partition
                return self.tracker.on_ack(ack)
            window = ExposureWindow.model_validate_json(raw or b"")
            self.partition_of[window.worker_id] = tp.partition
            return self.tracker.on_window(window)
        except ValidationError as error:
            self.bad_records += 1
            self.metrics.dead_lettered("unreadable_record")
            self._errors.warning(
                f"bad-{tp.topic}", "unreadable record skipped", topic=tp.topic, error=str(error)[:300]
            )
            return []

    async def _update_caught_up(self, consumer: AIOKafkaConsumer) -> None:
        """Partitions whose three input topics are read up to the end the last fetch reported."""
        behind: set[int] = set()
        seen: set[int] = set()
        for tp in consumer.assignment():
            seen.add(tp.partition)
            highwater = consumer.highwater(tp)
            if highwater is None or await consumer.position(tp) < highwater:
                behind.add(tp.partition)
        self.caught_up = seen - behind

    def _ready(self, worker: str) -> bool:
        partition = self.partition_of.get(worker)
        return partition is not None and partition in self.caught_up

    async def _publish(self, producer: AIOKafkaProducer, outcomes: list[OutcomeRecord]) -> None:
        if not outcomes:
            return
        deliveries = [
            await producer.send(
                ALERTS_ACK.name, key=r.ack.worker_id.encode(), value=r.ack.model_dump_json().encode()
            )
            for r in outcomes
        ]
        await asyncio.gather(*deliveries)
        self.sink.add(outcome_line(r) for r in outcomes)
        try:
            await self.sink.flush(give_up_when_stopping=True)
        except SinkStopped:
            raise
        except Exception as error:
            if default_is_permanent(error) or getattr(error, "status", None) in (401, 403, 404):
                raise SinkRefused(describe(error)) from error
            raise
        finally:
            self._count_sink_failures()
        self.published += len(outcomes)
        for r in outcomes:
            log.info(
                "break outcome",
                alert_id=str(r.ack.alert_id),
                worker=r.ack.worker_id,
                outcome=r.ack.outcome,
                source=r.ack.source,
            )

    async def _persist_state(self, producer: AIOKafkaProducer, workers: Iterable[str]) -> None:
        deliveries = []
        for worker in sorted(workers):
            partition = self.partition_of.get(worker)
            state = self.tracker.export_worker(worker)
            if partition is None or state is None:
                continue
            deliveries.append(
                await producer.send(
                    self.state_topic,
                    key=worker.encode(),
                    value=state,
                    partition=partition,
                )
            )
        await asyncio.gather(*deliveries)

    async def restore(self, partitions: set[int]) -> None:
        """Read the assigned partitions of the state topic from the beginning to their end."""
        if not partitions:
            return
        started = time.monotonic()
        restored = 0
        async for partition, value in read_to_end(
            self.settings.kafka_bootstrap, self.state_topic, partitions
        ):
            try:
                worker = self.tracker.restore_worker(value)
            except ValidationError as error:
                self._errors.warning("bad-state", "unreadable state record skipped", error=str(error)[:300])
                continue
            self.partition_of[worker] = partition
            restored += 1
        log.info(
            "state restored",
            partitions=sorted(partitions),
            records=restored,
            seconds=round(time.monotonic() - started, 2),
        )

    def on_revoked(self, partitions: set[int]) -> None:
        gone = [w for w, p in self.partition_of.items() if p in partitions]
        self.tracker.forget(gone)
        for worker in gone:
            del self.partition_of[worker]
        self.caught_up -= partitions


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: OutcomeRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.runner.lock:
            self.runner.on_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.runner.lock:
            await self.runner.restore({tp.partition for tp in assigned})
        self.runner.readiness.set("outcomes", True, f"state restored, {len(assigned)} partitions")


async def run_outcomes(
    settings: Settings,
    stop: asyncio.Event,
    *,
    group: str = GROUP,
    state_topic: str = STATE_TOPIC,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    readiness: Readiness | None = None,
    metrics: ServiceMetrics | None = None,
) -> None:
    """Track break outcomes until `stop` is set (awaited by `strainwatch alerts run`)."""
    await OutcomeRunner(
        settings,
        stop,
        group=group,
        state_topic=state_topic,
        idle_timeout_s=idle_timeout_s,
        readiness=readiness,
        metrics=metrics,
    ).run()


def main() -> None:
    """`python -m strainwatch.alerts.outcome_runner`: the tracker alone (for testing; in production
    `strainwatch alerts run` awaits run_outcomes beside delivery). Stops on SIGTERM or SIGINT."""
    import signal

    from strainwatch.config import get_settings
    from strainwatch.logs import configure

    settings = get_settings()
    configure(settings.log_level, settings.log_format)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_outcomes(settings, stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
