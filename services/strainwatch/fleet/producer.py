"""Publish simulated (or recorded) frames to Kafka with kafka-python, keyed by worker id."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from strainwatch.fleet.simulator import SimFrame
from strainwatch.kafka_clients import kafka_python_security


class ProduceError(RuntimeError):
    def __init__(self, message: str, stats: ProduceStats | None = None) -> None:
        super().__init__(message)
        self.stats = stats  # what was delivered before the failure, if anything was sent


@dataclass
class ProduceStats:
    """Frames the broker acknowledged (acks=all), not frames handed to the client."""

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


class _Deliveries:
    """Delivery reports of one produce run; callbacks arrive on the producer's I/O thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stats = ProduceStats()
        self.reasons: Counter[str] = Counter()
        self.sent = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.first_error = ""

    def delivered(self, item: SimFrame, _metadata: object) -> None:
        with self._lock:
            self.stats.frames_produced += 1
            if item.expected_reason is None:
                self.stats.valid_frames += 1
                self.stats.valid_samples += item.n_samples
            else:
                self.stats.invalid_frames += 1
                self.reasons[item.expected_reason.value] += 1

    def failure(self, error: BaseException) -> None:
        with self._lock:
            self.failed += 1
            self.errors[type(error).__name__] += 1
            self.first_error = self.first_error or str(error)

    def any_failed(self) -> bool:
        with self._lock:
            return self.failed > 0

    def verdict(self, topic: str, bootstrap: str, stopped_early: bool) -> str | None:
        """None when every frame sent was delivered, else what went wrong."""
        with self._lock:
            delivered = self.stats.frames_produced
            unconfirmed = self.sent - delivered - self.failed
            if self.failed == 0 and unconfirmed <= 0:
                return None
            parts = [
                f"{self.sent - delivered:,} of {self.sent:,} frames sent to {topic} at {bootstrap} "
                f"were not delivered ({delivered:,} delivered)"
            ]
            if self.failed:
                kinds = ", ".join(f"{name} ×{n:,}" for name, n in self.errors.most_common())
                parts.append(f"{self.failed:,} failed: {kinds}; first: {self.first_error[:300]}")
            if unconfirmed > 0:
                parts.append(f"{unconfirmed:,} not acknowledged within the flush timeout")
            if stopped_early:
                parts.append("stopped producing at the first failure")
            return "; ".join(parts)


def make_producer(bootstrap: str) -> KafkaProducer:
    try:
        return KafkaProducer(
            bootstrap_servers=bootstrap,
            **kafka_python_security(),
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


def produce(
    frames: Iterable[SimFrame],
    bootstrap: str,
    topic: str,
    progress: bool = False,
    flush_timeout_s: float = 120.0,
) -> ProduceStats:
    """Send every frame; returns what the broker acknowledged.

    Frames count when their delivery report arrives, not when `send()` returns (that only queues
    them). Raises ProduceError if the broker is unreachable or any frame was not delivered; sending
    stops at the first failure (with kafka-python's idempotent producer one refused batch fails
    everything after it anyway).
    """
    deliveries = _Deliveries()
    producer = make_producer(bootstrap)
    started = time.monotonic()
    stopped_early = False
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
                if deliveries.any_failed():
                    stopped_early = True
                    break
                try:
                    future = producer.send(topic, key=item.key, value=item.value)
                except KafkaTimeoutError as error:  # no metadata / buffer full for max_block_ms
                    raise ProduceError(
                        f"producing to {topic} at {bootstrap} failed: {error}", deliveries.stats
                    ) from error
                except KafkaError as error:  # refused before sending, e.g. larger than max_request_size
                    deliveries.sent += 1
                    deliveries.failure(error)
                    continue
                deliveries.sent += 1
                future.add_callback(deliveries.delivered, item)
                future.add_errback(deliveries.failure)
                if deliveries.sent % 1000 == 0:
                    bar.update(task, completed=deliveries.sent)
            # a flush timeout is reported below, as frames not acknowledged
            with contextlib.suppress(KafkaTimeoutError):
                producer.flush(timeout=flush_timeout_s)
    finally:
        producer.close(timeout=10)
    stats = deliveries.stats
    stats.by_reason = dict(deliveries.reasons)
    stats.elapsed_s = time.monotonic() - started
    problem = deliveries.verdict(topic, bootstrap, stopped_early)
    if problem is not None:
        raise ProduceError(problem, stats)
    return stats


def produce_roster(entries: Iterable[dict[str, Any]], bootstrap: str, topic: str) -> int:
    """Publish roster entries (RosterEntry JSON, key worker_id) to the compacted roster topic.

    Returns how many the broker acknowledged; raises ProduceError if any was not.
    """
    import orjson

    from strainwatch.events import RosterEntry

    producer = make_producer(bootstrap)
    futures = []
    try:
        for entry in entries:
            model = RosterEntry.model_validate(entry)
            futures.append(
                producer.send(
                    topic, key=model.worker_id.encode(), value=orjson.dumps(model.model_dump(mode="json"))
                )
            )
        with contextlib.suppress(KafkaTimeoutError):  # unacknowledged entries are reported below
            producer.flush(timeout=60)
    except KafkaError as error:
        raise ProduceError(f"producing the roster to {topic} at {bootstrap} failed: {error}") from error
    finally:
        producer.close(timeout=10)
    return delivered_or_raise(futures, "roster entries", topic, bootstrap)


def delivered_or_raise(futures: list[Any], what: str, topic: str, bootstrap: str) -> int:
    """How many sends the broker acknowledged; ProduceError naming the first error if any was not."""
    delivered = sum(1 for future in futures if future.succeeded())
    if delivered < len(futures):
        errors = [str(f.exception) for f in futures if f.failed()]
        raise ProduceError(
            f"{len(futures) - delivered} of {len(futures)} {what} were not delivered to {topic} at "
            f"{bootstrap}" + (f"; first error: {errors[0][:300]}" if errors else "; not acknowledged in time")
        )
    return delivered
