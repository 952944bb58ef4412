"""The checkpoint protocol without a broker: order of effects, and a failure that loses nothing.

The collaborators (InfluxDB sink, changelog, output topics, group commit) are recorders here; the
integration tests run the same protocol against Apache Kafka and InfluxDB.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from strainwatch.exposure import ExposureEngine, load_thresholds
from strainwatch.processor.checkpoint import Checkpointer
from strainwatch.processor.positions import PartitionPositions
from strainwatch.processor.record import WorkerRecord
from strainwatch.processor.runtime import Runtime, RuntimeConfig
from tests.support import aligned_start, encode, frame

pytestmark = pytest.mark.unit

HIGH = {
    "trunk_flexion": 70.0,
    "neck_flexion": 50.0,
    "arm_elevation_left": 100.0,
    "arm_elevation_right": 100.0,
}


class Recorder:
    """Every effect in the order it happened; `fail` names effects that raise once."""

    def __init__(self) -> None:
        self.effects: list[tuple[str, Any]] = []
        self.fail: set[str] = set()
        self.buffer: list[str] = []
        self.hold_sends: asyncio.Event | None = None

    def _maybe_fail(self, effect: str) -> None:
        if effect in self.fail:
            self.fail.discard(effect)
            raise RuntimeError(f"{effect} failed")

    # the sink's interface
    def add(self, lines: list[str]) -> None:
        self.buffer.extend(lines)

    async def flush(self, *, give_up_when_stopping: bool = False) -> int:
        lines, self.buffer = self.buffer, []
        try:
            self._maybe_fail("points")
        except RuntimeError:
            self.buffer = lines + self.buffer  # as InfluxSink does: unwritten points stay
            raise
        self.effects.append(("points", len(lines)))
        return len(lines)

    async def write_records(self, payloads: list[tuple[str, WorkerRecord, bytes]]) -> list[Any]:
        self._maybe_fail("records")
        self.effects.append(("records", sorted(worker for worker, _, _ in payloads)))
        return []

    async def send_output(self, role: str, key: bytes | None, value: bytes) -> Any:
        if self.hold_sends is not None:
            await self.hold_sends.wait()
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if f"output:{role}" in self.fail:
            self.fail.discard(f"output:{role}")
            delivery.set_exception(RuntimeError(f"{role} not delivered"))
        else:
            delivery.set_result(None)
            self.effects.append(("output", role))
        return delivery

    async def commit(self, positions: dict[int, int]) -> bool:
        self._maybe_fail("commit")
        self.effects.append(("commit", dict(positions)))
        return True


def setup() -> tuple[Runtime, PartitionPositions, Recorder, Checkpointer]:
    engine = ExposureEngine(load_thresholds("default"), window_s=10)
    runtime = Runtime(engine, RuntimeConfig(), load=lambda worker: None)
    positions = PartitionPositions()
    positions.start(0, 0)
    recorder = Recorder()
    checkpointer = Checkpointer(
        runtime,
        positions,
        recorder,  # type: ignore[arg-type]
        write_records=recorder.write_records,
        send_output=recorder.send_output,
        commit=recorder.commit,
    )
    return runtime, positions, recorder, checkpointer


def feed(
    runtime: Runtime, positions: PartitionPositions, worker: str, seconds: range, angles: Any = HIGH
) -> None:
    start = aligned_start()
    for second in seconds:
        offset = positions.position(0)
        doc = frame(worker, start + timedelta(seconds=second), angles=angles)
        runtime.on_message(worker.encode(), encode(doc), 0, offset)
        positions.advance(0, offset + 1)


def test_points_then_records_then_outputs_then_the_commit() -> None:
    runtime, positions, recorder, checkpointer = setup()
    feed(runtime, positions, "w-1", range(25))

    assert asyncio.run(checkpointer.run("test")) is True
    kinds = [kind for kind, _ in recorder.effects]
    assert kinds.index("points") < kinds.index("records") < kinds.index("commit")
    assert kinds[-1] == "commit"
    assert ("output", "window") in recorder.effects  # two closed windows went out before the commit
    assert recorder.effects[-1] == ("commit", {0: 25})


@pytest.mark.parametrize(
    "failing",
    ["points", "records", "commit", "output:window", "points+output:window", "records+output:window"],
)
def test_a_failed_checkpoint_keeps_its_work_for_the_next(failing: str) -> None:
    runtime, positions, recorder, checkpointer = setup()
    feed(runtime, positions, "w-1", range(25))
    feed(runtime, positions, "w-2", range(25))
    recorder.fail.update(failing.split("+"))

    async def until_one_succeeds() -> list[bool]:
        results = [await checkpointer.run("first")]
        while not results[-1] and len(results) < 3:  # each injected failure fails one checkpoint
            results.append(await checkpointer.run("retry"))
        return results

    results = asyncio.run(until_one_succeeds())
    assert results[0] is False  # nothing acknowledged on a failure
    assert results[-1] is True
    commits = [value for kind, value in recorder.effects if kind == "commit"]
    assert commits == [{0: 50}], "a later checkpoint commits everything, once"
    assert positions.uncommitted() == {}
    # both workers' records reached the changelog after (or in) the retry
    written = {w for kind, value in recorder.effects if kind == "records" for w in value}
    assert written == {"w-1", "w-2"}
    last_records = max(i for i, (kind, _) in enumerate(recorder.effects) if kind == "records")
    assert recorder.effects[last_records][1] == ["w-1", "w-2"]
    # every window message went out and was confirmed (the failed one sent again)
    assert [v for k, v in recorder.effects if k == "output"].count("window") == 4
    assert recorder.buffer == []  # no point left unwritten


def test_outputs_still_being_sent_are_awaited_before_the_commit() -> None:
    """The agent's publish may be mid-send when a timer checkpoint starts: the checkpoint must not
    commit the frames whose outputs are not yet confirmed."""
    runtime, positions, recorder, checkpointer = setup()
    feed(runtime, positions, "w-1", range(12))  # closes one window: one output

    async def race() -> list[tuple[str, Any]]:
        recorder.hold_sends = asyncio.Event()
        publishing = asyncio.create_task(checkpointer.publish())
        await asyncio.sleep(0)  # the publish has taken the outputs and waits in its send
        checkpoint = asyncio.create_task(checkpointer.run("timer"))
        await asyncio.sleep(0)
        assert not checkpoint.done()
        recorder.hold_sends.set()
        await publishing
        assert await checkpoint is True
        return recorder.effects

    effects = asyncio.run(race())
    kinds = [kind for kind, _ in effects]
    assert kinds.index("output") < kinds.index("commit")
