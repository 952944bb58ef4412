"""The one place configuration comes from: environment variables prefixed `STRAINWATCH_`."""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_INFLUX_TOKEN = "strainwatch-local-token"
LOCAL_MQTT_PASSWORD = "strainwatch-local-mqtt"


class MissingSecret(SecretStr):
    """A secret that was not configured: reading it raises ConfigError with what to set."""

    def __init__(self, variable: str, url: str, what: str = "token") -> None:
        super().__init__("")
        self.variable = variable
        self.url = url
        self.what = what

    def get_secret_value(self) -> str:
        raise ConfigError(
            f"{self.variable} (or {self.variable}_FILE) is required for {self.url}: the built-in "
            f"{self.what} belongs to the local stack and is only sent to a loopback address"
        )


class ConfigError(ValueError):
    """The configuration cannot work; the message says which setting to change."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STRAINWATCH_", extra="ignore")

    # Kafka
    kafka_bootstrap: str = Field("127.0.0.1:19092", description="host:port[,host:port] of the brokers")
    # InfluxDB: writes use /api/v2/write, reads InfluxQL on /query (docs/architecture.md, Storage)
    influx_url: str = "http://127.0.0.1:18086"
    # the local stack's token: refused with any non-loopback URL (security block below)
    influx_token: SecretStr = SecretStr(LOCAL_INFLUX_TOKEN)
    influx_org: str = "strainwatch"
    influx_bucket: str = Field("strainwatch", description="bucket, readable as an InfluxQL database")
    influx_windows_bucket: str = Field(
        "",
        description="bucket of the 10-second windows (short retention); empty: '<influx_bucket>/windows', "
        "the InfluxDB 1.x database/retention-policy form (2.x: a bucket mapped to rp 'windows')",
    )
    windows_retention_days: int = Field(
        35, ge=1, description="how long the 10-second exposure windows are kept (the stack sets it)"
    )
    retention_days: int = Field(
        1825, ge=0, description="how long rollups, alerts, prompts and incidents are kept; 0 = forever"
    )

    # Local stack (demo and tests only)
    state_dir: Path = Path(".strainwatch")
    broker: Literal["tansu", "kafka"] = "tansu"
    kafka_port: int = Field(19092, ge=1, le=65535)
    kafka_controller_port: int = Field(19093, ge=1, le=65535)
    influxd_port: int = Field(18087, ge=1, le=65535, description="influxd itself, behind the route adapter")
    influx_port: int = Field(18086, ge=1, le=65535, description="the route adapter clients talk to")
    posture_partitions: int = Field(4, ge=1, le=1024)
    raw_retention_days: float = Field(7, gt=0)

    kafka_idempotence: bool = Field(
        True,
        description="idempotent Kafka producers (no duplicates on retry); Tansu has no producer ids, so "
        "the local stack on Tansu turns it off (consumers dedupe by event/alert id anyway)",
    )
    # MQTT: the device gateway's broker (the local stack runs Mosquitto on 127.0.0.1:mqtt_port)
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(11883, ge=1, le=65535)
    mqtt_username: str = Field("strainwatch-gateway", description="the gateway's MQTT account")
    mqtt_password: SecretStr = SecretStr(LOCAL_MQTT_PASSWORD)  # loopback only, like the token
    mqtt_tls: bool = Field(False, description="TLS to the MQTT broker (system CA store)")
    mqtt_client_id: str = Field(
        "strainwatch-gateway", description="fixed: the gateway's persistent session (queued frames)"
    )

    # Processor
    processor_group: str = "strainwatch-processor"
    window_s: int = Field(10, ge=1, le=3600, description="exposure window length, event time")
    checkpoint_interval_s: float = Field(
        5.0, gt=0, description="state, points and offsets are persisted together this often"
    )
    max_pending_frames: int = Field(20_000, ge=1, description="a checkpoint is forced past this many")
    allowed_lateness_s: float = Field(30.0, ge=0, description="frames later than this are dead-lettered")
    max_frame_bytes: int = Field(262_144, ge=1024)
    max_samples_per_frame: int = Field(6_000, ge=1, description="per segment: 60 s at 100 Hz")
    max_future_s: float = Field(300.0, ge=0, description="start_ts may lead the processor clock by this")
    broker_session_timeout_s: float = Field(30.0, gt=0)
    thresholds: str = Field("default", description="profile name or path of a thresholds file")

    # Ops endpoints (issue 15 items 1-4, docs/operations.md): /healthz, /readyz, /metrics
    ops_bind: str | None = Field(
        None,
        description="HOST:PORT of the ops server, or 'off'; unset: 127.0.0.1 on the service's port "
        "(processor 9310, alerting 9311, gateway 9312); each service's --ops-bind overrides it",
    )
    ops_checkpoint_max_age_s: float = Field(
        60.0, gt=0, description="/readyz: not ready when work waits longer than this for a checkpoint"
    )

    # Alerting service (docs/alerting.md)
    channels_file: Path | None = Field(
        None, description="YAML: channels (apprise URLs) and delivery policy per site and team"
    )

    # Transport security (issue 15 item 5, docs/security.md): TLS and SASL for Kafka, CA files for
    # InfluxDB and MQTT, and every secret also readable from a file (`*_FILE`)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how every Kafka client connects (kafka_clients.py)"
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_sasl_password_file: Path | None = Field(None, description="file holding the SASL password")
    kafka_ssl_cafile: Path | None = Field(
        None, description="CA bundle (PEM) for the brokers; none: system CAs"
    )
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate (PEM), mutual TLS")
    kafka_ssl_keyfile: Path | None = Field(None, description="the client certificate's key (PEM)")
    kafka_ssl_check_hostname: bool = True
    influx_token_file: Path | None = Field(None, description="file holding the InfluxDB token")
    influx_ca_file: Path | None = Field(None, description="CA bundle (PEM) for an https InfluxDB URL")
    mqtt_password_file: Path | None = Field(None, description="file holding the MQTT password")
    mqtt_ca_file: Path | None = Field(None, description="CA bundle (PEM) for MQTT over TLS")

    @model_validator(mode="after")
    def _secrets_from_files(self) -> Settings:
        for secret, path in (
            ("influx_token", self.influx_token_file),
            ("mqtt_password", self.mqtt_password_file),
            ("kafka_sasl_password", self.kafka_sasl_password_file),
        ):
            if path is not None:
                try:
                    value = Path(path).read_text(encoding="utf-8").strip()
                except OSError as error:
                    raise ValueError(f"{secret}_file {path}: {error.strerror or error}") from None
                if not value:
                    raise ValueError(f"{secret}_file {path} is empty")
                object.__setattr__(self, secret, SecretStr(value))
        if self.influx_token.get_secret_value() == LOCAL_INFLUX_TOKEN and not is_local_url(self.influx_url):
            # services without InfluxDB (the gateway) start; any use of the token refuses clearly
            object.__setattr__(
                self, "influx_token", MissingSecret("STRAINWATCH_INFLUX_TOKEN", self.influx_url)
            )
        if self.mqtt_password.get_secret_value() == LOCAL_MQTT_PASSWORD and not is_local_url(
            f"mqtt://{self.mqtt_host}"
        ):
            object.__setattr__(
                self,
                "mqtt_password",
                MissingSecret("STRAINWATCH_MQTT_PASSWORD", f"MQTT host {self.mqtt_host}", "password"),
            )
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password.get_secret_value()
        ):
            raise ValueError(
                f"STRAINWATCH_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "STRAINWATCH_KAFKA_SASL_USERNAME and STRAINWATCH_KAFKA_SASL_PASSWORD (or _FILE)"
            )
        return self

    # Logging
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    def masked(self) -> dict[str, Any]:
        """The effective configuration, secrets masked, as printed by `config show`."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                # no part of a secret, not even its length: only whether one is set
                if isinstance(value, MissingSecret):
                    out[name] = "(missing: required for this URL)"
                else:
                    out[name] = "****" if value.get_secret_value() else ""
            elif isinstance(value, Path):
                out[name] = str(value)
            else:
                out[name] = value
        return out


def is_local_url(url: str) -> bool:
    """A loopback URL: the only place the local stack's built-in InfluxDB token may be sent."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def secret_from_env(name: str) -> str:
    """A secret that is not a Settings field (e.g. STRAINWATCH_GRAFANA_WEBHOOK_TOKEN): the content of
    the file `<name>_FILE` names (trailing newline removed) wins over the variable `<name>`."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(f"{name}_FILE {path}: {error.strerror or error}") from None
        if not value:
            raise ConfigError(f"{name}_FILE {path} is empty")
        return value
    return os.environ.get(name, "")
