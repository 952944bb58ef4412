from __future__ import annotations

import pytest

from strainwatch.ops.readiness import Readiness

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_no_checks_is_ready_and_expected_checks_are_not() -> None:
    assert Readiness().ready
    r = Readiness(expected=["kafka", "sink"])
    snap = r.snapshot()
    assert snap["ready"] is False and snap["alive"] is True
    assert set(snap["checks"]) == {"kafka", "sink"}
    assert snap["checks"]["kafka"] == {
        "ok": False,
        "detail": "not checked yet",
        "since": pytest.approx(snap["checks"]["kafka"]["since"]),
        "fatal": False,
    }


def test_ready_when_every_check_ok_and_since_moves_only_on_change() -> None:
    clock = Clock()
    r = Readiness(expected=["kafka"], clock=clock)
    clock.t = 1010.0
    r.set("kafka", True, "connected")
    r.set("sink", True)
    assert r.ready
    clock.t = 1020.0
    r.set("kafka", True, "still connected")
    assert r.get("kafka") == {"ok": True, "detail": "still connected", "since": 1010.0, "fatal": False}
    clock.t = 1030.0
    r.set("kafka", False, "broker down")
    snap = r.snapshot()
    assert snap["ready"] is False
    assert snap["checks"]["kafka"] == {"ok": False, "detail": "broker down", "since": 1030.0, "fatal": False}
    assert snap["checks"]["sink"]["ok"] is True


def test_fatal_check_sticks() -> None:
    r = Readiness()
    r.set("sink", False, "InfluxDB 401: unauthorized", fatal=True)
    assert not r.ready and r.fatal
    r.set("sink", True, "write ok")  # ignored: retrying cannot fix a fatal error
    assert r.get("sink") == {
        "ok": False,
        "detail": "InfluxDB 401: unauthorized",
        "since": r.get("sink")["since"],
        "fatal": True,
    }  # type: ignore[index]
    # fatal with ok=True is still not ok
    r.set("other", True, "x", fatal=True)
    assert r.get("other")["ok"] is False  # type: ignore[index]


def test_alive_flag_and_detail() -> None:
    r = Readiness()
    r.set_alive(False, "worker thread died")
    snap = r.snapshot()
    assert snap["alive"] is False and snap["ready"] is False
    assert snap["alive_detail"] == "worker thread died"
    assert not r.alive
