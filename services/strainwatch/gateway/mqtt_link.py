"""The gateway's MQTT connection: paho 2 on its network thread, bridged to the asyncio loop.

- fixed client id, persistent session (clean_session=False): while the gateway is away Mosquitto
  queues QoS 1 frames for it, and it redelivers those not yet acknowledged on reconnect;
- manual acks: a message is acknowledged (PUBACK) only when the service says so, after Kafka has
  its record. An ack is sent only on the connection that delivered the message: after a
  reconnect Mosquitto redelivers the unacknowledged message anyway, and a message id of the old
  connection must never acknowledge a different message on the new one;
- outgoing QoS 1 publishes resolve an asyncio future on PUBACK.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion

from strainwatch.logs import RateLimitedLog

log = structlog.get_logger("strainwatch.gateway")


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int
    connection: int  # which connection delivered it (see module doc)
    received: float = 0.0  # time.monotonic() when paho handed it over (end-to-end delay, age)


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    username: str
    password: str
    client_id: str
    tls: bool = False
    ca_file: str | None = None  # with tls: the CA that signed the broker's certificate (else system CAs)
    keepalive_s: int = 30


class MqttLink:
    def __init__(
        self,
        settings: MqttSettings,
        loop: asyncio.AbstractEventLoop,
        deliver: Callable[[Incoming], None],
        subscriptions: list[str],
    ) -> None:
        self._settings = settings
        self._loop = loop
        self._deliver = deliver  # called on the loop thread
        self._subscriptions = subscriptions
        self._lock = threading.Lock()
        self._connection = 0  # bumped on every connect and disconnect, under _lock
        self._connected = threading.Event()
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._warn = RateLimitedLog(log, interval_s=60.0)
        self._stopping = False
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            client.tls_set(ca_certs=settings.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        # unacknowledged outgoing QoS 1 commands per connection; beyond it paho queues them
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        self._client = client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        # connect_async + loop_start: paho's thread connects, and reconnects with back-off, by itself
        self._client.connect_async(self._settings.host, self._settings.port, self._settings.keepalive_s)
        self._client.loop_start()

    def stop(self) -> None:
        # a clean DISCONNECT keeps the persistent session: queued and unacked frames wait for us
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()

    # --- acks and publishes (loop thread) ----------------------------------------------------

    def ack(self, message: Incoming) -> bool:
        """PUBACK `message` if its connection is still the current one; False if it was dropped."""
        with self._lock:
            if message.connection != self._connection:
                return False
            self._client.ack(message.mid, message.qos)
            return True

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        """QoS 1 publish; the future resolves on Mosquitto's PUBACK (paho resends after reconnects)."""
        future: asyncio.Future[None] = self._loop.create_future()
        info = self._client.publish(topic, payload, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN, mqtt.MQTT_ERR_QUEUE_SIZE):
            future.set_exception(RuntimeError(f"publish to {topic} refused: {mqtt.error_string(info.rc)}"))
            return future
        # registered before the loop can run the PUBACK callback it schedules (call_soon_threadsafe)
        self._pending[info.mid] = future
        return future

    # --- paho callbacks (paho's network thread) ----------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._warn.warning(
                "connect",
                "MQTT broker refused the gateway; retrying",
                reason=str(reason),
                host=self._settings.host,
                port=self._settings.port,
            )
            return
        with self._lock:
            self._connection += 1
        self._connected.set()
        log.info(
            "MQTT connected",
            host=self._settings.host,
            port=self._settings.port,
            session_present=bool(getattr(flags, "session_present", False)),
        )
        for topic in self._subscriptions:
            client.subscribe(topic, qos=1)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        with self._lock:
            self._connection += 1
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self._stopping:
            log.info("MQTT disconnected")
        elif was_connected:
            log.warning("MQTT disconnected; reconnecting with back-off", reason=str(reason))
        else:
            self._warn.warning(
                "connect",
                "MQTT broker unreachable; retrying",
                reason=str(reason),
                host=self._settings.host,
                port=self._settings.port,
            )

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("MQTT subscription refused (check the gateway's ACL)", reasons=refused)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            connection = self._connection
        incoming = Incoming(
            message.topic, bytes(message.payload), message.mid, message.qos, connection, time.monotonic()
        )
        self._loop.call_soon_threadsafe(self._deliver, incoming)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _reason: Any, _p: Any) -> None:
        self._loop.call_soon_threadsafe(self._resolve, mid)

    def _resolve(self, mid: int) -> None:
        future = self._pending.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)
