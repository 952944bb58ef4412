"""Break outcomes on the real components: prompts, windows and acks on Kafka -> `run_outcomes` ->
BreakAck (stage outcome) on alerts.ack.v1 and `break_ack` points in InfluxDB. A restart with the same
group publishes nothing twice; a fresh group replaying from the start publishes identical messages."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from strainwatch.alerts.outcome_runner import run_outcomes
from strainwatch.config import Settings
from strainwatch.events import BreakAck, ExposureWindow, PromptDecision, ZoneSeconds
from strainwatch.topics import ALERTS_ACK, ALERTS_PROMPTS, EXPOSURE_WINDOWS
from tests.integration.conftest import Broker, Influx, processor_env
from tests.support import aligned_start, wait_for

pytestmark = pytest.mark.integration

SEGMENTS = ("trunk_flexion", "neck_flexion", "arm_elevation_left", "arm_elevation_right")
IDLE_TIMEOUT_S = 3.0


class RunnerThread:
    """`run_outcomes` in its own event loop and thread; stop() sets its stop event and joins."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        self.kwargs = kwargs
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def start(self) -> RunnerThread:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def _main(self) -> None:
        async def run() -> None:
            self.loop = asyncio.get_running_loop()
            self.stop_event = asyncio.Event()
            self._ready.set()
            await run_outcomes(self.settings, self.stop_event, **self.kwargs)

        try:
            asyncio.run(run())
        except BaseException as error:  # surfaced by stop()
            self.error = error

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_event.set)
            self._thread.join(30)
        assert not self._thread.is_alive(), "run_outcomes did not stop within 30 s"
        if self.error is not None:
            raise self.error


@pytest.fixture
def runners() -> Iterator[list[RunnerThread]]:
    started: list[RunnerThread] = []
    yield started
    for runner in started:
        if runner._thread.is_alive():
            runner.loop.call_soon_threadsafe(runner.stop_event.set)
            runner._thread.join(30)


def _prompt(
    worker: str, alert_ts: datetime, *, kind: str = "conditioning_break", status: str = "sent"
) -> PromptDecision:
    return PromptDecision(
        schema_version=1,
        alert_id=uuid.uuid4(),
        worker_id=worker,
        site_id="plant-1",
        team="assembly",
        kind=kind,
        ts=alert_ts + timedelta(seconds=1),
        alert_ts=alert_ts,
        segment="neck_flexion",
        status=status,
        reason=None if status == "sent" else "budget",
    )


def _window(worker: str, start: datetime, acceptable: bool) -> ExposureWindow:
    zone = ZoneSeconds(acceptable=10.0) if acceptable else ZoneSeconds(acceptable=4.0, conditional=6.0)
    return ExposureWindow(
        schema_version=1,
        worker_id=worker,
        site_id="plant-1",
        team="assembly",
        window_start=start,
        window_s=10,
        thresholds_version="default@1",
        frames=1,
        wear_s=10.0,
        samples=dict.fromkeys(SEGMENTS, 100),
        zone_s=dict.fromkeys(SEGMENTS, zone),
    )


def _ack(p: PromptDecision, ts: datetime, source: str) -> BreakAck:
    return BreakAck(
        schema_version=1,
        alert_id=p.alert_id,
        worker_id=p.worker_id,
        site_id=p.site_id,
        ts=ts,
        stage="acknowledgement",
        outcome="taken" if source == "rest" else "acknowledged",
        source=source,
    )


