"""The checkpoint: persist what the processor consumed, then commit where a restart resumes.

Order matters, and a kill can land between any two steps:
1. Snapshot, in one synchronous step, the dirty worker records (serialised there and then: the agent
   goes on scoring while the checkpoint awaits), every InfluxDB point covering them, and each
   partition's position. Everything below a position is in these records and points.
2. Points first, state second: a record on the changelog says "this worker's frames up to offset X
   are in me" and a replay skips them; had it landed before the points of the windows those frames
   closed, a kill in between lost those points. Points without state are harmless: the replay
   rewrites them (a point's identity is its measurement, tags and timestamp).
3. Await every output message sent since the last checkpoint (windows, alerts, dead letters) and
   every changelog record.
4. Only then commit the positions as the group's offsets. A commit that never happens (kill,
   rebalance) only means a restart replays from the previous one, which the records skip.

A checkpoint that fails keeps its work: its records are dirty again, its unwritten points stay in
the sink, its undelivered outputs are sent again, and its positions stay uncommitted, so the next
checkpoint covers everything. Nothing is acknowledged on a failure. The commit itself is guarded
(app.py `_commit`): a commit the broker refuses or cannot take (broker gone) raises here like any
other failure, instead of crashing faust's consumer as faust's own commit path does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from strainwatch.logs import RateLimitedLog
from strainwatch.processor.positions import PartitionPositions
from strainwatch.processor.record import WorkerRecord
from strainwatch.processor.runtime import Runtime
from strainwatch.processor.sink import InfluxSink, SinkFatal, SinkStopped

log = structlog.get_logger("strainwatch.processor")

# (worker, record, its bytes as serialised in the snapshot) -> the delivery futures of the writes
WriteRecords = Callable[[list[tuple[str, WorkerRecord, bytes]]], Awaitable[list[Awaitable[Any]]]]
# (topic role, key, value) -> its delivery future
SendOutput = Callable[[str, bytes | None, bytes], Awaitable[Awaitable[Any]]]
# {partition: next offset} -> whether the group accepted it (False after a rebalance)
CommitPositions = Callable[[dict[int, int]], Awaitable[bool]]


@dataclass
class CheckpointStats:
    checkpoints: int = 0
    failures: int = 0
    committed: dict[int, int] = field(default_factory=dict)
    last_checkpoint_s: float = 0.0


@dataclass(slots=True)
class _Sent:
    role: str
    key: bytes | None
    value: bytes
    delivery: Awaitable[Any]


class Checkpointer:
    def __init__(
        self,
        runtime: Runtime,
        positions: PartitionPositions,
        sink: InfluxSink,
        *,
        write_records: WriteRecords,
        send_output: SendOutput,
        commit: CommitPositions,
    ) -> None:
        self.runtime = runtime
        self.positions = positions
        self.sink = sink
        self._write_records = write_records
        self._send_output = send_output
        self._commit = commit
        self._in_flight: list[_Sent] = []
        self._lock = asyncio.Lock()
        self._publishing = asyncio.Lock()
        self._errors = RateLimitedLog(log, interval_s=10.0)
        self.stats = CheckpointStats()
        self.last_success = time.monotonic()

    async def publish(self) -> None:
        """Send the runtime's outputs now (an alert must not wait for a checkpoint); their
        deliveries are awaited before the checkpoint commits the frames that produced them."""
        async with self._publishing:
            await self._publish()

    async def _publish(self) -> None:
        out = self.runtime.take_outputs()
        for role, messages in (
            ("dead_letter", out.dead_letters),
            ("window", out.windows),
            ("alert", out.alerts),
        ):
            for key, value in messages:
                await self._send(role, key, value)

    async def _send(self, role: str, key: bytes | None, value: bytes) -> None:
        delivery = await self._send_output(role, key, value)
        self._in_flight.append(_Sent(role, key, value, delivery))  # after the await: see run()

    async def _delivered(self, sent: list[_Sent]) -> None:
        """Await outputs; the ones that failed are sent again (and awaited next time), then raise."""
        results = await asyncio.gather(*(s.delivery for s in sent), return_exceptions=True)
        failed = [(s, r) for s, r in zip(sent, results, strict=True) if isinstance(r, BaseException)]
        for message, _ in failed:
            await self._send(message.role, message.key, message.value)
        if failed:
            raise failed[0][1]

    async def run(self, reason: str, *, final: bool = False) -> bool:
        """One checkpoint; True if everything consumed so far is persisted and committed."""
        async with self._lock:
            dirty, lines = self.runtime.snapshot()
            positions = self.positions.uncommitted()
            payloads = [(worker, record, record.to_bytes()) for worker, record in dirty.items()]
            sent: list[_Sent] = []
            try:
                # Outputs of every frame below `positions` were taken from the runtime before the
                # snapshot; a publish still sending some of them holds `_publishing`, so once we
                # hold it every one of them is in `_in_flight`.
                async with self._publishing:
                    await self._publish()
                    sent, self._in_flight = self._in_flight, []
                self.sink.add(lines)
                await self.sink.flush(give_up_when_stopping=final)
                deliveries = await self._write_records(payloads)
                awaiting, sent = sent, []
                await self._delivered(awaiting)
                if deliveries:
                    await asyncio.gather(*deliveries)
                accepted = await self._commit(positions) if positions else True
            except BaseException as error:
                # keep the work for the next checkpoint: records dirty again (the ones this instance
                # still owns), points back in the sink (flush did that), outputs re-sent
                records = self.runtime.records
                self.runtime.dirty.update(worker for worker in dirty if worker in records)
                self._in_flight[:0] = sent  # not awaited yet: the next checkpoint awaits them
                self.stats.failures += 1
                if isinstance(error, SinkStopped | asyncio.CancelledError):
                    log.warning("checkpoint abandoned; its frames will be replayed", reason=reason)
                    raise
                if isinstance(error, SinkFatal):
                    # the sink logged the cause once and marked readiness fatal; nothing is
                    # acknowledged, and the processor stops taking frames (app.py)
                    return False
                self._errors.warning(
                    "checkpoint",
                    "checkpoint failed; retrying at the next one",
                    reason=reason,
                    error=repr(error),
                )
                return False
            if accepted:
                self.positions.committed(positions)
                self.stats.committed.update(positions)
            self.stats.checkpoints += 1
            self.stats.last_checkpoint_s = time.time()
            self.last_success = time.monotonic()
            log.debug(
                "checkpoint",
                reason=reason,
                workers=len(dirty),
                points=len(lines),
                committed=positions if accepted else None,
            )
            return accepted
