"""Reads outside faust on Apache Kafka: posture frames from the positions; where a partition resumes."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from strainwatch.processor.broker_reads import FrameReader, start_positions
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


async def _read_until(
    reader: FrameReader, positions: dict[int, int], until: dict[int, int]
) -> dict[int, list[int]]:
    """Read as the processor does (each run applied whole: the position moves past its last
    record) until every partition's position reaches `until`; the offsets read, per partition."""
    read: dict[int, list[int]] = {p: [] for p in positions}

    async def loop() -> None:
        while any(positions[p] < end for p, end in until.items()):
            for partition, records in (await reader.read(dict(positions))).items():
                read[partition] += [r.offset for r in records]
                positions[partition] = records[-1].offset + 1

    # the defect this guards against is a read that never ends: bound it
    await asyncio.wait_for(loop(), timeout=30)
    return read


def test_frames_are_read_from_the_positions_past_absent_offsets(kafka: Broker) -> None:
    offsets = asyncio.run(_produce_with_a_transaction_marker(kafka.bootstrap))
    assert offsets[:3] == [0, 1, 2] and offsets[3] == 4, "offset 3 is the transaction's commit marker"

    async def main() -> list[dict[int, list[int]]]:
        reader = FrameReader(kafka.bootstrap, TOPIC, max_records=2, wait_s=0.05)
        try:
            return [
                await _read_until(reader, {0: 0}, {0: 6}),  # runs of at most 2, over the marker
                await _read_until(reader, {0: 2}, {0: 6}),  # applied less than read: read again
                await _read_until(reader, {0: 3}, {0: 6}),  # from the marker: the next record
                {0: [r.offset for r in (await reader.read({0: 6})).get(0, [])]},  # caught up
                await _read_until(reader, {0: 5, 1: 0}, {0: 6}),  # a second partition, empty
                await _read_until(reader, {1: 0}, {}),  # partition 0 revoked: no longer read
            ]
        finally:
            await reader.close()

    assert asyncio.run(main()) == [
        {0: [0, 1, 2, 4, 5]},
        {0: [2, 4, 5]},
        {0: [4, 5]},
        {0: []},
        {0: [5], 1: []},
        {1: []},
    ]


def test_a_run_never_passes_max_records_and_spans_partitions(kafka: Broker) -> None:
    async def main() -> tuple[list[int], dict[int, list[int]]]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
        await producer.start()
        try:
            for i in range(30):
                await producer.send_and_wait(TOPIC, key=b"w", value=b"%d" % i, partition=i % 3)
        finally:
            await producer.stop()
        reader = FrameReader(kafka.bootstrap, TOPIC, max_records=7, wait_s=0.05)
        sizes: list[int] = []
        positions = {0: 0, 1: 0, 2: 0}
        read: dict[int, list[int]] = {0: [], 1: [], 2: []}
        try:
            while any(position < 10 for position in positions.values()):
                runs = await asyncio.wait_for(reader.read(dict(positions)), timeout=30)
                sizes.append(sum(len(records) for records in runs.values()))
                for partition, records in runs.items():
                    read[partition] += [r.offset for r in records]
                    positions[partition] = records[-1].offset + 1
        finally:
            await reader.close()
        return sizes, read

    sizes, read = asyncio.run(main())
    assert max(sizes) <= 7 and sum(sizes) == 30, sizes
    assert read == {p: list(range(10)) for p in range(3)}


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
