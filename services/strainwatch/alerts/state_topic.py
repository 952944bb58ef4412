"""Reading a compacted state topic back: the alerting service's and the outcome tracker's
per-worker state both live in one (keyed by worker, co-partitioned with their input), and both
restore a partition's state by reading it from the beginning to where it ends now."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition

from strainwatch.kafka_clients import aiokafka_security


async def read_to_end(bootstrap: str, topic: str, partitions: set[int]) -> AsyncIterator[tuple[int, bytes]]:
    """(partition, value) of each key's latest record in these partitions up to their current end,
    as compaction would leave it: a key whose latest record is a tombstone (an erased worker,
    docs/privacy.md) yields nothing, even while compaction has not yet removed its older records."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, **aiokafka_security(), enable_auto_commit=False)
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        ends = await reader.end_offsets(tps)
        # ends on the position, not on a record count: compaction leaves holes in the offsets
        waiting = {tp for tp in tps if ends[tp] > 0}
        latest: dict[tuple[int, bytes | None], bytes | None] = {}
        while waiting:
            batches = await reader.getmany(*waiting, timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    latest.pop((tp.partition, record.key), None)  # keeps the dict in offset order
                    latest[(tp.partition, record.key)] = record.value
            waiting = {tp for tp in waiting if await reader.position(tp) < ends[tp]}
        for (partition, _), value in latest.items():
            if value is not None:
                yield partition, value
    finally:
        await reader.stop()
