"""Simulated devices over a real Mosquitto (the shared `mosquitto` fixture: the stack's password file
and ACL).

Every frame the devices publish reaches a subscriber on the gateway's account byte for byte; a
command sent to one device reaches that device only and is acknowledged per the seeded share.
"""

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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from strainwatch.fleet.behaviour import DevicePolicy, share_draw
from strainwatch.fleet.devices import MqttFleet, MqttTarget, device_password
from strainwatch.fleet.simulator import FleetSimulator, SimConfig
from strainwatch.stack.mosquitto import GATEWAY_USERNAME
from tests.integration.conftest import Mosquitto
from tests.support import wait_for

pytestmark = pytest.mark.integration


@dataclass
class GatewayView:
    """What the gateway account sees on devices/#."""

    client: mqtt.Client
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, suffix: str) -> list[tuple[str, bytes]]:
        with self.lock:
            return [(t, p) for t, p in self.messages if t.endswith(suffix)]


@pytest.fixture
def gateway(mosquitto: Mosquitto) -> Iterator[GatewayView]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"gw-{uuid.uuid4().hex[:6]}")
    client.username_pw_set(GATEWAY_USERNAME, mosquitto.gateway_password)
    view = GatewayView(client)
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with view.lock:
            view.messages.append((message.topic, message.payload))

    client.on_message = on_message
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("devices/#", qos=1)
    client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    wait_for(subscribed.is_set, timeout_s=20, what="the gateway's subscription to devices/#")
    yield view
    client.disconnect()
    client.loop_stop()


class FleetThread:
    """MqttFleet.run on an event loop of its own thread, stoppable from the test."""

    def __init__(self, fleet: MqttFleet, **run_kwargs: object) -> None:
        self.fleet = fleet
        self.loop = asyncio.new_event_loop()
        self.stop_event = asyncio.Event()
        self.result: object = None
        self.thread = threading.Thread(target=self._main, args=(run_kwargs,), daemon=True)
        self.thread.start()

    def _main(self, run_kwargs: dict[str, object]) -> None:
        try:
            self.result = self.loop.run_until_complete(
                self.fleet.run(stop=self.stop_event, **run_kwargs)  # type: ignore[arg-type]
            )
        except BaseException as error:  # reported by finish()
            self.result = error

    def finish(self, timeout_s: float = 30.0) -> object:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the fleet did not stop"
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


def live_config(workers: int, duration_s: float, seed: int = 9) -> SimConfig:
    return SimConfig(
        workers=workers,
        duration_s=duration_s,
        start=datetime.fromtimestamp(time.time() // 1, UTC),
        seed=seed,
        shifts=False,
    )


def provision(mosquitto: Mosquitto, sim: FleetSimulator) -> None:
    mosquitto.provision({w.device_id: device_password(w.device_id) for w in sim.workers})


def command(device_id: str, worker_id: str, alert: uuid.UUID, kind: str = "break_prompt") -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "command_id": str(uuid.uuid5(alert, "command")),
            "worker_id": worker_id,
            "device_id": device_id,
            "ts": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "command": kind,
            "haptic": "break",
            "alert_id": str(alert),
            "text": "Time for a 3-minute break",
        }
    )


def test_frames_arrive_and_commands_reach_their_device_only(
    mosquitto: Mosquitto, gateway: GatewayView
) -> None:
    cfg = live_config(workers=12, duration_s=4)
    expected = [
        (f"devices/{orjson.loads(f.value)['device_id']}/frames", f.value)
        for f in FleetSimulator(cfg).frames()
    ]
    sim = FleetSimulator(cfg)
    provision(mosquitto, sim)
    policy = DevicePolicy(ack_share=0.5, take_share=0.5, report_rest=True, seed=4)
    fleet = MqttFleet(sim, MqttTarget(port=mosquitto.port), policy)
    runner = FleetThread(fleet, paced=True, linger_s=120)

    # every frame, exactly the simulator's bytes, on its device's topic
    wait_for(lambda: len(gateway.on("/frames")) >= len(expected), timeout_s=60, what="all frames")
    assert sorted(gateway.on("/frames")) == sorted(expected)
    wait_for(lambda: fleet.stats.frames_acknowledged == len(expected), timeout_s=20, what="PUBACKs")

    target = sim.workers[3]
    alerts = [uuid.UUID(int=1000 + i) for i in range(30)]
    for alert in alerts:
        gateway.client.publish(
            f"devices/{target.device_id}/commands", command(target.device_id, target.worker_id, alert), qos=1
        )
    wait_for(lambda: len(fleet.receipts) >= len(alerts), timeout_s=30, what="commands at the device")
    acks_expected = {str(a) for a in alerts if share_draw(4, str(a), "ack") < 0.5}
    rests_expected = {str(a) for a in alerts if share_draw(4, str(a), "take") < 0.5}
    assert 0 < len(acks_expected) < len(alerts) and 0 < len(rests_expected) < len(alerts)

    def replies(kind: str) -> set[str]:
        docs = [orjson.loads(p) for t, p in gateway.on("/ack")]
        assert {t for t, _ in gateway.on("/ack")} <= {f"devices/{target.device_id}/ack"}
        return {d["alert_id"] for d in docs if d["kind"] == kind}

    wait_for(
        lambda: replies("ack") == acks_expected and replies("rest") == rests_expected,
        timeout_s=30,
        what="acks and rest reports per the shares",
    )
    stats = runner.finish()
    assert {r.device_id for r in fleet.receipts} == {target.device_id}  # no other device got one
    assert sorted(r.alert_id for r in fleet.receipts) == sorted(str(a) for a in alerts)
    assert all(r.received_at > 0 for r in fleet.receipts)
    summary = stats.as_dict()  # type: ignore[attr-defined]
    assert summary["frames_published"] == summary["frames_acknowledged"] == len(expected)
    assert summary["commands"] == {"break_prompt": len(alerts)}
    assert summary["acks_sent"] == len(acks_expected)
    assert summary["breaks_taken"] == summary["rests_sent"] == len(rests_expected)
    assert summary["acks_acknowledged"] == len(acks_expected) + len(rests_expected)


