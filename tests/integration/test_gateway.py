"""The device gateway against a real Mosquitto and a real Apache Kafka, run as `strainwatch gateway run`.

Devices are real MQTT clients (paho) with their own Mosquitto accounts; what the gateway does is
read back from Kafka.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion

from strainwatch.events import BreakAck, DeadLetter, DeadReason
from strainwatch.fleet.producer import produce_roster
from tests.integration.conftest import Broker, Mosquitto, ProcessorProc
from tests.support import encode, frame, wait_for

pytestmark = pytest.mark.integration


# --- helpers -----------------------------------------------------------------------------------


class GatewayProc(ProcessorProc):
    """`strainwatch gateway run` as a subprocess, so tests can SIGTERM or kill -9 it."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        super().__init__(env, log_path, command=("gateway", "run"))

    def events(self, name: str) -> int:
        count = 0
        for line in self.full_log().splitlines():
            try:
                if json.loads(line).get("event") == name:
                    count += 1
            except ValueError:
                continue
        return count


class Device:
    """A wearable: its own Mosquitto account, QoS 1 publishes, a subscription to commands."""

    def __init__(
        self, mosquitto: Mosquitto, device_id: str, password: str, username: str | None = None
    ) -> None:
        self.device_id = device_id
        self.received: list[tuple[str, bytes]] = []
        self.granted: list[int] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid.uuid4().hex[:8]}", clean_session=True
        )
        self.client.username_pw_set(username or device_id, password)
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.acked_mids: set[int] = set()  # PUBACKs Mosquitto sent for this device's publishes
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", mosquitto.port)
        self.client.loop_start()
        wait_for(self.client.is_connected, timeout_s=10, what=f"{device_id} connected to Mosquitto")

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append((message.topic, bytes(message.payload)))

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
        with self._lock:
            self.granted.extend(r.value for r in reasons)

    def _on_publish(self, _c: Any, _u: Any, mid: int, _reason: Any, _p: Any) -> None:
        with self._lock:
            self.acked_mids.add(mid)

    def acked(self, mids: list[int]) -> list[int]:
        with self._lock:
            return [mid for mid in mids if mid in self.acked_mids]

    def messages(self, topic: str) -> list[bytes]:
        with self._lock:
            return [payload for t, payload in self.received if t == topic]

    def subscribe(self, topic: str) -> None:
        before = len(self.granted)
        self.client.subscribe(topic, qos=1)
        wait_for(lambda: len(self.granted) > before, timeout_s=10, what=f"SUBACK for {topic}")

    def publish(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=1)

    def publish_acked(self, topic: str, payload: bytes, timeout_s: float = 10.0) -> None:
        info = self.publish(topic, payload)
        info.wait_for_publish(timeout_s)
        assert info.is_published(), f"Mosquitto did not acknowledge a publish to {topic}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class TopicReader:
    """Every record of a Kafka topic, read incrementally from the beginning (no consumer group)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        partitions = wait_for(
            lambda: self.consumer.partitions_for_topic(topic), timeout_s=20, what=f"partitions of {topic}"
        )
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.records: list[Any] = []

    def poll(self) -> list[Any]:
        for batch in self.consumer.poll(timeout_ms=200).values():
            self.records.extend(batch)
        return self.records

    def close(self) -> None:
        self.consumer.close()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def device_frame(device_id: str, worker: str, event_id: uuid.UUID | None = None) -> bytes:
    doc = frame(worker, datetime.now(UTC) - timedelta(minutes=5), n=5, event_id=event_id)
    doc["device_id"] = device_id
    return encode(doc)


def event_id_of(value: bytes) -> str:
    return str(orjson.loads(value)["event_id"])


def forget_session(mosquitto: Mosquitto, client_id: str) -> None:
    """Drop a gateway's persistent session, so it queues nothing for the rest of the test session."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.username_pw_set("strainwatch-gateway", mosquitto.gateway_password)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    wait_for(client.is_connected, timeout_s=10, what="session cleanup connection")
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def gateway(kafka: Broker, mosquitto: Mosquitto, tmp_path: Path) -> Iterator[GatewayProc]:
    client_id = f"gw-{uuid.uuid4().hex[:8]}"
    env = {
        "STRAINWATCH_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "STRAINWATCH_LOG_FORMAT": "json",
        **mosquitto.gateway_env(client_id),
    }
    proc = GatewayProc(env, tmp_path / "gateway.log")
    yield proc
    proc.stop()
    forget_session(mosquitto, client_id)


