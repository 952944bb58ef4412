"""The checkpoint's commit (processor/app.py `_commit_in_consumer_thread`): faust's consumer thread
and its aiokafka consumer, as faust's own `_commit` uses them, but an error reaches the checkpoint
(which keeps its work) instead of crashing the consumer. No broker: the driver is a stand-in."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest
from aiokafka.errors import CommitFailedError, KafkaConnectionError, NodeNotReadyError
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from strainwatch.processor.app import _commit_in_consumer_thread

pytestmark = pytest.mark.unit

TOPIC = "sw-guarded"


class Driver:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.committed: list[dict[TopicPartition, OffsetAndMetadata]] = []

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)}

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        if self.error is not None:
            raise self.error
        self.committed.append(offsets)


def thread_with(driver: Driver) -> Any:
    app = faust.App("sw-guarded", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    thread = app.consumer._thread
    assert isinstance(thread, faust_aiokafka.AIOKafkaConsumerThread)
    thread._consumer = driver
    return thread


def test_commits_the_assigned_offsets_and_records_when() -> None:
    driver = Driver()
    thread = thread_with(driver)
    ok = asyncio.run(_commit_in_consumer_thread(thread, {TP(TOPIC, 0): 41, TP(TOPIC, 1): 7, TP(TOPIC, 3): 9}))
    assert ok is True
    assert driver.committed == [
        {
            TopicPartition(TOPIC, 0): OffsetAndMetadata(41, ""),
            TopicPartition(TOPIC, 1): OffsetAndMetadata(7, ""),
        }
    ]
    assert set(thread.tp_last_committed_at) == {TP(TOPIC, 0), TP(TOPIC, 1)}
    assert asyncio.run(_commit_in_consumer_thread(thread, {TP(TOPIC, 3): 9})) is False  # none assigned


def test_a_rebalance_is_a_refusal_and_other_errors_reach_the_checkpoint() -> None:
    rebalanced = CommitFailedError("Commit cannot be completed since the group has already rebalanced")
    assert (
        asyncio.run(_commit_in_consumer_thread(thread_with(Driver(rebalanced)), {TP(TOPIC, 0): 1})) is False
    )
    for error in (
        KafkaConnectionError("broker gone"),
        NodeNotReadyError("node 1"),
        CommitFailedError("other"),
    ):
        thread = thread_with(Driver(error))
        crashed: list[BaseException] = []

        async def crash(exc: BaseException, crashed: list[BaseException] = crashed) -> None:
            crashed.append(exc)

        thread.crash = crash
        with pytest.raises(type(error)):
            asyncio.run(_commit_in_consumer_thread(thread, {TP(TOPIC, 0): 1}))
        assert crashed == []  # the consumer lives on; the checkpoint keeps its work
        assert TP(TOPIC, 0) not in thread.tp_last_committed_at


def test_faust_own_commit_would_crash_the_consumer_on_a_broker_error() -> None:
    """Why the processor does not call faust's `_commit`: this is the behaviour it avoids."""
    thread = thread_with(Driver(KafkaConnectionError("broker gone")))
    crashed: list[BaseException] = []

    async def crash(exc: BaseException) -> None:
        crashed.append(exc)

    async def call_thread(fun: Any, *args: Any) -> Any:
        return await fun(*args)

    thread.crash = crash
    thread.call_thread = call_thread
    assert asyncio.run(thread.commit({TP(TOPIC, 0): 1})) is False
    assert len(crashed) == 1 and isinstance(crashed[0], KafkaConnectionError)