def _scenario(
    t0: datetime, tag: str
) -> tuple[list[tuple[str, str, bytes]], dict[str, tuple[str, str, datetime]]]:
    """(topic, key, value) records and the expected outcome per alert id."""
    records: list[tuple[str, str, bytes]] = []
    expected: dict[str, tuple[str, str, datetime]] = {}

    def publish(topic: str, message: Any) -> None:
        records.append((topic, message.worker_id, message.model_dump_json().encode()))

    def windows(worker: str, until_s: int, acceptable_from_s: int | None = None) -> None:
        for s in range(0, until_s, 10):
            ok = acceptable_from_s is not None and s >= acceptable_from_s
            publish(EXPOSURE_WINDOWS.name, _window(worker, t0 + timedelta(seconds=s), ok))

    sec = timedelta(seconds=1)
    posture = _prompt(f"{tag}-posture", t0 + 3 * sec)
    publish(ALERTS_PROMPTS.name, posture)
    windows(posture.worker_id, 700, acceptable_from_s=60)
    expected[str(posture.alert_id)] = ("taken", "posture", t0 + 180 * sec)

    rest = _prompt(f"{tag}-rest", t0)
    publish(ALERTS_PROMPTS.name, rest)
    publish(ALERTS_ACK.name, _ack(rest, t0 + 50 * sec, "rest"))
    windows(rest.worker_id, 700)
    expected[str(rest.alert_id)] = ("taken", "rest", t0 + 50 * sec)

    acked = _prompt(f"{tag}-acked", t0)
    publish(ALERTS_PROMPTS.name, acked)
    publish(ALERTS_ACK.name, _ack(acked, t0 + 20 * sec, "device"))
    windows(acked.worker_id, 700)
    expected[str(acked.alert_id)] = ("acknowledged", "device", t0 + 600 * sec)

    ignored = _prompt(f"{tag}-ignored", t0)
    publish(ALERTS_PROMPTS.name, ignored)
    windows(ignored.worker_id, 700)
    publish(EXPOSURE_WINDOWS.name, ignored)  # not a window: skipped, never a crash
    expected[str(ignored.alert_id)] = ("ignored", "timeout", t0 + 600 * sec)

    idle = _prompt(f"{tag}-idle", t0)  # the device stops after 100 s: decided by the idle timeout
    publish(ALERTS_PROMPTS.name, idle)
    publish(ALERTS_ACK.name, _ack(idle, t0 + 30 * sec, "channel"))
    windows(idle.worker_id, 100)
    expected[str(idle.alert_id)] = ("acknowledged", "channel", t0 + 600 * sec)

    nudge = _prompt(f"{tag}-posture", t0 + 5 * sec, kind="posture_hold")  # nudges get no outcome
    suppressed = _prompt(f"{tag}-rest", t0 + 7 * sec, status="suppressed")
    publish(ALERTS_PROMPTS.name, nudge)
    publish(ALERTS_PROMPTS.name, suppressed)
    return records, expected


