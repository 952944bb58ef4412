"""Real components for integration tests: InfluxDB 1.6.7 (+ route adapter), Tansu, Apache Kafka 4.4.

Nothing here skips: a component that cannot start fails the test with the reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from strainwatch.stack import components
from strainwatch.stack import mosquitto as mosquitto_stack
from strainwatch.stack.manager import create_database
from strainwatch.stack.procs import Proc, alive, free_port, stop
from strainwatch.stack.topics import ensure_topics
from strainwatch.storage.influxql import InfluxQL
from tests.support import wait_for

pytestmark = pytest.mark.integration


@dataclass
class Influx:
    url: str
    influxd_port: int
    state_dir: Path
    procs: dict[str, Proc] = field(default_factory=dict)

    def new_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:10]}"
        create_database(self.url, name)
        return name

    def ql(self, database: str) -> InfluxQL:
        return InfluxQL(self.url, "test-token", database)

    def stop_influxd(self) -> None:
        stop(self.procs["influxd"])

    def start_influxd(self) -> None:
        self.procs["influxd"] = components.start_influxd(
            self.state_dir, self.influxd_port, self.influxd_port + 1
        )


@dataclass
class Broker:
    kind: str
    bootstrap: str
    proc: Proc
    partitions: int


@pytest.fixture(scope="session")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influx]:
    state = tmp_path_factory.mktemp("influx")
    influxd_port = _port_pair()
    adapter_port = free_port()
    procs = {"influxd": components.start_influxd(state, influxd_port, influxd_port + 1)}
    procs["adapter"] = components.start_adapter(state, adapter_port, influxd_port)
    handle = Influx(f"http://127.0.0.1:{adapter_port}", influxd_port, state, procs)
    yield handle
    for proc in handle.procs.values():
        stop(proc)


def _port_pair() -> int:
    """A free port whose successor is free too (influxd's HTTP and RPC ports)."""
    from strainwatch.stack.procs import port_free

    for _ in range(50):
        port = free_port()
        if port < 65535 and port_free(port + 1):
            return port
    raise RuntimeError("no pair of free ports")


def start_broker(kind: str, state: Path, partitions: int = 4) -> Broker:
    port = free_port()
    if kind == "kafka":
        proc = components.start_kafka(state, port, free_port())
    else:
        proc = components.start_tansu(state, port)
    bootstrap = f"127.0.0.1:{port}"
    ensure_topics(bootstrap, partitions)
    return Broker(kind, bootstrap, proc, partitions)


@pytest.fixture(params=["tansu", "kafka"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    """A fresh broker per test, so one test's frames never reach another's processor."""
    handle = start_broker(request.param, tmp_path / "broker")
    yield handle
    stop(handle.proc)


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[Broker]:
    """Apache Kafka only: the fault tests need a broker that keeps data across restarts."""
    handle = start_broker("kafka", tmp_path / "broker")
    yield handle
    stop(handle.proc)


@dataclass
class Mosquitto:
    """A real Mosquitto 2 (the stack's config, ACL and password file) on a free port."""

    port: int
    state_dir: Path
    gateway_password: str
    proc: Proc

    host: str = "127.0.0.1"

    def provision(self, devices: dict[str, str]) -> None:
        mosquitto_stack.provision_devices(self.state_dir, devices)

    def stop(self) -> None:
        """SIGTERM: Mosquitto writes its persistence file (queued QoS 1 messages) on the way out."""
        stop(self.proc)

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        wait_for(lambda: not alive(self.proc), timeout_s=10, what="mosquitto to die")

    def start(self) -> None:
        self.proc = mosquitto_stack.start_mosquitto(self.state_dir, self.port, self.gateway_password)

    def restart(self) -> None:
        self.stop()
        self.start()

    def gateway_env(self, client_id: str) -> dict[str, str]:
        return {
            "STRAINWATCH_MQTT_HOST": self.host,
            "STRAINWATCH_MQTT_PORT": str(self.port),
            "STRAINWATCH_MQTT_PASSWORD": self.gateway_password,
            "STRAINWATCH_MQTT_CLIENT_ID": client_id,
        }


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One Mosquitto for the session; tests use their own device ids and gateway client ids."""
    state = tmp_path_factory.mktemp("mosquitto")
    password = uuid.uuid4().hex
    port = free_port()
    handle = Mosquitto(port, state, password, mosquitto_stack.start_mosquitto(state, port, password))
    yield handle
    handle.stop()


class ProcessorProc:
    """`strainwatch processor` (or another service command) as a real subprocess, so tests can
    SIGTERM or kill -9 it."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        command: tuple[str, ...] = ("processor",),
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.name = " ".join(command)
        self.argv = [sys.executable, "-m", "strainwatch.cli", *command]
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the subprocess owns it
        self.popen = subprocess.Popen(
            self.argv,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill9(self) -> None:
        assert self.popen is not None
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM; returns the exit code. Fails if it takes longer than timeout_s."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            raise AssertionError(f"{self.name} ignored SIGTERM for {timeout_s} s: {self.log()}") from None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.full_log()[-4000:]

    def full_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.running():
            assert self.popen is not None
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


def processor_env(broker: Broker, influx: Influx, database: str, state: Path, **extra: str) -> dict[str, str]:
    env = {
        "STRAINWATCH_KAFKA_BOOTSTRAP": broker.bootstrap,
        "STRAINWATCH_INFLUX_URL": influx.url,
        "STRAINWATCH_INFLUX_BUCKET": database,
        "STRAINWATCH_POSTURE_PARTITIONS": str(broker.partitions),
        "STRAINWATCH_PROCESSOR_GROUP": f"proc-{uuid.uuid4().hex[:8]}",
        "STRAINWATCH_CHECKPOINT_INTERVAL_S": "1.0",
        "STRAINWATCH_BROKER_SESSION_TIMEOUT_S": "6",
        "STRAINWATCH_STATE_DIR": str(state),
        "STRAINWATCH_LOG_FORMAT": "json",
    }
    env.update(extra)
    return env


@pytest.fixture
def run_processor(tmp_path: Path) -> Iterator[object]:
    started: list[ProcessorProc] = []

    def factory(env: dict[str, str]) -> ProcessorProc:
        proc = ProcessorProc(env, tmp_path / f"processor-{len(started)}.log")
        proc.start()
        started.append(proc)
        return proc

    yield factory
    for proc in started:
        proc.stop()


__all__ = ["Broker", "Influx", "Mosquitto", "ProcessorProc", "processor_env", "wait_for"]
