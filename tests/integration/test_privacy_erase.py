"""`strainwatch privacy erase` on real components: Apache Kafka, InfluxDB 1.6.7, the processor.

One worker's points go from every measurement and retention policy while another's stay; the
processor, restarted after the erasure, restores its table from the changelog without the worker;
an unknown worker is a clear message; bad arguments exit 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from strainwatch.privacy.services import worker_digest
from strainwatch.topics import POSTURE_EVENTS, ROSTER
from tests.integration.conftest import Broker, Influx, ProcessorProc, processor_env
from tests.integration.pipeline import PROFILES
from tests.support import encode, frame, wait_for

pytestmark = pytest.mark.integration

ERASED, KEPT = "w-erase-1", "w-keep-2"


def _hour_start() -> datetime:
    """Ten minutes into an hour three hours ago: every frame of the test falls in one hour."""
    hour = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=10, second=0, microsecond=0)
    return hour


def _produce_frames(bootstrap: str, workers: list[str], start: datetime, seconds: int) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10)
    futures = []
    for second in range(seconds):
        for i, worker in enumerate(workers):
            doc = frame(worker, start + timedelta(seconds=second), angles=PROFILES[i % 2])
            futures.append(producer.send(POSTURE_EVENTS.name, key=worker.encode(), value=encode(doc)))
    producer.flush(30)
    for future in futures:
        future.get(10)
    producer.close()
    return len(futures)


def _produce_roster(bootstrap: str, workers: list[str]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for worker in workers:
        entry = {
            "schema_version": 1,
            "worker_id": worker,
            "site_id": "plant-1",
            "team": "assembly",
            "shift": "day",
            "device_id": f"dev-{worker}",
        }
        producer.send(ROSTER.name, key=worker.encode(), value=orjson.dumps(entry)).get(10)
    producer.close()


def _write_lines(influx: Influx, database: str, lines: list[str]) -> None:
    req = urllib.request.Request(
        f"{influx.url}/write?db={database}&precision=s", data="\n".join(lines).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204


def _counts(influx: Influx, database: str, worker: str) -> dict[str, int]:
    """{"<rp>.<measurement>": points} of one worker, every retention policy."""
    out: dict[str, int] = {}
    ql = influx.ql(database)
    for rp in ("autogen", "windows"):
        for series in ql.query(f'SELECT count(*) FROM "{rp}"./.*/ WHERE "worker" = \'{worker}\''):
            row = series["values"][0]
            out[f"{rp}.{series['name']}"] = max(int(v) for v in row[1:] if v is not None)
    return out


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "strainwatch.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _latest(bootstrap: str, topic: str, key: bytes) -> tuple[bool, bytes | None]:
    """(seen, value of the key's latest record) over every partition of a topic."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    if not tps:  # not created yet
        consumer.close()
        return False, None
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ends = consumer.end_offsets(tps)
    seen, value = False, None
    waiting = {tp for tp in tps if ends[tp] > 0}
    while waiting:
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                if record.key == key:
                    seen, value = True, record.value
        waiting = {tp for tp in waiting if consumer.position(tp) < ends[tp]}
    consumer.close()
    return seen, value


def test_erase_removes_one_worker_everywhere_and_the_processor_does_not_resurrect_it(
    broker: Broker, influx: Influx, run_processor: object, tmp_path: Path
) -> None:
    database = influx.new_database()
    env = processor_env(broker, influx, database, tmp_path / "state")
    start = _hour_start()
    _produce_roster(broker.bootstrap, [ERASED, KEPT])
    processor = run_processor(env)  # type: ignore[operator]
    produced = _produce_frames(broker.bootstrap, [ERASED, KEPT], start, 60)
    ql = influx.ql(database)
    wait_for(
        lambda: int(ql.scalar('SELECT SUM("frames") FROM "windows"."exposure"')) == produced,
        timeout_s=90,
        what="the processor to store every frame",
    )
    # the alerting service's measurements and two without a worker tag, written as it would
    ts = int(start.timestamp())
    lines = []
    for worker in (ERASED, KEPT):
        lines += [
            f"break_prompt,site=plant-1,team=assembly,worker={worker},kind=nudge,segment=trunk_flexion,"
            f"status=sent,reason=ok sent=1i {ts}",
            f"break_ack,site=plant-1,team=assembly,worker={worker},outcome=taken,source=posture,kind=nudge "
            f"taken=1i {ts}",
        ]
    lines += [
        f"incident,site=plant-1,team=assembly,case_id=c1,body_part=shoulder,severity=minor,"
        f"injury_type=strain days_away=0i {ts}",
        f"pipeline,service=processor,instance=i1 frames_in=1i {ts}",
    ]
    _write_lines(influx, database, lines)
    erased_before = wait_for(
        lambda: (c := _counts(influx, database, ERASED)).get("autogen.exposure_hourly") and c,
        timeout_s=30,
        what="the erased worker's hourly rollup",
    )
    kept_before = _counts(influx, database, KEPT)
    assert {
        "windows.exposure",
        "autogen.exposure_hourly",
        "autogen.break_prompt",
        "autogen.break_ack",
    } <= set(erased_before)

    result = _cli(env, "privacy", "erase", "--worker", ERASED, "--wait-s", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    report = orjson.loads(result.stdout)
    assert report["points_deleted"] == erased_before
    assert report["points_left"] == {}
    assert report["confirmed_by"] == [env["STRAINWATCH_PROCESSOR_GROUP"]]
    assert report["roster_entry"] is True
    # the log says who only as a hash
    assert ERASED not in result.stdout + result.stderr
    assert worker_digest(ERASED) in result.stdout + result.stderr

    assert _counts(influx, database, ERASED) == {}
    assert _counts(influx, database, KEPT) == kept_before
    assert ql.scalar('SELECT count("days_away") FROM "incident"') == 1
    assert ql.scalar('SELECT count("frames_in") FROM "pipeline"') >= 1
    wait_for(
        lambda: "erasure applied" in processor.full_log(),  # type: ignore[attr-defined]
        timeout_s=10,
        what="the processor's erasure log line",
    )
    assert ERASED not in processor.full_log()  # type: ignore[attr-defined]

    # every state topic's latest record for the worker is a tombstone
    group = env["STRAINWATCH_PROCESSOR_GROUP"]
    for topic in (f"{group}-worker-state-changelog", f"{group}-roster-changelog", ROSTER.name):
        seen, value = _latest(broker.bootstrap, topic, ERASED.encode())
        assert seen and value is None, topic

    # restart: the table restores from the changelog; new frames of the worker in the same hour
    # must start a fresh record (a resurrected one would carry the erased windows in its hour)
    assert processor.terminate() == 0  # type: ignore[attr-defined]
    restarted = run_processor(env)  # type: ignore[operator]
    later = start + timedelta(seconds=120)
    more = _produce_frames(broker.bootstrap, [ERASED], later, 60)
    wait_for(
        lambda: (
            int(ql.scalar(f'SELECT SUM("frames") FROM "windows"."exposure" WHERE "worker" = \'{ERASED}\''))
            == more
        ),
        timeout_s=90,
        what="the restarted processor to store the new frames",
    )
    stored_windows = int(
        ql.scalar(f'SELECT count("frames") FROM "windows"."exposure" WHERE "worker" = \'{ERASED}\'')
    )
    hourly = wait_for(
        lambda: int(ql.scalar(f'SELECT max("windows") FROM "exposure_hourly" WHERE "worker" = \'{ERASED}\'')),
        timeout_s=30,
        what="the new hourly point",
    )
    assert 0 < hourly < stored_windows <= 7, (hourly, stored_windows)
    assert restarted.running()  # type: ignore[attr-defined]


def test_erase_of_an_unknown_worker_is_a_clear_message(kafka: Broker, influx: Influx, tmp_path: Path) -> None:
    database = influx.new_database()
    env = processor_env(kafka, influx, database, tmp_path / "state")
    result = _cli(env, "privacy", "erase", "--worker", "w-nobody")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no data of worker 'w-nobody'" in result.stderr
    assert "nothing erased" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["privacy", "erase"],
        ["privacy", "erase", "--worker", "a b"],
        ["privacy", "erase", "--worker", "someone@example.com"],
        ["privacy", "erase", "--worker", "w-1", "--site", "plant 1"],
        ["privacy", "erase", "--worker", "w-1", "--wait-s", "-1"],
    ],
)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    result = _cli({}, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_the_stack_sets_raw_posture_retention_on_an_existing_topic(kafka: Broker) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType

    from strainwatch.stack.topics import ensure_topics

    def config(key: str) -> int:
        admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        resource = ConfigResource(ConfigResourceType.TOPIC, POSTURE_EVENTS.name, [key])
        described = admin.describe_configs([resource], config_filter="all")
        admin.close()
        return int(described["topic"][POSTURE_EVENTS.name][key]["value"])

    def retention() -> int:
        return config("retention.ms")

    assert retention() == 7 * 86_400_000  # created by the fixture with the topic's default
    ensure_topics(kafka.bootstrap, kafka.partitions, 2 * 86_400_000)  # STRAINWATCH_RAW_RETENTION_DAYS=2
    # the broker applies a config change through its metadata log: visible within moments
    wait_for(lambda: retention() == 2 * 86_400_000, timeout_s=15, what="the new retention")
    assert config("max.message.bytes") == POSTURE_EVENTS.max_message_bytes  # the rest stays as it was


def test_site_scoped_erase_without_a_running_processor(
    broker: Broker, influx: Influx, tmp_path: Path
) -> None:
    """`--site` narrows the InfluxDB deletion; with no processor running nothing is waited for (on
    Tansu, the local stack's default broker, too)."""
    database = influx.new_database()
    env = processor_env(broker, influx, database, tmp_path / "state")
    ts = int(_hour_start().timestamp())
    lines = []
    for site in ("plant-a", "plant-b"):
        lines += [
            f"exposure,site={site},team=t,task=k,worker={ERASED} frames=1i {ts}",
            f"exposure_hourly,site={site},team=t,task=k,worker={ERASED} windows=1i {ts}",
        ]
    # the windows retention policy holds `exposure`, the default one the rest
    _write_lines(influx, database, [line for line in lines if line.startswith("exposure_hourly")])
    req = urllib.request.Request(
        f"{influx.url}/write?db={database}&rp=windows&precision=s",
        data="\n".join(line for line in lines if line.startswith("exposure,")).encode(),
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204
    assert _counts(influx, database, ERASED) == {"autogen.exposure_hourly": 2, "windows.exposure": 2}

    result = _cli(env, "privacy", "erase", "--worker", ERASED, "--site", "plant-a", "--wait-s", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    report = orjson.loads(result.stdout)
    assert report["points_deleted"] == {"autogen.exposure_hourly": 1, "windows.exposure": 1}
    assert report["confirmed_by"] == [] and report["unconfirmed"] == []
    ql = influx.ql(database)
    left = ql.query(
        f'SELECT count("windows") FROM "exposure_hourly" WHERE "worker" = \'{ERASED}\' GROUP BY "site"'
    )
    assert [(s["tags"]["site"], s["values"][0][1]) for s in left] == [("plant-b", 1)]
    left = ql.query(
        f'SELECT count("frames") FROM "windows"."exposure" WHERE "worker" = \'{ERASED}\' GROUP BY "site"'
    )
    assert [(s["tags"]["site"], s["values"][0][1]) for s in left] == [("plant-b", 1)]


def test_a_state_restore_skips_a_key_whose_latest_record_is_a_tombstone(broker: Broker) -> None:
    """The alerting service's restore (alerts/state_topic.read_to_end) reads each key's latest
    record, so an erased worker stays erased before the log cleaner has compacted anything."""
    import asyncio

    from strainwatch.alerts.state_topic import read_to_end

    topic = "alerts.state.v1"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    from kafka.admin import NewTopic

    admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"cleanup.policy": "compact"})])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for key, value in (
        (b"w-a", b"a1"),
        (b"w-b", b"b1"),
        (b"w-a", b"a2"),
        (b"w-b", None),  # erased
        (b"w-c", None),  # a tombstone for a key never written
    ):
        producer.send(topic, key=key, value=value, partition=0).get(10)
    producer.close()

    async def restore() -> list[tuple[int, bytes]]:
        return [item async for item in read_to_end(broker.bootstrap, topic, {0})]

    assert asyncio.run(restore()) == [(0, b"a2")]


