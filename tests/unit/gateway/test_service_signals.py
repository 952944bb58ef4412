"""SIGTERM / SIGINT handling of the alerting service and the gateway (service_signals.py), in a
real process whose clean stop never finishes: the second signal exits at once, the deadline
bounds the first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import wait_for

pytestmark = pytest.mark.unit

SCRIPT = """
import asyncio, sys
from strainwatch.logs import configure
from strainwatch.service_signals import install_stop_signals

configure("INFO", "json")

async def main() -> None:
    install_stop_signals(asyncio.get_running_loop(), lambda: None, service="t", deadline_s=float(sys.argv[1]))
    print("ready", flush=True)
    await asyncio.sleep(120)  # a stop that never completes

asyncio.run(main())
"""


def start(tmp_path: Path, deadline_s: float) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "out.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(deadline_s)],
        stdout=open(log, "wb"),  # noqa: SIM115 - the subprocess owns it
        stderr=subprocess.STDOUT,
        env={**os.environ, "STRAINWATCH_LOG_FORMAT": "json"},
    )
    wait_for(lambda: "ready" in log.read_text(), timeout_s=30, what="the process to start")
    return proc, log


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_exits_at_once(tmp_path: Path, second: signal.Signals) -> None:
    proc, log = start(tmp_path, deadline_s=60)
    try:
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: '"stopping"' in log.read_text(), timeout_s=10, what="the first signal handled")
        started = time.monotonic()
        proc.send_signal(second)
        assert proc.wait(5) == 128 + second
        assert time.monotonic() - started < 2
        assert '"exiting at once"' in log.read_text()
    finally:
        proc.kill()


def test_a_stop_that_does_not_finish_is_ended_by_the_deadline(tmp_path: Path) -> None:
    proc, log = start(tmp_path, deadline_s=1.0)
    try:
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 1
        assert 0.9 < time.monotonic() - started < 5
        assert "not stopped 1 s after SIGTERM" in log.read_text()
    finally:
        proc.kill()
