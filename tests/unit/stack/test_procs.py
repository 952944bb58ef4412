from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from strainwatch.stack.manager import Stack, StackConfig
from strainwatch.stack.procs import StackError, alive, free_port, require_free, spawn, stop

pytestmark = pytest.mark.unit


def test_taken_port_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(StackError, match=f"port {port} for influxd is already taken"):
            require_free(port, "influxd")


def test_stack_up_refuses_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        stack = Stack(StackConfig(state_dir=tmp_path, influxd_port=taken, influx_port=free_port()))
        with pytest.raises(StackError, match="already taken"):
            stack.up()
    assert stack.down() == []  # nothing was left running


def test_stop_kills_the_process_group_and_ignores_recycled_pids(tmp_path: Path) -> None:
    proc = spawn(
        "sleeper",
        [sys.executable, "-c", "import time; time.sleep(60)"],
        port=0,
        log_path=tmp_path / "sleeper.log",
        marker="time.sleep(60)",
    )
    from tests.support import wait_for

    wait_for(lambda: alive(proc), timeout_s=10, what="sleeper started")
    assert stop(proc, timeout_s=5) is True
    assert not alive(proc)
    assert stop(proc) is False  # already gone: nothing to do


def test_status_of_an_empty_state_dir(tmp_path: Path) -> None:
    status = Stack(StackConfig(state_dir=tmp_path)).status()
    assert status["components"] == {}
    assert status["broker"] is None
