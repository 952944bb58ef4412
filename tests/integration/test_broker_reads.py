"""Reads outside faust on Apache Kafka: ranges of offsets faust skipped, and where a partition resumes."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from strainwatch.processor.broker_reads import RangeAbandoned, RangeReader, start_positions
from strainwatch.topics import POSTURE_EVENTS
from tests.integration.conftest import Broker

pytestmark = pytest.mark.integration

TOPIC = POSTURE_EVENTS.name


async def _produce_with_a_transaction_marker(bootstrap: str) -> list[int]:
    """Partition 0: three records in a committed transaction (its marker takes an offset of its
    own), then two plain ones. Returns the offsets of the five records."""
    transactional = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="test-marker")
    await transactional.start()
    offsets = []
    try:
        async with transactional.transaction():
            for i in range(3):
                sent = await transactional.send_and_wait(TOPIC, key=b"w-1", value=b"t%d" % i, partition=0)
                offsets.append(sent.offset)
    finally:
        await transactional.stop()
    # the coordinator writes the commit marker after the commit returns: await it at offset 3
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await reader.start()
    try:
        tp = TopicPartition(TOPIC, 0)
        for _ in range(300):
            if (await reader.end_offsets([tp]))[tp] == 4:
                break
            await asyncio.sleep(0.05)  # polling the awaited condition, bounded
    finally:
        await reader.stop()
    plain = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await plain.start()
    try:
        for i in range(2):
            sent = await plain.send_and_wait(TOPIC, key=b"w-1", value=b"p%d" % i, partition=0)
            offsets.append(sent.offset)
    finally:
        await plain.stop()
    return offsets


async def _reads(bootstrap: str, ranges: list[tuple[int, int]]) -> list[list[int]]:
    """Several ranges through one reader, as the processor reads successive holes."""
    reader = RangeReader(bootstrap, TOPIC)

    async def collect(first: int, end: int) -> list[int]:
        return [r.offset async for r in reader.read(0, first, end, still_owned=lambda: True)]

    try:
        # the defect this guards against was a read that never ended: bound it
        return [await asyncio.wait_for(collect(first, end), timeout=30) for first, end in ranges]
    finally:
        await reader.close()


def test_a_range_ending_on_an_absent_offset_ends(kafka: Broker) -> None:
    offsets = asyncio.run(_produce_with_a_transaction_marker(kafka.bootstrap))
    assert offsets[:3] == [0, 1, 2] and offsets[3] == 4, "offset 3 is the transaction's commit marker"
    # [0, 4): the last offset of the range is the marker, which no record carries
    assert asyncio.run(_reads(kafka.bootstrap, [(0, 4), (2, 6), (3, 5), (0, 2)])) == [
        [0, 1, 2],
        [2, 4, 5],
        [4],
        [0, 1],
    ]


def test_a_range_of_a_revoked_partition_is_abandoned(kafka: Broker) -> None:
    asyncio.run(_produce_with_a_transaction_marker(kafka.bootstrap))

    async def read_revoked(owned_checks: int) -> list[int]:
        """Revoked after `owned_checks` ownership checks; returns what was read until then."""
        checks = iter(range(owned_checks))
        reader = RangeReader(kafka.bootstrap, TOPIC)
        read = []
        try:
            with pytest.raises(RangeAbandoned):
                async for record in reader.read(
                    0, 0, 10_000, still_owned=lambda: next(checks, None) is not None
                ):
                    read.append(record.offset)
        finally:
            await reader.close()
        return read

    assert asyncio.run(read_revoked(0)) == []  # revoked before the read started
    assert asyncio.run(read_revoked(1)) == [0, 1, 2, 4, 5]  # revoked after the first fetch


def test_start_positions_are_the_groups_commits_or_the_log_start(kafka: Broker) -> None:
    asyncio.run(_produce_with_a_transaction_marker(kafka.bootstrap))

    async def commit(group: str, offset: int) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(TOPIC, 0)])  # a manual assignment may commit for the group
            await consumer.commit({TopicPartition(TOPIC, 0): offset})
        finally:
            await consumer.stop()

    asyncio.run(commit("resume-test", 4))
    positions = asyncio.run(start_positions(kafka.bootstrap, "resume-test", TOPIC, [0, 1]))
    assert positions == {0: 4, 1: 0}  # partition 1 has no commit: its log start
    assert asyncio.run(start_positions(kafka.bootstrap, "resume-test", TOPIC, [])) == {}
