"""`strainwatch privacy erase --worker W`: one pseudonym's points and state, gone (docs/privacy.md).

Order, so that nothing written while the erasure runs survives it:
1. count the worker's points per retention policy and measurement (InfluxQL, every measurement
   with a `worker` tag) and look for its roster entry: neither means an unknown worker, and nothing
   is written;
2. tombstone the worker's key on every partition of the compacted topics that hold per-worker state:
   the processor's table changelogs (worker state, roster), the alerting service's state topics and
   `roster.v1` (a restore, or compaction, then drops the worker);
3. publish the erasure request on `privacy.erasures.v1`: a running processor drops the worker from
   memory and tombstones its record behind any record it wrote meanwhile; the alerting service's
   delivery loop and outcome tracker do the same at their next batch;
4. wait until every processor group member has consumed the request (its committed offset on
   `privacy.erasures.v1`), so no checkpoint can write the worker's points after step 5;
5. delete the points (1.x: InfluxQL `DELETE`, every retention policy; 2.x: `/api/v2/delete` per
   bucket), count again, delete once more if a late write slipped in, and report.

The log line says which worker only as a hash, and how many points went per measurement.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka.errors import KafkaError as AIOKafkaError
from kafka.errors import KafkaError

from strainwatch.config import Settings
from strainwatch.kafka_clients import aiokafka_security, kafka_python_security
from strainwatch.privacy.request import ErasureRequest
from strainwatch.privacy.services import worker_digest
from strainwatch.stack.influx_setup import InfluxServer, detect, influxql, request, split_windows_bucket
from strainwatch.stack.procs import StackError
from strainwatch.storage.measurements import WINDOWS_RP
from strainwatch.topics import ALERTS_OUTCOMES_STATE, ALERTS_STATE, PRIVACY_ERASURES, ROSTER

log = structlog.get_logger("strainwatch.privacy")

# processor tables (processor/app.py STATE_TABLE, ROSTER_TABLE): faust names their changelogs
# "<app id>-<table>-changelog", the app id being the processor's consumer group
PROCESSOR_TABLES = ("worker-state", "roster")
DELETE_START = "1970-01-01T00:00:00Z"
DELETE_STOP = "2262-04-11T00:00:00Z"  # InfluxDB's largest timestamp, rounded down


class UnknownWorker(Exception):
    """No point and no roster entry of this worker: nothing erased."""


class ErasureError(Exception):
    """The erasure could not be completed; the message says what is left."""


@dataclass
class ErasureReport:
    worker_digest: str
    site: str | None
    influx_kind: str
    points_deleted: dict[str, int]
    points_left: dict[str, int]
    tombstoned_topics: list[str]
    roster_entry: bool
    request: dict[str, int]
    confirmed_by: list[str] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def state_topics(settings: Settings) -> list[str]:
    """Every compacted topic keyed by worker id that holds a worker's state."""
    group = settings.processor_group
    return [
        *(f"{group}-{table}-changelog" for table in PROCESSOR_TABLES),
        ALERTS_STATE.name,
        ALERTS_OUTCOMES_STATE.name,
        ROSTER.name,
    ]


# --- InfluxDB ------------------------------------------------------------------------------------


def _where(worker: str, site: str | None) -> str:
    # worker and site are checked against the pseudonym pattern (no quotes, no backslashes)
    clause = f"\"worker\" = '{worker}'"
    return clause + (f" AND \"site\" = '{site}'" if site else "")


def retention_policies(settings: Settings) -> tuple[str, ...]:
    _, windows_rp = split_windows_bucket(settings.influx_bucket, settings.influx_windows_bucket or None)
    return ("autogen", windows_rp)


def count_points(server: InfluxServer, settings: Settings, worker: str, site: str | None) -> dict[str, int]:
    """{"<rp>.<measurement>": points} of the worker (a point counts once: the largest field count)."""
    counts: dict[str, int] = {}
    for rp in retention_policies(settings):
        series = influxql(
            server.url,
            server.token,
            f'SELECT count(*) FROM "{rp}"./.*/ WHERE {_where(worker, site)}',
            f"counting the worker's points in {rp}",
            database=settings.influx_bucket,
        )
        for s in series:
            row = (s.get("values") or [[0]])[0]
            n = max((int(v) for v in row[1:] if isinstance(v, int | float)), default=0)
            if n:
                counts[f"{rp}.{s['name']}"] = n
    return counts


