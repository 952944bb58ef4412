"""kafka_clients.py: the one place Kafka clients get TLS and SASL settings; secrets from files;
`config show` reveals no part of a secret; the local stack's InfluxDB token only on loopback."""

from __future__ import annotations

import inspect
import re
import ssl
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from pydantic import ValidationError

from strainwatch import kafka_clients
from strainwatch.config import ConfigError, Settings, is_local_url

pytestmark = pytest.mark.unit

SERVICES = Path(__file__).resolve().parents[2] / "services" / "strainwatch"
SASL_PW = "Pw4&Yh6*Nb"
CA = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")


def _sasl_ssl(**extra: object) -> Settings:
    return Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="strainwatch-processor",
        kafka_sasl_password=SASL_PW,
        kafka_ssl_cafile=CA,
        **extra,  # type: ignore[arg-type]
    )


def test_plaintext_is_the_default_and_adds_nothing_else() -> None:
    s = Settings()
    assert kafka_clients.aiokafka_security(s) == {"security_protocol": "PLAINTEXT"}
    assert kafka_clients.kafka_python_security(s) == {"security_protocol": "PLAINTEXT"}
    assert kafka_clients.faust_credentials(s) is None


def test_sasl_ssl_for_aiokafka() -> None:
    kwargs = kafka_clients.aiokafka_security(_sasl_ssl())
    context = kwargs.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "strainwatch-processor",
        "sasl_plain_password": SASL_PW,
    }
    # every key is an argument of each aiokafka client
    for cls in (AIOKafkaProducer, AIOKafkaConsumer, AIOKafkaAdminClient):
        params = inspect.signature(cls.__init__).parameters
        assert set(kwargs) | {"ssl_context"} <= set(params), cls


def test_sasl_ssl_for_kafka_python() -> None:
    kwargs = kafka_clients.kafka_python_security(_sasl_ssl(kafka_sasl_mechanism="SCRAM-SHA-256"))
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "ssl_check_hostname": True,
        "ssl_cafile": str(CA),
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "strainwatch-processor",
        "sasl_plain_password": SASL_PW,
    }
    for cls in (KafkaProducer, KafkaConsumer, KafkaAdminClient):
        assert set(kwargs) <= set(cls.DEFAULT_CONFIG), cls


def test_ssl_only_and_sasl_plaintext() -> None:
    ssl_only = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=CA)
    assert set(kafka_clients.aiokafka_security(ssl_only)) == {"security_protocol", "ssl_context"}
    assert kafka_clients.kafka_python_security(ssl_only)["ssl_cafile"] == str(CA)
    sasl_plain = Settings(
        kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u", kafka_sasl_password="p"
    )
    kwargs = kafka_clients.aiokafka_security(sasl_plain)
    assert "ssl_context" not in kwargs and kwargs["sasl_mechanism"] == "SCRAM-SHA-512"


def test_faust_credentials_reach_its_aiokafka_clients() -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    auth = credentials_to_aiokafka_auth(kafka_clients.faust_credentials(_sasl_ssl()))
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == "strainwatch-processor"
    assert auth["sasl_plain_password"] == SASL_PW
    assert isinstance(auth["ssl_context"], ssl.SSLContext)
    ssl_only = credentials_to_aiokafka_auth(
        kafka_clients.faust_credentials(Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=CA))
    )
    assert ssl_only["security_protocol"] == "SSL"


def test_describe_never_shows_the_password() -> None:
    described = kafka_clients.describe(_sasl_ssl())
    assert SASL_PW not in repr(described)
    assert described["sasl_username"] == "strainwatch-processor"


def test_sasl_without_credentials_is_refused() -> None:
    with pytest.raises(ValidationError, match="KAFKA_SASL_USERNAME"):
        Settings(kafka_security_protocol="SASL_SSL")


