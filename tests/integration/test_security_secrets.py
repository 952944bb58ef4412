"""No secret in any log or output: the services and commands run with known secrets (InfluxDB token,
MQTT password, SASL/SCRAM password, webhook token; some given as files, some in the environment),
at DEBUG, and every log file and captured output is searched for each secret and its base64.

Covered: `config show`, the processor, the gateway and the alerting service (real processes, Kafka
over SASL_SSL), `incidents import`, `report monthly`; then every log file under the suite's temporary
directory, which also holds the other security tests' logs (their secrets are searched too).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest

from strainwatch.config import get_settings
from strainwatch.fleet.producer import produce, produce_roster
from strainwatch.fleet.simulator import FleetSimulator, SimConfig
from strainwatch.stack import mosquitto as mosquitto_stack
from strainwatch.stack.procs import free_port, stop
from strainwatch.stack.topics import ensure_topics
from strainwatch.topics import POSTURE_EVENTS, ROSTER
from tests.integration import test_security_kafka, test_security_mqtt
from tests.integration.conftest import Influx, ProcessorProc
from tests.integration.pipeline import stored_frames
from tests.integration.security_support import SecureKafka, make_pki, start_secure_kafka
from tests.support import aligned_start, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SECRETS = {
    "influx_token": f"influx-{uuid.uuid4().hex}",
    "mqtt_password": f"mqtt-{uuid.uuid4().hex}",
    "sasl_password": f"sasl-{uuid.uuid4().hex}",
    "webhook_token": f"hook-{uuid.uuid4().hex}",
}
LOG_SUFFIXES = {".log", ".out", ".err", ".txt", ".json", ".jsonl", ".csv", ".html"}


def _forms(secret: str) -> list[str]:
    raw = secret.encode()
    return [secret, base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")]


def leaks(text: str, secrets: dict[str, str]) -> list[str]:
    return [
        f"{name} ({form[:6]}…)" for name, secret in secrets.items() for form in _forms(secret) if form in text
    ]


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    state = tmp_path_factory.mktemp("secrets-kafka")
    handle = start_secure_kafka(state, make_pki(state / "pki"), {"strainwatch": SECRETS["sasl_password"]})
    yield handle
    stop(handle.proc)


def test_no_secret_reaches_any_log_or_output(
    secure_kafka: SecureKafka,
    influx: Influx,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = tmp_path / "secrets"
    files.mkdir()
    token_file = files / "influx.token"
    token_file.write_text(SECRETS["influx_token"] + "\n")
    sasl_file = files / "sasl.password"
    sasl_file.write_text(SECRETS["sasl_password"] + "\n")
    (files / "mqtt.password").write_text(SECRETS["mqtt_password"] + "\n")
    (files / "webhook.token").write_text(SECRETS["webhook_token"] + "\n")
    mosquitto_port = free_port()
    mosquitto = mosquitto_stack.start_mosquitto(tmp_path / "mqtt", mosquitto_port, SECRETS["mqtt_password"])
    database = influx.new_database()
    env = {
        **secure_kafka.client_env("strainwatch"),
        "STRAINWATCH_INFLUX_URL": influx.url,
        "STRAINWATCH_INFLUX_BUCKET": database,
        "STRAINWATCH_MQTT_PORT": str(mosquitto_port),
        "STRAINWATCH_MQTT_PASSWORD": SECRETS["mqtt_password"],
        "STRAINWATCH_GRAFANA_WEBHOOK_TOKEN": SECRETS["webhook_token"],
        "STRAINWATCH_LOG_FORMAT": "json",
        "STRAINWATCH_LOG_LEVEL": "DEBUG",
        "STRAINWATCH_OPS_BIND": "off",
        "STRAINWATCH_BROKER_SESSION_TIMEOUT_S": "6",
    }
    # every secret from a file for the services, from the environment for the commands
    env_files = {
        **env,
        "STRAINWATCH_INFLUX_TOKEN_FILE": str(token_file),
        "STRAINWATCH_KAFKA_SASL_PASSWORD_FILE": str(sasl_file),
        "STRAINWATCH_MQTT_PASSWORD_FILE": str(files / "mqtt.password"),
        "STRAINWATCH_GRAFANA_WEBHOOK_TOKEN_FILE": str(files / "webhook.token"),
    }
    for variable in (
        "STRAINWATCH_KAFKA_SASL_PASSWORD",
        "STRAINWATCH_MQTT_PASSWORD",
        "STRAINWATCH_GRAFANA_WEBHOOK_TOKEN",
    ):
        del env_files[variable]
    env_plain = {**env, "STRAINWATCH_INFLUX_TOKEN": SECRETS["influx_token"]}
    for name, value in env_plain.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    outputs: dict[str, str] = {}

    def command(
        name: str, *args: str, env_extra: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "strainwatch.cli", *args],
            env={**os.environ, **env_plain, **(env_extra or {})},
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        outputs[name] = result.stdout + result.stderr
        (tmp_path / f"{name}.out").write_text(outputs[name])
        return result

    services: list[ProcessorProc] = []
    try:
        shown = command("config-show", "config", "show")
        assert shown.returncode == 0, shown.stderr
        assert '"influx_token": "****"' in shown.stdout and '"kafka_sasl_password": "****"' in shown.stdout

        ensure_topics(secure_kafka.bootstrap, 4)
        start = aligned_start(hours_ago=1.0)
        # a report needs 5 monitored workers at least
        sim = FleetSimulator(SimConfig(workers=6, duration_s=20, start=start, shifts=False, seed=11))
        frames = list(sim.frames())
        produce(frames, secure_kafka.bootstrap, POSTURE_EVENTS.name)
        produce_roster(sim.roster(), secure_kafka.bootstrap, ROSTER.name)

        channels = tmp_path / "channels.yaml"
        channels.write_text(
            "sites:\n  plant-1:\n    quiet_hours: []\n    channels:\n"
            f'      - url: "json://127.0.0.1:{free_port()}/hook"\n        name: receiver\n'
        )
        specs = {
            "processor": (
                ("processor",),
                {
                    "STRAINWATCH_PROCESSOR_GROUP": f"proc-{uuid.uuid4().hex[:8]}",
                    "STRAINWATCH_CHECKPOINT_INTERVAL_S": "1.0",
                    "STRAINWATCH_STATE_DIR": str(tmp_path / "processor-state"),
                },
            ),
            "alerting": (
                ("alerts", "run"),
                {
                    "STRAINWATCH_CHANNELS_FILE": str(channels),
                    "STRAINWATCH_GRAFANA_WEBHOOK_BIND": f"127.0.0.1:{free_port()}",
                    "STRAINWATCH_STATE_DIR": str(tmp_path / "alerting-state"),
                },
            ),
            "gateway": (
                ("gateway", "run"),
                {"STRAINWATCH_MQTT_CLIENT_ID": f"gw-{uuid.uuid4().hex[:8]}"},
            ),
        }
        for name, (argv, extra) in specs.items():
            proc = ProcessorProc({**env_files, **extra}, tmp_path / f"{name}.log", command=argv)
            proc.start()
            services.append(proc)
        processor, alerting, gateway = services
        ql = influx.ql(database)
        wait_for(
            lambda: (
                (processor.running() or pytest.fail(processor.log())) and stored_frames(ql) >= len(frames)
            ),
            timeout_s=120,
            what="the processor storing the frames",
        )
        wait_for(
            lambda: (
                (alerting.running() or pytest.fail(alerting.log()))
                and "delivery running" in alerting.full_log()
            ),
            timeout_s=90,
            what="the alerting service running",
        )
        wait_for(
            lambda: (
                (gateway.running() or pytest.fail(gateway.log())) and "MQTT connected" in gateway.full_log()
            ),
            timeout_s=90,
            what="the gateway connected to Kafka and MQTT",
        )

        imported = command(
            "incidents-import", "incidents", "import", str(REPO / "examples" / "incidents-sample.csv")
        )
        assert imported.returncode == 0, imported.stderr[-2000:]
        month = start.astimezone(UTC).strftime("%Y-%m")
        report = command(
            "report",
            "report",
            "monthly",
            "--month",
            month,
            "--format",
            "csv",
            "--out",
            str(tmp_path / "report"),
        )
        assert report.returncode == 0, report.stderr[-2000:]

        for proc in services:
            assert proc.terminate() == 0, proc.log()
        assert '"level": "debug"' in processor.full_log()  # the most verbose level was searched
        assert '"token": true' in alerting.full_log()  # the webhook token was read from its file
    finally:
        for proc in services:
            proc.stop()
        stop(mosquitto)
    get_settings.cache_clear()

    # every secret the security tests used, in every log and output of the suite
    secrets = dict(SECRETS)
    secrets["kafka_test_password"] = test_security_kafka.PASSWORD
    secrets["mqtt_test_password"] = test_security_mqtt.GATEWAY_PASSWORD
    found: list[str] = []
    for name, text in outputs.items():
        found += [f"output of {name}: {leak}" for leak in leaks(text, secrets)]
    searched = 0
    for path in sorted(tmp_path_factory.getbasetemp().rglob("*")):
        if not path.is_file() or path.suffix not in LOG_SUFFIXES or path.parent == files:
            continue
        searched += 1
        text = path.read_text(errors="replace")
        found += [f"{path}: {leak}" for leak in leaks(text, secrets)]
    assert searched >= 8, searched  # the services' logs, the outputs, Kafka's and Mosquitto's
    assert not found, "\n".join(found)
    assert all(len(outputs[name]) > 0 for name in ("config-show", "incidents-import", "report"))