def tag() -> str:
    return uuid.uuid4().hex[:6]


def bind(kafka: Broker, pairs: dict[str, str]) -> None:
    """Roster entries binding {device_id: worker_id}."""
    produce_roster(
        [
            {
                "schema_version": 1,
                "worker_id": w,
                "site_id": "plant-1",
                "team": "t1",
                "shift": "A",
                "device_id": d,
            }
            for d, w in pairs.items()
        ],
        kafka.bootstrap,
        "roster.v1",
    )


def start_and_wait(gateway: GatewayProc) -> None:
    gateway.start()
    wait_for(
        lambda: gateway.events("MQTT connected") or not gateway.running(),
        timeout_s=60,
        what="the gateway to connect to Mosquitto",
    )
    assert gateway.running(), gateway.log()


def wait_forwarding(device: Device, worker: str, events: TopicReader) -> None:
    """Probe frames until one arrives: the gateway's subscription is in place (none of these is counted)."""
    probes: set[str] = set()

    def arrived() -> bool:
        payload = device_frame(device.device_id, worker)
        probes.add(event_id_of(payload))
        device.publish(f"devices/{device.device_id}/frames", payload)
        return any(event_id_of_safe(r.value) in probes for r in events.poll())

    wait_for(arrived, timeout_s=60, what="the gateway to forward a probe frame", interval_s=0.5)


# --- tests -------------------------------------------------------------------------------------


def test_frames_are_keyed_by_the_bound_worker_and_bad_bindings_dead_lettered(
    kafka: Broker, mosquitto: Mosquitto, gateway: GatewayProc
) -> None:
    t = tag()
    bound, unbound, late = f"dev-a-{t}", f"dev-u-{t}", f"dev-l-{t}"
    worker, other, late_worker = f"w-a-{t}", f"w-b-{t}", f"w-l-{t}"
    mosquitto.provision({bound: "pa", unbound: "pu", late: "pl"})
    bind(kafka, {bound: worker})
    start_and_wait(gateway)
    events = TopicReader(kafka.bootstrap, "posture.events.v1")
    dead = TopicReader(kafka.bootstrap, "posture.deadletter.v1")
    a, u, lt = Device(mosquitto, bound, "pa"), Device(mosquitto, unbound, "pu"), Device(mosquitto, late, "pl")
    try:
        wait_forwarding(a, worker, events)
        good = [device_frame(bound, worker) for _ in range(5)]
        not_json = b"{not json"
        for payload in [*good, not_json]:
            a.publish_acked(f"devices/{bound}/frames", payload)
        mismatch = device_frame(bound, other)
        a.publish_acked(f"devices/{bound}/frames", mismatch)
        orphan = device_frame(unbound, other)
        u.publish_acked(f"devices/{unbound}/frames", orphan)

        wanted = {event_id_of(p) for p in good}
        wait_for(
            lambda: wanted <= {event_id_of(r.value) for r in events.poll() if r.value.startswith(b'{"')},
            timeout_s=30,
            what="the bound device's frames on posture.events.v1",
        )
        by_value = {r.value: r for r in events.records}
        for payload in good:
            assert by_value[payload].key == worker.encode()  # bytes unchanged, keyed by the bound worker
        # content is the processor's business: the non-JSON frame is forwarded for it to dead-letter
        wait_for(lambda: not_json in {r.value for r in events.poll()}, timeout_s=30, what="non-JSON frame")
        assert {r.key for r in events.records if r.value == not_json} == {worker.encode()}

        letters = wait_for(
            lambda: len(dead.poll()) >= 2 and dead.records, timeout_s=30, what="two dead letters"
        )
        parsed = {
            DeadLetter.model_validate_json(r.value).reason: (r, DeadLetter.model_validate_json(r.value))
            for r in letters
        }
        record, letter = parsed[DeadReason.DEVICE_WORKER_MISMATCH]
        assert base64.b64decode(letter.original_b64) == mismatch
        assert letter.source_topic == f"devices/{bound}/frames"
        assert record.key == worker.encode()
        record, letter = parsed[DeadReason.UNBOUND_DEVICE]
        assert base64.b64decode(letter.original_b64) == orphan
        assert letter.source_topic == f"devices/{unbound}/frames"
        assert mismatch not in {r.value for r in events.records}
        assert orphan not in {r.value for r in events.records}

        # the roster is followed while running: a device bound now is forwarded
        bind(kafka, {late: late_worker})
        wait_forwarding(lt, late_worker, events)
        assert {r.key for r in events.records if late.encode() in r.value} == {late_worker.encode()}
        assert gateway.terminate() == 0
    finally:
        for device in (a, u, lt):
            device.close()
        events.close()
        dead.close()


