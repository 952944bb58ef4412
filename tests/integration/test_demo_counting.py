"""The demo's dead-letter count on both brokers: records read, not end offsets subtracted.

On Tansu a partition's end offset is its last batch's first offset + 1, so batches of several
records are what this needs: the count must still be exact, and records already on the topic when
counting starts (including the rest of a batch that goes past the listed end) must not count.
"""

from __future__ import annotations

import pytest
from kafka import KafkaProducer

from strainwatch.demo import DeadLetterCounter
from strainwatch.topics import POSTURE_DEADLETTER
from tests.integration.conftest import Broker
from tests.support import wait_for

pytestmark = pytest.mark.integration

TOPIC = POSTURE_DEADLETTER.name


def _produce_batches(bootstrap: str, batches: list[tuple[int, int]]) -> int:
    """Each (partition, records) as one batch: sent together, then flushed. Returns the total."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=100, batch_size=1_000_000)
    try:
        for partition, records in batches:
            for i in range(records):
                producer.send(
                    TOPIC, key=b"w-%d" % i, value=b'{"reason": "malformed_json"}', partition=partition
                )
            producer.flush()
    finally:
        producer.close()
    return sum(records for _, records in batches)


def _wait_count(counter: DeadLetterCounter, total: int) -> None:
    wait_for(lambda: counter.read() >= total, timeout_s=30, what=f"{total} dead letters read")
    assert counter.read() == total  # no record counted twice, nothing beyond what was produced


def test_counts_exactly_the_records_produced_after_it_started(broker: Broker) -> None:
    from_empty = DeadLetterCounter(broker.bootstrap)  # a fresh stack: nothing on the topic yet
    before = _produce_batches(broker.bootstrap, [(0, 5), (0, 3), (0, 7), (1, 1), (1, 12), (2, 4)])
    _wait_count(from_empty, before)

    # the demo's case: records of earlier runs on the topic, each partition's last one a batch
    counter = DeadLetterCounter(broker.bootstrap)
    assert counter.read() == 0
    new = _produce_batches(broker.bootstrap, [(0, 6), (1, 1), (1, 9), (3, 2), (3, 8), (2, 1), (0, 4)])
    _wait_count(counter, new)
    _wait_count(from_empty, before + new)
    counter.close()
    from_empty.close()
