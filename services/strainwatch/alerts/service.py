"""`strainwatch alerts run`: the delivery loop and, when installed, the outcome tracker, in one
process until `stop` is set."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from aiokafka.errors import KafkaError as AIOKafkaError
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from strainwatch.alerts.channels import ChannelsConfig
from strainwatch.alerts.delivery import KAFKA_RETRY, DeliveryService
from strainwatch.alerts.influx_check import watch_influx
from strainwatch.config import Settings
from strainwatch.kafka_clients import kafka_python_security
from strainwatch.ops.metrics import ServiceMetrics
from strainwatch.ops.readiness import Readiness
from strainwatch.ops.retry import RetryStopped
from strainwatch.privacy.services import follow_erasures
from strainwatch.topics import ALERTS_BREAK, ALERTS_STATE

log = structlog.get_logger("strainwatch.alerts")

# (settings, stop, *, readiness=..., metrics=...)
OutcomeRunner = Callable[..., Coroutine[Any, Any, None]]


def outcome_runner() -> OutcomeRunner | None:
    """The outcome tracker's entry point (alerts/outcome_runner.py, another module's job), if present.

    Hook: `async def run_outcomes(settings, stop: asyncio.Event) -> None`, awaited beside delivery."""
    try:
        module = importlib.import_module("strainwatch.alerts.outcome_runner")
    except ModuleNotFoundError as error:
        if error.name != "strainwatch.alerts.outcome_runner":
            raise
        return None
    runner: OutcomeRunner | None = getattr(module, "run_outcomes", None)
    return runner


def ensure_state_topic(bootstrap: str) -> None:
    """Create alerts.state.v1 (compacted) with alerts.break.v1's partition count, if missing.
    Raises KafkaError while the broker is unreachable (the caller backs off)."""
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, **kafka_python_security(), request_timeout_ms=10_000
    )
    try:
        if ALERTS_STATE.name in set(admin.list_topics()):
            return
        described = admin.describe_topics([ALERTS_BREAK.name])
        partitions = len(described[0].get("partitions") or []) if described else 0
        if not partitions:
            raise KafkaError(f"{ALERTS_BREAK.name} does not exist yet (strainwatch stack topics)")
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics(
                [NewTopic(ALERTS_STATE.name, partitions, 1, topic_configs=ALERTS_STATE.config())],
                timeout_ms=30_000,
            )
        log.info("state topic created", topic=ALERTS_STATE.name, partitions=partitions)
    finally:
        admin.close()


async def _in_daemon_thread(fn: Callable[[], None], stop: asyncio.Event) -> bool:
    """Run a blocking call (kafka-python's admin waits up to 30 s for a broker) in a daemon thread:
    unlike asyncio.to_thread, a stop does not wait for it. False if stopped first."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def target() -> None:
        try:
            fn()
        except BaseException as error:  # handed to the awaiting coroutine
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(settle, error)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, None)

    threading.Thread(target=target, name="ensure-state-topic", daemon=True).start()
    stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    await asyncio.wait({done, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not done.done():
        return False
    done.result()
    return True


async def _ensure_state_topic(
    settings: Settings, stop: asyncio.Event, readiness: Readiness | None = None
) -> bool:
    """Started while the broker is down: waits and retries (ops/retry.py) instead of exiting."""
    try:
        return await KAFKA_RETRY.call(
            _in_daemon_thread,
            lambda: ensure_state_topic(settings.kafka_bootstrap),
            stop,
            what="kafka",
            logger=log,
            stop=stop,
            retry_on=(KafkaError, AIOKafkaError, OSError),
            readiness=readiness,
            check="kafka",
        )
    except RetryStopped:
        return False


# on SIGTERM the parts get this long together (a batch in flight: delivery's STOP_GRACE_S), so the
# process exits well within 30 s
STOP_WAIT_S = 20.0


async def _stop_when(work_stop: asyncio.Event, stop: asyncio.Event, influx_fatal: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in (stop, influx_fatal)]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    if influx_fatal.is_set() and not stop.is_set():
        log.warning(
            "halted",
            reason="InfluxDB refused the token or the bucket",
            consuming="nothing until a restart with a fixed configuration",
        )
    work_stop.set()


async def run_service(
    settings: Settings,
    config: ChannelsConfig,
    stop: asyncio.Event,
    webhook_bind: str | None = None,
    webhook_token: str = "",
    *,
    readiness: Readiness | None = None,
    metrics: ServiceMetrics | None = None,
) -> None:
    """`webhook_bind` ('host:port'): also serve Grafana's alert webhook (alerts/grafana_webhook.py).

    `readiness` and `metrics` are served by the ops server (alerts/cli.py). InfluxDB refusing the
    token or the bucket (401/403/404) stops delivery and outcomes (nothing consumed or committed:
    a restart with a fixed configuration decides the same alerts) and makes /readyz fatal; the
    webhook keeps serving."""
    readiness = readiness if readiness is not None else Readiness()
    readiness.expect("kafka")
    readiness.expect("delivery", "state not restored yet")
    if outcome_runner() is not None:
        readiness.expect("outcomes", "state not restored yet")
    metrics = metrics if metrics is not None else ServiceMetrics("alerting")
    influx_fatal = asyncio.Event()
    work_stop = asyncio.Event()  # delivery and outcomes: SIGTERM, or InfluxDB refusing for good
    helpers = [
        asyncio.create_task(watch_influx(settings, readiness, stop, influx_fatal), name="influx-check"),
        asyncio.create_task(_stop_when(work_stop, stop, influx_fatal), name="work-stop"),
    ]
    try:
        await _run_parts(settings, config, stop, work_stop, webhook_bind, webhook_token, readiness, metrics)
    finally:
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)


async def _run_parts(
    settings: Settings,
    config: ChannelsConfig,
    stop: asyncio.Event,
    work_stop: asyncio.Event,
    webhook_bind: str | None,
    webhook_token: str,
    readiness: Readiness,
    metrics: ServiceMetrics,
) -> None:
    if not await _ensure_state_topic(settings, work_stop, readiness):
        if not stop.is_set():
            await stop.wait()  # halted (InfluxDB refused): /readyz says why until SIGTERM
        return
    delivery = DeliveryService(settings, config, work_stop, readiness=readiness, metrics=metrics)
    tasks = [asyncio.create_task(delivery.run(), name="delivery")]
    # erasure requests: delivery and outcomes forget the worker (privacy/services.py)
    tasks.append(asyncio.create_task(follow_erasures(settings, stop), name="privacy-erasures"))
    if webhook_bind:
        from strainwatch.alerts.grafana_webhook import GrafanaWebhook, serve

        webhook = serve(GrafanaWebhook(config, webhook_token), webhook_bind, stop)
        tasks.append(asyncio.create_task(webhook, name="grafana-webhook"))
    runner = outcome_runner()
    if runner is not None:
        outcomes = runner(settings, work_stop, readiness=readiness, metrics=metrics)
        tasks.append(asyncio.create_task(outcomes, name="outcomes"))
    else:
        log.info("outcome tracker not installed; delivery only")
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            # aiokafka's stop() with the broker gone can end a part with its own CancelledError
            if task.cancelled():
                log.warning("part ended cancelled", part=task.get_name())
                continue
            if task.exception() is not None:
                stop.set()  # one part failing stops the other: the process exits non-zero
                raise task.exception()  # type: ignore[misc]
    finally:
        stop.set()
        work_stop.set()
        _, pending = await asyncio.wait(tasks, timeout=STOP_WAIT_S)
        for task in pending:
            log.warning("stopping: part abandoned", part=task.get_name())
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait(tasks, timeout=2.0)