def delete_points(server: InfluxServer, settings: Settings, worker: str, site: str | None) -> None:
    if server.kind == "1":
        # DELETE has no retention policy clause: it deletes from every one of the database's
        # (measured on InfluxDB 1.6.7, tests/integration/test_privacy_erase.py)
        influxql(
            server.url,
            server.token,
            f"DELETE FROM /.*/ WHERE {_where(worker, site)}",
            "deleting the worker's points",
            database=settings.influx_bucket,
        )
        return
    if server.kind != "2":
        raise ErasureError(
            f"InfluxDB {server.version} (3.x): delete the worker's points with its own tools; "
            "strainwatch erases on 1.x and 2.x"
        )
    predicate = f'worker="{worker}"' + (f' AND site="{site}"' if site else "")
    windows = settings.influx_windows_bucket or f"{settings.influx_bucket}/{WINDOWS_RP}"
    for bucket in (settings.influx_bucket, windows):
        request(
            server.url,
            server.token,
            "POST",
            "/api/v2/delete",
            f"deleting the worker's points in bucket {bucket}",
            params={"org": settings.influx_org, "bucket": bucket},
            body={"start": DELETE_START, "stop": DELETE_STOP, "predicate": predicate},
        )


# --- Kafka ---------------------------------------------------------------------------------------


