"""`strainwatch processor` refuses to start on library versions it was not tested with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from strainwatch.cli import app
from strainwatch.processor import compat

pytestmark = pytest.mark.unit

SERVICES = Path(__file__).resolve().parents[3] / "services"


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


STOPPED_WHILE_STARTING = """
import os, signal
from strainwatch.logs import configure
from strainwatch.processor.cli import EarlySignal, run_processor
configure("info", "json")  # as the CLI's callback does
early = EarlySignal()
early.install()
os.kill(os.getpid(), signal.SIGTERM)  # as a pod stopped while the processor still imports
assert early.received == signal.SIGTERM
run_processor(None, "off", early)
raise SystemExit("run_processor went on after a SIGTERM received while starting")
"""


def test_sigterm_while_starting_exits_cleanly_without_starting(tmp_path: Path) -> None:
    """Before faust's handlers exist, SIGTERM's default action would kill the process (-15); the
    early handler remembers it and the processor stops with 0 before it consumes anything."""
    env = {
        **os.environ,
        "PYTHONPATH": str(SERVICES),
        "STRAINWATCH_KAFKA_BOOTSTRAP": "127.0.0.1:9",  # never reached
        "STRAINWATCH_STATE_DIR": str(tmp_path / "state"),
        "STRAINWATCH_LOG_LEVEL": "info",
        "STRAINWATCH_LOG_FORMAT": "json",
    }
    done = subprocess.run(
        [sys.executable, "-c", STOPPED_WHILE_STARTING], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    stopped = [line for line in done.stderr.splitlines() if '"stopped before starting"' in line]
    assert len(stopped) == 1, done.stdout + done.stderr
    assert '"signal": "SIGTERM"' in stopped[0]


def test_a_second_signal_while_starting_exits_at_once() -> None:
    script = (
        "import os, signal, time\n"
        "from strainwatch.processor.cli import EarlySignal\n"
        "early = EarlySignal(); early.install()\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(30)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(SERVICES)}, timeout=60
    )
    assert done.returncode == 128 + signal.SIGINT
