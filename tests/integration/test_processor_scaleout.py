"""Scale-out and rebalances on Apache Kafka: several processor instances in one group.

Each scenario consumes the same pre-produced frames with a fresh group into a fresh database and
must end with every exposure point and every alert identical to one uninterrupted single-instance
run of those frames; the group's committed offsets must reach the log end within a few
checkpoints once the stream drains; and whatever a restart or rebalance replays must stay within
about one checkpoint's worth of frames.

These run in `make faults` (marker `faults`); the kill during a rebalance runs 8 times, so a
1-in-4 failure would show with probability 1 - 0.75**8 = 90 %.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from strainwatch.stack.procs import stop
from strainwatch.storage.influxql import InfluxQL
from tests.integration.conftest import Broker, Influx, ProcessorProc, processor_env, start_broker
from tests.integration.pipeline import (
    all_points,
    committed_behind,
    log_events,
    produce,
    stored_frames,
    window_diff,
    workload,
)
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

WORKERS, SECONDS = 240, 150  # 36,000 frames: long enough to join, leave and kill mid-stream
CHECKPOINT_FRAMES = 1_500  # STRAINWATCH_MAX_PENDING_FRAMES: a checkpoint at least this often
# a restart resumes at the last commit: it replays what came after, at most about one checkpoint
# (plus what the agent scored while that checkpoint was being written)
REPLAY_BOUND = 2 * CHECKPOINT_FRAMES + 1_000


@dataclass
class Stream:
    """A broker holding the workload, and the reference: one uninterrupted instance's results."""

    broker: Broker
    influx: Influx
    total: int
    reference: InfluxQL
    workdir: Path


@dataclass
class Group:
    """Processor instances of one scenario: one group, one database."""

    stream: Stream
    workdir: Path
    database: str = field(default_factory=lambda: "")
    group: str = field(default_factory=lambda: f"proc-{uuid.uuid4().hex[:8]}")
    procs: dict[str, list[ProcessorProc]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.database = self.stream.influx.new_database()
        self.ql = self.stream.influx.ql(self.database)

    def start(self, name: str) -> ProcessorProc:
        env = processor_env(
            self.stream.broker,
            self.stream.influx,
            self.database,
            self.workdir / name,
            STRAINWATCH_PROCESSOR_GROUP=self.group,
            STRAINWATCH_MAX_PENDING_FRAMES=str(CHECKPOINT_FRAMES),
        )
        runs = self.procs.setdefault(name, [])
        self.workdir.mkdir(parents=True, exist_ok=True)
        proc = ProcessorProc(env, self.workdir / f"{name}-{len(runs)}.log")
        proc.start()
        runs.append(proc)
        return proc

    def current(self, name: str) -> ProcessorProc:
        return self.procs[name][-1]

    def running(self) -> list[ProcessorProc]:
        return [runs[-1] for runs in self.procs.values() if runs[-1].running()]

    def stored(self) -> int:
        return stored_frames(self.ql)

    def wait_stored(self, fraction: float) -> None:
        want = int(self.stream.total * fraction)
        wait_for(lambda: self._alive() and self.stored() >= want, timeout_s=180, what=f"{want} frames stored")

    def _alive(self) -> bool:
        if not self.running():
            pytest.fail("no processor instance is running:\n" + self.logs())
        return True

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.log_path.name}\n{p.log()[-2500:]}" for runs in self.procs.values() for p in runs
        )

    def finish(self) -> dict[str, Any]:
        """Wait for every frame and for the commits, stop all with SIGTERM; return the counters."""
        total = self.stream.total
        try:
            wait_for(lambda: self._alive() and self.stored() >= total, timeout_s=240, what=f"{total} frames")
        except AssertionError as error:
            raise AssertionError(
                f"{error}; {window_diff(self.stream.reference, self.ql)}\n{self.logs()}"
            ) from None
        # the stream has drained: the group's commits reach the log end within a few checkpoints
        wait_for(
            lambda: not any(committed_behind(self.stream.broker.bootstrap, self.group).values()),
            timeout_s=10,
            what="committed offsets at the log end",
        )
        # an instance restarted late may still be importing: a SIGTERM before its handlers exist
        # kills it with the default action, which is the interpreter's, not the processor's
        for proc in self.running():
            wait_for(
                lambda: not proc.running() or bool(log_events(proc.full_log(), "exposure engine")),  # noqa: B023
                timeout_s=60,
                what=f"{proc.log_path.name} past its imports",
            )
        for proc in self.running():
            assert proc.terminate(timeout_s=30) == 0, proc.log()
        stopped = [
            e
            for runs in self.procs.values()
            for p in runs
            for e in log_events(p.full_log(), "processor stopped cleanly")
        ]
        counters = {
            "replayed": sum(int(e["replayed"]) for e in stopped),
            # faust's consumer is paused on the posture topic at every assignment: the reader reads
            "faust_deliveries": sum(int(e["faust_deliveries"]) for e in stopped),
            "clean_stops": len(stopped),
        }
        # after every rebalance of the run, the pause held: not one frame reached faust's stream
        assert counters["faust_deliveries"] == 0, counters
        return counters

    def assert_identical_to_reference(self) -> None:
        reference = self.stream.reference
        assert stored_frames(self.ql) == self.stream.total, window_diff(reference, self.ql)
        assert all_points(self.ql, "exposure") == all_points(reference, "exposure"), window_diff(
            reference, self.ql
        )
        hours = all_points(reference, "exposure_hourly")
        assert hours, "the hourly rollup should be written"
        assert all_points(self.ql, "exposure_hourly") == hours
        alerts = all_points(reference, "break_alert")
        assert alerts, "the workload should raise alerts"
        assert all_points(self.ql, "break_alert") == alerts

    def stop_all(self) -> None:
        for runs in self.procs.values():
            for proc in runs:
                proc.stop()


