"""`strainwatch stack up|status|down`: the local broker, InfluxDB and Mosquitto, in a state directory."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from strainwatch.stack import components, mosquitto
from strainwatch.stack.procs import Proc, StackError, alive, require_free, stop
from strainwatch.stack.topics import ensure_topics
from strainwatch.storage.measurements import WINDOWS_RP

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

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def influx_url(self) -> str:
        return f"http://127.0.0.1:{self.influx_port}"

    @classmethod
    def from_settings(cls, broker: Broker | None = None) -> StackConfig:
        from strainwatch.config import get_settings

        s = get_settings()
        return cls(
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
        try:
            if "influxd" not in procs:
                require_free(cfg.influxd_port, "influxd")
                require_free(cfg.influxd_port + 1, "influxd's RPC service")
                procs["influxd"] = components.start_influxd(
                    cfg.state_dir, cfg.influxd_port, cfg.influxd_port + 1
                )
                self._save(procs, cfg.broker)
            if "influx-adapter" not in procs:
                require_free(cfg.influx_port, "the InfluxDB route adapter")
                procs["influx-adapter"] = components.start_adapter(
                    cfg.state_dir, cfg.influx_port, cfg.influxd_port
                )
                self._save(procs, cfg.broker)
            if "broker" not in procs:
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
        create_database(cfg.influx_url, cfg.influx_bucket, cfg.windows_retention_days, cfg.retention_days)
        log.info("stack up", broker=cfg.broker, bootstrap=cfg.bootstrap, influx_url=cfg.influx_url)
        return {
            "broker": cfg.broker,
            "bootstrap": cfg.bootstrap,
            "influx_url": cfg.influx_url,
            "mqtt": f"127.0.0.1:{cfg.mqtt_port}",
            "topics": topics,
        }

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


def create_database(
    influx_url: str, database: str, windows_retention_days: int = 35, retention_days: int = 1825
) -> None:
    """The local InfluxDB 1.x database and its two retention policies (a 2.x site provisions
    buckets and DBRP mappings instead: docs/deploy.md):

    - `autogen` (the default): everything but the 10-second windows, kept `retention_days`
      (0 = forever): hourly rollups, alerts, prompts, outcomes, incidents, pipeline health;
    - `windows`: the 10-second `exposure` windows, kept `windows_retention_days`.
    """
    _influxql(influx_url, f'CREATE DATABASE "{database}"', f"creating database {database}")
    existing = _influxql(influx_url, f'SHOW RETENTION POLICIES ON "{database}"', "reading retention")
    names = {row[0] for series in existing for row in series.get("values") or []}
    for name, days in (("autogen", retention_days), (WINDOWS_RP, windows_retention_days)):
        duration = f"{int(days)}d" if days else "INF"
        verb = "ALTER" if name in names else "CREATE"
        _influxql(
            influx_url,
            f'{verb} RETENTION POLICY "{name}" ON "{database}" DURATION {duration} REPLICATION 1',
            f"setting retention {name} of {database}",
        )


def _influxql(influx_url: str, statement: str, what: str) -> list[dict[str, Any]]:
    data = urllib.parse.urlencode({"q": statement}).encode()
    try:
        with urllib.request.urlopen(f"{influx_url}/query", data=data, timeout=10) as resp:
            body = json.loads(resp.read())
    except OSError as error:
        raise StackError(f"{what} at {influx_url}: {error}") from error
    results = body.get("results", [])
    errors = [r.get("error") for r in results if r.get("error")]
    if errors:
        raise StackError(f"{what}: {errors[0]}")
    return list(results[0].get("series") or []) if results else []
