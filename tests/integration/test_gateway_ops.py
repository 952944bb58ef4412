"""`strainwatch gateway run` operated: /healthz, /readyz, /metrics, Kafka gone for a minute, signals.

Real Mosquitto and Apache Kafka; devices are paho clients; what the gateway forwarded is read back
from Kafka. The minute-long outage runs under `make faults`.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from strainwatch.stack.components import start_kafka
from strainwatch.stack.procs import free_port, stop
from strainwatch.stack.topics import ensure_topics
from tests.integration.conftest import Broker, Mosquitto
from tests.integration.test_gateway import (
    Device,
    GatewayProc,
    TopicReader,
    bind,
    device_frame,
    event_id_of,
    event_id_of_safe,
    forget_session,
    tag,
    wait_forwarding,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def readyz(base: str) -> dict[str, Any] | None:
    status, body = get(f"{base}/readyz")
    if status not in (200, 503):
        return None
    doc: dict[str, Any] = json.loads(body)
    doc["status"] = status
    return doc


def metric(base: str, name: str, **labels: str) -> float:
    """The value of one sample of /metrics (0 if absent)."""
    _, text = get(f"{base}/metrics")
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"([a-z_]+)(\{[^}]*\})? (\S+)$", line)
        if m is None or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return 0.0


def events_named(proc: GatewayProc, name: str) -> int:
    return proc.events(name)


class Ops:
    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"


@pytest.fixture
def ops() -> Ops:
    return Ops()


def gateway_env(kafka: Broker, mosquitto: Mosquitto, client_id: str, ops: Ops) -> dict[str, str]:
    return {
        "STRAINWATCH_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "STRAINWATCH_LOG_FORMAT": "json",
        "STRAINWATCH_OPS_BIND": f"127.0.0.1:{ops.port}",
        **mosquitto.gateway_env(client_id),
    }


@pytest.fixture
def gateway(kafka: Broker, mosquitto: Mosquitto, ops: Ops, tmp_path: Path) -> Iterator[GatewayProc]:
    client_id = f"gw-{uuid.uuid4().hex[:8]}"
    proc = GatewayProc(gateway_env(kafka, mosquitto, client_id, ops), tmp_path / "gateway.log")
    yield proc
    proc.stop()
    forget_session(mosquitto, client_id)


def wait_ready(base: str, proc: GatewayProc, timeout_s: float = 90) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        assert proc.running(), proc.log()
        doc = readyz(base)
        return doc if doc and doc["status"] == 200 else None

    return wait_for(ready, timeout_s=timeout_s, what=f"/readyz 200 from the gateway; log: {proc.log()}")


def test_endpoints_readiness_and_metrics_count_what_the_gateway_did(
    kafka: Broker, mosquitto: Mosquitto, gateway: GatewayProc, ops: Ops
) -> None:
    t = tag()
    bound, unbound = f"dev-m-{t}", f"dev-n-{t}"
    worker = f"w-m-{t}"
    mosquitto.provision({bound: "pm", unbound: "pn"})
    bind(kafka, {bound: worker})
    gateway.start()
    # alive at once, ready once Kafka, Mosquitto and the roster are there
    wait_for(lambda: get(f"{ops.base}/healthz")[0] == 200, timeout_s=30, what="/healthz")
    doc = wait_ready(ops.base, gateway)
    assert set(doc["checks"]) >= {"kafka", "mqtt", "roster"}
    assert all(c["ok"] for c in doc["checks"].values())
    events = TopicReader(kafka.bootstrap, "posture.events.v1")
    a, u = Device(mosquitto, bound, "pm"), Device(mosquitto, unbound, "pn")
    try:
        wait_forwarding(a, worker, events)
        consumed0 = metric(ops.base, "strainwatch_consumed_total", service="gateway")
        processed0 = metric(ops.base, "strainwatch_processed_total", service="gateway")
        delays0 = metric(ops.base, "strainwatch_end_to_end_delay_seconds_count", service="gateway")
        good = [device_frame(bound, worker) for _ in range(20)]
        for payload in good:
            a.publish_acked(f"devices/{bound}/frames", payload)
        for _ in range(3):
            u.publish_acked(f"devices/{unbound}/frames", device_frame(unbound, "w-x"))
        wanted = {event_id_of(p) for p in good}
        wait_for(
            lambda: wanted <= {event_id_of_safe(r.value) for r in events.poll()},
            timeout_s=30,
            what="the frames on Kafka",
        )
        wait_for(
            lambda: metric(ops.base, "strainwatch_processed_total", service="gateway") - processed0 >= 23,
            timeout_s=30,
            what="processed to count 20 frames and 3 dead letters",
        )
        assert metric(ops.base, "strainwatch_consumed_total", service="gateway") - consumed0 == 23
        assert metric(ops.base, "strainwatch_processed_total", service="gateway") - processed0 == 23
        assert metric(ops.base, "strainwatch_dead_lettered_total", reason="unbound_device") == 3
        assert metric(ops.base, "strainwatch_end_to_end_delay_seconds_count") - delays0 == 23
        assert metric(ops.base, "strainwatch_sink_write_errors_total", service="gateway") == 0
        assert metric(ops.base, "strainwatch_consumer_lag", service="gateway") == 0
        started = time.monotonic()
        assert gateway.terminate() == 0
        assert time.monotonic() - started < 30
    finally:
        a.close()
        u.close()
        events.close()


def test_a_second_signal_exits_at_once(
    kafka: Broker, mosquitto: Mosquitto, gateway: GatewayProc, ops: Ops
) -> None:
    t = tag()
    dev, worker = f"dev-s-{t}", f"w-s-{t}"
    mosquitto.provision({dev: "ps"})
    bind(kafka, {dev: worker})
    gateway.start()
    wait_ready(ops.base, gateway)
    device = Device(mosquitto, dev, "ps")
    stop(kafka.proc)
    wait_for(
        lambda: (d := readyz(ops.base)) is not None and not d["checks"]["kafka"]["ok"],
        timeout_s=30,
        what="/readyz to report Kafka gone",
    )
    # frames waiting for Kafka: a clean stop gives them DRAIN_S to be acknowledged
    for _ in range(5):
        device.publish_acked(f"devices/{dev}/frames", device_frame(dev, worker))
    wait_for(
        lambda: metric(ops.base, "strainwatch_checkpoint_age_seconds", service="gateway") > 0,
        timeout_s=30,
        what="frames waiting for Kafka",
    )
    device.close()
    assert gateway.popen is not None
    started = time.monotonic()
    gateway.popen.send_signal(signal.SIGTERM)
    wait_for(lambda: gateway.events("stopping") >= 1, timeout_s=10, what="the first signal handled")
    gateway.popen.send_signal(signal.SIGINT)
    code = gateway.popen.wait(10)
    assert time.monotonic() - started < 5, "a second signal must exit at once"
    assert code == 128 + signal.SIGINT
    assert gateway.events("exiting at once") == 1


@pytest.mark.faults
def test_kafka_gone_for_a_minute_every_frame_arrives_exactly_once(
    mosquitto: Mosquitto, ops: Ops, tmp_path: Path
) -> None:
    port, controller = free_port(), free_port()
    state = tmp_path / "broker"
    kafka = Broker("kafka", f"127.0.0.1:{port}", start_kafka(state, port, controller), 4)
    ensure_topics(kafka.bootstrap, 4)
    t = tag()
    dev, worker = f"dev-f-{t}", f"w-f-{t}"
    mosquitto.provision({dev: "pf"})
    bind(kafka, {dev: worker})
    client_id = f"gw-{t}"
    gateway = GatewayProc(gateway_env(kafka, mosquitto, client_id, ops), tmp_path / "gateway.log")
    device = Device(mosquitto, dev, "pf")
    events: TopicReader | None = None
    sent: list[tuple[str, mqtt.MQTTMessageInfo]] = []
    done = threading.Event()

    def publish_stream() -> None:
        base = uuid.uuid4().int & ~((1 << 20) - 1)
        i = 0
        while not done.is_set():
            payload = device_frame(dev, worker, event_id=uuid.UUID(int=base + i))
            sent.append((event_id_of(payload), device.publish(f"devices/{dev}/frames", payload)))
            i += 1
            time.sleep(0.05)  # 20 frames a second

    try:
        gateway.start()
        wait_ready(ops.base, gateway)
        events = TopicReader(kafka.bootstrap, "posture.events.v1")
        wait_forwarding(device, worker, events)
        probes = {event_id_of_safe(r.value) for r in events.poll()}
        events.close()
        events = None
        publisher = threading.Thread(target=publish_stream, daemon=True)
        publisher.start()
        wait_for(lambda: len(sent) >= 100, timeout_s=30, what="frames before the outage")

        stop(kafka.proc)  # SIGTERM: Kafka goes away mid-stream for 60 s
        down_at = time.monotonic()
        doc = wait_for(
            lambda: (d := readyz(ops.base)) is not None and d["status"] == 503 and d,
            timeout_s=30,
            what="/readyz 503 while Kafka is down",
        )
        assert not doc["checks"]["kafka"]["ok"] and doc["checks"]["mqtt"]["ok"], doc
        assert get(f"{ops.base}/healthz")[0] == 200
        frames_during = len(sent)
        time.sleep(max(0.0, 60 - (time.monotonic() - down_at)))  # the outage itself: a minute
        assert len(sent) - frames_during > 500, "devices kept publishing during the outage"
        kafka.proc = start_kafka(state, port, controller)  # same data directory and ports
        wait_ready(ops.base, gateway, timeout_s=120)
        after = len(sent)
        wait_for(lambda: len(sent) >= after + 100, timeout_s=30, what="frames after the outage")
        done.set()
        publisher.join(10)

        mids = {info.mid: eid for eid, info in sent}
        wait_for(lambda: len(device.acked(list(mids))) == len(mids), timeout_s=60, what="every PUBACK")
        wanted = {eid for eid, _ in sent}
        events = TopicReader(kafka.bootstrap, "posture.events.v1")
        wait_for(
            lambda: wanted <= {event_id_of_safe(r.value) for r in events.poll()},  # type: ignore[union-attr]
            timeout_s=180,
            what="every frame on Kafka",
        )
        ours = [r for r in events.records if event_id_of_safe(r.value) in wanted]
        counts: dict[str, int] = {}
        for r in ours:
            counts[event_id_of(r.value)] = counts.get(event_id_of(r.value), 0) + 1
        duplicates = sorted(e for e, n in counts.items() if n > 1)
        print(
            f"{len(wanted)} frames published ({frames_during} before the outage), {len(ours)} records, "
            f"{len(duplicates)} duplicated; probes {len(probes)}"
        )
        assert not duplicates, f"frames stored twice: {duplicates[:5]}"
        assert all(r.key == worker.encode() for r in ours)
        # the outage logged once (plus at most one reminder a minute), its end once
        assert gateway.events("kafka_unavailable") == 1, gateway.log()
        assert gateway.events("kafka_still_unavailable") <= 2
        assert gateway.events("kafka_recovered") >= 1
        assert metric(ops.base, "strainwatch_sink_write_errors_total", service="gateway") >= 0

        # Kafka gone again: SIGTERM still stops the gateway within 30 s
        stop(kafka.proc)
        started = time.monotonic()
        assert gateway.terminate(timeout_s=30) == 0
        print(f"stopped {time.monotonic() - started:.1f} s after SIGTERM with Kafka down")
    finally:
        done.set()
        gateway.stop()
        device.close()
        if events is not None:
            events.close()
        stop(kafka.proc)
        forget_session(mosquitto, client_id)


def test_started_without_kafka_the_gateway_waits_then_forwards(
    mosquitto: Mosquitto, ops: Ops, tmp_path: Path
) -> None:
    port, controller = free_port(), free_port()
    kafka = Broker("kafka", f"127.0.0.1:{port}", None, 4)  # type: ignore[arg-type]
    client_id = f"gw-{tag()}"
    gateway = GatewayProc(gateway_env(kafka, mosquitto, client_id, ops), tmp_path / "gateway.log")
    try:
        gateway.start()
        doc = wait_for(
            lambda: (d := readyz(ops.base)) is not None and d,
            timeout_s=30,
            what="/readyz while Kafka is not there",
        )
        assert doc["status"] == 503 and not doc["checks"]["kafka"]["ok"]
        wait_for(lambda: gateway.events("kafka_unavailable") == 1, timeout_s=60, what="the outage logged")
        assert gateway.running()
        kafka.proc = start_kafka(tmp_path / "broker", port, controller)
        ensure_topics(kafka.bootstrap, 4)
        t = tag()
        dev, worker = f"dev-w-{t}", f"w-w-{t}"
        mosquitto.provision({dev: "pw"})
        bind(kafka, {dev: worker})
        wait_ready(ops.base, gateway, timeout_s=120)
        events = TopicReader(kafka.bootstrap, "posture.events.v1")
        device = Device(mosquitto, dev, "pw")
        try:
            wait_forwarding(device, worker, events)
        finally:
            device.close()
            events.close()
        assert gateway.events("kafka_unavailable") == 1
        assert gateway.terminate() == 0
    finally:
        gateway.stop()
        if kafka.proc is not None:
            stop(kafka.proc)
        forget_session(mosquitto, client_id)
