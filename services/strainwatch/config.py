"""The one place configuration comes from: environment variables prefixed `STRAINWATCH_`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STRAINWATCH_", extra="ignore")

    # Kafka
    kafka_bootstrap: str = Field("127.0.0.1:19092", description="host:port[,host:port] of the brokers")
    # InfluxDB: writes use /api/v2/write, reads InfluxQL on /query (docs/architecture.md, Storage)
    influx_url: str = "http://127.0.0.1:18086"
    influx_token: SecretStr = SecretStr("strainwatch-local-token")
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
    mqtt_password: SecretStr = SecretStr("strainwatch-local-mqtt")
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

    # Alerting service (docs/alerting.md)
    channels_file: Path | None = Field(
        None, description="YAML: channels (apprise URLs) and delivery policy per site and team"
    )

    # Logging
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    def masked(self) -> dict[str, Any]:
        """The effective configuration, secrets masked, as printed by `config show`."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                raw = value.get_secret_value()
                out[name] = "****" + raw[-2:] if len(raw) > 6 else "****"
            elif isinstance(value, Path):
                out[name] = str(value)
            else:
                out[name] = value
        return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
