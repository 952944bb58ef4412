"""Reading a compacted state topic back: the alerting service's and the outcome tracker's
per-worker state both live in one (keyed by worker, co-partitioned with their input), and both
restore a partition's state by reading it from the beginning to where it ends now."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition

from strainwatch.kafka_clients import aiokafka_security


async def read_to_end(bootstrap: str, topic: str, partitions: set[int]) -> AsyncIterator[tuple[int, bytes]]:
    """(partition, value) of every record of these partitions up to their current end; records
    without a value (tombstones) are skipped."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, **aiokafka_security(), enable_auto_commit=False)
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        ends = await reader.end_offsets(tps)
        # ends on the position, not on a record count: compaction leaves holes in the offsets
        waiting = {tp for tp in tps if ends[tp] > 0}
        while waiting:
            batches = await reader.getmany(*waiting, timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    if record.value is not None:
                        yield tp.partition, record.value
            waiting = {tp for tp in waiting if await reader.position(tp) < ends[tp]}
    finally:
        await reader.stop()
