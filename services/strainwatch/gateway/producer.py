"""Publish simulated (or recorded) frames to Kafka with kafka-python, keyed by worker id."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from strainwatch.gateway.simulator import SimFrame


class ProduceError(RuntimeError):
    pass


@dataclass
class ProduceStats:
    frames_produced: int = 0
    valid_frames: int = 0
    invalid_frames: int = 0
    valid_samples: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames_produced": self.frames_produced,
            "valid_frames": self.valid_frames,
            "invalid_frames": self.invalid_frames,
            "valid_samples": self.valid_samples,
            "by_reason": self.by_reason,
            "elapsed_s": round(self.elapsed_s, 3),
        }


def make_producer(bootstrap: str) -> KafkaProducer:
    try:
        return KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=20,
            batch_size=262_144,
            max_request_size=4 * 1024 * 1024,  # oversized test frames must reach the dead-letter path
            request_timeout_ms=30_000,
            max_block_ms=30_000,
        )
    except KafkaError:  # kafka-python 3.0: KafkaTimeoutError "Unable to bootstrap from ..."
        raise ProduceError(
            f"no Kafka broker answers at {bootstrap} (is the stack up? `strainwatch stack up`)"
        ) from None


def produce(frames: Iterable[SimFrame], bootstrap: str, topic: str, progress: bool = False) -> ProduceStats:
    """Send every frame; returns what was sent. Raises ProduceError if the broker is unreachable."""
    stats = ProduceStats()
    reasons: Counter[str] = Counter()
    producer = make_producer(bootstrap)
    started = time.monotonic()
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,} frames"),
        TimeElapsedColumn(),
        transient=True,
        disable=not progress,
    )
    try:
        with bar:
            task = bar.add_task("producing", total=None)
            for item in frames:
                producer.send(topic, key=item.key, value=item.value)
                stats.frames_produced += 1
                if item.expected_reason is None:
                    stats.valid_frames += 1
                    stats.valid_samples += item.n_samples
                else:
                    stats.invalid_frames += 1
                    reasons[item.expected_reason.value] += 1
                if stats.frames_produced % 1000 == 0:
                    bar.update(task, completed=stats.frames_produced)
            producer.flush(timeout=120)
    except KafkaError as error:
        raise ProduceError(f"producing to {topic} at {bootstrap} failed: {error}") from error
    finally:
        producer.close(timeout=10)
    stats.by_reason = dict(reasons)
    stats.elapsed_s = time.monotonic() - started
    return stats


def produce_roster(entries: Iterable[dict[str, Any]], bootstrap: str, topic: str) -> int:
    """Publish roster entries (RosterEntry JSON, key worker_id) to the compacted roster topic."""
    import orjson

    from strainwatch.events import RosterEntry

    producer = make_producer(bootstrap)
    count = 0
    try:
        for entry in entries:
            model = RosterEntry.model_validate({k: v for k, v in entry.items() if k != "task"})
            producer.send(
                topic, key=model.worker_id.encode(), value=orjson.dumps(model.model_dump(mode="json"))
            )
            count += 1
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)
    return count
