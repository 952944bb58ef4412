"""The delivery loop: alerts.break.v1 -> policy -> device commands, channel messages, decisions,
InfluxDB points -> state -> offsets (docs/alerting.md).

Per batch, in this order (a kill can land between any two steps):
1. decide every alert of the batch (policy.decide, in memory);
2. deliver: device commands and channel messages of the sent ones;
3. publish a PromptDecision per decision and write its `break_prompt` point;
4. persist the state of every worker the batch touched to alerts.state.v1 (same partition);
5. commit the batch's offsets.
A kill before 2 re-decides the same alerts after the restart and delivers them once. A kill between
2 and 4 delivers again after the restart: the device command keeps its command_id (uuid5 of the
alert id) so a device drops the repeat; a channel message is sent twice.

A batch whose decisions reached alerts.prompts.v1 but whose state did not (Kafka went away or the
process died between 3 and 4) is not decided twice: restoring a partition also reads the last
RECENT_DECISIONS decisions of the same partition of alerts.prompts.v1 (co-partitioned by worker,
written only by this service), and an alert found there is recorded as decided without a second
decision, command or message.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from kafka.errors import KafkaError as KafkaPythonError
from pydantic import ValidationError

from strainwatch.alerts import policy as pol
from strainwatch.alerts.channels import ChannelsConfig
from strainwatch.alerts.messages import describe
from strainwatch.alerts.notify import ChannelSender
from strainwatch.alerts.state import from_record, to_record
from strainwatch.alerts.state_topic import read_to_end
from strainwatch.config import Settings
from strainwatch.events import (
    BreakAlert,
    DeviceCommand,
    PromptDecision,
    Rejected,
    RosterEntry,
    parse_frame,
)
from strainwatch.exposure.thresholds import load_thresholds
from strainwatch.kafka_clients import aiokafka_security
from strainwatch.logs import RateLimitedLog
from strainwatch.ops.metrics import ServiceMetrics
from strainwatch.ops.readiness import Readiness
from strainwatch.ops.retry import OutageLog, RetryPolicy, RetryStopped, default_is_permanent
from strainwatch.ops.retry import describe as describe_error
from strainwatch.privacy.services import INBOX, worker_digest
from strainwatch.processor.sink import InfluxSink, SinkStopped
from strainwatch.storage.measurements import break_prompt_line
from strainwatch.topics import (
    ALERTS_BREAK,
    ALERTS_PROMPTS,
    ALERTS_STATE,
    DEVICE_COMMANDS,
    POSTURE_EVENTS,
    ROSTER,
)

log = structlog.get_logger("strainwatch.alerts")

GROUP = "strainwatch-alerting"
MAX_BATCH = 500
# decisions read back from the end of each restored partition of alerts.prompts.v1: a batch's
# decisions plus late ones, with room to spare
RECENT_DECISIONS = 4 * MAX_BATCH
# Test hook: when set, the service writes this file and waits (for a kill) before delivering a batch.
PAUSE_HOOK_ENV = "STRAINWATCH_ALERTS_PAUSE_BEFORE_DELIVERY"
# A pending nudge is dropped by the wall clock this long after its wait ended when no frame says so.
PENDING_GRACE_S = 5.0
STOP_GRACE_S = 15.0  # a batch in progress at SIGTERM may finish within this
CLOSE_TIMEOUT_S = 5.0  # closing a Kafka client with the broker gone
# /readyz and lag: a request to the broker every PROBE_INTERVAL_S (a consumer's fetches do not
# fail while the broker is gone, they just return nothing)
PROBE_INTERVAL_S = 2.0
PROBE_TIMEOUT_S = 5.0
# sessions restart through ops/retry.py (tenacity: exponential, capped, outage logged once)
KAFKA_RETRY = RetryPolicy(initial_s=0.5, cap_s=10.0)


def command_id(alert_id: uuid.UUID) -> uuid.UUID:
    """Deterministic: a command delivered twice (kill between delivery and state) is recognisably one."""
    return uuid.uuid5(alert_id, "command")


def _now() -> datetime:
    return datetime.now(UTC)


class Stopping(Exception):
    """The service was asked to stop while it waited for Kafka."""


class SinkRefused(Exception):
    """InfluxDB refused a write for good (401/403/404): retrying cannot fix it."""

    retryable = False


@dataclass
class DeliveryStats:
    decided: int = 0
    sent: int = 0
    suppressed: int = 0
    commands: int = 0
    channel_ok: int = 0
    channel_failed: int = 0
    bad_alerts: int = 0


@dataclass
class _Outcome:
    decision: pol.Decision
    roster: RosterEntry | None
    channels_ok: int = 0
    channels_failed: int = 0
    device_id: str | None = None
    routine_id: str | None = None


@dataclass
class WorkerBook:
    """In-memory state of the workers of the assigned partitions."""

    states: dict[str, pol.WorkerPolicyState] = field(default_factory=dict)
    partition_of: dict[str, int] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)

    def state(self, worker: str, partition: int) -> pol.WorkerPolicyState:
        self.partition_of[worker] = partition
        return self.states.setdefault(worker, pol.WorkerPolicyState())

    def drop_partitions(self, partitions: set[int]) -> None:
        for worker in [w for w, p in self.partition_of.items() if p in partitions]:
            self.states.pop(worker, None)
            self.partition_of.pop(worker, None)
            self.dirty.discard(worker)


class DeliveryService:
    def __init__(
        self,
        settings: Settings,
        config: ChannelsConfig,
        stop: asyncio.Event,
        *,
        readiness: Readiness | None = None,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.readiness = readiness if readiness is not None else Readiness()
        self.readiness.expect("kafka")
        self.readiness.expect("delivery", "state not restored yet")
        self.metrics = metrics if metrics is not None else ServiceMetrics("alerting")
        self._outage = OutageLog(log, "kafka")
        self._uncommitted_since: float | None = None  # monotonic: first consumed record not committed
        self.metrics.read_checkpoint_age(self._checkpoint_age)
        self._lag = 0
        self._sink_failures_seen = 0
        self._rebalanced = False
        # alert id -> its decision, read back from alerts.prompts.v1 at restore (see module doc)
        self._published: dict[str, PromptDecision] = {}
        self.settings = settings
        self.config = config
        self.stop = stop
        self.book = WorkerBook()
        self.roster: dict[str, RosterEntry] = {}
        self.stats = DeliveryStats()
        self.senders = {c.url: ChannelSender(c) for c in config.all_channels()}
        thresholds = load_thresholds(settings.thresholds)
        self.zones = {
            name: (seg.acceptable_max, seg.symmetric, seg.negative_not_acceptable)
            for name, seg in thresholds.segments.items()
        }
        self.neutral_wanted = config.defaults.nudge_when_neutral or any(
            s.nudge_when_neutral or any(t.nudge_when_neutral for t in s.teams.values())
            for s in config.sites.values()
        )
        self.sink = InfluxSink(
            settings.influx_url,
            settings.influx_token.get_secret_value(),
            settings.influx_org,
            settings.influx_bucket,
            # the sink sets `influx` itself: not ok while writes retry, fatal on 401/403/404
            readiness=self.readiness,
            check="influx",
        )
        self._late: list[tuple[str, pol.Decision]] = []  # decided by posture frames or the clock
        self._errors = RateLimitedLog(log, interval_s=10.0)
        self._assigned: set[int] = set()
        self._restored_partitions: set[int] = set()  # assigned partitions whose state is in memory
        INBOX.subscribe("delivery")  # erased workers (strainwatch privacy erase)
        self._posture: AIOKafkaConsumer | None = None

    # ---- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    # a session ends by an error (Kafka gone, a send that timed out): the policy
                    # backs off and starts a new one, which restores the state from alerts.state.v1
                    await KAFKA_RETRY.call(
                        self._session,
                        what="kafka",
                        logger=log,
                        stop=self.stop,
                        retry_on=(KafkaError, KafkaPythonError, OSError),
                        readiness=self.readiness,
                        check="kafka",
                        outage=self._outage,
                    )
                except (Stopping, RetryStopped):
                    break
                except SinkRefused as error:
                    # fatal on /readyz, said once; nothing is consumed or committed until a restart
                    # with a fixed configuration (the batch is decided again then)
                    log.warning("halted", part="delivery", reason=str(error))  # the sink logged the error
                    self.readiness.set("influx", False, str(error), fatal=True)
                    await self.stop.wait()
        finally:
            self.sink.request_stop()
            await self.sink.close()
            log.info("delivery stopped", **self.stats.__dict__)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def _session(self) -> None:
        bootstrap = self.settings.kafka_bootstrap
        session_ms = int(self.settings.broker_session_timeout_s * 1000)
        self.readiness.set("delivery", False, "starting a Kafka session")
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            **aiokafka_security(self.settings),
            acks="all",
            linger_ms=5,
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            **aiokafka_security(self.settings),
            group_id=GROUP,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(1000, session_ms // 3),
            max_poll_interval_ms=600_000,
        )
        roster_task: asyncio.Task[None] | None = None
        posture_task: asyncio.Task[None] | None = None
        monitor: asyncio.Task[None] | None = None
        self._rebalanced = False
        try:
            await producer.start()
            roster_ready = asyncio.Event()
            roster_task = asyncio.create_task(self._follow_roster(roster_ready), name="roster")
            await self._wait_or_stop(roster_ready, roster_task)
            consumer.subscribe([ALERTS_BREAK.name], listener=_Rebalance(self))
            await consumer.start()
            if self.neutral_wanted:
                posture_task = asyncio.create_task(self._follow_posture(), name="posture")
            log.info("delivery running", group=GROUP, channels=len(self.senders))
            monitor = asyncio.create_task(self._monitor(consumer), name="monitor")
            while not self.stop.is_set():
                for task in (roster_task, posture_task):
                    _raise_if_failed(task)  # a helper that died takes the session down (restart)
                batches = await consumer.getmany(timeout_ms=500, max_records=MAX_BATCH)
                await self._until_stopped(self._process(consumer, producer, batches))
        finally:
            self.readiness.set("delivery", False, "stopping" if self.stop.is_set() else "Kafka session ended")
            for task in (roster_task, posture_task, monitor):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            # bounded: with the broker gone a close can wait for requests that never complete
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(consumer.stop(), CLOSE_TIMEOUT_S)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(producer.stop(), CLOSE_TIMEOUT_S)
            self._uncommitted_since = None
            self._published = {}
            self.book = WorkerBook()
            self._assigned = set()
            self._restored_partitions = set()

    async def _until_stopped(self, work: Awaitable[None]) -> None:
        """Run one batch; once asked to stop, give it STOP_GRACE_S, then abandon it uncommitted
        (a restart decides it again) so the process exits within 30 s of SIGTERM."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.create_task(self.stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                self.sink.request_stop()  # a flush waiting for InfluxDB gives up
                await asyncio.wait({task}, timeout=STOP_GRACE_S)
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                log.warning("stopping: batch abandoned before its commit")
                raise Stopping
            task.result()
        finally:
            stopper.cancel()

    async def _monitor(self, consumer: AIOKafkaConsumer) -> None:
        """/readyz and the lag gauge: asks the broker for the assigned partitions' end offsets."""
        while True:
            try:
                await asyncio.wait_for(self._probe(consumer), PROBE_TIMEOUT_S)
            except (KafkaError, OSError, TimeoutError) as error:
                failure = error if str(error) else KafkaError("no answer from the broker")
                self._outage.failure(failure)
                self.readiness.set("kafka", False, f"broker unreachable: {describe_error(failure)}")
            else:
                self._outage.recovered()
                self.readiness.set("kafka", True, "connected")
            self._count_sink_failures()
            await asyncio.sleep(PROBE_INTERVAL_S)

    async def _probe(self, consumer: AIOKafkaConsumer) -> None:
        tps = sorted(consumer.assignment())
        if not tps:
            await consumer.topics()  # a metadata request
            self._lag = 0
            return
        ends = await consumer.end_offsets(tps)
        lag = 0
        for tp in tps:
            lag += max(0, ends[tp] - await consumer.position(tp))
        self._lag = lag
        self.metrics.consumer_lag.set(self._lag)

    def _count_sink_failures(self) -> None:
        failures = self.sink.write_failures
        if failures > self._sink_failures_seen:
            self.metrics.sink_write_errors.inc(failures - self._sink_failures_seen)
        self._sink_failures_seen = failures

    def _checkpoint_age(self) -> float:
        since = self._uncommitted_since
        return 0.0 if since is None else max(0.0, time.monotonic() - since)

    async def _flush_sink(self) -> None:
        try:
            await self.sink.flush(give_up_when_stopping=True)
        except SinkStopped:
            raise Stopping from None
        except Exception as error:
            if default_is_permanent(error) or _refused_for_good(error):
                raise SinkRefused(describe_error(error)) from error
            raise
        self._count_sink_failures()

    async def _wait_or_stop(self, event: asyncio.Event, task: asyncio.Task[None]) -> None:
        stop = asyncio.create_task(self.stop.wait())
        ready = asyncio.create_task(event.wait())
        await asyncio.wait({stop, ready, task}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        ready.cancel()
        if self.stop.is_set():
            raise Stopping
        _raise_if_failed(task)

    async def _process(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, batches: dict[TopicPartition, list[Any]]
    ) -> None:
        await self._restore_missing()
        await self._erase(producer)
        if self._rebalanced:
            self.readiness.set("delivery", True, f"state restored, {len(self._assigned)} partitions")
        outcomes: list[_Outcome] = []
        offsets: dict[TopicPartition, int] = {}
        consumed = 0
        for tp, records in batches.items():
            if tp.partition not in self._assigned:
                continue  # fetched before a rebalance took it away: its new owner decides these
            consumed += len(records)
            if records and self._uncommitted_since is None:
                self._uncommitted_since = time.monotonic()
            for record in records:
                offsets[tp] = record.offset + 1
                outcome = self._decide(record.value, tp.partition)
                if outcome is not None:
                    outcomes.append(outcome)
        outcomes.extend(self._late_outcomes())
        if not outcomes and not offsets:
            return
        if outcomes:
            self._pause_hook()
            await self._deliver(producer, outcomes)
        elif len(self.sink):
            await self._flush_sink()  # points of decisions read back at a restore
        self.metrics.consumed.inc(consumed)
        await self._persist(producer)
        if offsets:
            try:
                await consumer.commit(offsets)
            except KafkaError as error:  # rebalanced meanwhile: the new owner restores our state
                log.warning("commit refused", error=str(error)[:300])
            else:
                self._uncommitted_since = None
                self.metrics.processed.inc(consumed)

    async def _erase(self, producer: AIOKafkaProducer) -> None:
        """Erased workers (privacy/services.py): forgotten, their state record tombstoned, before
        this batch decides anything, so no later persist brings their state back."""
        for worker in INBOX.take("delivery"):
            partition = self.book.partition_of.pop(worker, None)
            self.book.states.pop(worker, None)
            self.book.dirty.discard(worker)
            self._late = [(w, d) for w, d in self._late if w != worker]
            if partition is not None:
                tombstone = await producer.send(
                    ALERTS_STATE.name, key=worker.encode(), value=None, partition=partition
                )
                await tombstone
            log.info("erasure applied", service="delivery", worker_digest=worker_digest(worker))

    # ---- decide ---------------------------------------------------------------------------
    def _decide(self, raw: bytes | None, partition: int) -> _Outcome | None:
        try:
            alert = BreakAlert.model_validate_json(raw or b"")
        except ValidationError as error:
            self.stats.bad_alerts += 1
            self.metrics.dead_lettered("unreadable_alert")
            self._errors.warning("bad-alert", "unreadable alert skipped", error=str(error)[:300])
            return None
        worker = alert.worker_id
        roster = self.roster.get(worker)
        team = alert.team or (roster.team if roster else None)
        policy = self.config.policy(alert.site_id, team)
        state = self.book.state(worker, partition)
        if self._already_published(alert, state):
            self.book.dirty.add(worker)
            return None
        result = pol.decide(alert, roster, policy, state, now=time.time())
        self.book.dirty.add(worker)
        if isinstance(result, pol.PendingNudge):
            return None  # decided later by the worker's frames or the clock
        return _Outcome(result, roster)

    def _already_published(self, alert: BreakAlert, state: pol.WorkerPolicyState) -> bool:
        """The alert's decision is on alerts.prompts.v1 but not in the restored state: record it as
        decided (and a sent nudge in the budget), and decide nothing again."""
        alert_id = str(alert.alert_id)
        published = self._published.pop(alert_id, None)
        if published is None:  # holds only decisions the restored state did not know
            return False
        state.pending.pop(alert_id, None)
        counted = alert_id in state.decided  # a waiting nudge, settled at the restore
        state.decided[alert_id] = pol.epoch(alert.ts)
        if published.status == "sent" and published.kind == "posture_hold" and not counted:
            bisect.insort(state.nudges_sent, pol.epoch(alert.ts))
        self._write_point(published)  # its batch may have ended before its point was written
        log.info("already decided before a restart", alert_id=alert_id, status=published.status)
        return True

    def _write_point(self, decision: PromptDecision) -> None:
        """A decision's `break_prompt` point (same series and time: writing it again replaces it)."""
        self.sink.add(
            [
                break_prompt_line(
                    decision.site_id,
                    decision.team,
                    decision.worker_id,
                    decision.kind,
                    decision.segment,
                    decision.status,
                    decision.reason,
                    str(decision.alert_id),
                    decision.channels_ok,
                    decision.channels_failed,
                    pol.epoch(decision.alert_ts),
                )
            ]
        )

    def _late_outcomes(self) -> list[_Outcome]:
        now = time.time() - PENDING_GRACE_S
        for worker, state in self.book.states.items():
            if state.pending:
                alert = next(iter(state.pending.values())).alert
                policy = self.config.policy(alert.site_id, alert.team or self._team(worker))
                for decision in pol.expire_pending(state, policy, now):
                    self._late.append((worker, decision))
        late, self._late = self._late, []
        out = []
        for worker, decision in late:
            self.book.dirty.add(worker)
            out.append(_Outcome(decision, self.roster.get(worker)))
        return out

    def _team(self, worker: str) -> str | None:
        entry = self.roster.get(worker)
        return entry.team if entry else None

    def _pause_hook(self) -> None:
        path = os.environ.get(PAUSE_HOOK_ENV)
        if path:
            Path(path).write_text("paused before delivery\n")
            log.warning("test hook: paused before delivery, waiting to be killed")
            while True:
                time.sleep(1)  # blocks the loop on purpose: nothing may happen until the kill

    # ---- deliver --------------------------------------------------------------------------
    async def _deliver(self, producer: AIOKafkaProducer, outcomes: list[_Outcome]) -> None:
        deliveries: list[Awaitable[Any]] = []
        channel_jobs = []
        for outcome in outcomes:
            alert = outcome.decision.alert
            routine, text, message = describe(alert)
            outcome.routine_id = routine.routine_id if routine else None
            if outcome.decision.status != "sent":
                continue
            device = outcome.roster.device_id if outcome.roster and outcome.roster.active else None
            if device:
                outcome.device_id = device
                command = DeviceCommand(
                    schema_version=1,
                    command_id=command_id(alert.alert_id),
                    worker_id=alert.worker_id,
                    device_id=device,
                    ts=_now(),
                    command="haptic_nudge" if alert.kind == "posture_hold" else "break_prompt",
                    haptic="nudge" if alert.kind == "posture_hold" else "break",
                    alert_id=alert.alert_id,
                    text=text,
                    routine_id=outcome.routine_id,
                )
                deliveries.append(
                    await self._send(
                        producer, DEVICE_COMMANDS.name, alert.worker_id, command.model_dump_json()
                    )
                )
                self.stats.commands += 1
            team = alert.team or (outcome.roster.team if outcome.roster else None)
            for channel in self.config.channels(alert.site_id, team, alert.kind):
                channel_jobs.append((outcome, self.senders[channel.url].send(message.title, message.body)))
        if channel_jobs:
            results = await asyncio.gather(*(job for _, job in channel_jobs))
            for (outcome, _), ok in zip(channel_jobs, results, strict=True):
                if ok:
                    outcome.channels_ok += 1
                else:
                    outcome.channels_failed += 1
        for outcome in outcomes:
            deliveries.append(await self._publish_decision(producer, outcome))
        await self._await_all(deliveries)
        await self._flush_sink()

    async def _publish_decision(self, producer: AIOKafkaProducer, outcome: _Outcome) -> Awaitable[Any]:
        decision = outcome.decision
        alert = decision.alert
        team = alert.team or (outcome.roster.team if outcome.roster else None)
        prompt = PromptDecision(
            schema_version=1,
            alert_id=alert.alert_id,
            worker_id=alert.worker_id,
            site_id=alert.site_id,
            team=team,
            kind=alert.kind,
            ts=_now(),
            alert_ts=alert.ts,
            segment=alert.segment,
            status=decision.status,
            reason=decision.reason,
            device_id=outcome.device_id,
            routine_id=outcome.routine_id,
            channels_ok=outcome.channels_ok,
            channels_failed=outcome.channels_failed,
        )
        self.sink.add(
            [
                break_prompt_line(
                    alert.site_id,
                    team,
                    alert.worker_id,
                    alert.kind,
                    alert.segment,
                    decision.status,
                    decision.reason,
                    str(alert.alert_id),
                    outcome.channels_ok,
                    outcome.channels_failed,
                    pol.epoch(alert.ts),
                )
            ]
        )
        self.stats.decided += 1
        # the alert's event time -> its decision
        self.metrics.end_to_end_delay.observe(max(0.0, time.time() - pol.epoch(alert.ts)))
        if decision.status == "sent":
            self.stats.sent += 1
        else:
            self.stats.suppressed += 1
        self.stats.channel_ok += outcome.channels_ok
        self.stats.channel_failed += outcome.channels_failed
        log.info(
            "prompt decided",
            alert_id=str(alert.alert_id),
            worker=alert.worker_id,
            kind=alert.kind,
            status=decision.status,
            reason=decision.reason,
            channels_ok=outcome.channels_ok,
            channels_failed=outcome.channels_failed,
        )
        return await self._send(producer, ALERTS_PROMPTS.name, alert.worker_id, prompt.model_dump_json())

    async def _send(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        key: str,
        value: str | bytes,
        partition: int | None = None,
    ) -> Awaitable[Any]:
        data = value.encode() if isinstance(value, str) else value
        delivery: Awaitable[Any] = await producer.send(
            topic, key=key.encode(), value=data, partition=partition
        )
        return delivery

    async def _await_all(self, deliveries: list[Awaitable[Any]]) -> None:
        # a failed send raises KafkaError: the session restarts and the batch is decided again
        for delivery in deliveries:
            await delivery

    # ---- persist --------------------------------------------------------------------------
    async def _persist(self, producer: AIOKafkaProducer) -> None:
        dirty, self.book.dirty = self.book.dirty, set()
        deliveries = []
        for worker in dirty:
            state = self.book.states.get(worker)
            partition = self.book.partition_of.get(worker)
            if state is None or partition is None:
                continue
            deliveries.append(
                await self._send(producer, ALERTS_STATE.name, worker, to_record(worker, state), partition)
            )
        await self._await_all(deliveries)

    async def restore(self, partitions: set[int]) -> None:
        """Read the assigned partitions of alerts.state.v1 from the beginning to their end."""
        if not partitions:
            return
        started = time.monotonic()
        restored = 0
        async for partition, value in read_to_end(
            self.settings.kafka_bootstrap, ALERTS_STATE.name, partitions
        ):
            try:
                worker, state = from_record(value)
            except ValidationError:
                self._errors.warning("bad-state", "unreadable state record skipped")
                continue
            self.book.states[worker] = state
            self.book.partition_of[worker] = partition
            restored += 1
        recovered = await self._read_recent_decisions(partitions)
        log.info(
            "delivery state restored",
            partitions=sorted(partitions),
            records=restored,
            decisions_not_in_state=recovered,
            seconds=round(time.monotonic() - started, 2),
        )

    async def _read_recent_decisions(self, partitions: set[int]) -> int:
        """The decisions at the end of these partitions of alerts.prompts.v1 that the restored state
        does not know (their batch ended before its state was written). Waiting nudges among them
        are decided already: they leave the pending list now."""
        found = 0
        async for _, value in read_tail(self.settings, ALERTS_PROMPTS.name, partitions, RECENT_DECISIONS):
            try:
                decision = PromptDecision.model_validate_json(value)
            except ValidationError:
                continue
            alert_id = str(decision.alert_id)
            state = self.book.states.get(decision.worker_id)
            if state is not None and alert_id in state.decided:
                continue
            self._published[alert_id] = decision
            found += 1
            if state is not None and alert_id in state.pending:
                pending = state.pending.pop(alert_id)
                state.decided[alert_id] = pol.epoch(pending.alert.ts)
                if decision.status == "sent" and decision.kind == "posture_hold":
                    bisect.insort(state.nudges_sent, pol.epoch(pending.alert.ts))
                self._write_point(decision)
                self.book.dirty.add(decision.worker_id)
        return found

    # ---- roster and posture ---------------------------------------------------------------
    async def _follow_roster(self, ready: asyncio.Event) -> None:
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            **aiokafka_security(self.settings),
            enable_auto_commit=False,
        )
        await reader.start()
        try:
            partitions = await topic_partitions(self.settings.kafka_bootstrap, ROSTER.name)
            tps = [TopicPartition(ROSTER.name, p) for p in partitions]
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            ends = await reader.end_offsets(tps)
            behind = {tp for tp in tps if ends[tp] > 0}
            if not behind:
                ready.set()
            while True:
                batches = await reader.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        if record.value is None:
                            self.roster.pop((record.key or b"").decode(errors="replace"), None)
                            continue
                        try:
                            entry = RosterEntry.model_validate_json(record.value)
                        except ValidationError:
                            self._errors.warning("bad-roster", "unreadable roster entry skipped")
                            continue
                        self.roster[entry.worker_id] = entry
                if behind:
                    behind = {tp for tp in behind if await reader.position(tp) < ends[tp]}
                    if not behind:
                        log.info("roster loaded", workers=len(self.roster))
                        ready.set()
        finally:
            await reader.stop()

    async def on_assigned(self, partitions: set[int]) -> None:
        """Keep the state of partitions we keep (a batch in flight may not have persisted it yet),
        drop the ones that moved away. New partitions are restored by the loop before it decides
        anything (_restore_missing): aiokafka may hand out their records before this listener
        runs, and it only logs a listener's exception."""
        before = self._assigned
        self._rebalanced = True
        self.book.drop_partitions(before - partitions)
        self._restored_partitions &= partitions
        self._assigned = set(partitions)
        if self._posture is not None:
            self._assign_posture()

    async def _restore_missing(self) -> None:
        missing = self._assigned - self._restored_partitions
        if missing:
            await self.restore(missing)
            self._restored_partitions |= missing

    def on_revoked(self, partitions: set[int]) -> None:
        # nothing dropped yet: on_assigned knows which partitions really moved
        log.info("partitions revoked", partitions=sorted(partitions))

    def _assign_posture(self) -> None:
        # the posture partitions of the assigned workers (co-partitioned), from their end: only
        # frames after a nudge matter
        assert self._posture is not None
        self._posture.assign([TopicPartition(POSTURE_EVENTS.name, p) for p in sorted(self._assigned)])

    async def _follow_posture(self) -> None:
        """Frames of workers with a pending nudge (only those are parsed) decide those nudges."""
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            **aiokafka_security(self.settings),
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )
        await reader.start()
        self._posture = reader
        if self._assigned:
            self._assign_posture()
        try:
            while True:
                if not self._assigned:
                    await asyncio.sleep(0.5)
                    if self._assigned:
                        self._assign_posture()
                    continue
                batches = await reader.getmany(timeout_ms=500, max_records=5_000)
                for records in batches.values():
                    for record in records:
                        self._observe(record.key, record.value)
        finally:
            self._posture = None
            await reader.stop()

    def _observe(self, key: bytes | None, value: bytes | None) -> None:
        worker = (key or b"").decode(errors="replace")
        state = self.book.states.get(worker)
        if state is None or not state.pending or value is None:
            return
        try:
            frame = parse_frame(value, max_future_s=self.settings.max_future_s)
        except Rejected:
            return
        if frame.worker_id != worker:
            return
        acceptable = pol.neutral_samples(frame.samples.present(), self.zones)
        alert = next(iter(state.pending.values())).alert
        policy = self.config.policy(alert.site_id, alert.team or self._team(worker))
        for decision in pol.observe_neutral(
            state, policy, pol.epoch(frame.start_ts), frame.rate_hz, acceptable
        ):
            self._late.append((worker, decision))


