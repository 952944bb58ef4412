"""MQTT over TLS: the gateway (`strainwatch gateway run`) and the simulated devices (`strainwatch simulate
--mqtt`) against a real Mosquitto 2 whose only listener is TLS, with a certificate this test
makes; a client trusting another CA is refused at the handshake."""

from __future__ import annotations

import json
import os
import pwd
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from kafka import KafkaConsumer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion

from strainwatch.fleet.producer import produce_roster
from strainwatch.fleet.simulator import FleetSimulator, SimConfig
from strainwatch.stack import mosquitto as mosquitto_stack
from strainwatch.stack.procs import Proc, free_port, spawn, stop, tcp_open, wait_until
from strainwatch.topics import POSTURE_EVENTS, ROSTER
from tests.integration.conftest import Broker, ProcessorProc, start_broker
from tests.integration.security_support import Pki, make_pki
from tests.support import aligned_start, wait_for

pytestmark = pytest.mark.integration

GATEWAY_PASSWORD = f"mqtt-{uuid.uuid4().hex}"


@dataclass
class TlsMosquitto:
    state_dir: Path
    port: int
    pki: Pki
    proc: Proc


def start_tls_mosquitto(state_dir: Path, pki: Pki) -> TlsMosquitto:
    """The stack's Mosquitto config (accounts, ACL) with its one listener serving TLS only."""
    binary = mosquitto_stack.ensure_mosquitto()
    paths = mosquitto_stack.MosquittoPaths.of(state_dir)
    paths.data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = mosquitto_stack.render_config(paths, port, pwd.getpwuid(os.getuid()).pw_name)
    listener = f"listener {port} 127.0.0.1\n"
    assert listener in config
    config = config.replace(
        listener, f"{listener}certfile {pki.cert}\nkeyfile {pki.key}\ntls_version tlsv1.2\n"
    )
    paths.config.write_text(config)
    paths.acl.write_text(mosquitto_stack.render_acl())
    mosquitto_stack.set_accounts(paths, {mosquitto_stack.GATEWAY_USERNAME: GATEWAY_PASSWORD})
    proc = spawn("mosquitto", [binary, "-c", str(paths.config)], port=port, log_path=paths.log)
    paths.proc_file.write_text(json.dumps(proc.__dict__))
    wait_until(lambda: tcp_open(port), timeout_s=20, what="mosquitto (TLS)", proc=proc)
    return TlsMosquitto(state_dir, port, pki, proc)


@pytest.fixture
def tls_mosquitto(tmp_path: Path) -> Iterator[TlsMosquitto]:
    handle = start_tls_mosquitto(tmp_path / "mosquitto", make_pki(tmp_path / "pki"))
    yield handle
    stop(handle.proc)


@pytest.fixture
def tansu(tmp_path: Path) -> Iterator[Broker]:
    handle = start_broker("tansu", tmp_path / "broker")
    yield handle
    stop(handle.proc)


def _records(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        seen = 0
        while True:
            batch = consumer.poll(timeout_ms=1000)
            if not batch:
                return seen
            seen += sum(len(records) for records in batch.values())
    finally:
        consumer.close()


def test_gateway_and_devices_over_tls(tls_mosquitto: TlsMosquitto, tansu: Broker, tmp_path: Path) -> None:
    workers = 2
    roster = FleetSimulator(
        SimConfig(workers=workers, duration_s=1, start=aligned_start(hours_ago=1.0), site_id="plant-1")
    ).roster()
    assert produce_roster(roster, tansu.bootstrap, ROSTER.name) == workers
    tls_env = {
        "STRAINWATCH_MQTT_HOST": "127.0.0.1",
        "STRAINWATCH_MQTT_PORT": str(tls_mosquitto.port),
        "STRAINWATCH_MQTT_TLS": "true",
        "STRAINWATCH_MQTT_CA_FILE": str(tls_mosquitto.pki.ca),
        "STRAINWATCH_KAFKA_BOOTSTRAP": tansu.bootstrap,
        "STRAINWATCH_KAFKA_IDEMPOTENCE": "false",  # Tansu has no producer ids
        "STRAINWATCH_LOG_FORMAT": "json",
        "STRAINWATCH_OPS_BIND": "off",
    }
    gateway = ProcessorProc(
        {
            **tls_env,
            "STRAINWATCH_MQTT_PASSWORD": GATEWAY_PASSWORD,
            "STRAINWATCH_MQTT_CLIENT_ID": f"gw-{uuid.uuid4().hex[:8]}",
        },
        tmp_path / "gateway.log",
        command=("gateway", "run"),
    )
    gateway.start()
    try:
        wait_for(
            lambda: "MQTT connected" in gateway.full_log() or not gateway.running(),
            timeout_s=60,
            what="the gateway connecting to Mosquitto over TLS",
        )
        assert gateway.running(), gateway.log()
        # the simulated devices, each logged in as itself, over TLS
        fleet = subprocess.run(
            [
                sys.executable,
                "-m",
                "strainwatch.cli",
                "simulate",
                "--workers",
                str(workers),
                "--duration",
                "4",
                "--no-shifts",  # the devices send whatever the hour
                "--mqtt",
                "--state-dir",
                str(tls_mosquitto.state_dir),
            ],
            env={**os.environ, **tls_env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert fleet.returncode == 0, fleet.stderr[-3000:]
        stats = json.loads(fleet.stdout.strip().splitlines()[-1])["live"]
        assert stats["connected"] == workers
        acknowledged = stats["frames_acknowledged"]
        assert acknowledged >= workers * 3
        wait_for(
            lambda: _records(tansu.bootstrap, POSTURE_EVENTS.name) >= acknowledged,
            timeout_s=60,
            what=f"{acknowledged} frames forwarded over TLS",
        )
        assert gateway.terminate() == 0, gateway.log()
    finally:
        gateway.stop()


def test_a_client_trusting_another_ca_is_refused(tls_mosquitto: TlsMosquitto, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other", cn="some-other-ca")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:6]}")
    client.username_pw_set(mosquitto_stack.GATEWAY_USERNAME, GATEWAY_PASSWORD)
    client.tls_set(ca_certs=str(other.ca), cert_reqs=ssl.CERT_REQUIRED)
    with pytest.raises(ssl.SSLCertVerificationError):
        client.connect("127.0.0.1", tls_mosquitto.port)
    # the right CA: accepted (certificate and hostname 127.0.0.1 verified)
    good = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:6]}")
    good.username_pw_set(mosquitto_stack.GATEWAY_USERNAME, GATEWAY_PASSWORD)
    good.tls_set(ca_certs=str(tls_mosquitto.pki.ca), cert_reqs=ssl.CERT_REQUIRED)
    assert good.connect("127.0.0.1", tls_mosquitto.port) == mqtt.MQTT_ERR_SUCCESS
    good.disconnect()