def event_id_of_safe(value: bytes) -> str | None:
    try:
        return event_id_of(value)
    except (ValueError, KeyError, TypeError):
        return None


def test_a_device_cannot_impersonate_another(
    kafka: Broker, mosquitto: Mosquitto, gateway: GatewayProc
) -> None:
    t = tag()
    dev_a, dev_b = f"dev-a-{t}", f"dev-b-{t}"
    worker_a, worker_b = f"w-a-{t}", f"w-b-{t}"
    mosquitto.provision({dev_a: "pa", dev_b: "pb"})
    bind(kafka, {dev_a: worker_a, dev_b: worker_b})
    start_and_wait(gateway)
    events = TopicReader(kafka.bootstrap, "posture.events.v1")
    a, b = Device(mosquitto, dev_a, "pa"), Device(mosquitto, dev_b, "pb")
    try:
        # a wrong password is refused outright
        with pytest.raises(AssertionError):
            Device(mosquitto, dev_b, "pa")
        wait_forwarding(a, worker_a, events)
        # A publishes as B: Mosquitto acknowledges (MQTT 3.1.1 cannot refuse) but drops it
        forged = device_frame(dev_b, worker_b)
        a.publish_acked(f"devices/{dev_b}/frames", forged)
        control = device_frame(dev_a, worker_a)
        a.publish_acked(f"devices/{dev_a}/frames", control)
        wait_for(lambda: control in {r.value for r in events.poll()}, timeout_s=30, what="A's control frame")
        assert forged not in {r.value for r in events.poll()}

        # A subscribes to B's commands: granted by Mosquitto 2.0, but no message is ever delivered
        a.subscribe(f"devices/{dev_b}/commands")
        a.subscribe(f"devices/{dev_a}/commands")
        b.subscribe(f"devices/{dev_b}/commands")
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        commands = {d: command(w, d) for d, w in ((dev_b, worker_b), (dev_a, worker_a))}
        for d, w in ((dev_b, worker_b), (dev_a, worker_a)):
            producer.send("device.commands.v1", key=w.encode(), value=commands[d])
        producer.flush()
        producer.close()
        wait_for(lambda: b.messages(f"devices/{dev_b}/commands"), timeout_s=30, what="B's command")
        wait_for(lambda: a.messages(f"devices/{dev_a}/commands"), timeout_s=30, what="A's own command")
        assert a.messages(f"devices/{dev_b}/commands") == []
        assert b.messages(f"devices/{dev_b}/commands") == [commands[dev_b]]
    finally:
        a.close()
        b.close()
        events.close()


def command(worker: str, device: str) -> bytes:
    alert = uuid.uuid4()
    return orjson.dumps(
        {
            "schema_version": 1,
            "command_id": str(uuid.uuid5(alert, "command")),
            "worker_id": worker,
            "device_id": device,
            "ts": now_iso(),
            "command": "break_prompt",
            "haptic": "break",
            "alert_id": str(alert),
            "text": "Time for a short break",
            "routine_id": "upper-back-1",
        }
    )


