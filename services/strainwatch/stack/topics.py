"""Create strainwatch's topics (names and settings from strainwatch.topics), idempotently.

Existing topics are checked too: a topic whose max.message.bytes is below what strainwatch.topics
requires (created by an older release, or by hand) is raised, or the dead-letter topic would
refuse the dead letters of the largest frames and the processor would retry them forever.
"""

from __future__ import annotations

import contextlib
import time

import structlog
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from strainwatch.kafka_clients import kafka_python_security
from strainwatch.stack.procs import StackError
from strainwatch.topics import (
    ALL_TOPICS,
    POSTURE_EVENTS,
    PRIVACY_TOPICS,
    partitions_for,
    required_max_message_bytes,
)

log = structlog.get_logger("strainwatch.stack")

MAX_MESSAGE_BYTES = "max.message.bytes"
RETENTION_MS = "retention.ms"


def admin_client(bootstrap: str, timeout_s: float = 30.0) -> KafkaAdminClient:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return KafkaAdminClient(
                bootstrap_servers=bootstrap, **kafka_python_security(), request_timeout_ms=10_000
            )
        except KafkaError as error:  # broker still starting
            last = error
            time.sleep(0.2)
    raise StackError(f"no Kafka broker answers at {bootstrap}: {last}")


def ensure_reachable(bootstrap: str, timeout_s: float = 15.0) -> None:
    """The site's own broker (STRAINWATCH_KAFKA_BOOTSTRAP) answers; the stack starts none instead."""
    try:
        admin_client(bootstrap, timeout_s).close()
    except StackError as error:
        raise StackError(f"STRAINWATCH_KAFKA_BOOTSTRAP={bootstrap}: {error}") from None


def ensure_topics(
    bootstrap: str, posture_partitions: int, raw_retention_ms: int | None = None
) -> dict[str, int]:
    """Create missing topics, raise too small message limits; return {name: partitions} of every topic."""
    admin = admin_client(bootstrap)
    try:
        existing = set(admin.list_topics())
        present = [spec.name for spec in ALL_TOPICS if spec.name in existing]
        current = max_message_bytes(admin, present) if present else {}
        try:
            required = required_max_message_bytes(current or {})
        except ValueError as error:
            raise StackError(str(error)) from None
        wanted = []
        for spec in (*ALL_TOPICS, *PRIVACY_TOPICS):
            if spec.name in existing:
                continue
            retention = raw_retention_ms if spec.name == "posture.events.v1" else None
            config = spec.config(retention)
            config[MAX_MESSAGE_BYTES] = str(required.get(spec.name, spec.max_message_bytes))
            wanted.append(
                NewTopic(
                    name=spec.name,
                    num_partitions=partitions_for(spec, posture_partitions),
                    replication_factor=1,
                    topic_configs=config,
                )
            )
        if wanted:
            # a concurrent creator winning the race is the same outcome
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(wanted, timeout_ms=30_000)
        if current:
            _raise_limits(admin, current, required)
        if raw_retention_ms is not None and POSTURE_EVENTS.name in existing:
            _set_raw_retention(admin, raw_retention_ms)
        return describe(admin, [spec.name for spec in (*ALL_TOPICS, *PRIVACY_TOPICS)])
    finally:
        admin.close()


def max_message_bytes(admin: KafkaAdminClient, names: list[str]) -> dict[str, int] | None:
    """Effective max.message.bytes per topic; None if the broker cannot describe topic configs.

    Tansu fails DescribeConfigs (it drops the connection) and enforces no per-topic limit anyway,
    so there is nothing to check there.
    """
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, [MAX_MESSAGE_BYTES]) for name in names]
    try:
        described = admin.describe_configs(resources, config_filter="all")
    except KafkaConnectionError as error:
        log.warning("broker cannot describe topic configs; message limits not checked", error=str(error))
        return None
    out: dict[str, int] = {}
    for name, configs in (described.get("topic") or {}).items():
        value = (configs.get(MAX_MESSAGE_BYTES) or {}).get("value")
        if value is not None:
            out[name] = int(value)
    return out


def _raise_limits(admin: KafkaAdminClient, current: dict[str, int], required: dict[str, int]) -> None:
    low = {name: limit for name, limit in required.items() if name in current and current[name] < limit}
    if not low:
        return
    # incremental (SET of one key) on brokers >= 2.3: the topic's other settings stay as they are
    results = admin.alter_configs(
        [
            ConfigResource(ConfigResourceType.TOPIC, name, {MAX_MESSAGE_BYTES: str(limit)})
            for name, limit in low.items()
        ]
    )
    failed = {name: result for name, result in (results.get("topic") or {}).items() if result != "OK"}
    if failed:
        raise StackError(f"could not raise {MAX_MESSAGE_BYTES} of {failed}")
    for name, limit in low.items():
        log.info("topic message limit raised", topic=name, **{"from": current[name], "to": limit})


def _set_raw_retention(admin: KafkaAdminClient, retention_ms: int) -> None:
    """Raw posture frames are kept STRAINWATCH_RAW_RETENTION_DAYS (docs/privacy.md), also on a topic
    created earlier with another retention. Tansu cannot describe topic configs: nothing to set."""
    resource = ConfigResource(ConfigResourceType.TOPIC, POSTURE_EVENTS.name, [RETENTION_MS])
    try:
        described = admin.describe_configs([resource], config_filter="all")
    except KafkaConnectionError:
        return
    value = ((described.get("topic") or {}).get(POSTURE_EVENTS.name) or {}).get(RETENTION_MS) or {}
    if value.get("value") is None or int(value["value"]) == retention_ms:
        return
    results = admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, POSTURE_EVENTS.name, {RETENTION_MS: str(retention_ms)})]
    )
    failed = {name: r for name, r in (results.get("topic") or {}).items() if r != "OK"}
    if failed:
        raise StackError(f"could not set {RETENTION_MS} of {failed}")
    log.info("raw posture retention set", topic=POSTURE_EVENTS.name, retention_ms=retention_ms)


def describe(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for topic in admin.describe_topics(names):
        # kafka-python 3.0 names the field `name`; 2.x called it `topic`
        name = topic.get("name") or topic.get("topic")
        out[str(name)] = len(topic.get("partitions") or [])
    return out