async def read_tail(
    settings: Settings, topic: str, partitions: set[int], n: int
) -> AsyncIterator[tuple[int, bytes]]:
    """(partition, value) of the last `n` records of each of these partitions, up to their end now."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, **aiokafka_security(settings), enable_auto_commit=False
    )
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        reader.assign(tps)
        ends = await reader.end_offsets(tps)
        starts = await reader.beginning_offsets(tps)
        for tp in tps:
            reader.seek(tp, max(starts[tp], ends[tp] - n))
        waiting = {tp for tp in tps if ends[tp] > max(starts[tp], ends[tp] - n)}
        while waiting:
            batches = await reader.getmany(*waiting, timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    if record.value is not None and record.offset < ends[tp]:
                        yield tp.partition, record.value
            waiting = {tp for tp in waiting if await reader.position(tp) < ends[tp]}
    finally:
        await reader.stop()


async def topic_partitions(bootstrap: str, topic: str) -> list[int]:
    """The topic's partition ids (a group-less consumer only knows the topics it was assigned)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **aiokafka_security())
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [p["partition"] for d in described for p in d.get("partitions") or []]
    if not partitions:
        raise KafkaError(f"topic {topic} does not exist yet")
    return sorted(partitions)


def _refused_for_good(error: BaseException) -> bool:
    """InfluxDB's answers that retrying cannot change: a bad token (401, 403), a missing bucket
    or database (404)."""
    return getattr(error, "status", None) in (401, 403, 404)


def _raise_if_failed(task: asyncio.Task[None] | None) -> None:
    if task is not None and task.done() and not task.cancelled():
        error = task.exception()
        raise error if error is not None else KafkaError(f"{task.get_name()} ended")


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: DeliveryService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.service.on_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.service.on_assigned({tp.partition for tp in assigned})
