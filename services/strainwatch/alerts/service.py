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
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from strainwatch.alerts.channels import ChannelsConfig
from strainwatch.alerts.delivery import DeliveryService
from strainwatch.config import Settings
from strainwatch.kafka_clients import kafka_python_security
from strainwatch.privacy.services import follow_erasures
from strainwatch.topics import ALERTS_BREAK, ALERTS_STATE

log = structlog.get_logger("strainwatch.alerts")

OutcomeRunner = Callable[[Settings, asyncio.Event], Coroutine[Any, Any, None]]


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


async def _ensure_state_topic(settings: Settings, stop: asyncio.Event) -> bool:
    backoff = 0.5
    while not stop.is_set():
        try:
            return await _in_daemon_thread(lambda: ensure_state_topic(settings.kafka_bootstrap), stop)
        except (KafkaError, OSError) as error:
            log.warning("kafka unavailable, backing off", error=str(error)[:300], backoff_s=backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 10.0)
    return False


async def run_service(
    settings: Settings,
    config: ChannelsConfig,
    stop: asyncio.Event,
    webhook_bind: str | None = None,
    webhook_token: str = "",
) -> None:
    """`webhook_bind` ('host:port'): also serve Grafana's alert webhook (alerts/grafana_webhook.py)."""
    if not await _ensure_state_topic(settings, stop):
        return
    tasks = [asyncio.create_task(DeliveryService(settings, config, stop).run(), name="delivery")]
    # erasure requests: delivery and outcomes forget the worker (privacy/services.py)
    tasks.append(asyncio.create_task(follow_erasures(settings, stop), name="privacy-erasures"))
    if webhook_bind:
        from strainwatch.alerts.grafana_webhook import GrafanaWebhook, serve

        webhook = serve(GrafanaWebhook(config, webhook_token), webhook_bind, stop)
        tasks.append(asyncio.create_task(webhook, name="grafana-webhook"))
    runner = outcome_runner()
    if runner is not None:
        tasks.append(asyncio.create_task(runner(settings, stop), name="outcomes"))
    else:
        log.info("outcome tracker not installed; delivery only")
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                stop.set()  # one part failing stops the other: the process exits non-zero
                raise task.exception()  # type: ignore[misc]
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 25)
