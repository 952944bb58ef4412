"""`incidents import` before it touches InfluxDB or Kafka: argument errors exit 2, a log with invalid
rows exits 1 listing every one, a file that is no log exits 1 with the reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from strainwatch.config import get_settings
from strainwatch.incidents.cli import register
from strainwatch.incidents.csv_log import COLUMNS

pytestmark = pytest.mark.unit


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[typer.Typer]:
    # nothing listens there: a test that reached InfluxDB or Kafka would fail
    monkeypatch.setenv("STRAINWATCH_INFLUX_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("STRAINWATCH_KAFKA_BOOTSTRAP", "127.0.0.1:9")
    get_settings.cache_clear()
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    yield app
    get_settings.cache_clear()


def run(app: typer.Typer, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["incidents", "import", *args])
    return result.exit_code, result.stdout, result.stderr


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "log.csv"
    path.write_text("\n".join([",".join(COLUMNS), *lines]) + "\n")
    return path


def test_invalid_rows_are_all_listed_and_nothing_is_imported(app: typer.Typer, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "C-1,2026-11-02,plant-1,team-a,,neck,strain,recordable,0,0",
        "C-2,2026-11-02,plant-1,team-a,,knee,strain,recordable,0,0",
        "C-3,2026-11-31,plant-1,team-a,,neck,strain,recordable,0,0",
    )
    for extra in ((), ("--dry-run",)):
        code, out, err = run(app, str(path), *extra)
        assert code == 1
        assert f"{path}: line 3 (case C-2): body_part: unknown body part 'knee'" in err
        assert f"{path}: line 4 (case C-3): date: '2026-11-31' is not a calendar date" in err
        assert "2 invalid row(s)" in err and "nothing imported" in err
        summary = orjson.loads(out.strip().splitlines()[-1])
        assert summary["rows_read"] == 3 and summary["invalid"] == 2
        assert summary["imported"] == summary["replaced"] == summary["published"] == 0


def test_an_empty_file_exits_1_saying_so(app: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    code, _, err = run(app, str(path))
    assert code == 1
    assert f"error: {path} is empty: expected a header line" in err


def test_a_bad_header_exits_1_naming_the_columns(app: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("case_id,date,site,team,body_part,injury,classification,days_away,days_restricted\n")
    code, _, err = run(app, str(path))
    assert code == 1
    assert "missing column(s) injury_type" in err and "unknown column(s) injury" in err


@pytest.mark.parametrize("args", [["missing.csv"], [], ["log.csv", "--skip"], ["."]])
def test_bad_arguments_exit_2(
    app: typer.Typer, args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path)
    code, _, _ = run(app, *args)
    assert code == 2
