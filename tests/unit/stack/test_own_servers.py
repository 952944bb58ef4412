"""Which servers `stack up` starts: the site's own InfluxDB and Kafka are used, never replaced."""

from __future__ import annotations

from pathlib import Path

import pytest

from strainwatch.config import get_settings
from strainwatch.privacy.services import drop_lines, tagged, worker_digest
from strainwatch.stack.influx_setup import split_windows_bucket
from strainwatch.stack.manager import StackConfig

pytestmark = pytest.mark.unit


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("INFLUX_URL", "KAFKA_BOOTSTRAP", "INFLUX_TOKEN", "INFLUX_PORT", "KAFKA_PORT"):
        monkeypatch.delenv(f"STRAINWATCH_{name}", raising=False)
    monkeypatch.setenv("STRAINWATCH_STATE_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_defaults_are_the_local_stack(env: pytest.MonkeyPatch) -> None:
    cfg = StackConfig.from_settings()
    assert cfg.own_influx_url is None and cfg.own_kafka_bootstrap is None
    assert cfg.influx_url == "http://127.0.0.1:18086" and cfg.bootstrap == "127.0.0.1:19092"


def test_local_ports_moved_without_urls_are_still_local(env: pytest.MonkeyPatch) -> None:
    env.setenv("STRAINWATCH_INFLUX_PORT", "28086")
    env.setenv("STRAINWATCH_KAFKA_PORT", "29092")
    cfg = StackConfig.from_settings()
    assert cfg.own_influx_url is None and cfg.own_kafka_bootstrap is None
    assert cfg.influx_url == "http://127.0.0.1:28086" and cfg.bootstrap == "127.0.0.1:29092"


def test_urls_naming_the_local_stack_are_local(env: pytest.MonkeyPatch) -> None:
    env.setenv("STRAINWATCH_INFLUX_URL", "http://127.0.0.1:18086/")
    env.setenv("STRAINWATCH_KAFKA_BOOTSTRAP", "localhost:19092")
    cfg = StackConfig.from_settings()
    assert cfg.own_influx_url is None and cfg.own_kafka_bootstrap is None


def test_the_sites_servers_are_used(env: pytest.MonkeyPatch) -> None:
    env.setenv("STRAINWATCH_INFLUX_URL", "https://influx.plant.example:8086")
    env.setenv("STRAINWATCH_INFLUX_TOKEN", "site-token-abcdef")
    env.setenv("STRAINWATCH_KAFKA_BOOTSTRAP", "kafka-1.plant.example:9092,kafka-2.plant.example:9092")
    cfg = StackConfig.from_settings()
    assert cfg.influx_url == cfg.own_influx_url == "https://influx.plant.example:8086"
    assert cfg.bootstrap == "kafka-1.plant.example:9092,kafka-2.plant.example:9092"
    assert cfg.influx_token == "site-token-abcdef" and cfg.influx_token_error is None


def test_a_remote_influxdb_without_a_token_is_an_error_not_the_local_token(env: pytest.MonkeyPatch) -> None:
    env.setenv("STRAINWATCH_INFLUX_URL", "https://influx.plant.example:8086")
    cfg = StackConfig.from_settings()
    assert cfg.influx_token == ""
    assert cfg.influx_token_error is not None and "STRAINWATCH_INFLUX_TOKEN" in cfg.influx_token_error


def test_windows_bucket_as_database_and_retention_policy() -> None:
    assert split_windows_bucket("strainwatch", None) == ("strainwatch", "windows")
    assert split_windows_bucket("sw", "sw/short") == ("sw", "short")


def test_a_workers_points_are_recognised_by_their_worker_tag() -> None:
    lines = [
        "exposure,site=s,team=t,task=k,worker=w-1 frames=1i 10",
        "exposure,site=s,team=t,task=k,worker=w-10 frames=1i 10",
        "break_prompt,site=s,team=t,worker=w-1,kind=nudge,segment=neck_flexion,status=sent,reason=ok n=1i 10",
        'pipeline,service=processor,instance=i note="worker=w-1" 10',
    ]
    assert [tagged(line, "w-1") for line in lines] == [True, False, True, False]
    assert drop_lines(lines, "w-1") == 2
    assert len(lines) == 2 and "worker=w-10" in lines[0]


def test_logs_name_a_worker_by_a_hash() -> None:
    digest = worker_digest("w-1")
    assert len(digest) == 12 and digest == worker_digest("w-1") != worker_digest("w-2")
