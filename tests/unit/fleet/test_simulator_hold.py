"""The simulator's neutral hold: a device's worker goes neutral, every other frame stays the same."""

from __future__ import annotations

import orjson

from strainwatch.events import RosterEntry
from strainwatch.fleet.simulator import FleetSimulator, SimConfig

CFG = SimConfig(workers=6, duration_s=400.0, seed=5, shifts=False)


def docs(sim: FleetSimulator) -> list[dict]:
    return [orjson.loads(f.value) for f in sim.frames()]


def acceptable(doc: dict) -> bool:
    s = doc["samples"]
    limits = {
        "trunk_flexion": (0, 20),
        "neck_flexion": (0, 25),
        "arm_elevation_left": (0, 20),
        "arm_elevation_right": (0, 20),
    }
    return all(limits[name][0] <= v < limits[name][1] for name, values in s.items() for v in values)


def test_hold_neutral_changes_only_that_workers_angles_in_the_period() -> None:
    plain = docs(FleetSimulator(CFG))
    sim = FleetSimulator(CFG)
    held = sim.workers[0].worker_id  # overhead assembly: rarely neutral for 3 minutes on its own
    t0 = CFG.start.timestamp()
    sim.hold_neutral(held, t0 + 180)
    with_hold = docs(sim)
    assert len(plain) == len(with_hold)
    for a, b in zip(plain, with_hold, strict=True):
        if a["worker_id"] != held:
            assert a == b
        else:
            assert a["event_id"] == b["event_id"]  # same random stream, only the angles differ
    held_docs = [d for d in with_hold if d["worker_id"] == held]
    plain_docs = [d for d in plain if d["worker_id"] == held]
    assert [d["start_ts"] for d in held_docs] == [d["start_ts"] for d in plain_docs]
    assert not all(acceptable(d) for d in plain_docs[:180])  # the hold changed something
    assert all(acceptable(d) for d in held_docs[:180])  # neutral from the first frame for 3 minutes
    assert not all(acceptable(d) for d in held_docs[180:])  # then back to the task's postures


def test_hold_neutral_during_a_run_takes_effect_from_the_next_frame() -> None:
    sim = FleetSimulator(CFG)
    worker = sim.workers[0].worker_id
    t0 = CFG.start.timestamp()
    out = []
    for item in sim.frames():
        if item.worker_id == worker and item.start_s == t0 + 10:
            sim.hold_neutral(worker, item.start_s + 1 + 180)  # a device took a break after this frame
        if item.worker_id == worker:
            out.append(orjson.loads(item.value))
    assert all(acceptable(d) for d in out[12:191])


def test_neutral_hold_never_extends_backwards() -> None:
    sim = FleetSimulator(CFG)
    worker = sim.workers[0]
    sim.hold_neutral(worker.worker_id, 500.0)
    sim.hold_neutral(worker.worker_id, 100.0)
    assert worker.neutral_until == 500.0


def test_roster_binds_each_workers_device() -> None:
    sim = FleetSimulator(CFG)
    roster = sim.roster()
    frame_devices = {d["worker_id"]: d["device_id"] for d in docs(FleetSimulator(CFG))}
    for entry in roster:
        assert entry["device_id"] == frame_devices[entry["worker_id"]]
        assert sim.worker_for_device(entry["device_id"]) == entry["worker_id"]
        RosterEntry.model_validate({k: v for k, v in entry.items() if k != "task"})
    assert sim.worker_for_device("dev-unknown") is None