def test_commands_reach_devices_and_device_acks_become_break_acks(
    kafka: Broker, mosquitto: Mosquitto, gateway: GatewayProc
) -> None:
    t = tag()
    dev, worker = f"dev-c-{t}", f"w-c-{t}"
    mosquitto.provision({dev: "pc"})
    bind(kafka, {dev: worker})
    start_and_wait(gateway)
    device = Device(mosquitto, dev, "pc")
    acks = TopicReader(kafka.bootstrap, "alerts.ack.v1")
    try:
        device.subscribe(f"devices/{dev}/commands")
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        sent = command(worker, dev)
        stale = orjson.loads(command(worker, dev))
        stale["ts"] = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
        producer.send("device.commands.v1", key=worker.encode(), value=orjson.dumps(stale))
        producer.send("device.commands.v1", key=worker.encode(), value=b"not a command")
        producer.send("device.commands.v1", key=worker.encode(), value=sent)
        producer.flush()
        producer.close()
        got = wait_for(lambda: device.messages(f"devices/{dev}/commands"), timeout_s=30, what="the command")
        assert got == [sent]  # exactly the record's bytes; the stale and the broken one dropped

        alert_ack, alert_rest = uuid.uuid4(), uuid.uuid4()
        ts = now_iso()
        for alert, kind in ((alert_ack, "ack"), (alert_rest, "rest")):
            payload = orjson.dumps({"schema_version": 1, "alert_id": str(alert), "ts": ts, "kind": kind})
            device.publish_acked(f"devices/{dev}/ack", payload)
        device.publish_acked(f"devices/{dev}/ack", b"garbage")  # dropped, never crashes the gateway
        records = wait_for(lambda: len(acks.poll()) >= 2 and acks.records, timeout_s=30, what="two BreakAcks")
        by_alert = {
            BreakAck.model_validate_json(r.value).alert_id: (r, BreakAck.model_validate_json(r.value))
            for r in records
        }
        record, ack = by_alert[alert_ack]
        assert record.key == worker.encode()
        assert (ack.stage, ack.outcome, ack.source, ack.worker_id, ack.site_id) == (
            "acknowledgement",
            "acknowledged",
            "device",
            worker,
            "plant-1",
        )
        _, rest = by_alert[alert_rest]
        assert (rest.stage, rest.outcome, rest.source) == ("acknowledgement", "taken", "rest")
        assert gateway.running()
        assert gateway.terminate() == 0
    finally:
        device.close()
        acks.close()


def test_no_acknowledged_frame_is_lost_across_gateway_kill_and_mosquitto_restart(
    kafka: Broker, mosquitto: Mosquitto, gateway: GatewayProc
) -> None:
    t = tag()
    dev, worker = f"dev-k-{t}", f"w-k-{t}"
    mosquitto.provision({dev: "pk"})
    bind(kafka, {dev: worker})
    start_and_wait(gateway)
    events = TopicReader(kafka.bootstrap, "posture.events.v1")
    device = Device(mosquitto, dev, "pk")
    n = 1_200
    base = uuid.uuid4().int & ~((1 << 16) - 1)
    infos: list[tuple[str, mqtt.MQTTMessageInfo]] = []
    published = threading.Event()

    def publish_all() -> None:
        for i in range(n):
            payload = device_frame(dev, worker, event_id=uuid.UUID(int=base + i))
            infos.append((event_id_of(payload), device.publish(f"devices/{dev}/frames", payload)))
            time.sleep(0.004)
        published.set()

    def arrived() -> set[str]:
        return {v for r in events.poll() if (v := event_id_of_safe(r.value))}

    try:
        wait_forwarding(device, worker, events)
        publisher = threading.Thread(target=publish_all, daemon=True)
        publisher.start()
        wait_for(lambda: len(infos) > 200, timeout_s=30, what="200 frames published")
        gateway.kill9()  # mid-stream: frames in flight between Mosquitto, gateway and Kafka
        wait_for(lambda: len(infos) > 400, timeout_s=30, what="frames queued while the gateway is down")
        start_and_wait(gateway)
        wait_for(lambda: len(infos) > 700, timeout_s=30, what="more frames")
        mosquitto.restart()  # SIGTERM: queued and in-flight frames persisted, then restored
        assert published.wait(120), "publisher did not finish"
        # paho resends unacknowledged QoS 1 publishes after its reconnect; count only acknowledged ones
        mids = {info.mid: eid for eid, info in infos}
        wait_for(
            lambda: len(device.acked(list(mids))) == n,
            timeout_s=60,
            what="Mosquitto to acknowledge every publish",
        )
        acked = {mids[mid] for mid in device.acked(list(mids))}
        got = wait_for(
            lambda: (a := arrived()) >= acked and a, timeout_s=120, what="every acknowledged frame on Kafka"
        )
        ours = [
            r
            for r in events.records
            if (v := event_id_of_safe(r.value)) and int(uuid.UUID(v)) - base in range(n)
        ]
        duplicates = len(ours) - len({event_id_of(r.value) for r in ours})
        print(f"acknowledged {len(acked)} of {n}; on Kafka {len(ours)} records, {duplicates} duplicates")
        assert acked <= got
        assert all(r.key == worker.encode() for r in ours)
        assert gateway.terminate() == 0
    finally:
        device.close()
        events.close()


