"""What the running services do with an erasure request (`privacy.erasures.v1`): drop the worker
from memory and write tombstones for its keys, so no later checkpoint or persist writes its state
again. Kept here so that the services' own modules carry one call each (docs/privacy.md)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from strainwatch.processor.app import Processor

log = structlog.get_logger("strainwatch.privacy")


def worker_digest(worker: str) -> str:
    """What logs say instead of the pseudonym: enough to match two log lines, not to read it."""
    return hashlib.sha256(worker.encode()).hexdigest()[:12]


def worker_of(key: bytes | None) -> str | None:
    if not key:
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        return None


def tagged(line: str, worker: str) -> bool:
    """True if a line-protocol point carries the tag worker=<worker> (pseudonyms need no escaping)."""
    head = line.split(" ", 1)[0]
    return f",worker={worker}," in head + ","


def drop_lines(lines: list[str], worker: str) -> int:
    """Remove the worker's points from a buffer in place; returns how many were removed."""
    kept = [line for line in lines if not tagged(line, worker)]
    dropped = len(lines) - len(kept)
    lines[:] = kept
    return dropped


async def forget_in_processor(processor: Processor, key: bytes | None) -> None:
    """The processor's part: with no checkpoint in flight (the checkpointer's lock), forget the
    worker's record, hourly sums, reorder buffer and unwritten points, and tombstone its keys in the
    worker-state and roster changelogs on the partition its record lives on. A later checkpoint has
    nothing of the worker left to write; frames of the worker that arrive afterwards start afresh."""
    worker = worker_of(key)
    if worker is None or key is None:
        return
    runtime = processor.runtime
    async with processor.checkpointer._lock:  # the one lock that orders checkpoints
        record = runtime.records.pop(worker, None)
        stored = processor.table.data.pop(key, None)
        runtime.dirty.discard(worker)
        runtime._buffered.discard(worker)  # as Runtime.drop_partitions does
        runtime._hourly_dirty.discard(worker)
        points = drop_lines(runtime.lines, worker)
        points += drop_lines(processor.sink._buffer, worker)  # a failed flush's lines
        rostered = processor.roster.data.pop(key, None) is not None
        partitions = {
            r.partition
            for r in (record, stored)
            if r is not None and getattr(r, "partition", None) is not None
        }
        producer = processor.app.producer
        sends: list[Any] = []
        for partition in sorted(partitions):
            sends.append(
                await producer.send(
                    processor.table.changelog_topic.get_topic_name(), key, None, partition, None, None
                )
            )
            if rostered:
                sends.append(
                    await producer.send(
                        processor.roster.changelog_topic.get_topic_name(), key, None, partition, None, None
                    )
                )
        for sent in sends:
            await sent
    log.info(
        "erasure applied",
        service="processor",
        worker_digest=worker_digest(worker),
        state=bool(partitions),
        unwritten_points_dropped=points,
    )


def forget_workers(states: Iterable[dict[str, Any]], worker: str) -> bool:
    """Pop the worker from every per-worker dict; True if any held it."""
    found = False
    for state in states:
        found = state.pop(worker, None) is not None or found
    return found


async def _partitions(settings: Any, topic: str) -> list[int]:
    """The topic's partition ids, none if it does not exist (a group-less consumer knows only the
    topics it was assigned, and aiokafka's topics() does not fill its metadata on Apache Kafka)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from strainwatch.kafka_clients import aiokafka_security

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **aiokafka_security(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(
        p["partition"] for d in described if not d.get("error_code") for p in d.get("partitions") or []
    )


class ErasureInbox:
    """Workers to forget, per consumer loop: the follower fills every subscriber's set, each loop
    drains its own at the start of its next batch (so no persist of the worker is in flight)."""

    def __init__(self) -> None:
        self._queues: dict[str, set[str]] = {}

    def subscribe(self, name: str) -> None:
        self._queues.setdefault(name, set())

    def put(self, worker: str) -> None:
        for queue in self._queues.values():
            queue.add(worker)

    def take(self, name: str) -> set[str]:
        queue = self._queues.get(name)
        if not queue:
            return set()
        out = set(queue)
        queue.clear()
        return out


INBOX = ErasureInbox()  # one per process: `strainwatch alerts run` runs delivery and outcomes together


async def follow_erasures(settings: Any, stop: Any, inbox: ErasureInbox = INBOX) -> None:
    """Read privacy.erasures.v1 from its end (group-less: every instance forgets the worker if it
    holds it) until `stop` is set; an erasure published while the service was away is covered by
    the tombstones `privacy erase` writes to the state topics, which a restore honours."""
    import asyncio
    import contextlib

    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    from strainwatch.kafka_clients import aiokafka_security
    from strainwatch.ops.retry import OutageLog
    from strainwatch.topics import PRIVACY_ERASURES

    outage = OutageLog(log, "erasure_follower_kafka")  # once, a reminder a minute, its end once
    backoff = 0.5
    while not stop.is_set():
        reader = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            **aiokafka_security(settings),
            enable_auto_commit=False,
        )
        try:
            await reader.start()
            partitions = await _partitions(settings, PRIVACY_ERASURES.name)
            if not partitions:
                await reader.stop()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 5.0)  # the topic does not exist (yet)
                continue
            tps = [TopicPartition(PRIVACY_ERASURES.name, p) for p in sorted(partitions)]
            reader.assign(tps)
            await reader.seek_to_end(*tps)
            backoff = 0.5
            outage.recovered()
            while not stop.is_set():
                batches = await reader.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        worker = worker_of(record.key)
                        if worker is not None:
                            inbox.put(worker)
                            log.info("erasure received", worker_digest=worker_digest(worker))
        except (KafkaError, OSError) as error:
            outage.failure(error, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 10.0)
        finally:
            with contextlib.suppress(Exception):
                await reader.stop()