def _produce(bootstrap: str, records: list[tuple[str, str, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for topic, key, value in records:
            producer.send(topic, key=key.encode(), value=value)
        producer.flush(30)
    finally:
        producer.close()


def _outcomes(bootstrap: str, partitions: int) -> list[dict[str, Any]]:
    """Every stage-outcome BreakAck on alerts.ack.v1, in partition and offset order."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        tps = [TopicPartition(ALERTS_ACK.name, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[dict[str, Any]] = []
        for tp in tps:
            while consumer.position(tp) < ends[tp]:
                for records in consumer.poll(timeout_ms=1000, max_records=1000).values():
                    out += [orjson.loads(r.value) for r in records if r.value]
        out.sort(key=lambda doc: (doc["worker_id"], doc["alert_id"], doc["stage"], doc["ts"]))
        return [doc for doc in out if doc["stage"] == "outcome"]
    finally:
        consumer.close()


def _points(influx: Influx, database: str) -> dict[str, tuple[str, str, int]]:
    """break_ack points: alert id -> (outcome, source, epoch seconds)."""
    out: dict[str, tuple[str, str, int]] = {}
    for series in influx.ql(database).query('SELECT * FROM "break_ack" GROUP BY *'):
        tags = series.get("tags") or {}
        for row in series["values"]:
            fields = dict(zip(series["columns"], row, strict=True))
            out[fields["alert_id"]] = (tags["outcome"], tags["source"], row[0])
    return out


def _at_least(items: Any, count: int) -> Any:
    return items if len(items) >= count else None


def _by_alert(outcomes: list[dict[str, Any]]) -> dict[str, tuple[str, str, datetime]]:
    return {
        o["alert_id"]: (o["outcome"], o["source"], datetime.fromisoformat(o["ts"].replace("Z", "+00:00")))
        for o in outcomes
    }


def test_outcomes_published_once_and_replayed_identically(
    broker: Broker, influx: Influx, runners: list[RunnerThread]
) -> None:
    database = influx.new_database()
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        influx_url=influx.url,
        influx_bucket=database,
        broker_session_timeout_s=6,
    )
    t0 = aligned_start(hours_ago=3)
    records, expected = _scenario(t0, "a")
    _produce(broker.bootstrap, records)

    def run(group: str, state_topic: str) -> RunnerThread:
        runner = RunnerThread(settings, group=group, state_topic=state_topic, idle_timeout_s=IDLE_TIMEOUT_S)
        runners.append(runner)
        return runner.start()

    first = run("outcomes-1", "state-1")
    outcomes = wait_for(
        lambda: _at_least(_outcomes(broker.bootstrap, broker.partitions), len(expected)),
        timeout_s=90,
        what="an outcome per sent conditioning break",
    )
    first.stop()
    assert _by_alert(outcomes) == expected
    assert len(outcomes) == len(expected)
    points = wait_for(
        lambda: _at_least(_points(influx, database), len(expected)),
        timeout_s=30,
        what="break_ack points",
    )
    for alert_id, (outcome, source, _ts) in expected.items():
        assert points[alert_id][:2] == (outcome, source)
    # the point's time is the alert's event time (identity unique per alert), not the outcome's
    prompts = {
        orjson.loads(v)["alert_id"]: orjson.loads(v)["alert_ts"]
        for t, _k, v in records
        if t == ALERTS_PROMPTS.name
    }
    for alert_id, (_o, _s, epoch_s) in points.items():
        alert_ts = datetime.fromisoformat(prompts[alert_id].replace("Z", "+00:00"))
        assert epoch_s == int(alert_ts.timestamp())

    # the same group again: resumes from its offsets and state; a new prompt gets its outcome, the
    # old ones none again
    more, more_expected = _scenario(t0 + timedelta(hours=1), "b")
    _produce(broker.bootstrap, more)
    second = run("outcomes-1", "state-1")
    every = {**expected, **more_expected}
    outcomes = wait_for(
        lambda: _at_least(_outcomes(broker.bootstrap, broker.partitions), len(every)),
        timeout_s=90,
        what="outcomes of the prompts published after the restart",
    )
    second.stop()
    assert len(outcomes) == len(every)
    assert _by_alert(outcomes) == every

    # a fresh group and state from the start: identical messages, the points stay one per alert
    replay = run("outcomes-2", "state-2")
    both = wait_for(
        lambda: _at_least(_outcomes(broker.bootstrap, broker.partitions), 2 * len(every)),
        timeout_s=90,
        what="the replay's outcomes",
    )
    replay.stop()
    assert len(both) == 2 * len(every)
    first_run = sorted(orjson.dumps(o) for o in outcomes)
    assert sorted(orjson.dumps(o) for o in both) == sorted(first_run + first_run)
    assert len(_points(influx, database)) == len(every)


def test_stops_within_30_s_while_influxdb_is_down_and_resumes_after(
    kafka: Broker, influx: Influx, tmp_path: Any
) -> None:
    """SIGTERM during an endless InfluxDB retry: exits in time, commits nothing; the restart (same
    group) decides again and writes the point."""
    database = influx.new_database()
    records, expected = _scenario(aligned_start(hours_ago=3), "c")
    _produce(kafka.bootstrap, records)
    # the subprocess has the default idle timeout (15 min): the idle worker stays pending
    expected = {a: e for a, e in expected.items() if e[1] != "channel"}
    env = {
        **os.environ,
        **processor_env(kafka, influx, database, tmp_path / "state"),
        "STRAINWATCH_LOG_FORMAT": "json",
    }
    argv = [sys.executable, "-m", "strainwatch.alerts.outcome_runner"]
    log_path = tmp_path / "outcomes.log"

    def start() -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    influx.stop_influxd()
    try:
        proc = start()
        try:
            wait_for(
                lambda: '"influx_write_unavailable"' in log_path.read_text(),  # the sink's outage log
                timeout_s=60,
                what="a failed write",
            )
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log_path.read_text()[-3000:]
            assert time.monotonic() - started < 30
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    finally:
        influx.start_influxd()
    assert _points(influx, database) == {}

    proc = start()
    try:
        points = wait_for(
            lambda: _at_least(_points(influx, database), len(expected)), timeout_s=90, what="break_ack points"
        )
        assert {alert_id: p[:2] for alert_id, p in points.items()} == {a: e[:2] for a, e in expected.items()}
        # published again after the restart: the same message, so alert ids stay one outcome each
        assert _by_alert(_outcomes(kafka.bootstrap, kafka.partitions)) == expected
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
