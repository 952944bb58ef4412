"""`strainwatch alerts run` against real Kafka and InfluxDB, with a local HTTP receiver reached
through apprise's json:// URL: what reaches devices and channels, once, and how fast.

The once-only test uses the service's test hook STRAINWATCH_ALERTS_PAUSE_BEFORE_DELIVERY (a file
the service writes once it has decided a batch, before delivering anything; it then waits for the
kill)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from strainwatch.alerts.delivery import GROUP, PAUSE_HOOK_ENV, command_id
from strainwatch.alerts.messages import describe
from tests.integration.conftest import Broker, Influx
from tests.support import wait_for

pytestmark = pytest.mark.integration


class Receiver:
    """A webhook on 127.0.0.1 recording (monotonic time, path, JSON body) of every POST."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append((time.monotonic(), self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, path: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [b for _, p, b in self.requests if path is None or p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    handle = Receiver()
    yield handle
    handle.close()


class AlertsProc:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self, **extra: str) -> AlertsProc:
        out = open(self.log_path, "ab")  # noqa: SIM115 - the subprocess owns it
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "strainwatch.cli", "alerts", "run"],
            env={**os.environ, **self.env, **extra},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill9(self) -> None:
        assert self.popen is not None
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def terminate(self) -> int:
        assert self.popen is not None
        started = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        code = self.popen.wait(30)
        assert time.monotonic() - started < 30
        return code

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture
def alerts_proc(tmp_path: Path) -> Iterator[Any]:
    started: list[AlertsProc] = []

    def factory(env: dict[str, str]) -> AlertsProc:
        proc = AlertsProc(env, tmp_path / f"alerts-{len(started)}.log")
        started.append(proc)
        return proc

    yield factory
    for proc in started:
        proc.stop()


def channels_file(tmp_path: Path, port: int, rate_per_s: float = 50.0, extra_site: str = "") -> Path:
    path = tmp_path / "channels.yaml"
    path.write_text(
        f"""
sites:
  plant-1:
    quiet_hours: []
    channels:
      - url: "json://127.0.0.1:{port}/${{HOOK_PATH}}"
        name: receiver
        rate_per_s: {rate_per_s}
{extra_site}"""
    )
    return path


def env_for(broker: Broker, influx: Influx, database: str, channels: Path) -> dict[str, str]:
    return {
        "STRAINWATCH_KAFKA_BOOTSTRAP": broker.bootstrap,
        "STRAINWATCH_INFLUX_URL": influx.url,
        "STRAINWATCH_INFLUX_BUCKET": database,
        "STRAINWATCH_CHANNELS_FILE": str(channels),
        "STRAINWATCH_BROKER_SESSION_TIMEOUT_S": "6",
        "STRAINWATCH_LOG_FORMAT": "json",
        "HOOK_PATH": "hook",
    }


def roster_entry(worker: str, **kw: Any) -> dict[str, Any]:
    doc = {
        "schema_version": 1,
        "worker_id": worker,
        "site_id": "plant-1",
        "team": "assembly",
        "shift": "early",
        "device_id": f"dev-{worker}",
    }
    doc.update(kw)
    return doc


def alert_doc(worker: str, kind: str, at: datetime, *, alert_id: uuid.UUID | None = None) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "alert_id": str(alert_id or uuid.uuid4()),
        "worker_id": worker,
        "site_id": "plant-1",
        "team": "assembly",
        "kind": kind,
        "ts": at.isoformat().replace("+00:00", "Z"),
        "segment": "neck_flexion",
        "dose": 600.0 if kind == "conditioning_break" else 40.0,
        "routine": ["chin tucks", "upper-trapezius stretch", "slow neck rotations"]
        if kind == "conditioning_break"
        else [],
        "thresholds_version": "default@1",
    }


