"""Kafka over TLS with SASL/SCRAM-SHA-512 for every client strainwatch creates, against Apache Kafka 4.4
configured that way with certificates this test makes (security_support.py).

Connected over SASL_SSL: topic creation (stack/topics, kafka-python admin), the fleet producer
(kafka-python), the processor as a real process (faust's consumers/producers plus its aiokafka range
and offset readers) storing every frame, the alerting service as a real process (its aiokafka
producer, group consumer, roster reader and admin) and the gateway's producer. A wrong password and
an untrusted certificate fail, quickly and saying why, instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from strainwatch.alerts.delivery import topic_partitions
from strainwatch.alerts.service import ensure_state_topic
from strainwatch.alerts.state_topic import read_to_end
from strainwatch.config import get_settings
from strainwatch.fleet.producer import produce, produce_roster
from strainwatch.fleet.simulator import FleetSimulator, SimConfig
from strainwatch.gateway.mqtt_link import MqttSettings
from strainwatch.gateway.service import Gateway
from strainwatch.kafka_clients import aiokafka_security, kafka_python_security
from strainwatch.stack.procs import free_port, stop
from strainwatch.stack.topics import ensure_topics
from strainwatch.topics import ALERTS_STATE, POSTURE_EVENTS, ROSTER
from tests.integration.conftest import Influx, ProcessorProc
from tests.integration.pipeline import stored_frames
from tests.integration.security_support import SecureKafka, make_pki, start_secure_kafka
from tests.support import aligned_start, wait_for

pytestmark = pytest.mark.integration

PASSWORD = f"scram-{uuid.uuid4().hex}"  # the suite's logs are searched for it (test_security_secrets)


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    state = tmp_path_factory.mktemp("secure-kafka")
    handle = start_secure_kafka(state, make_pki(state / "pki"), {"strainwatch": PASSWORD})
    yield handle
    stop(handle.proc)


@pytest.fixture
def client_env(secure_kafka: SecureKafka, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """This process's settings: SASL_SSL as user `strainwatch`."""
    env = secure_kafka.client_env("strainwatch")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


def _service(tmp_path: Path, name: str, env: dict[str, str], command: tuple[str, ...]) -> ProcessorProc:
    proc = ProcessorProc(env, tmp_path / f"{name}.log", command=command)
    proc.start()
    return proc


def test_every_client_connects_with_tls_and_scram(
    secure_kafka: SecureKafka,
    client_env: dict[str, str],
    influx: Influx,
    tmp_path: Path,
) -> None:
    bootstrap = secure_kafka.bootstrap
    assert get_settings().kafka_security_protocol == "SASL_SSL"
    # topics: kafka-python's admin client
    created = ensure_topics(bootstrap, 4)
    assert created[POSTURE_EVENTS.name] == 4

    # the fleet producer (kafka-python): frames and the roster
    sim = FleetSimulator(
        SimConfig(workers=3, duration_s=40, start=aligned_start(hours_ago=1.0), shifts=False, seed=7)
    )
    frames = list(sim.frames())
    stats = produce(frames, bootstrap, POSTURE_EVENTS.name)
    assert stats.frames_produced == len(frames) and stats.invalid_frames == 0
    roster = sim.roster()
    assert produce_roster(roster, bootstrap, ROSTER.name) == len(roster)

    database = influx.new_database()
    common = {
        **client_env,
        "STRAINWATCH_INFLUX_URL": influx.url,
        "STRAINWATCH_INFLUX_BUCKET": database,
        "STRAINWATCH_LOG_FORMAT": "json",
        "STRAINWATCH_OPS_BIND": "off",
        "STRAINWATCH_BROKER_SESSION_TIMEOUT_S": "6",
    }
    # the processor, a real process: faust's clients and the range/offset readers
    processor = _service(
        tmp_path,
        "processor",
        {
            **common,
            "STRAINWATCH_PROCESSOR_GROUP": f"proc-{uuid.uuid4().hex[:8]}",
            "STRAINWATCH_CHECKPOINT_INTERVAL_S": "1.0",
            "STRAINWATCH_STATE_DIR": str(tmp_path / "processor-state"),
        },
        ("processor",),
    )
    # the alerting service, a real process: producer, group consumer, roster reader, admin
    channels = tmp_path / "channels.yaml"
    channels.write_text(
        f'sites:\n  plant-1:\n    quiet_hours: []\n    channels:\n      - url: "json://127.0.0.1:{free_port()}/hook"\n'
        "        name: receiver\n"
    )
    alerting = _service(
        tmp_path,
        "alerting",
        {
            **common,
            "STRAINWATCH_CHANNELS_FILE": str(channels),
            "STRAINWATCH_GRAFANA_WEBHOOK_BIND": "off",
            "STRAINWATCH_STATE_DIR": str(tmp_path / "alerting-state"),
        },
        ("alerts", "run", "--grafana-webhook-bind", "off"),
    )
    try:
        ql = influx.ql(database)
        wait_for(
            lambda: (
                (processor.running() or pytest.fail(processor.log())) and stored_frames(ql) >= len(frames)
            ),
            timeout_s=120,
            what=f"the processor storing {len(frames)} frames read over SASL_SSL",
        )
        assert stored_frames(ql) == len(frames)
        wait_for(
            lambda: (
                (alerting.running() or pytest.fail(alerting.log()))
                and "delivery running" in alerting.full_log()
            ),
            timeout_s=90,
            what="the alerting service consuming over SASL_SSL",
        )
        assert processor.terminate() == 0, processor.log()
        assert alerting.terminate() == 0, alerting.log()
    finally:
        processor.stop()
        alerting.stop()
    for proc in (processor, alerting):
        assert "SaslAuthenticationFailed" not in proc.full_log()

    # the alerting service's other clients, and the gateway's producer, in this process
    ensure_state_topic(bootstrap)  # kafka-python admin

    async def async_clients() -> None:
        assert await topic_partitions(bootstrap, ROSTER.name) == [0, 1, 2, 3]  # aiokafka admin
        entries = [value async for _, value in read_to_end(bootstrap, ROSTER.name, {0, 1, 2, 3})]
        assert len(entries) == len(roster)  # aiokafka consumer
        gateway = Gateway(bootstrap, MqttSettings("127.0.0.1", 1, "gw", "unused", "gw-test"))
        producer = await gateway._start_producer()
        try:
            await producer.send_and_wait(ALERTS_STATE.name, b"probe", key=b"gateway-probe")
        finally:
            await producer.stop()

    asyncio.run(async_clients())


