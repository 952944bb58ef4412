from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from strainwatch.config import Settings

pytestmark = pytest.mark.unit


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRAINWATCH_KAFKA_BOOTSTRAP", "broker-1:9092,broker-2:9092")
    monkeypatch.setenv("STRAINWATCH_WINDOW_S", "30")
    settings = Settings()
    assert settings.kafka_bootstrap == "broker-1:9092,broker-2:9092"
    assert settings.window_s == 30


def test_invalid_environment_value_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRAINWATCH_WINDOW_S", "0")
    with pytest.raises(ValueError, match="window_s"):
        Settings()


def test_masked_hides_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRAINWATCH_INFLUX_TOKEN", "super-secret-token-42")
    masked = Settings().masked()
    assert masked["influx_token"] == "****"
    assert "super-secret" not in orjson.dumps(masked).decode()


def test_config_show_prints_json_with_secret_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    from strainwatch.cli import app
    from strainwatch.config import get_settings

    monkeypatch.setenv("STRAINWATCH_INFLUX_TOKEN", "another-secret-value")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["config", "show"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    shown = orjson.loads(result.stdout)
    assert shown["influx_token"] == "****"
    assert "another-secret" not in result.stdout
    assert shown["influx_bucket"] == "strainwatch"


def test_unknown_command_exits_2() -> None:
    from strainwatch.cli import app

    result = CliRunner().invoke(app, ["no-such-command"])
    assert result.exit_code == 2
