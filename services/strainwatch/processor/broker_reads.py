"""Reads from the broker outside faust: the group's committed offsets, and ranges of a partition.

Both use short-lived aiokafka consumers of their own, so nothing here depends on faust's consumer:
- the committed offsets come from an offset fetch for the group that does not join it;
- a range of offsets faust skipped is read with a group-less consumer, assigned the one partition.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from strainwatch.kafka_clients import aiokafka_security

log = structlog.get_logger("strainwatch.processor")


class RangeAbandoned(RuntimeError):
    """The partition was revoked while its range was being read; the new owner reads it."""


async def start_positions(bootstrap: str, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
    """Where each partition resumes: the group's committed offset, or the log start where none."""
    if not partitions:
        return {}
    tps = [TopicPartition(topic, p) for p in partitions]
    # an OffsetFetch for the group through the admin client: it does not join the group (a
    # consumer's committed() needs a subscription, which would)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **aiokafka_security())
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
    finally:
        await admin.close()
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, **aiokafka_security(), group_id=None, enable_auto_commit=False
    )
    await reader.start()
    try:
        starts = await reader.beginning_offsets(tps)
    finally:
        await reader.stop()
    positions = {}
    for tp in tps:
        meta = committed.get(tp)
        offset = meta.offset if meta is not None and meta.offset >= 0 else None
        log_start = int(starts[tp])
        if offset is not None and offset < log_start:
            # retention deleted frames this group never processed: they are gone for good
            log.error(
                "committed offset behind the log start: frames lost to retention",
                partition=tp.partition,
                committed=offset,
                log_start=log_start,
            )
        positions[tp.partition] = max(offset, log_start) if offset is not None else log_start
    return positions


class RangeReader:
    """Reads ranges of offsets faust skipped, with one group-less consumer kept between reads (a
    consumer per read cost about 100 ms; skips come in bursts, one read per burst)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._reader: AIOKafkaConsumer | None = None

    async def _consumer(self) -> AIOKafkaConsumer:
        if self._reader is None:
            reader = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                **aiokafka_security(),
                group_id=None,
                enable_auto_commit=False,
                # an offset already deleted by retention resumes at the log start, never at the end
                auto_offset_reset="earliest",
            )
            await reader.start()
            self._reader = reader
        return self._reader

    async def read(
        self, partition: int, first: int, end: int, still_owned: Callable[[], bool]
    ) -> AsyncIterator[Any]:
        """Yield the records of offsets [first, end) of one partition, in order.

        Ends when the consumer's position reaches `end`, not when `end - first` records have come:
        offsets can be absent (compaction, retention, transaction markers), and counting records
        would then wait forever. Raises RangeAbandoned if the partition is revoked meanwhile.
        """
        if not still_owned():
            raise RangeAbandoned(f"partition {partition} revoked before reading [{first}, {end})")
        try:
            reader = await self._consumer()
            part = TopicPartition(self.topic, partition)
            reader.assign([part])
            reader.seek(part, first)
            while True:
                batches = await reader.getmany(part, timeout_ms=1_000, max_records=2_000)
                for record in batches.get(part, []):
                    if record.offset >= end:
                        return
                    if record.offset >= first:
                        yield record
                if await reader.position(part) >= end:
                    return
                if not still_owned():
                    raise RangeAbandoned(f"partition {partition} revoked while reading [{first}, {end})")
        except (RangeAbandoned, GeneratorExit):
            raise
        except BaseException:
            await self.close()  # a broken consumer is not reused
            raise

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.stop()