def test_wrong_password_and_untrusted_certificate_fail_quickly_and_clearly(
    secure_kafka: SecureKafka,
    client_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    influx: Influx,
) -> None:
    bootstrap = secure_kafka.bootstrap
    monkeypatch.setenv("STRAINWATCH_KAFKA_SASL_PASSWORD", "not-the-password")
    get_settings.cache_clear()

    async def aiokafka_start(kwargs: dict[str, Any]) -> float:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **kwargs)
        started = time.monotonic()
        try:
            with pytest.raises(KafkaConnectionError):
                await producer.start()
        finally:
            await producer.stop()
        return time.monotonic() - started

    # aiokafka: refused at once, and its log says why
    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        elapsed = asyncio.run(aiokafka_start(aiokafka_security()))
    assert elapsed < 15, elapsed
    assert "SaslAuthenticationFailed" in caplog.text and "invalid credentials" in caplog.text

    # kafka-python: a bounded wait (its bootstrap timeout), then an error
    started = time.monotonic()
    with pytest.raises(KafkaError):
        KafkaAdminClient(bootstrap_servers=bootstrap, **kafka_python_security(), request_timeout_ms=10_000)
    assert time.monotonic() - started < 45

    # the processor, a real process, logs the authentication failure
    processor = _service(
        tmp_path,
        "processor-wrong-password",
        {
            **client_env,
            "STRAINWATCH_KAFKA_SASL_PASSWORD": "not-the-password",
            "STRAINWATCH_INFLUX_URL": influx.url,
            "STRAINWATCH_INFLUX_BUCKET": influx.new_database(),
            "STRAINWATCH_LOG_FORMAT": "json",
            "STRAINWATCH_OPS_BIND": "off",
            "STRAINWATCH_STATE_DIR": str(tmp_path / "state"),
        },
        ("processor",),
    )
    try:
        wait_for(
            lambda: "SaslAuthenticationFailed" in processor.full_log() or not processor.running(),
            timeout_s=60,
            what="the processor reporting the authentication failure",
        )
        assert "SaslAuthenticationFailed" in processor.full_log(), processor.log()
    finally:
        processor.stop()

    # a certificate signed by a CA the client does not trust: refused at the TLS handshake
    monkeypatch.setenv("STRAINWATCH_KAFKA_SASL_PASSWORD", PASSWORD)
    other = make_pki(tmp_path / "other-ca", cn="some-other-ca")
    monkeypatch.setenv("STRAINWATCH_KAFKA_SSL_CAFILE", str(other.ca))
    get_settings.cache_clear()
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        elapsed = asyncio.run(aiokafka_start(aiokafka_security()))
    assert elapsed < 15, elapsed
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text, caplog.text

    # and a client without TLS/SASL cannot talk to the SASL_SSL listener at all
    assert os.environ["STRAINWATCH_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    elapsed = asyncio.run(aiokafka_start({"security_protocol": "PLAINTEXT"}))
    assert elapsed < 15, elapsed