def test_kafka_outage_backs_off_loses_nothing_and_sigterm_still_stops_the_gateway(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    from strainwatch.stack.components import start_kafka
    from strainwatch.stack.procs import free_port, stop
    from strainwatch.stack.topics import ensure_topics

    port, controller = free_port(), free_port()
    state = tmp_path / "broker"
    proc = start_kafka(state, port, controller)
    kafka = Broker("kafka", f"127.0.0.1:{port}", proc, 4)
    ensure_topics(kafka.bootstrap, 4)
    t = tag()
    dev, worker = f"dev-o-{t}", f"w-o-{t}"
    mosquitto.provision({dev: "po"})
    bind(kafka, {dev: worker})
    client_id = f"gw-{t}"
    env = {
        "STRAINWATCH_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "STRAINWATCH_LOG_FORMAT": "json",
        **mosquitto.gateway_env(client_id),
    }
    gateway = GatewayProc(env, tmp_path / "gateway.log")
    device = Device(mosquitto, dev, "po")
    events: TopicReader | None = None
    try:
        start_and_wait(gateway)
        events = TopicReader(kafka.bootstrap, "posture.events.v1")
        wait_forwarding(device, worker, events)
        events.close()
        events = None

        stop(kafka.proc)  # Kafka goes away; Mosquitto still accepts the device's frames
        during = [device_frame(dev, worker) for _ in range(30)]
        for payload in during:
            device.publish_acked(f"devices/{dev}/frames", payload)
        kafka.proc = start_kafka(state, port, controller)
        events = TopicReader(kafka.bootstrap, "posture.events.v1")
        wanted = {event_id_of(p) for p in during}
        wait_for(
            lambda: wanted <= {event_id_of_safe(r.value) for r in events.poll()},  # type: ignore[union-attr]
            timeout_s=120,
            what="frames sent during the outage on Kafka",
        )
        events.close()
        events = None

        # Kafka away again, frames waiting: SIGTERM still stops the gateway within 30 s, and the
        # frames it never got Kafka to acknowledge come back to the next gateway from Mosquitto
        stop(kafka.proc)
        pending = [device_frame(dev, worker) for _ in range(10)]
        for payload in pending:
            device.publish_acked(f"devices/{dev}/frames", payload)
        started = time.monotonic()
        assert gateway.terminate(timeout_s=30) == 0
        print(f"stopped {time.monotonic() - started:.1f} s after SIGTERM with Kafka down")
        kafka.proc = start_kafka(state, port, controller)
        start_and_wait(gateway)
        events = TopicReader(kafka.bootstrap, "posture.events.v1")
        wanted = {event_id_of(p) for p in pending}
        wait_for(
            lambda: wanted <= {event_id_of_safe(r.value) for r in events.poll()},  # type: ignore[union-attr]
            timeout_s=120,
            what="frames pending at the SIGTERM on Kafka",
        )
        assert gateway.terminate() == 0
    finally:
        gateway.stop()
        device.close()
        if events is not None:
            events.close()
        stop(kafka.proc)
        forget_session(mosquitto, client_id)
