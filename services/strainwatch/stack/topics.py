"""Create strainwatch's topics (names and settings from strainwatch.topics), idempotently."""

from __future__ import annotations

import contextlib
import time

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from strainwatch.stack.procs import StackError
from strainwatch.topics import ALL_TOPICS, partitions_for


def admin_client(bootstrap: str, timeout_s: float = 30.0) -> KafkaAdminClient:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        except KafkaError as error:  # broker still starting
            last = error
            time.sleep(0.2)
    raise StackError(f"no Kafka broker answers at {bootstrap}: {last}")


def ensure_topics(
    bootstrap: str, posture_partitions: int, raw_retention_ms: int | None = None
) -> dict[str, int]:
    """Create missing topics; return {name: partitions} of every strainwatch topic."""
    admin = admin_client(bootstrap)
    try:
        existing = set(admin.list_topics())
        wanted = []
        for spec in ALL_TOPICS:
            if spec.name in existing:
                continue
            retention = raw_retention_ms if spec.name == "posture.events.v1" else None
            wanted.append(
                NewTopic(
                    name=spec.name,
                    num_partitions=partitions_for(spec, posture_partitions),
                    replication_factor=1,
                    topic_configs=spec.config(retention),
                )
            )
        if wanted:
            # a concurrent creator winning the race is the same outcome
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(wanted, timeout_ms=30_000)
        return describe(admin, [spec.name for spec in ALL_TOPICS])
    finally:
        admin.close()


def describe(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for topic in admin.describe_topics(names):
        # kafka-python 3.0 names the field `name`; 2.x called it `topic`
        name = topic.get("name") or topic.get("topic")
        out[str(name)] = len(topic.get("partitions") or [])
    return out
