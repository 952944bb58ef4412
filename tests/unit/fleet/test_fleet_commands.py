"""A command at a simulated device, without a broker: stats, receipts, and the worker's neutral hold."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import orjson
import pytest

from strainwatch.fleet.behaviour import DevicePolicy
from strainwatch.fleet.devices import MqttFleet, MqttTarget, SimDevice
from strainwatch.fleet.simulator import FleetSimulator, SimConfig


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def break_prompt(device_id: str, worker_id: str, alert: uuid.UUID) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "command_id": str(uuid.uuid5(alert, "command")),
            "worker_id": worker_id,
            "device_id": device_id,
            "ts": "2026-11-02T08:00:05.000Z",
            "command": "break_prompt",
            "haptic": "break",
            "alert_id": str(alert),
            "text": "Time for a short break",
        }
    )


def fleet_with_device(
    loop: asyncio.AbstractEventLoop, policy: DevicePolicy
) -> tuple[MqttFleet, SimDevice, FleetSimulator]:
    sim = FleetSimulator(SimConfig(workers=3, duration_s=30, shifts=False))
    fleet = MqttFleet(sim, MqttTarget(port=1), policy)
    fleet.loop = loop  # the client never connects: publishes queue inside paho
    worker = sim.workers[1]
    device = SimDevice(fleet, worker.device_id, worker.worker_id, "pw")
    fleet.event_now = sim.cfg.start.timestamp() + 5
    return fleet, device, sim


def test_a_taken_break_holds_the_devices_worker_neutral(loop: asyncio.AbstractEventLoop) -> None:
    fleet, device, sim = fleet_with_device(
        loop, DevicePolicy(ack_share=1.0, take_share=1.0, report_rest=True)
    )
    fleet.handle_command(device, break_prompt(device.device_id, device.worker_id, uuid.uuid4()))
    assert sim.workers[1].neutral_until == fleet.event_now + 180
    assert sim.workers[0].neutral_until < 0 and sim.workers[2].neutral_until < 0
    summary = fleet.stats.as_dict()
    assert summary["commands"] == {"break_prompt": 1}
    assert (summary["acks_sent"], summary["rests_sent"], summary["breaks_taken"]) == (1, 1, 1)
    assert len(device.reply_mids) == 2  # ack and rest queued for devices/{id}/ack


def test_duplicates_and_garbage_are_counted_not_answered(loop: asyncio.AbstractEventLoop) -> None:
    fleet, device, _ = fleet_with_device(loop, DevicePolicy(ack_share=1.0))
    received = []
    fleet.on_receipt = received.append
    payload = break_prompt(device.device_id, device.worker_id, uuid.uuid4())
    fleet.handle_command(device, payload)
    fleet.handle_command(device, payload)
    fleet.handle_command(device, b"\xff not json")
    summary = fleet.stats.as_dict()
    assert (summary["acks_sent"], summary["duplicate_commands"], summary["rejected_commands"]) == (1, 1, 1)
    assert [r.duplicate for r in received] == [False, True]
