"""Simulated wearables over MQTT: one paho client per device, all driven by one asyncio loop.

Each device logs in to Mosquitto as itself (username = device_id), publishes its worker's frames to
`devices/{device_id}/frames` (QoS 1, exactly the simulator's JSON bytes), listens on
`devices/{device_id}/commands` and answers on `devices/{device_id}/ack` (fleet/behaviour.py decides
how). Thousands of devices share one thread: paho's external-loop integration hands each client's
socket to the event loop (`add_reader`/`add_writer` -> `loop_read`/`loop_write`) and a periodic task
runs `loop_misc` (keepalive) and reconnects dropped clients.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from strainwatch.fleet.behaviour import CommandReceipt, DeviceBehaviour, DevicePolicy, Reaction
from strainwatch.fleet.simulator import FleetSimulator, SimFrame

log = structlog.get_logger("strainwatch.fleet")

MISC_INTERVAL_S = 0.5
RECONNECT_AFTER_S = 1.0


class FleetError(RuntimeError):
    pass


def frames_topic(device_id: str) -> str:
    return f"devices/{device_id}/frames"


def commands_topic(device_id: str) -> str:
    return f"devices/{device_id}/commands"


def ack_topic(device_id: str) -> str:
    return f"devices/{device_id}/ack"


def device_password(device_id: str) -> str:
    """The simulated device's Mosquitto password: fixed per device id, so reruns need no new accounts."""
    return hashlib.sha256(f"strainwatch-sim-device:{device_id}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class MqttTarget:
    host: str = "127.0.0.1"
    port: int = 11883
    tls: bool = False
    ca_file: str | None = None  # with tls: the CA that signed the broker's certificate (else system CAs)
    keepalive_s: int = 30


@dataclass
class FleetStats:
    devices: int = 0
    connected: int = 0
    frames_published: int = 0
    frames_acknowledged: int = 0  # PUBACK from Mosquitto
    commands: Counter[str] = field(default_factory=Counter)  # by command kind, duplicates excluded
    duplicate_commands: int = 0
    rejected_commands: int = 0
    acks_sent: int = 0
    rests_sent: int = 0
    acks_acknowledged: int = 0  # ack/rest messages Mosquitto confirmed
    breaks_taken: int = 0
    reconnects: int = 0
    max_lag_s: float = 0.0  # paced runs: how late the worst frame left after its last sample
    lag_sum_s: float = 0.0
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "connected": self.connected,
            "frames_published": self.frames_published,
            "frames_acknowledged": self.frames_acknowledged,
            "commands": dict(self.commands),
            "duplicate_commands": self.duplicate_commands,
            "rejected_commands": self.rejected_commands,
            "acks_sent": self.acks_sent,
            "rests_sent": self.rests_sent,
            "acks_acknowledged": self.acks_acknowledged,
            "breaks_taken": self.breaks_taken,
            "reconnects": self.reconnects,
            "max_lag_s": round(self.max_lag_s, 3),
            "mean_lag_s": round(self.lag_sum_s / self.frames_published, 4) if self.frames_published else 0.0,
            "elapsed_s": round(self.elapsed_s, 3),
        }


class SimDevice:
    """One wearable: its paho client, its behaviour and its in-flight frame message ids."""

    def __init__(self, fleet: MqttFleet, device_id: str, worker_id: str, password: str) -> None:
        self.fleet = fleet
        self.device_id = device_id
        self.worker_id = worker_id
        self.behaviour = DeviceBehaviour(device_id, fleet.policy)
        self.connected = False  # CONNACK accepted and commands subscribed (SUBACK)
        self.connecting = False
        self.last_attempt = 0.0
        self.refusal = ""
        self.frame_mids: set[int] = set()
        self.reply_mids: set[int] = set()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=device_id, clean_session=True, userdata=self
        )
        client.username_pw_set(device_id, password)
        if fleet.target.tls:
            client.tls_set(ca_certs=fleet.target.ca_file)
        client.max_inflight_messages_set(100)
        client.on_connect = _on_connect
        client.on_subscribe = _on_subscribe
        client.on_disconnect = _on_disconnect
        client.on_message = _on_message
        client.on_publish = _on_publish
        loop = fleet.loop
        client.on_socket_open = lambda c, u, sock: loop.add_reader(sock, c.loop_read)
        client.on_socket_close = lambda c, u, sock: _forget(loop.remove_reader, sock)
        client.on_socket_register_write = lambda c, u, sock: loop.add_writer(sock, c.loop_write)
        client.on_socket_unregister_write = lambda c, u, sock: _forget(loop.remove_writer, sock)
        self.client = client

    def connect(self) -> None:
        self.last_attempt = time.monotonic()
        self.connecting = True
        try:
            target = self.fleet.target
            self.client.connect(target.host, target.port, keepalive=target.keepalive_s)
        except OSError as error:
            self.connecting = False
            self.refusal = f"{type(error).__name__}: {error}"

    def publish_frame(self, item: SimFrame) -> None:
        info = self.client.publish(frames_topic(self.device_id), item.value, qos=1)
        # a client between connections queues QoS 1 messages and sends them once reconnected
        self.frame_mids.add(info.mid)

    def publish_reply(self, payload: bytes) -> None:
        info = self.client.publish(ack_topic(self.device_id), payload, qos=1)
        self.reply_mids.add(info.mid)