def test_secrets_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("influx", "tok-from-file"), ("mqtt", "mqtt-from-file"), ("sasl", "sasl-from-file")):
        (tmp_path / name).write_text(value + "\n")
    monkeypatch.setenv("STRAINWATCH_INFLUX_TOKEN_FILE", str(tmp_path / "influx"))
    monkeypatch.setenv("STRAINWATCH_MQTT_PASSWORD_FILE", str(tmp_path / "mqtt"))
    monkeypatch.setenv("STRAINWATCH_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "sasl"))
    s = Settings()
    assert s.influx_token.get_secret_value() == "tok-from-file"
    assert s.mqtt_password.get_secret_value() == "mqtt-from-file"
    assert s.kafka_sasl_password.get_secret_value() == "sasl-from-file"
    monkeypatch.setenv("STRAINWATCH_INFLUX_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match=r"influx_token_file .*missing"):
        Settings()
    (tmp_path / "empty").write_text("\n")
    monkeypatch.setenv("STRAINWATCH_INFLUX_TOKEN_FILE", str(tmp_path / "empty"))
    with pytest.raises(ValidationError, match="is empty"):
        Settings()


def test_masked_shows_no_part_of_any_secret() -> None:
    s = _sasl_ssl(influx_token="Zq8#Wv3@Kp", mqtt_password="Xj5!Rt7%Lm")
    masked = s.masked()
    text = repr(masked)
    for secret in ("Zq8#Wv3@Kp", "Xj5!Rt7%Lm", SASL_PW):
        for n in (3, 4):  # neither end of any secret (today's "****42" showed the last two)
            assert secret[-n:] not in text and secret[:n] not in text
    assert masked["influx_token"] == masked["mqtt_password"] == masked["kafka_sasl_password"] == "****"
    assert Settings(kafka_sasl_password="").masked()["kafka_sasl_password"] == ""


def test_local_token_only_for_a_loopback_url() -> None:
    assert is_local_url("http://127.0.0.1:18086") and is_local_url("http://localhost:8086")
    assert is_local_url("https://[::1]:8086") and not is_local_url("https://influx.plant.example:8086")
    assert Settings().influx_token.get_secret_value() == "strainwatch-local-token"
    remote = Settings(influx_url="https://influx.plant.example:8086")
    with pytest.raises(ConfigError, match=r"STRAINWATCH_INFLUX_TOKEN .*influx\.plant\.example"):
        remote.influx_token.get_secret_value()
    assert remote.masked()["influx_token"].startswith("(missing")
    given = Settings(influx_url="https://influx.plant.example:8086", influx_token="site-token")
    assert given.influx_token.get_secret_value() == "site-token"


def test_remote_influx_without_token_exits_2_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    env = {"STRAINWATCH_INFLUX_URL": "https://influx.plant.example:8086", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "strainwatch.cli", "report", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0  # help needs no token
    bad = subprocess.run(
        [sys.executable, "-m", "strainwatch.cli", "config", "show"],
        env={**env, "STRAINWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "error: configuration:" in bad.stderr and "KAFKA_SASL_USERNAME" in bad.stderr
    assert "Traceback" not in bad.stderr


# every Kafka client constructed in services/ takes its security from kafka_clients
_CONSTRUCTORS = re.compile(
    r"\b(AIOKafkaProducer|AIOKafkaConsumer|AIOKafkaAdminClient|KafkaProducer|KafkaConsumer|KafkaAdminClient"
    r"|KafkaProbe)\("
)


def test_every_kafka_client_construction_uses_kafka_clients() -> None:
    sites = []
    for path in sorted(SERVICES.rglob("*.py")):
        text = path.read_text()
        for match in _CONSTRUCTORS.finditer(text):
            # the call's argument list up to its closing parenthesis
            depth, end = 0, match.end() - 1
            for end in range(match.end() - 1, len(text)):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            call = text[match.start() : end + 1]
            sites.append(path.name)
            if match.group(1) == "KafkaProbe":  # ops/kafka.py: takes aiokafka's arguments as a mapping
                assert "aiokafka_security(" in call, f"{path.relative_to(SERVICES)}: {call[:200]}"
                continue
            expected = "aiokafka_security(" if match.group(1).startswith("AIO") else "kafka_python_security("
            assert f"**{expected}" in call, f"{path.relative_to(SERVICES)}: {call[:200]}"
    assert len(sites) >= 15
    app = (SERVICES / "processor" / "app.py").read_text()
    assert '"broker_credentials": faust_credentials(' in app


def test_secrets_outside_settings_also_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from strainwatch.config import secret_from_env

    monkeypatch.setenv("STRAINWATCH_GRAFANA_WEBHOOK_TOKEN", "from-env")
    assert secret_from_env("STRAINWATCH_GRAFANA_WEBHOOK_TOKEN") == "from-env"
    (tmp_path / "hook").write_text("from-file\n")
    monkeypatch.setenv("STRAINWATCH_GRAFANA_WEBHOOK_TOKEN_FILE", str(tmp_path / "hook"))
    assert secret_from_env("STRAINWATCH_GRAFANA_WEBHOOK_TOKEN") == "from-file"
    monkeypatch.setenv("STRAINWATCH_GRAFANA_WEBHOOK_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"STRAINWATCH_GRAFANA_WEBHOOK_TOKEN_FILE .*missing"):
        secret_from_env("STRAINWATCH_GRAFANA_WEBHOOK_TOKEN")
    monkeypatch.delenv("STRAINWATCH_GRAFANA_WEBHOOK_TOKEN_FILE")
    monkeypatch.delenv("STRAINWATCH_GRAFANA_WEBHOOK_TOKEN")
    assert secret_from_env("STRAINWATCH_GRAFANA_WEBHOOK_TOKEN") == ""


def test_local_mqtt_password_only_for_a_loopback_host() -> None:
    assert Settings().mqtt_password.get_secret_value() == "strainwatch-local-mqtt"
    remote = Settings(mqtt_host="mqtt.plant.example")
    with pytest.raises(ConfigError, match=r"STRAINWATCH_MQTT_PASSWORD .*mqtt\.plant\.example"):
        remote.mqtt_password.get_secret_value()
    given = Settings(mqtt_host="mqtt.plant.example", mqtt_password="site-password")
    assert given.mqtt_password.get_secret_value() == "site-password"