def _alert(worker: str, at: datetime) -> dict[str, object]:
    return {
        "schema_version": 1,
        "alert_id": str(uuid.uuid4()),
        "worker_id": worker,
        "site_id": "plant-1",
        "team": "assembly",
        "kind": "conditioning_break",
        "ts": at.isoformat().replace("+00:00", "Z"),
        "segment": "neck_flexion",
        "dose": 600.0,
        "routine": ["chin tucks", "upper-trapezius stretch", "slow neck rotations"],
        "thresholds_version": "default@1",
    }


def _restored_records(log: str, message: str) -> int:
    total = 0
    for line in log.splitlines():
        if message in line and line.startswith("{"):
            total += int(orjson.loads(line).get("records", 0))
    return total


def test_the_alerting_service_forgets_an_erased_worker(kafka: Broker, influx: Influx, tmp_path: Path) -> None:
    """The running alerting service (delivery loop and outcome tracker) drops the worker when the
    request arrives, tombstones its state behind anything it wrote, and restores without it."""
    database = influx.new_database()
    env = {
        "STRAINWATCH_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "STRAINWATCH_INFLUX_URL": influx.url,
        "STRAINWATCH_INFLUX_BUCKET": database,
        "STRAINWATCH_BROKER_SESSION_TIMEOUT_S": "6",
        "STRAINWATCH_PROCESSOR_GROUP": f"proc-{uuid.uuid4().hex[:8]}",
        "STRAINWATCH_LOG_FORMAT": "json",
    }
    _produce_roster(kafka.bootstrap, [ERASED, KEPT])
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    for worker in (ERASED, KEPT):
        producer.send("alerts.break.v1", key=worker.encode(), value=orjson.dumps(_alert(worker, at))).get(10)
    producer.close()
    service = ProcessorProc(env, tmp_path / "alerts-0.log", command=("alerts", "run"))
    service.start()
    try:
        for topic in ("alerts.state.v1", "alerts.outcomes.state.v1"):
            for worker in (ERASED, KEPT):
                wait_for(
                    lambda t=topic, w=worker: _latest(kafka.bootstrap, t, w.encode())[1] is not None,
                    timeout_s=60,
                    what=f"{worker}'s state in {topic}",
                )
        ql = influx.ql(database)
        prompts = 'SELECT count(*) FROM "break_prompt" WHERE "worker" = \'{}\''
        wait_for(
            lambda: ql.query(prompts.format(ERASED)), timeout_s=30, what="the erased worker's prompt point"
        )

        result = _cli(env, "privacy", "erase", "--worker", ERASED, "--wait-s", "5")
        assert result.returncode == 0, result.stdout + result.stderr
        report = orjson.loads(result.stdout)
        assert {"alerts.state.v1", "alerts.outcomes.state.v1", ROSTER.name} <= set(
            report["tombstoned_topics"]
        )
        assert report["points_deleted"].get("autogen.break_prompt") == 1
        digest = worker_digest(ERASED)
        for part in ("delivery", "outcomes"):
            wait_for(
                lambda p=part: any(
                    f'"service": "{p}"' in line and digest in line and "erasure applied" in line
                    for line in service.full_log().splitlines()
                ),
                timeout_s=20,
                what=f"the alerting service's {part} to apply the erasure",
            )
        for topic in ("alerts.state.v1", "alerts.outcomes.state.v1"):
            assert _latest(kafka.bootstrap, topic, ERASED.encode()) == (True, None), topic
            assert _latest(kafka.bootstrap, topic, KEPT.encode())[1] is not None, topic
        assert not ql.query(prompts.format(ERASED))
        assert ql.query(prompts.format(KEPT))

        # restarted, it restores the kept worker only
        assert service.terminate() == 0
        restarted = ProcessorProc(env, tmp_path / "alerts-1.log", command=("alerts", "run"))
        restarted.start()
        try:
            wait_for(
                lambda: (
                    "delivery state restored" in restarted.full_log()
                    and '"state restored"' in restarted.full_log()
                ),
                timeout_s=60,
                what="the restarted service's restores",
            )
            log = restarted.full_log()
            assert _restored_records(log, "delivery state restored") == 1
            assert _restored_records(log, '"state restored"') == 1
            assert ERASED not in log
        finally:
            restarted.stop()
    finally:
        service.stop()


def test_an_unreachable_kafka_is_a_clear_message(influx: Influx, tmp_path: Path) -> None:
    from strainwatch.stack.procs import free_port

    database = influx.new_database()
    env = {
        "STRAINWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "STRAINWATCH_INFLUX_URL": influx.url,
        "STRAINWATCH_INFLUX_BUCKET": database,
        "STRAINWATCH_STATE_DIR": str(tmp_path),
    }
    result = _cli(env, "privacy", "erase", "--worker", ERASED)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"privacy erase failed: Kafka at {env['STRAINWATCH_KAFKA_BOOTSTRAP']}" in result.stderr
    assert "nothing erased" in result.stderr and "Traceback" not in result.stderr