def _forget(remove: Callable[[Any], bool], sock: Any) -> None:
    remove(sock)


def _on_connect(client: mqtt.Client, device: SimDevice, _flags: Any, reason: Any, _props: Any) -> None:
    device.connecting = False
    if reason.is_failure:
        device.refusal = str(reason)
        return
    device.refusal = ""
    client.subscribe(commands_topic(device.device_id), qos=1)


def _on_subscribe(_client: mqtt.Client, device: SimDevice, _mid: int, reasons: Any, _props: Any) -> None:
    if any(r.is_failure for r in reasons):
        device.refusal = f"subscription to {commands_topic(device.device_id)} refused: {reasons[0]}"
        return
    device.connected = True


def _on_disconnect(_client: mqtt.Client, device: SimDevice, _flags: Any, reason: Any, _props: Any) -> None:
    was_connected = device.connected
    device.connected = False
    device.connecting = False
    if was_connected and not device.fleet.stopping:
        log.warning("device disconnected", device_id=device.device_id, reason=str(reason))


def _on_publish(_client: mqtt.Client, device: SimDevice, mid: int, reason: Any, _props: Any) -> None:
    stats = device.fleet.stats
    if mid in device.frame_mids:
        device.frame_mids.discard(mid)
        stats.frames_acknowledged += 1
    elif mid in device.reply_mids:
        device.reply_mids.discard(mid)
        stats.acks_acknowledged += 1


def _on_message(_client: mqtt.Client, device: SimDevice, message: mqtt.MQTTMessage) -> None:
    device.fleet.handle_command(device, bytes(message.payload))