def test_a_device_with_a_wrong_password_is_refused(mosquitto: Mosquitto) -> None:
    from strainwatch.fleet.devices import FleetError

    sim = FleetSimulator(live_config(workers=2, duration_s=1))
    passwords = {w.device_id: device_password(w.device_id) for w in sim.workers}
    mosquitto.provision(passwords)
    fleet = MqttFleet(
        sim, MqttTarget(port=mosquitto.port), DevicePolicy(), {**passwords, "dev-0001": "wrong"}
    )
    with pytest.raises(FleetError, match=r"1 of 2 devices could not connect .*dev-0001.*[Nn]ot authori"):
        asyncio.run(fleet.run(connect_timeout_s=3))


def test_simulate_mqtt_cli_publishes_and_summarises(mosquitto: Mosquitto, gateway: GatewayView) -> None:
    env = {
        **os.environ,
        "STRAINWATCH_STATE_DIR": str(mosquitto.state_dir),
        "STRAINWATCH_MQTT_PORT": str(mosquitto.port),
        "STRAINWATCH_LOG_FORMAT": "json",
    }
    argv = [
        sys.executable,
        "-m",
        "strainwatch.cli",
        "simulate",
        "--mqtt",
        "--workers",
        "3",
        "--duration",
        "3",
        "--no-shifts",  # all three devices send, whatever the hour
    ]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = orjson.loads(done.stdout.strip().splitlines()[-1])["live"]
    assert summary["devices"] == summary["connected"] == 3
    assert summary["frames_published"] == summary["frames_acknowledged"] > 0
    wait_for(
        lambda: len(gateway.on("/frames")) >= summary["frames_published"],
        timeout_s=20,
        what="the CLI's frames at the gateway",
    )
    assert {t for t, _ in gateway.on("/frames")} == {f"devices/dev-000{i}/frames" for i in range(3)}


def test_simulate_mqtt_stops_on_sigterm_with_a_summary(mosquitto: Mosquitto, gateway: GatewayView) -> None:
    env = {
        **os.environ,
        "STRAINWATCH_STATE_DIR": str(mosquitto.state_dir),
        "STRAINWATCH_MQTT_PORT": str(mosquitto.port),
        "STRAINWATCH_LOG_FORMAT": "json",
    }
    argv = [
        sys.executable,
        "-m",
        "strainwatch.cli",
        "simulate",
        "--mqtt",
        "--workers",
        "5",
        "--duration",
        "600",
        "--no-shifts",
    ]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(gateway.on("/frames")) >= 10, timeout_s=60, what="frames from the CLI")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - started < 30
    assert proc.returncode == 0, err[-3000:]
    summary = orjson.loads(out.strip().splitlines()[-1])["live"]
    assert summary["stopped_early"] is True
    assert 10 <= summary["frames_published"] == summary["frames_acknowledged"]


def test_simulate_rejects_mqtt_options_without_mqtt() -> None:
    argv = [sys.executable, "-m", "strainwatch.cli", "simulate", "--workers", "3", "--take-share", "0.5"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "only apply with --mqtt" in done.stderr


def test_simulate_mqtt_without_a_broker_fails_fast(tmp_path: Path) -> None:
    from strainwatch.stack.procs import free_port

    port = free_port()  # nothing listens there
    argv = [
        sys.executable,
        "-m",
        "strainwatch.cli",
        "simulate",
        "--mqtt",
        "--workers",
        "50",
        "--duration",
        "5",
    ]
    argv += ["--mqtt-port", str(port), "--state-dir", str(tmp_path / "state")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and f"no MQTT broker answers at 127.0.0.1:{port}" in done.stderr
