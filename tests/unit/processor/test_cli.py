"""`strainwatch processor` refuses to start on library versions it was not tested with."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from strainwatch.cli import app
from strainwatch.processor import compat

pytestmark = pytest.mark.unit


def test_an_untested_faust_version_is_refused_before_anything_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat, "TESTED_VERSIONS", {**compat.TESTED_VERSIONS, "faust-streaming": "0.0.1"})
    monkeypatch.delenv(compat.ALLOW_UNTESTED_ENV, raising=False)
    result = CliRunner().invoke(app, ["processor"])
    assert result.exit_code == 1
    assert "faust-streaming 0.15.3 installed, 0.0.1 tested" in result.output
    assert compat.ALLOW_UNTESTED_ENV in result.output


def test_a_bad_thresholds_argument_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(app, ["processor", "--thresholds", "no-such-profile"])
    assert result.exit_code == 2
    assert "--thresholds" in result.output