class MqttFleet:
    """Many simulated devices publishing one FleetSimulator's frames over MQTT."""

    def __init__(
        self,
        sim: FleetSimulator,
        target: MqttTarget,
        policy: DevicePolicy,
        passwords: dict[str, str] | None = None,
        on_receipt: Callable[[CommandReceipt], None] | None = None,
    ) -> None:
        self.sim = sim
        self.target = target
        self.policy = policy
        self.passwords = passwords or {w.device_id: device_password(w.device_id) for w in sim.workers}
        self.on_receipt = on_receipt
        self.receipts: list[CommandReceipt] = []
        self.stats = FleetStats(devices=len(sim.workers))
        self.stopping = False
        self.event_now = sim.cfg.start.timestamp()  # end of the last frame released
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by run()
        self.devices: dict[str, SimDevice] = {}

    # -- commands ---------------------------------------------------------------------------------

    def handle_command(self, device: SimDevice, payload: bytes) -> None:
        reaction = device.behaviour.on_command(payload, time.time(), self.event_now)
        stats = self.stats
        if not isinstance(reaction, Reaction):
            stats.rejected_commands += 1
            log.warning("command rejected", device_id=device.device_id, reason=reaction.reason)
            return
        self.receipts.append(reaction.receipt)
        if self.on_receipt is not None:
            self.on_receipt(reaction.receipt)
        if reaction.receipt.duplicate:
            stats.duplicate_commands += 1
            return
        stats.commands[reaction.receipt.command] += 1
        if reaction.ack is not None:
            device.publish_reply(reaction.ack)
            stats.acks_sent += 1
        if reaction.neutral_until is not None:
            self.sim.hold_neutral(device.worker_id, reaction.neutral_until)
            stats.breaks_taken += 1
        if reaction.rest is not None:
            device.publish_reply(reaction.rest)
            stats.rests_sent += 1

    # -- the run ----------------------------------------------------------------------------------

    async def run(
        self,
        *,
        paced: bool = True,
        linger_s: float = 0.0,
        stop: asyncio.Event | None = None,
        connect_timeout_s: float = 30.0,
        drain_timeout_s: float = 10.0,
    ) -> FleetStats:
        """Connect every device, publish all frames (in real time when paced), keep listening for
        commands `linger_s` longer, wait for Mosquitto to confirm what was published, disconnect."""
        self.loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        started = time.monotonic()
        self.devices = {
            w.device_id: SimDevice(self, w.device_id, w.worker_id, self.passwords[w.device_id])
            for w in self.sim.workers
        }
        by_worker = {d.worker_id: d for d in self.devices.values()}
        housekeeping = asyncio.create_task(self._housekeeping())
        try:
            await self._connect_all(connect_timeout_s, stop)
            await self._publish(by_worker, paced, stop)
            if linger_s > 0:
                await _wait(lambda: False, linger_s, stop)
            # also when stopped early: what was published gets its PUBACK (bounded, within 30 s of SIGTERM)
            await _wait(lambda: self._in_flight() == 0, drain_timeout_s, None)
        finally:
            self.stopping = True
            for device in self.devices.values():
                device.client.disconnect()
            await _wait(lambda: not any(d.connected for d in self.devices.values()), 5.0, None)
            housekeeping.cancel()
            for device in self.devices.values():  # closes sockets still open (and their loop handlers)
                device.client.loop_misc()
            self.stats.elapsed_s = time.monotonic() - started
        return self.stats

    def _in_flight(self) -> int:
        return sum(len(d.frame_mids) + len(d.reply_mids) for d in self.devices.values())

    async def _connect_all(self, timeout_s: float, stop: asyncio.Event) -> None:
        for i, device in enumerate(self.devices.values()):
            device.connect()
            if i == 0 and not device.connecting:  # no broker there: fail now, not once per device
                raise FleetError(
                    f"no MQTT broker answers at {self.target.host}:{self.target.port} ({device.refusal}); "
                    "is the stack up? `strainwatch stack up`"
                )
            if i % 50 == 49:
                await asyncio.sleep(0)  # let CONNACKs in while the rest connect
        ready = await _wait(lambda: all(d.connected for d in self.devices.values()), timeout_s, stop)
        self.stats.connected = sum(d.connected for d in self.devices.values())
        if not ready and not stop.is_set():
            missing = [d for d in self.devices.values() if not d.connected]
            reason = next((d.refusal for d in missing if d.refusal), "no answer")
            raise FleetError(
                f"{len(missing)} of {len(self.devices)} devices could not connect to "
                f"{self.target.host}:{self.target.port} within {timeout_s:.0f} s "
                f"(first: {missing[0].device_id}: {reason})"
            )
        log.info("devices connected", devices=self.stats.connected)

    async def _publish(self, by_worker: dict[str, SimDevice], paced: bool, stop: asyncio.Event) -> None:
        frame_s = _frame_seconds(self.sim)
        stats = self.stats
        for n, item in enumerate(self.sim.frames()):
            if stop.is_set():
                return
            due = item.start_s + frame_s  # a wearable sends a frame once its last sample happened
            if paced:
                delay = due - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                lag = max(0.0, time.time() - due)
                stats.lag_sum_s += lag
                stats.max_lag_s = max(stats.max_lag_s, lag)
            if n % 200 == 199:
                await asyncio.sleep(0)  # socket I/O (writes, PUBACKs, commands) within a tick's burst
            self.event_now = max(self.event_now, due)
            by_worker[item.worker_id].publish_frame(item)
            stats.frames_published += 1

    async def _housekeeping(self) -> None:
        """Keepalive pings, and reconnection of devices that dropped (or were refused) while running."""
        while True:
            await asyncio.sleep(MISC_INTERVAL_S)
            now = time.monotonic()
            for device in self.devices.values():
                rc = device.client.loop_misc()
                if self.stopping:
                    continue
                idle = not device.connected and not device.connecting
                if idle and now - device.last_attempt >= RECONNECT_AFTER_S:
                    if rc is MQTTErrorCode.MQTT_ERR_SUCCESS and device.client.is_connected():
                        continue  # connected, waiting for SUBACK
                    if device.last_attempt:
                        self.stats.reconnects += 1
                    device.connect()


def _frame_seconds(sim: FleetSimulator) -> float:
    n = max(1, round(sim.cfg.frame_s * sim.cfg.rate_hz))
    return n / sim.cfg.rate_hz


async def _wait(condition: Callable[[], bool], timeout_s: float, stop: asyncio.Event | None) -> bool:
    """Poll the condition on the event loop until it holds, the timeout passes or stop is set."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if (stop is not None and stop.is_set()) or time.monotonic() >= deadline:
            return condition()
        await asyncio.sleep(0.05)
    return True
