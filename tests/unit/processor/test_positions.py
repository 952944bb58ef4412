"""Partition positions: forward-only advance, redeliveries, what a checkpoint commits."""

from __future__ import annotations

import pytest

from strainwatch.processor.positions import PartitionPositions

pytestmark = pytest.mark.unit


def test_a_partition_starts_at_its_committed_offset_and_advances() -> None:
    positions = PartitionPositions()
    positions.start(3, 100)
    assert positions.owns(3) and not positions.owns(0)
    positions.advance(3, 101)
    assert positions.position(3) == 101
    assert positions.uncommitted() == {3: 101}


def test_records_below_the_position_are_redeliveries_and_never_move_it_back() -> None:
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
