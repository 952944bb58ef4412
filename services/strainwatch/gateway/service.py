"""`strainwatch gateway run`: MQTT devices <-> Kafka.

- `devices/+/frames` -> posture.events.v1 keyed by the bound worker (or a dead letter);
- `devices/+/ack` -> BreakAck on alerts.ack.v1;
- device.commands.v1 (group strainwatch-gateway) -> `devices/{device_id}/commands`.

Delivery: an MQTT message is acknowledged only after Kafka acknowledged its record (acks=all,
idempotent producer), and a command's offset is committed only after Mosquitto's PUBACK, so a kill
of the gateway, a Mosquitto restart or a slow Kafka can duplicate a message but never lose one
(the processor dedupes frames by event_id, devices commands by command_id). Bindings come from
roster.v1, read to its end before any frame is routed, then followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    InvalidProducerEpoch,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    UnknownProducerId,
)

from strainwatch.config import get_settings
from strainwatch.gateway.mqtt_link import Incoming, MqttLink, MqttSettings
from strainwatch.gateway.routing import (
    ACKS_SUBSCRIPTION,
    FRAMES_SUBSCRIPTION,
    Bindings,
    KafkaRecord,
    Unusable,
    commands_topic,
    is_stale,
    parse_command,
    parse_device_topic,
    route_ack,
    route_frame,
)
from strainwatch.kafka_clients import aiokafka_security
from strainwatch.logs import RateLimitedLog
from strainwatch.ops.metrics import ServiceMetrics
from strainwatch.ops.readiness import Readiness
from strainwatch.ops.retry import OutageLog, RetryPolicy, RetryStopped, describe
from strainwatch.topics import DEVICE_COMMANDS, POSTURE_DEADLETTER, ROSTER

log = structlog.get_logger("strainwatch.gateway")

COMMANDS_GROUP = "strainwatch-gateway"
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 10.0
# on SIGTERM, frames already on their way to Kafka get this long to be acknowledged (fewer
# redeliveries after a restart); the whole stop stays well within 30 s
DRAIN_S = 5.0
CLOSE_TIMEOUT_S = 5.0
# Kafka's state for /readyz: a request to the broker every PROBE_INTERVAL_S (a consumer's fetches
# and a producer's sends do not fail at once while the broker is gone)
PROBE_INTERVAL_S = 2.0
PROBE_TIMEOUT_S = 5.0
# the retry policy of every Kafka call (ops/retry.py: tenacity, exponential, capped, outage logged
# once, a reminder at most every 60 s, its end once)
KAFKA_RETRY = RetryPolicy(initial_s=BACKOFF_START_S, cap_s=BACKOFF_MAX_S)
# readiness checks: Kafka reachable (producer ready), MQTT connected, roster read to its end
# An idempotent producer cannot send again after these (measured: after a minute without Kafka,
# batches that expired unsent leave gaps in its sequence numbers and every later batch is refused
# with OutOfOrderSequenceNumber): a new producer (a new producer id) takes over. Records the old
# one got acknowledged are not sent again; the ones it lost never reached a partition.
PRODUCER_BROKEN = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    ProducerFenced,
    ProducerClosed,
)
CHECKS = ("kafka", "mqtt", "roster")

T = TypeVar("T")


class Gateway:
    def __init__(
        self,
        bootstrap: str,
        mqtt: MqttSettings,
        clock: Callable[[], datetime] | None = None,
        *,
        readiness: Readiness | None = None,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.readiness = readiness if readiness is not None else Readiness()
        for check in CHECKS:
            self.readiness.expect(check)
        self.metrics = metrics if metrics is not None else ServiceMetrics("gateway")
        self._kafka_outage = OutageLog(log, "kafka")
        self._send_failing = 0  # forwards whose last attempt failed (Kafka not ready for them)
        self._seq = itertools.count()
        self._inflight: dict[int, float] = {}  # frames waiting for Kafka: token -> received (monotonic)
        self.metrics.read_checkpoint_age(self._oldest_inflight_age)
        self.bootstrap = bootstrap
        self.mqtt_settings = mqtt
        self.bindings = Bindings()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._stopping = asyncio.Event()
        self._incoming: asyncio.Queue[Incoming] = asyncio.Queue()
        self._forwarding: set[asyncio.Task[None]] = set()
        self._warn = RateLimitedLog(log, interval_s=60.0)
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()
        self._link: MqttLink | None = None
        self.counters: dict[str, int] = {
            "frames": 0,
            "dead_letters": 0,
            "acks": 0,
            "commands": 0,
            "dropped": 0,
        }

    def stop(self) -> None:
        self._stopping.set()

    # --- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        producer = await self._retry("Kafka producer", self._start_producer)
        if producer is None:
            return
        self._producer = producer
        roster = await self._retry("roster consumer", self._start_roster)
        if roster is None:
            await self._close(producer.stop())
            return
        commands: AIOKafkaConsumer | None = None
        tasks: list[asyncio.Task[None]] = []
        try:
            if not await self._read_roster_to_end(roster):
                return
            self.readiness.set("roster", True, f"{len(self.bindings)} bound devices")
            log.info("roster read", bound_devices=len(self.bindings))
            self._link = MqttLink(
                self.mqtt_settings,
                loop,
                self._incoming.put_nowait,
                [FRAMES_SUBSCRIPTION, ACKS_SUBSCRIPTION],
            )
            self._link.start()
            commands = await self._retry("commands consumer", self._start_commands)
            if commands is None:
                return
            tasks = [
                asyncio.create_task(self._follow_roster(roster), name="roster"),
                asyncio.create_task(self._dispatch(), name="dispatch"),
                asyncio.create_task(self._relay_commands(commands), name="commands"),
                asyncio.create_task(self._monitor(roster, commands), name="monitor"),
            ]
            log.info(
                "gateway running",
                bootstrap=self.bootstrap,
                mqtt=f"{self.mqtt_settings.host}:{self.mqtt_settings.port}",
            )
            await self._stopping.wait()
        finally:
            await self._shutdown(tasks, self._producer or producer, roster, commands)

    async def _shutdown(
        self,
        tasks: list[asyncio.Task[None]],
        producer: AIOKafkaProducer,
        roster: AIOKafkaConsumer,
        commands: AIOKafkaConsumer | None,
    ) -> None:
        log.info("gateway stopping", in_flight=len(self._forwarding))
        self.readiness.set("stopping", False, "SIGTERM: stopping")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._forwarding:  # let records already sent to Kafka be acknowledged to their devices
            await asyncio.wait(set(self._forwarding), timeout=DRAIN_S)
        for task in list(self._forwarding):
            task.cancel()  # not acknowledged: Mosquitto redelivers them to the next gateway
        await asyncio.gather(*self._forwarding, return_exceptions=True)
        if self._link is not None:
            await asyncio.to_thread(self._link.stop)
        # concurrently: each waits at most CLOSE_TIMEOUT_S, so the whole stop stays far below 30 s
        clients: list[AIOKafkaConsumer | AIOKafkaProducer] = [roster, producer]
        if commands is not None:
            clients.append(commands)
        await asyncio.gather(*(self._close(client.stop()) for client in clients))
        log.info("gateway stopped", **self.counters)

    async def _close(self, closing: Awaitable[Any]) -> None:
        # aiokafka's stop() with the broker gone can raise a CancelledError of its own fetch tasks
        # (measured): closing is best effort, nothing cancels the gateway's own shutdown
        try:
            await asyncio.wait_for(closing, CLOSE_TIMEOUT_S)
        except (Exception, asyncio.CancelledError) as error:
            log.warning("closing a Kafka client failed", error=repr(error))

    async def _retry(self, what: str, start: Callable[[], Awaitable[T]]) -> T | None:
        """Start a Kafka client, backing off while the broker is unavailable; None when stopping."""
        try:
            return await KAFKA_RETRY.call(
                start,
                what="kafka",
                logger=log,
                stop=self._stopping,
                retry_on=(KafkaError, OSError),
                readiness=self.readiness,
                check="kafka",
                outage=self._kafka_outage,
            )
        except RetryStopped:
            return None

    async def _monitor(self, roster: AIOKafkaConsumer, commands: AIOKafkaConsumer) -> None:
        """/readyz and the lag gauge: MQTT from the link; Kafka by asking the broker for the roster's
        and the commands' end offsets (the commands' lag is their end minus the group's position)."""
        while True:
            link = self._link
            if link is not None:
                connected = link.connected
                self.readiness.set(
                    "mqtt", connected, "connected" if connected else "MQTT broker unreachable; reconnecting"
                )
            try:
                lag = await asyncio.wait_for(self._probe_kafka(roster, commands), PROBE_TIMEOUT_S)
            except (KafkaError, OSError, TimeoutError) as error:
                failure = error if str(error) else KafkaError("no answer from the broker")
                self._kafka_outage.failure(failure)
                self.readiness.set("kafka", False, f"broker unreachable: {describe(failure)}")
            else:
                self.metrics.consumer_lag.set(lag)
                if self._send_failing:
                    self.readiness.set("kafka", False, "records not acknowledged by Kafka; retrying")
                else:
                    self._kafka_outage.recovered()
                    self.readiness.set("kafka", True, "producer ready")
            await asyncio.sleep(PROBE_INTERVAL_S)

    async def _probe_kafka(self, roster: AIOKafkaConsumer, commands: AIOKafkaConsumer) -> int:
        await roster.end_offsets(list(roster.assignment()))
        tps = list(commands.assignment())
        if not tps:
            return 0
        ends = await commands.end_offsets(tps)
        lag = 0
        for tp in tps:
            lag += max(0, ends[tp] - await commands.position(tp))
        return lag

    def _oldest_inflight_age(self) -> float:
        """checkpoint age: how long the oldest frame not yet acknowledged by Kafka has waited."""
        if not self._inflight:
            return 0.0
        return max(0.0, time.monotonic() - min(self._inflight.values()))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _renew_producer(self, broken: AIOKafkaProducer, error: BaseException) -> None:
        """Replace a producer that cannot send any more (PRODUCER_BROKEN), once for all senders."""
        async with self._producer_lock:
            if id(self._producer) != id(broken):
                return  # another sender renewed it already
            log.warning("kafka producer renewed", error=describe(error))
            renewed = await self._retry("Kafka producer", self._start_producer)
            if renewed is None:
                return  # stopping
            self._producer = renewed
        await self._close(broken.stop())

    async def _start_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            **aiokafka_security(),
            acks="all",
            enable_idempotence=get_settings().kafka_idempotence,
            linger_ms=5,
            max_request_size=4 * 1024 * 1024,  # dead letters of the largest frames (topics.py)
            request_timeout_ms=30_000,
        )
        try:
            await producer.start()
        except BaseException:
            await self._close(producer.stop())
            raise
        return producer

    async def _start_roster(self) -> AIOKafkaConsumer:
        # subscribed without a group: aiokafka assigns every partition of the topic to it
        consumer = AIOKafkaConsumer(
            ROSTER.name,
            bootstrap_servers=self.bootstrap,
            **aiokafka_security(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        try:
            await consumer.start()
            deadline = asyncio.get_running_loop().time() + 15
            while not consumer.assignment():
                if asyncio.get_running_loop().time() > deadline:
                    raise KafkaError(f"topic {ROSTER.name} does not exist (run `strainwatch stack topics`)")
                await asyncio.sleep(0.1)
            await consumer.seek_to_beginning()
        except BaseException:
            await self._close(consumer.stop())
            raise
        return consumer

    async def _start_commands(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            DEVICE_COMMANDS.name,
            bootstrap_servers=self.bootstrap,
            **aiokafka_security(),
            group_id=COMMANDS_GROUP,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # stale ones are dropped by age, not missed by a race
        )
        try:
            await consumer.start()
        except BaseException:
            await self._close(consumer.stop())
            raise
        return consumer

    # --- roster ------------------------------------------------------------------------------

    async def _read_roster_to_end(self, roster: AIOKafkaConsumer) -> bool:
        """Every binding before the first frame: a frame routed on a partial roster would be
        dead-lettered as unbound for nothing."""
        delay = BACKOFF_START_S
        while not self._stopping.is_set():
            try:
                tps = list(roster.assignment())
                ends = await roster.end_offsets(tps)
                while not self._stopping.is_set():
                    positions = {tp: await roster.position(tp) for tp in tps}
                    if all(positions[tp] >= ends[tp] for tp in tps):
                        return True
                    self._apply_roster(await roster.getmany(timeout_ms=500, max_records=5_000))
            except KafkaError as error:
                self._warn.warning("roster", "reading the roster failed; retrying", error=str(error))
                await self._sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
        return False

    async def _follow_roster(self, roster: AIOKafkaConsumer) -> None:
        while True:
            try:
                self._apply_roster(await roster.getmany(timeout_ms=1_000, max_records=5_000))
            except KafkaError as error:
                self._warn.warning("roster", "following the roster failed; retrying", error=str(error))
                await self._sleep(BACKOFF_MAX_S / 2)

    def _apply_roster(self, batch: dict[TopicPartition, list[Any]]) -> None:
        for records in batch.values():
            for record in records:
                if not self.bindings.apply(record.key, record.value):
                    self._warn.warning(
                        "roster-entry", "unreadable roster entry ignored", offset=record.offset
                    )

    # --- device -> Kafka ---------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            message = await self._incoming.get()
            self.metrics.consumed.inc()
            try:
                record = self._route(message)
            except Exception as error:  # never crash on data
                self._warn.warning("route", "message could not be routed; dropped", error=repr(error))
                self.metrics.dead_lettered("unroutable")
                record = None
            if record is None:
                self._ack(message)
                continue
            if record.topic == POSTURE_DEADLETTER.name:
                self.metrics.dead_lettered(_reason_of(record.value))
            token = next(self._seq)
            self._inflight[token] = message.received or time.monotonic()
            task = asyncio.create_task(self._forward(message, record, token))
            self._forwarding.add(task)
            task.add_done_callback(self._forwarding.discard)

    def _route(self, message: Incoming) -> KafkaRecord | None:
        parsed = parse_device_topic(message.topic)
        if parsed is None:
            self._drop("topic", f"unexpected topic {message.topic}")
            return None
        device_id, kind = parsed
        if kind == "frames":
            record = route_frame(device_id, message.topic, message.payload, self.bindings, self._clock())
            self.counters["frames" if record.topic != "posture.deadletter.v1" else "dead_letters"] += 1
            return record
        if kind == "ack":
            try:
                record = route_ack(device_id, message.payload, self.bindings)
            except Unusable as reason:
                self._drop("ack", str(reason))
                return None
            self.counters["acks"] += 1
            return record
        self._drop("topic", f"unexpected topic {message.topic}")
        return None

    def _drop(self, key: str, detail: str) -> None:
        self.counters["dropped"] += 1
        self.metrics.dead_lettered(f"dropped_{key.replace('-', '_')}")
        self._warn.warning(f"drop:{key}", "device message dropped", detail=detail[:300])

    async def _forward(self, message: Incoming, record: KafkaRecord, token: int) -> None:
        try:
            stored = await self._send(record)
        finally:
            self._inflight.pop(token, None)
        if stored:
            self.metrics.processed.inc()
            if message.received:  # device frame received from MQTT -> Kafka's acknowledgement
                self.metrics.end_to_end_delay.observe(time.monotonic() - message.received)
        # acknowledged also when refused for good: redelivering it would fail the same way forever
        self._ack(message)

    def _ack(self, message: Incoming) -> None:
        if self._link is not None:
            self._link.ack(message)

    async def _send(self, record: KafkaRecord) -> bool:
        """Retries until Kafka acknowledges the record; False only if it is refused for good."""
        failing = False

        async def attempt() -> None:
            nonlocal failing
            renewals = 0
            while True:
                producer = self._producer
                assert producer is not None
                try:
                    delivery = await producer.send(record.topic, record.value, key=record.key)
                    await delivery
                    return
                except (MessageSizeTooLargeError, asyncio.CancelledError):
                    raise
                except Exception as error:  # KafkaError, or a producer in a state it cannot send from
                    self.metrics.sink_write_errors.inc()
                    if not failing:
                        failing = True
                        self._send_failing += 1
                    if isinstance(error, PRODUCER_BROKEN) and renewals < 3:
                        # not an outage: the record goes again at once on a new producer
                        renewals += 1
                        await self._renew_producer(producer, error)
                        continue
                    self.readiness.set("kafka", False, f"records not acknowledged: {describe(error)}")
                    raise

        try:
            # never gives up on a retryable error: the MQTT message stays unacknowledged meanwhile
            await KAFKA_RETRY.call(
                attempt,
                what="kafka",
                logger=log,
                is_permanent=lambda error: isinstance(error, MessageSizeTooLargeError),
                outage=self._kafka_outage,
            )
            return True
        except MessageSizeTooLargeError as error:  # Mosquitto's max_packet_size keeps this away
            log.error("record refused by Kafka for its size; dropped", topic=record.topic, error=str(error))
            self.metrics.dead_lettered("kafka_refused_size")
            return False
        finally:
            if failing:
                self._send_failing -= 1

    # --- Kafka -> devices --------------------------------------------------------------------

    async def _relay_commands(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=1_000, max_records=500)
            except KafkaError as error:
                self._warn.warning("commands", "reading commands failed; retrying", error=str(error))
                await self._sleep(BACKOFF_MAX_S / 2)
                continue
            self.metrics.consumed.inc(sum(len(records) for records in batch.values()))
            for tp, records in batch.items():
                try:
                    await self._relay_batch(consumer, tp, records)
                except CommitFailedError as error:  # rebalanced meanwhile: the records come again
                    self._warn.warning(
                        "commit", "command offsets not committed; resent later", error=str(error)
                    )
                except (KafkaError, RuntimeError) as error:
                    # not committed: read them again (commands are idempotent by command_id)
                    self._warn.warning("commands", "relaying commands failed; retrying", error=str(error))
                    consumer.seek(tp, records[0].offset)
                    await self._sleep(BACKOFF_START_S)

    async def _relay_batch(self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[Any]) -> None:
        assert self._link is not None
        publishes = []
        for record in records:
            try:
                command = parse_command(record.value)
            except Unusable as reason:
                self._drop("command", str(reason))
                continue
            if is_stale(command, self._clock()):
                self._drop("stale-command", f"command {command.command_id} of {command.ts} is stale")
                continue
            publishes.append(self._link.publish(commands_topic(command.device_id), record.value))
        # committed only once Mosquitto has every command of the batch (PUBACK)
        await asyncio.gather(*publishes)
        self.counters["commands"] += len(publishes)
        await consumer.commit({tp: records[-1].offset + 1})
        self.metrics.processed.inc(len(publishes))


def _reason_of(letter: bytes) -> str:
    """A dead letter's reason code (the gateway's own letters: always readable JSON)."""
    try:
        reason = orjson.loads(letter).get("reason")
    except (orjson.JSONDecodeError, AttributeError):
        return "unknown"
    return reason if isinstance(reason, str) else "unknown"