def roster_entry(bootstrap: str, worker: str) -> bool:
    """True if roster.v1's latest record for the worker is an entry (not a tombstone)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **kafka_python_security())
    try:
        partitions = consumer.partitions_for_topic(ROSTER.name) or set()
        tps = [TopicPartition(ROSTER.name, p) for p in partitions]
        if not tps:
            return False
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        key = worker.encode()
        found = False
        waiting = {tp for tp in tps if ends[tp] > 0}
        while waiting:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    if record.key == key:
                        found = record.value is not None
            waiting = {tp for tp in waiting if consumer.position(tp) < ends[tp]}
        return found
    finally:
        consumer.close()


def publish(settings: Settings, worker: str, site: str | None) -> tuple[list[str], dict[str, int]]:
    """Tombstones on every state topic that exists, then the erasure request; returns the topics
    tombstoned and where the request landed ({"partition", "offset"})."""
    from kafka import KafkaConsumer, KafkaProducer

    metadata = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, **kafka_python_security())
    try:
        existing = metadata.topics()
        layout = {
            topic: sorted(metadata.partitions_for_topic(topic) or ())
            for topic in state_topics(settings)
            if topic in existing
        }
    finally:
        metadata.close()
    if PRIVACY_ERASURES.name not in existing:
        raise ErasureError(
            f"topic {PRIVACY_ERASURES.name} does not exist: run `strainwatch stack topics` first"
        )
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5, **kafka_python_security()
    )
    try:
        key = worker.encode()
        topics = [topic for topic, partitions in layout.items() if partitions]
        futures = [
            producer.send(topic, key=key, value=None, partition=p)
            for topic, partitions in layout.items()
            for p in partitions
        ]
        producer.flush(30)
        for future in futures:
            future.get(30)
        message = ErasureRequest(
            schema_version=1,
            worker_id=worker,
            site_id=site,
            requested_at=datetime.now(UTC),
            request_id=uuid.uuid4().hex,
        )
        sent = producer.send(PRIVACY_ERASURES.name, key=key, value=message.model_dump_json().encode())
        producer.flush(30)
        meta = sent.get(30)
        return topics, {"partition": int(meta.partition), "offset": int(meta.offset)}
    finally:
        producer.close(10)


def wait_for_groups(
    settings: Settings, placed: dict[str, int], timeout_s: float
) -> tuple[list[str], list[str]]:
    """Wait until each consumer group of privacy.erasures.v1 that has members has committed past the
    request; returns (confirmed, unconfirmed) groups. A group without members (service stopped) has
    nothing in memory: it restores from the tombstoned changelogs when it starts."""
    import asyncio

    return asyncio.run(_wait_for_groups(settings, placed, timeout_s))


async def _wait_for_groups(
    settings: Settings, placed: dict[str, int], timeout_s: float
) -> tuple[list[str], list[str]]:
    import asyncio

    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    # aiokafka's admin, not kafka-python's: the latter cannot parse Tansu's DescribeGroups answer
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **aiokafka_security())
    await admin.start()
    tp = TopicPartition(PRIVACY_ERASURES.name, placed["partition"])
    wanted = placed["offset"] + 1
    try:
        groups = [settings.processor_group]
        pending = [group for group in groups if await _has_members(admin, group)]
        confirmed: list[str] = []
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for group in list(pending):
                offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
                meta = offsets.get(tp)
                if meta is not None and meta.offset is not None and meta.offset >= wanted:
                    pending.remove(group)
                    confirmed.append(group)
            if pending:
                await asyncio.sleep(0.2)
        return confirmed, pending
    finally:
        await admin.close()


async def _has_members(admin: Any, group: str) -> bool:
    """True if the consumer group has members now. A broker where no group ever committed has no
    coordinator for it yet (CoordinatorNotAvailable until the offsets topic exists): no members
    either; a coordinator that is only moving answers again within seconds."""
    import asyncio

    from aiokafka.errors import KafkaError as AIOKafkaError

    deadline = time.monotonic() + 5.0
    while True:
        try:
            responses = await admin.describe_consumer_groups([group])
        except AIOKafkaError as error:
            if time.monotonic() >= deadline:
                log.info("consumer group not known to the broker", group=group, error=type(error).__name__)
                return False
        else:
            for response in responses:
                for described in response.groups:
                    # (error_code, group_id, state, protocol_type, protocol, members, ...)
                    if described[1] == group and described[0] == 0:
                        return bool(described[5])
            if time.monotonic() >= deadline:
                return False
        await asyncio.sleep(0.5)


# --- the erasure ---------------------------------------------------------------------------------


def erase(settings: Settings, worker: str, site: str | None = None, wait_s: float = 60.0) -> ErasureReport:
    started = time.monotonic()
    try:
        token = settings.influx_token.get_secret_value()
    except ValueError as error:  # ConfigError: no token for a remote InfluxDB
        raise ErasureError(str(error)) from None
    try:
        server = detect(settings.influx_url, token)
        before = count_points(server, settings, worker, site)
    except StackError as error:
        raise ErasureError(str(error)) from None
    try:
        rostered = roster_entry(settings.kafka_bootstrap, worker)
    except KafkaError as error:
        raise ErasureError(f"Kafka at {settings.kafka_bootstrap}: {error}; nothing erased") from None
    if not before and not rostered:
        raise UnknownWorker(
            f"no data of worker {worker!r}{' at site ' + site if site else ''}: no point in InfluxDB "
            f"({settings.influx_bucket}, every retention policy) and no roster entry; nothing erased. "
            "Check the pseudonym (it may already have been erased)."
        )
    try:
        topics, placed = publish(settings, worker, site)
        confirmed, unconfirmed = wait_for_groups(settings, placed, wait_s)
    except (KafkaError, AIOKafkaError) as error:
        raise ErasureError(
            f"Kafka at {settings.kafka_bootstrap}: {error}; run the erasure again (it is idempotent)"
        ) from None
    try:
        delete_points(server, settings, worker, site)
        after = count_points(server, settings, worker, site)
        if after:  # a write that was in flight when the services got the request
            delete_points(server, settings, worker, site)
            after = count_points(server, settings, worker, site)
    except StackError as error:
        raise ErasureError(f"the worker's state is erased but its points are not: {error}") from None
    report = ErasureReport(
        worker_digest=worker_digest(worker),
        site=site,
        influx_kind=f"{server.kind}.x ({server.version})",
        points_deleted={name: n - after.get(name, 0) for name, n in before.items()},
        points_left=after,
        tombstoned_topics=topics,
        roster_entry=rostered,
        request=placed,
        confirmed_by=confirmed,
        unconfirmed=unconfirmed,
        elapsed_s=round(time.monotonic() - started, 2),
    )
    log.info(
        "worker erased",
        worker_digest=report.worker_digest,
        site=site,
        points_deleted=report.points_deleted,
        points_left=after,
        state_topics=len(topics),
        processor_confirmed=bool(confirmed) or not unconfirmed,
    )
    return report