def _stream(partitions: int, influx: Influx, workdir: Path) -> Iterator[Stream]:
    broker = start_broker("kafka", workdir / "broker", partitions=partitions)
    try:
        messages = workload(workers=WORKERS, seconds=SECONDS)
        produce(broker.bootstrap, messages)
        stream = Stream(broker, influx, len(messages), influx.ql(influx.new_database()), workdir)
        reference = Group(stream, workdir / "reference")
        stream.reference = reference.ql
        try:
            reference.start("single")
            counters = reference.finish()
        finally:
            reference.stop_all()
        assert counters["replayed"] == 0, counters
        yield stream
    finally:
        stop(broker.proc)


@pytest.fixture(scope="module")
def six_partitions(influx: Influx, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stream]:
    yield from _stream(6, influx, tmp_path_factory.mktemp("six"))


@pytest.fixture(scope="module")
def two_partitions(influx: Influx, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stream]:
    yield from _stream(2, influx, tmp_path_factory.mktemp("two"))


@pytest.fixture
def group_on_six(six_partitions: Stream, tmp_path: Path) -> Iterator[Group]:
    group = Group(six_partitions, tmp_path)
    yield group
    group.stop_all()


def test_two_instances_from_the_start(group_on_six: Group) -> None:
    """Partitions more than instances: 6 partitions over 2 instances."""
    group_on_six.start("a")
    group_on_six.start("b")
    counters = group_on_six.finish()
    group_on_six.assert_identical_to_reference()
    assert counters["clean_stops"] == 2
    assert counters["replayed"] <= REPLAY_BOUND, counters


def test_a_second_and_a_third_join_mid_stream(group_on_six: Group) -> None:
    group_on_six.start("a")
    group_on_six.wait_stored(0.15)
    group_on_six.start("b")
    group_on_six.wait_stored(0.4)
    group_on_six.start("c")
    counters = group_on_six.finish()
    group_on_six.assert_identical_to_reference()
    # two rebalances, each behind a revoke checkpoint that committed: little or nothing replays
    assert counters["replayed"] <= 2 * REPLAY_BOUND, counters
    for name in ("a", "b", "c"):
        assert log_events(group_on_six.current(name).full_log(), "partitions assigned"), name


def test_one_leaves_with_sigterm_mid_stream(group_on_six: Group) -> None:
    group_on_six.start("a")
    leaving = group_on_six.start("b")
    group_on_six.wait_stored(0.3)
    assert leaving.terminate(timeout_s=30) == 0, leaving.log()
    assert log_events(leaving.full_log(), "processor stopped cleanly"), leaving.log()
    counters = group_on_six.finish()
    group_on_six.assert_identical_to_reference()
    # the leaver committed everything it had before it left: the survivor replays next to nothing
    assert counters["replayed"] <= REPLAY_BOUND, counters


@pytest.mark.parametrize("run", range(8))
def test_one_killed_during_a_rebalance(group_on_six: Group, run: int) -> None:
    """A third instance joins; one of the two running ones is killed while the group rebalances:
    at the revocation (its revoke checkpoint may be half written) in even runs, just after its new
    assignment (table recovery, first fetches) in odd runs."""
    a = group_on_six.start("a")
    b = group_on_six.start("b")
    group_on_six.wait_stored(0.15 + 0.05 * (run % 4))
    victim = (a, b)[run % 2]
    event = "partitions revoked" if run % 2 == 0 else "partitions assigned"
    seen = len(log_events(victim.full_log(), event))
    group_on_six.start("c")
    wait_for(
        lambda: len(log_events(victim.full_log(), event)) > seen or not victim.running(),
        timeout_s=60,
        what=f"the victim's '{event}' after the third instance joined",
        interval_s=0.01,
    )
    victim.kill9()
    group_on_six.start("a" if victim is a else "b")
    counters = group_on_six.finish()
    group_on_six.assert_identical_to_reference()
    assert counters["replayed"] <= 2 * REPLAY_BOUND, counters


def test_instances_more_than_partitions(two_partitions: Stream, tmp_path: Path) -> None:
    """3 instances on 2 partitions: one idles; killing a busy one hands its partition over."""
    group = Group(two_partitions, tmp_path)
    try:
        procs = [group.start(name) for name in ("a", "b", "c")]
        # The first to join owns both partitions until the others' joins are rebalanced, and may
        # store a good share of the stream by then: wait until all three have been assigned in
        # one settled group (two with a partition, one idle), then for some frames stored.
        wait_for(
            lambda: (
                group._alive()
                and all(log_events(p.full_log(), "partitions assigned") for p in procs)
                and sum(_owns_partitions(p) for p in procs) == 2
            ),
            timeout_s=120,
            what="two of three instances owning a partition, the third idle",
        )
        group.wait_stored(0.2)
        busy = [p for p in procs if _owns_partitions(p)]
        assert len(busy) == 2, "two of three instances should own a partition:\n" + group.logs()
        busy[0].kill9()
        counters = group.finish()
        group.assert_identical_to_reference()
        assert counters["replayed"] <= REPLAY_BOUND, counters
    finally:
        group.stop_all()


def _owns_partitions(proc: ProcessorProc) -> bool:
    assigned = log_events(proc.full_log(), "partitions assigned")
    return bool(assigned and assigned[-1].get("partitions"))
