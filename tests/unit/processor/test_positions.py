"""Partition positions: contiguous advance, holes, redeliveries, what a checkpoint commits."""

from __future__ import annotations

import pytest

from strainwatch.processor.positions import PartitionPositions

pytestmark = pytest.mark.unit


def test_a_partition_starts_at_its_committed_offset_and_advances_contiguously() -> None:
    positions = PartitionPositions()
    positions.start(3, 100)
    assert positions.owns(3) and not positions.owns(0)
    assert positions.hole_before(3, 100) is None
    positions.advance(3, 101)
    assert positions.position(3) == 101
    assert positions.uncommitted() == {3: 101}


def test_an_event_past_the_position_reveals_the_offsets_faust_skipped() -> None:
    positions = PartitionPositions()
    positions.start(0, 0)
    # faust skipped the first 80 events of the partition and delivered offset 80
    assert positions.hole_before(0, 80) == (0, 80)
    positions.advance(0, 81)
    assert positions.hole_before(0, 81) is None


def test_events_below_the_position_are_redeliveries_and_never_move_it_back() -> None:
    positions = PartitionPositions()
    positions.start(1, 50)
    positions.advance(1, 60)
    assert positions.is_redelivery(1, 55)
    assert not positions.is_redelivery(1, 60)
    positions.advance(1, 40)
    assert positions.position(1) == 60


def test_only_moved_positions_are_committed_and_a_commit_is_remembered() -> None:
    positions = PartitionPositions()
    positions.start(0, 10)
    positions.start(1, 20)
    positions.advance(0, 15)
    snapshot = positions.uncommitted()
    assert snapshot == {0: 15}
    positions.advance(0, 18)  # the agent goes on while the checkpoint awaits
    positions.committed(snapshot)
    assert positions.uncommitted() == {0: 18}


def test_forgetting_partitions_at_a_rebalance() -> None:
    positions = PartitionPositions()
    for partition in range(4):
        positions.start(partition, 0)
    positions.forget({1, 2})
    assert positions.owned() == [0, 3]
    positions.committed({1: 5})  # a commit of a revoked partition is ignored
    assert positions.owned() == [0, 3]
    positions.forget()
    assert positions.owned() == []
