"""Publish `Incident` messages to incidents.v1, keyed by site id (docs/incidents.md).

Every import publishes every valid case again, unchanged or not: the message of a case is a pure
function of its row (the timestamp is the incident date), so a re-import repeats the same records and
a corrected case follows its older message with the same `incident_id`. Consumers keep the latest
message per incident_id. The producer is the fleet's (kafka-python, acks=all).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import orjson
from kafka.errors import KafkaError, KafkaTimeoutError
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from strainwatch.events import Incident
from strainwatch.fleet.producer import ProduceError, delivered_or_raise, make_producer
from strainwatch.topics import INCIDENTS


def record(incident: Incident) -> tuple[bytes, bytes]:
    """(key, value) of an incident's Kafka record."""
    return incident.site_id.encode(), orjson.dumps(incident.model_dump(mode="json"))


def publish(
    incidents: Sequence[Incident],
    bootstrap: str,
    topic: str = INCIDENTS.name,
    *,
    progress: bool = False,
    flush_timeout_s: float = 60.0,
) -> int:
    """Send every incident; returns how many the broker acknowledged. Raises ProduceError unless all."""
    if not incidents:
        return 0
    producer = make_producer(bootstrap)
    futures = []
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} incidents"),
        TimeElapsedColumn(),
        transient=True,
        disable=not progress,
    )
    try:
        with bar:
            task = bar.add_task(f"publishing to {topic}", total=len(incidents))
            for incident in incidents:
                key, value = record(incident)
                futures.append(producer.send(topic, key=key, value=value))
                bar.advance(task)
            with contextlib.suppress(KafkaTimeoutError):  # unacknowledged ones are reported below
                producer.flush(timeout=flush_timeout_s)
    except KafkaError as error:
        raise ProduceError(f"publishing incidents to {topic} at {bootstrap} failed: {error}") from error
    finally:
        producer.close(timeout=10)
    return delivered_or_raise(futures, "incidents", topic, bootstrap)
