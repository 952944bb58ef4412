"""Per source partition: how far the processor has consumed, which is where a restart resumes.

The processor commits the posture topic's group offsets itself, and only at a checkpoint, after
everything below them is persisted (docs/processor.md). faust is told not to track acks for that
topic (`acks=False`), so it has nothing of its own to commit there: the committed offset is
strainwatch's persisted position, whatever faust skips, re-acks or misorders.

A partition's position is the next offset to hand to the runtime: every offset below it has been
applied (or skipped as a replay, or dead-lettered). It starts at the group's committed offset (the
log start where none) and only forward. The processor reads each owned partition from its position
itself, in order (broker_reads.FrameReader), so no offset is passed over unread: a record past the
position follows offsets absent from the log (transaction markers, compaction). Records below the
position (read again after a rebalance or a stop mid-run) were applied already and are ignored.

Pure bookkeeping: no faust, no Kafka, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Partition:
    position: int  # the next offset to hand to the runtime
    committed: int  # the position last committed to the group


class PartitionPositions:
    def __init__(self) -> None:
        self._partitions: dict[int, _Partition] = {}

    # --- ownership ------------------------------------------------------------------------------

    def start(self, partition: int, position: int) -> None:
        """Own a partition from `position` (its committed offset, or the log start)."""
        self._partitions[partition] = _Partition(position, position)

    def owns(self, partition: int) -> bool:
        return partition in self._partitions

    def owned(self) -> list[int]:
        return sorted(self._partitions)

    def forget(self, partitions: set[int] | None = None) -> None:
        """Revoked (or every partition, at a rebalance): a later assignment starts afresh."""
        if partitions is None:
            self._partitions.clear()
        for partition in partitions or ():
            self._partitions.pop(partition, None)

    # --- consuming ------------------------------------------------------------------------------

    def position(self, partition: int) -> int:
        return self._partitions[partition].position

    def is_redelivery(self, partition: int, offset: int) -> bool:
        return offset < self._partitions[partition].position

    def advance(self, partition: int, next_offset: int) -> None:
        """Offsets below `next_offset` have been handed to the runtime."""
        state = self._partitions[partition]
        if next_offset > state.position:
            state.position = next_offset

    # --- committing -----------------------------------------------------------------------------

    def uncommitted(self) -> dict[int, int]:
        """Positions that moved since their last commit (taken in the checkpoint's snapshot)."""
        return {p: s.position for p, s in self._partitions.items() if s.position > s.committed}

    def committed(self, positions: dict[int, int]) -> None:
        for partition, position in positions.items():
            state = self._partitions.get(partition)
            if state is not None and position > state.committed:
                state.committed = position
