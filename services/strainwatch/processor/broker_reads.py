"""Reads from the broker outside faust: where each partition resumes, and the posture frames.

Both use aiokafka clients of their own, so nothing here depends on faust's consumer:
- the committed offsets come from an offset fetch for the group that does not join it;
- the frames of the owned partitions are read by a group-less consumer from the processor's
  positions (faust's consumer, the group member, is paused on the posture topic).
"""

from __future__ import annotations

from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from strainwatch.kafka_clients import aiokafka_security

log = structlog.get_logger("strainwatch.processor")


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


class FrameReader:
    """Reads the posture frames of the partitions this instance owns, in runs, from the positions
    the processor gives it, with one group-less consumer kept for the instance's life.

    faust's consumer stays the group member (assignment, commits, the table's changelog) but
    fetches none of the posture topic: faust's per-event delivery cost about 100 µs a frame, more
    than the scoring (docs/processor.md). Reading from the processor's own positions also means no
    offset can be skipped: every offset below a position was handed to the runtime.
    """

    def __init__(self, bootstrap: str, topic: str, *, max_records: int, wait_s: float) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.max_records = max_records
        self.wait_ms = int(wait_s * 1000)
        self._consumer: AIOKafkaConsumer | None = None
        self._next: dict[int, int] = {}  # per partition, the offset the consumer fetches next

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                **aiokafka_security(),
                group_id=None,
                enable_auto_commit=False,
                # an offset already deleted by retention resumes at the log start, never at the end
                auto_offset_reset="earliest",
                max_poll_records=self.max_records,
                # a partition is fetched again only once its last fetch is consumed: fetch more at
                # once (aiokafka's default is 1 MiB) so the scoring seldom waits for a fetch
                max_partition_fetch_bytes=4 * 1024 * 1024,
            )
            await consumer.start()
            self._consumer = consumer
            self._next = {}
        return self._consumer

    async def read(self, positions: dict[int, int]) -> dict[int, list[Any]]:
        """One run: records of the partitions in `positions`, each from its position, in offset
        order per partition; empty if none came within the wait.

        Offsets can be absent from the log (transaction markers, compaction), so a partition's
        first record may lie past its position: everything between was read and is not there.
        """
        consumer = await self._started()
        try:
            if set(positions) != set(self._next):
                consumer.assign([TopicPartition(self.topic, p) for p in positions])
                self._next = {}
            for partition, position in positions.items():
                # the processor applied less than was read (a stop, a rebalance), or starts afresh
                if self._next.get(partition) != position:
                    consumer.seek(TopicPartition(self.topic, partition), position)
                    self._next[partition] = position
            batches = await consumer.getmany(timeout_ms=self.wait_ms, max_records=self.max_records)
        except BaseException:
            await self.close()  # a broken consumer is not reused (nor one cancelled mid-fetch)
            raise
        runs = {}
        for tp, records in batches.items():
            if records:
                self._next[tp.partition] = records[-1].offset + 1
                runs[tp.partition] = records
        return runs

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        self._next = {}
        if consumer is not None:
            await consumer.stop()