def produce(bootstrap: str, topic: str, docs: list[dict[str, Any]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    try:
        for doc in docs:
            producer.send(topic, key=doc["worker_id"].encode(), value=json.dumps(doc).encode())
        producer.flush(30)
    finally:
        producer.close()


def read_all(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=1500)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[dict[str, Any]] = []
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=1000).values():
                out.extend(json.loads(r.value) for r in records if r.value is not None)
        return out
    finally:
        consumer.close()


def at_least(n: int, bootstrap: str, topic: str) -> list[dict[str, Any]] | None:
    records = read_all(bootstrap, topic)
    return records if len(records) >= n else None


def committed_to_end(bootstrap: str, topic: str) -> bool:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(tps)
        return all((consumer.committed(tp) or 0) >= ends[tp] for tp in tps)
    finally:
        consumer.close()


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def test_decisions_reach_device_channel_prompts_and_influx_and_survive_a_restart(
    broker: Broker, influx: Influx, receiver: Receiver, alerts_proc: Any, tmp_path: Path
) -> None:
    database = influx.new_database()
    at = now_utc() - timedelta(minutes=2)
    local_now = at.strftime("%H:%M")
    later = (at + timedelta(minutes=10)).strftime("%H:%M")
    produce(
        broker.bootstrap,
        "roster.v1",
        [
            roster_entry("w1"),
            roster_entry("w2", scheduled_breaks=[f"{local_now}-{later}"]),
            roster_entry("w3"),
        ],
    )
    sent = alert_doc("w1", "conditioning_break", at)
    in_break = alert_doc("w2", "posture_hold", at)
    # an hour old when decided (history from a device's memory): no prompt reaches anyone
    stale = alert_doc("w3", "conditioning_break", now_utc() - timedelta(hours=1))
    produce(broker.bootstrap, "alerts.break.v1", [sent, in_break, stale])
    env = env_for(broker, influx, database, channels_file(tmp_path, receiver.port))
    proc = alerts_proc(env).start()

    prompts = wait_for(
        lambda: at_least(3, broker.bootstrap, "alerts.prompts.v1"),
        timeout_s=60,
        what=f"three prompt decisions; log: {proc.log()}",
    )
    by_alert = {p["alert_id"]: p for p in prompts}
    assert by_alert[sent["alert_id"]]["status"] == "sent"
    assert by_alert[sent["alert_id"]]["channels_ok"] == 1
    assert by_alert[sent["alert_id"]]["device_id"] == "dev-w1"
    assert by_alert[sent["alert_id"]]["routine_id"] == "neck"
    assert (by_alert[in_break["alert_id"]]["status"], by_alert[in_break["alert_id"]]["reason"]) == (
        "suppressed",
        "scheduled_break",
    )
    assert (by_alert[stale["alert_id"]]["status"], by_alert[stale["alert_id"]]["reason"]) == (
        "suppressed",
        "stale",
    )

    # the exact JSON apprise posts
    from strainwatch.events import BreakAlert

    _, text, message = describe(BreakAlert.model_validate(sent))
    assert receiver.bodies("/hook") == [
        {"version": "1.0", "title": message.title, "message": message.body, "attachments": [], "type": "info"}
    ]
    commands = read_all(broker.bootstrap, "device.commands.v1")
    assert len(commands) == 1
    command = commands[0]
    assert command["command_id"] == str(command_id(uuid.UUID(sent["alert_id"])))
    assert (command["device_id"], command["haptic"], command["command"], command["text"]) == (
        "dev-w1",
        "break",
        "break_prompt",
        text,
    )

    def points() -> list[dict[str, Any]] | None:
        series = influx.ql(database).query('SELECT * FROM "break_prompt" GROUP BY *')
        rows = [
            {**(s.get("tags") or {}), **dict(zip(s["columns"], row, strict=True))}
            for s in series
            for row in s["values"]
        ]
        return rows if len(rows) >= 3 else None

    rows = {r["alert_id"]: r for r in wait_for(points, timeout_s=30, what="three break_prompt points")}
    assert rows[sent["alert_id"]]["status"] == "sent" and rows[sent["alert_id"]]["channels_ok"] == 1
    assert rows[sent["alert_id"]]["time"] == int(at.timestamp())
    assert rows[in_break["alert_id"]]["reason"] == "scheduled_break"

    # restart: the state (decided ids) comes back from alerts.state.v1, a replayed alert is a duplicate
    wait_for(lambda: committed_to_end(broker.bootstrap, "alerts.break.v1"), timeout_s=30, what="commit")
    assert proc.terminate() == 0
    produce(broker.bootstrap, "alerts.break.v1", [sent])
    proc = alerts_proc(env).start()
    prompts = wait_for(
        lambda: at_least(4, broker.bootstrap, "alerts.prompts.v1"),
        timeout_s=60,
        what=f"a fourth decision; log: {proc.log()}",
    )
    assert (prompts[-1]["alert_id"], prompts[-1]["status"], prompts[-1]["reason"]) == (
        sent["alert_id"],
        "suppressed",
        "duplicate",
    )
    assert len(read_all(broker.bootstrap, "device.commands.v1")) == 1
    assert len(receiver.bodies()) == 1
    assert proc.terminate() == 0


def test_kill_before_delivery_delivers_each_alert_exactly_once(
    kafka: Broker, influx: Influx, receiver: Receiver, alerts_proc: Any, tmp_path: Path
) -> None:
    database = influx.new_database()
    at = now_utc() - timedelta(minutes=1)
    workers = [f"k{i}" for i in range(8)]
    produce(kafka.bootstrap, "roster.v1", [roster_entry(w) for w in workers])
    alerts = [alert_doc(w, "conditioning_break", at) for w in workers]
    produce(kafka.bootstrap, "alerts.break.v1", alerts)
    env = env_for(kafka, influx, database, channels_file(tmp_path, receiver.port))
    marker = tmp_path / "paused"
    first = alerts_proc(env).start(**{PAUSE_HOOK_ENV: str(marker)})
    wait_for(marker.exists, timeout_s=60, what=f"the service to pause before delivery; log: {first.log()}")
    first.kill9()
    assert receiver.bodies() == [] and read_all(kafka.bootstrap, "device.commands.v1") == []

    second = alerts_proc(env).start()
    wait_for(
        lambda: committed_to_end(kafka.bootstrap, "alerts.break.v1"),
        timeout_s=90,
        what=f"the restarted service to commit every alert; log: {second.log()}",
    )
    commands = read_all(kafka.bootstrap, "device.commands.v1")
    assert sorted(c["alert_id"] for c in commands) == sorted(a["alert_id"] for a in alerts)
    titles = [b["title"] for b in receiver.bodies()]
    assert sorted(titles) == sorted(f"Break prompt for {w}: Neck reset (2-3 min)" for w in workers)
    prompts = read_all(kafka.bootstrap, "alerts.prompts.v1")
    assert sorted(p["alert_id"] for p in prompts) == sorted(a["alert_id"] for a in alerts)
    assert second.terminate() == 0


def test_storm_of_1000_breaks_is_delivered_without_loss_at_the_channel_rate(
    kafka: Broker, influx: Influx, receiver: Receiver, alerts_proc: Any, tmp_path: Path
) -> None:
    rate = 100.0
    database = influx.new_database()
    at = now_utc() - timedelta(seconds=30)
    workers = [f"s{i:04d}" for i in range(1000)]
    produce(kafka.bootstrap, "roster.v1", [roster_entry(w) for w in workers])
    alerts = [alert_doc(w, "conditioning_break", at) for w in workers]
    produce(kafka.bootstrap, "alerts.break.v1", alerts)
    proc = alerts_proc(env_for(kafka, influx, database, channels_file(tmp_path, receiver.port, rate))).start()

    wait_for(
        lambda: len(receiver.bodies()) >= 1000 or None,
        timeout_s=120,
        what=f"1,000 channel messages (have {len(receiver.bodies())}); log: {proc.log()}",
        interval_s=1.0,
    )
    wait_for(lambda: committed_to_end(kafka.bootstrap, "alerts.break.v1"), timeout_s=60, what="commit")
    commands = read_all(kafka.bootstrap, "device.commands.v1")
    assert len(commands) == 1000
    assert {c["device_id"] for c in commands} == {f"dev-{w}" for w in workers}
    bodies = receiver.bodies()
    assert len(bodies) == 1000
    assert {b["title"].split(":")[0] for b in bodies} == {f"Break prompt for {w}" for w in workers}
    times = sorted(t for t, _, _ in receiver.requests)
    # never faster than the rate: n messages span at least (n - 1) / rate (bucket of one token),
    # checked over every window of 101 consecutive messages and over the whole storm
    slack = 0.05
    for i in range(len(times) - 100):
        assert times[i + 100] - times[i] >= 100 / rate - slack, (i, times[i + 100] - times[i])
    assert times[-1] - times[0] >= 999 / rate - slack
    assert proc.terminate() == 0


def test_nudge_when_neutral_is_sent_once_the_worker_is_neutral_or_dropped(
    kafka: Broker, influx: Influx, receiver: Receiver, alerts_proc: Any, tmp_path: Path
) -> None:
    from tests.support import FOUR_SEGMENTS, frame

    database = influx.new_database()
    path = channels_file(tmp_path, receiver.port)
    path.write_text(
        path.read_text().replace("quiet_hours: []", "quiet_hours: []\n    nudge_when_neutral: true")
    )
    produce(kafka.bootstrap, "roster.v1", [roster_entry("n1"), roster_entry("n2")])
    at = now_utc() - timedelta(seconds=2)
    waits = alert_doc("n1", "posture_hold", at)
    never_neutral = alert_doc("n2", "posture_hold", now_utc() - timedelta(seconds=70))  # no frames
    produce(kafka.bootstrap, "alerts.break.v1", [waits, never_neutral])
    proc = alerts_proc(env_for(kafka, influx, database, path)).start()

    dropped = wait_for(
        lambda: at_least(1, kafka.bootstrap, "alerts.prompts.v1"),
        timeout_s=60,
        what="the nudge without frames to be dropped",
    )
    assert [(p["alert_id"], p["status"], p["reason"]) for p in dropped] == [
        (never_neutral["alert_id"], "suppressed", "not_neutral")
    ]
    assert read_all(kafka.bootstrap, "device.commands.v1") == []  # n1 still waits: no frames yet

    # n1's device keeps sending: first bent forward, then neutral; the nudge goes once 2 s are neutral
    sent_frames = [0]

    def send_frame_and_check() -> list[dict[str, Any]] | None:
        k = sent_frames[0]
        angles = dict.fromkeys(FOUR_SEGMENTS, 5.0 if k >= 2 else 40.0)
        produce(kafka.bootstrap, "posture.events.v1", [frame("n1", at + timedelta(seconds=k), angles=angles)])
        sent_frames[0] += 1
        return at_least(2, kafka.bootstrap, "alerts.prompts.v1")

    prompts = wait_for(send_frame_and_check, timeout_s=60, what="the nudge to be sent once n1 is neutral")
    assert (prompts[-1]["alert_id"], prompts[-1]["status"]) == (waits["alert_id"], "sent")
    assert sent_frames[0] >= 4  # two bent frames, then two neutral seconds at least
    commands = read_all(kafka.bootstrap, "device.commands.v1")
    assert [(c["alert_id"], c["haptic"]) for c in commands] == [(waits["alert_id"], "nudge")]
    assert proc.terminate() == 0


def test_backs_off_while_kafka_is_down_and_stops_on_sigterm(alerts_proc: Any, tmp_path: Path) -> None:
    from strainwatch.stack.procs import free_port

    env = {
        "STRAINWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",  # nothing listens there
        "STRAINWATCH_LOG_FORMAT": "json",
    }
    proc = alerts_proc(env).start()
    wait_for(
        lambda: '"kafka_unavailable"' in proc.log(),
        timeout_s=60,
        what="the service to report Kafka down",
    )
    assert proc.popen is not None and proc.popen.poll() is None  # still running, not crashed
    assert proc.terminate() == 0
