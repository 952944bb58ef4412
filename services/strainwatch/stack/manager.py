"""`strainwatch stack up|status|down`: the local broker, InfluxDB and Mosquitto, in a state directory."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from strainwatch.stack import components, mosquitto
from strainwatch.stack.influx_setup import InfluxServer, create_database, detect, provision
from strainwatch.stack.procs import Proc, StackError, alive, require_free, stop
from strainwatch.stack.topics import ensure_reachable, ensure_topics

log = structlog.get_logger("strainwatch.stack")

Broker = Literal["tansu", "kafka"]


@dataclass(frozen=True)
class StackConfig:
    state_dir: Path
    broker: Broker = "tansu"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    influxd_port: int = 18087
    influx_port: int = 18086
    influx_bucket: str = "strainwatch"
    posture_partitions: int = 4
    raw_retention_days: float = 7.0
    windows_retention_days: int = 35
    retention_days: int = 1825
    mqtt_port: int = 11883
    mqtt_gateway_password: str = "strainwatch-local-mqtt"
    # The site's own servers (STRAINWATCH_INFLUX_URL / STRAINWATCH_KAFKA_BOOTSTRAP set to something
    # other than the local stack's address): used as they are, nothing local started in their place.
    own_influx_url: str | None = None
    own_kafka_bootstrap: str | None = None
    influx_token: str = ""
    influx_token_error: str | None = None  # the token setting cannot be used with this URL
    influx_org: str = "strainwatch"
    influx_windows_bucket: str | None = None

    @property
    def local_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def local_influx_url(self) -> str:
        return f"http://127.0.0.1:{self.influx_port}"

    @property
    def bootstrap(self) -> str:
        return self.own_kafka_bootstrap or self.local_bootstrap

    @property
    def influx_url(self) -> str:
        return self.own_influx_url or self.local_influx_url

    @classmethod
    def from_settings(cls, broker: Broker | None = None) -> StackConfig:
        from strainwatch.config import get_settings

        s = get_settings()
        local_influx = f"http://127.0.0.1:{s.influx_port}"
        own_influx = s.influx_url.rstrip("/") if "influx_url" in s.model_fields_set else None
        if own_influx in (local_influx, f"http://localhost:{s.influx_port}"):
            own_influx = None
        own_kafka = s.kafka_bootstrap if "kafka_bootstrap" in s.model_fields_set else None
        if own_kafka in (f"127.0.0.1:{s.kafka_port}", f"localhost:{s.kafka_port}"):
            own_kafka = None
        token, token_error = _token(s)
        return cls(
            own_influx_url=own_influx,
            own_kafka_bootstrap=own_kafka,
            # the token is read only where it is sent: the local stack's default is refused elsewhere
            influx_token=token,
            influx_token_error=token_error,
            influx_org=s.influx_org,
            influx_windows_bucket=s.influx_windows_bucket or None,
            state_dir=s.state_dir,
            broker=broker or s.broker,
            kafka_port=s.kafka_port,
            kafka_controller_port=s.kafka_controller_port,
            influxd_port=s.influxd_port,
            influx_port=s.influx_port,
            influx_bucket=s.influx_bucket,
            windows_retention_days=s.windows_retention_days,
            retention_days=s.retention_days,
            posture_partitions=s.posture_partitions,
            raw_retention_days=s.raw_retention_days,
            mqtt_port=s.mqtt_port,
            mqtt_gateway_password=s.mqtt_password.get_secret_value(),
        )


def _token(settings: Any) -> tuple[str, str | None]:
    """(token, None), or ("", why not) when the token setting cannot be used with the URL."""
    try:
        return str(settings.influx_token.get_secret_value()), None
    except ValueError as error:  # config.ConfigError: the local stack's token with a remote URL
        return "", str(error)


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.state_file = config.state_dir / "stack.json"

    def _load(self) -> dict[str, Proc]:
        try:
            raw = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return {name: Proc(**p) for name, p in raw.get("procs", {}).items()}

    def _save(self, procs: dict[str, Proc], broker: str) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(
            json.dumps({"broker": broker, "procs": {n: asdict(p) for n, p in procs.items()}}, indent=2)
        )

    def running_broker(self) -> str | None:
        try:
            return str(json.loads(self.state_file.read_text()).get("broker"))
        except (OSError, ValueError):
            return None

    def up(self) -> dict[str, object]:
        """Start what is not running, wait until healthy, create topics and the database. Idempotent."""
        cfg = self.config
        procs = {name: p for name, p in self._load().items() if alive(p)}
        running = self.running_broker()
        if "broker" in procs and running and running != cfg.broker:
            raise StackError(
                f"a {running} broker is already running in {cfg.state_dir}; `strainwatch stack down` first"
            )
        if cfg.influx_token_error:
            raise StackError(cfg.influx_token_error)
        database: dict[str, Any] | None = None
        if cfg.own_influx_url:
            # before anything local starts: unreachable, a refused token or a 3.x are reported as is
            server = detect(cfg.own_influx_url, cfg.influx_token)
            log.info("using the site's InfluxDB", url=cfg.own_influx_url, version=server.version)
            database = self._provision(server)
        if cfg.own_kafka_bootstrap:
            ensure_reachable(cfg.own_kafka_bootstrap)
            log.info("using the site's Kafka", bootstrap=cfg.own_kafka_bootstrap)
        try:
            if "influxd" not in procs and not cfg.own_influx_url:
                require_free(cfg.influxd_port, "influxd")
                require_free(cfg.influxd_port + 1, "influxd's RPC service")
                procs["influxd"] = components.start_influxd(
                    cfg.state_dir, cfg.influxd_port, cfg.influxd_port + 1
                )
                self._save(procs, cfg.broker)
            if "influx-adapter" not in procs and not cfg.own_influx_url:
                require_free(cfg.influx_port, "the InfluxDB route adapter")
                procs["influx-adapter"] = components.start_adapter(
                    cfg.state_dir, cfg.influx_port, cfg.influxd_port
                )
                self._save(procs, cfg.broker)
            if "broker" not in procs and not cfg.own_kafka_bootstrap:
                require_free(cfg.kafka_port, f"the {cfg.broker} broker")
                if cfg.broker == "kafka":
                    require_free(cfg.kafka_controller_port, "the Kafka controller")
                    procs["broker"] = components.start_kafka(
                        cfg.state_dir, cfg.kafka_port, cfg.kafka_controller_port
                    )
                else:
                    procs["broker"] = components.start_tansu(cfg.state_dir, cfg.kafka_port)
                self._save(procs, cfg.broker)
            if "mosquitto" not in procs:
                require_free(cfg.mqtt_port, "Mosquitto")
                procs["mosquitto"] = mosquitto.start_mosquitto(
                    cfg.state_dir, cfg.mqtt_port, cfg.mqtt_gateway_password
                )
                self._save(procs, cfg.broker)
        except StackError:
            self._save(procs, cfg.broker)
            raise
        topics = ensure_topics(
            cfg.bootstrap, cfg.posture_partitions, int(cfg.raw_retention_days * 86_400_000)
        )
        if database is None:
            database = self._provision(detect(cfg.influx_url, cfg.influx_token))
        log.info("stack up", broker=cfg.broker, bootstrap=cfg.bootstrap, influx_url=cfg.influx_url)
        return {
            "broker": "site" if cfg.own_kafka_bootstrap else cfg.broker,
            "started": sorted(procs),
            "influx": database,
            "bootstrap": cfg.bootstrap,
            "influx_url": cfg.influx_url,
            "mqtt": f"127.0.0.1:{cfg.mqtt_port}",
            "topics": topics,
        }

    def _provision(self, server: InfluxServer) -> dict[str, Any]:
        cfg = self.config
        return provision(
            server,
            org=cfg.influx_org,
            bucket=cfg.influx_bucket,
            windows_bucket=cfg.influx_windows_bucket,
            windows_retention_days=cfg.windows_retention_days,
            retention_days=cfg.retention_days,
        )

    def status(self) -> dict[str, object]:
        procs = self._load()
        return {
            "state_dir": str(self.config.state_dir),
            "broker": self.running_broker(),
            "components": {
                name: {"pid": p.pid, "port": p.port, "running": alive(p), "log": p.log}
                for name, p in procs.items()
            },
        }

    def down(self) -> list[str]:
        """Stop every process this state dir started; returns the names that were running."""
        stopped = []
        procs = self._load()
        # broker first, so clients see it go before storage does
        for name in sorted(procs, key=lambda n: n != "broker"):
            if stop(procs[name]):
                stopped.append(name)
        self.state_file.unlink(missing_ok=True)
        return stopped

    def stop_component(self, name: str) -> None:
        """Stop one component (fault-injection tests); `up()` starts it again."""
        procs = self._load()
        if name in procs:
            stop(procs[name])

    def all_running(self) -> bool:
        procs = self._load()
        return bool(procs) and all(alive(p) for p in procs.values())


__all__ = ["Stack", "StackConfig", "create_database"]
