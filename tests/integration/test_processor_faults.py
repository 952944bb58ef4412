"""Faults on Apache Kafka (Tansu keeps nothing across restarts) and the real InfluxDB.

- `kill -9` mid-stream, restart: the same InfluxDB points and alerts as an uninterrupted run.
- InfluxDB stopped for 20 s while frames flow: nothing missing once it returns.
- SIGTERM: the processor stops within 30 s with state and points flushed; a restart adds nothing twice.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from strainwatch.storage.influxql import InfluxQL
from tests.integration.conftest import Broker, Influx, processor_env
from tests.integration.pipeline import (
    all_points,
    committed_behind,
    log_events,
    produce,
    stored_frames,
    window_diff,
    workload,
)
from tests.support import aligned_start, encode, frame, wait_for

pytestmark = pytest.mark.integration


def run_to_completion(
    run_processor: Any,
    env: dict[str, str],
    ql: InfluxQL,
    total: int,
    reference: InfluxQL | None = None,
) -> Any:
    proc = run_processor(env)
    try:
        wait_for(
            lambda: (proc.running() or pytest.fail(proc.log())) and stored_frames(ql) >= total,
            timeout_s=180,
            what=f"{total} frames stored",
        )
    except AssertionError as error:
        # say which windows differ from the reference run: the count alone does not tell why
        diff = f"; {window_diff(reference, ql)}" if reference is not None else ""
        raise AssertionError(f"{error}; stored {stored_frames(ql)}{diff}\n{proc.log()[-3000:]}") from None
    assert proc.terminate() == 0, proc.log()
    return proc


def test_kill_9_mid_stream_gives_the_same_results(
    kafka: Broker, influx: Influx, run_processor: Any, tmp_path: Path
) -> None:
    messages = workload(workers=150, seconds=150)
    total = len(messages)
    produce(kafka.bootstrap, messages)

    reference_db = influx.new_database()
    reference = influx.ql(reference_db)
    run_to_completion(
        run_processor, processor_env(kafka, influx, reference_db, tmp_path / "ref"), reference, total
    )

    crash_db = influx.new_database()
    crashed = influx.ql(crash_db)
    env = processor_env(kafka, influx, crash_db, tmp_path / "crash", STRAINWATCH_MAX_PENDING_FRAMES="1500")
    first = run_processor(env)
    at_kill = wait_for(
        lambda: (first.running() or pytest.fail(first.log())) and stored_frames(crashed),
        timeout_s=120,
        what="a first checkpoint",
        interval_s=0.02,
    )
    first.kill9()
    assert at_kill < total, "the processor finished before it could be killed mid-stream: use more frames"
    last = run_to_completion(run_processor, env, crashed, total, reference)

    assert stored_frames(crashed) == total
    assert all_points(crashed, "exposure") == all_points(reference, "exposure")
    reference_hours = all_points(reference, "exposure_hourly")
    assert reference_hours, "the hourly rollup should be written"
    assert all_points(crashed, "exposure_hourly") == reference_hours
    reference_alerts = all_points(reference, "break_alert")
    assert reference_alerts, "the workload should raise alerts"
    assert all_points(crashed, "break_alert") == reference_alerts

    # faust's consumer is paused on the posture topic: the reader read every frame, faust none
    stopped = log_events(last.full_log(), "processor stopped cleanly")
    assert stopped and all(e["faust_deliveries"] == 0 for e in stopped), last.log()


def test_influxdb_outage_loses_nothing(
    kafka: Broker, influx: Influx, run_processor: Any, tmp_path: Path
) -> None:
    before = workload(workers=40, seconds=60)
    during = workload(workers=40, seconds=60, offset_s=60)
    database = influx.new_database()
    ql = influx.ql(database)
    proc = run_processor(processor_env(kafka, influx, database, tmp_path / "state"))
    produce(kafka.bootstrap, before)
    wait_for(lambda: stored_frames(ql) >= len(before), timeout_s=120, what="frames before the outage")

    influx.stop_influxd()
    try:
        produce(kafka.bootstrap, during)
        outage_end = time.monotonic() + 20.0
        while time.monotonic() < outage_end:  # the scenario: 20 s without InfluxDB
            assert proc.running(), proc.log()
            time.sleep(0.5)
    finally:
        influx.start_influxd()
    total = len(before) + len(during)
    wait_for(lambda: stored_frames(ql) >= total, timeout_s=120, what="every frame after the outage")
    assert proc.terminate() == 0, proc.log()
    assert stored_frames(ql) == total
    assert ql.scalar('SELECT SUM("samples_trunk_flexion") FROM "windows"."exposure"') == total * 10
    assert "influx_write_unavailable" in proc.log()  # the outage, logged once (ops/retry.py)


def test_sigterm_flushes_and_restart_adds_nothing_twice(
    kafka: Broker, influx: Influx, run_processor: Any, tmp_path: Path
) -> None:
    messages = workload(workers=100, seconds=120)
    total = len(messages)
    produce(kafka.bootstrap, messages)
    database = influx.new_database()
    ql = influx.ql(database)
    env = processor_env(kafka, influx, database, tmp_path / "state", STRAINWATCH_CHECKPOINT_INTERVAL_S="30")
    first = run_processor(env)
    wait_for(
        lambda: "partitions assigned" in first.log() or stored_frames(ql) or None,
        timeout_s=60,
        what="the processor to start consuming",
    )
    started = time.monotonic()
    assert first.terminate(timeout_s=30) == 0, first.log()
    assert time.monotonic() - started < 30
    assert "processor stopped cleanly" in first.log()
    second = run_to_completion(run_processor, env, ql, total)
    assert stored_frames(ql) == total
    assert ql.scalar('SELECT SUM("samples_arm_elevation_right") FROM "windows"."exposure"') == total * 10
    # the first instance committed all it had consumed before it stopped: nothing is replayed, and
    # after the second's SIGTERM the group's offsets stand at the log end
    stopped = log_events(second.full_log(), "processor stopped cleanly")
    assert stopped and stopped[-1]["replayed"] == 0, second.log()
    assert not any(committed_behind(kafka.bootstrap, env["STRAINWATCH_PROCESSOR_GROUP"]).values())


def test_sigterm_with_the_broker_gone_still_stops_within_30_s(
    kafka: Broker, influx: Influx, run_processor: Any, tmp_path: Path
) -> None:
    from strainwatch.stack.procs import stop

    messages = workload(workers=10, seconds=20)
    produce(kafka.bootstrap, messages)
    database = influx.new_database()
    ql = influx.ql(database)
    proc = run_processor(processor_env(kafka, influx, database, tmp_path / "state"))
    wait_for(lambda: stored_frames(ql) >= len(messages), timeout_s=120, what="frames stored")
    stop(kafka.proc)
    started = time.monotonic()
    proc.terminate(timeout_s=30)
    assert time.monotonic() - started < 30


def test_frames_buffered_before_a_kill_are_scored_after_the_restart(
    kafka: Broker, influx: Influx, run_processor: Any, tmp_path: Path
) -> None:
    """A worker's last frame arrives after a gap that never fills, and the worker sends nothing
    more: the frame waits in the reorder buffer (persisted with the record) until the lateness has
    passed. A kill -9 meanwhile must not strand it: the restarted instance scores it too."""
    start = aligned_start(hours_ago=1)
    messages = [(b"w-gap", encode(frame("w-gap", start + timedelta(seconds=s)))) for s in [*range(10), 11]]
    produce(kafka.bootstrap, messages)
    database = influx.new_database()
    ql = influx.ql(database)
    env = processor_env(kafka, influx, database, tmp_path / "state", STRAINWATCH_ALLOWED_LATENESS_S="15")
    first = run_processor(env)
    # frames 0-9 stored and the record (with frame 11 in its buffer) checkpointed and committed
    wait_for(
        lambda: (
            (first.running() or pytest.fail(first.log()))
            and not any(committed_behind(kafka.bootstrap, env["STRAINWATCH_PROCESSOR_GROUP"]).values())
            and stored_frames(ql) == 10
        ),
        timeout_s=60,
        what="ten frames stored and every offset committed",
    )
    first.kill9()
    assert stored_frames(ql) == 10, "frame 11 must still be waiting for the gap"
    second = run_processor(env)
    wait_for(
        lambda: (second.running() or pytest.fail(second.log())) and stored_frames(ql) == 11,
        timeout_s=90,
        what="the buffered frame scored after the restart",
    )
    assert second.terminate() == 0, second.log()
