"""The processor's ops surface on real components (docs/operations.md): /healthz, /readyz and
/metrics; a broker down at start and for 60 s mid-stream (`faults`); InfluxDB refusing writes for
good (404: missing database; 401 from a stand-in, the local InfluxDB runs without auth); SIGTERM with
the broker up and down, and a second signal."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from strainwatch.stack import components
from strainwatch.stack.procs import free_port, stop
from tests.integration.conftest import Broker, Influx, processor_env
from tests.integration.pipeline import (
    all_points,
    committed_behind,
    log_events,
    produce,
    stored_frames,
    workload,
)
from tests.integration.test_processor_faults import run_to_completion
from tests.support import wait_for

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def readyz(base: str) -> tuple[int, dict[str, Any]]:
    status, body = get(f"{base}/readyz")
    return status, (json.loads(body) if body else {})


def metrics(base: str) -> dict[str, float]:
    """`name{labels}` -> value of every strainwatch_ sample."""
    status, body = get(f"{base}/metrics")
    assert status == 200
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("strainwatch_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def ops_env(**extra: str) -> tuple[str, dict[str, str]]:
    port = free_port()
    return f"http://127.0.0.1:{port}", {"STRAINWATCH_OPS_BIND": f"127.0.0.1:{port}", **extra}


def restart_kafka(kafka: Broker, state: Path) -> None:
    """The same broker again: same port, controller port and data directory."""
    props = (state / "kafka" / "server.properties").read_text()
    found = re.search(r"controller\.quorum\.bootstrap\.servers=127\.0\.0\.1:(\d+)", props)
    assert found, props
    port = int(kafka.bootstrap.rsplit(":", 1)[1])
    kafka.proc = components.start_kafka(state, port, int(found.group(1)))


def events(proc: Any, name: str) -> list[dict[str, Any]]:
    # faust's start-up spinner may put terminal escapes before a JSON line
    text = "\n".join(line[line.find("{") :] for line in proc.full_log().splitlines() if "{" in line)
    return log_events(text, name)


def test_endpoints_and_metrics(kafka: Broker, influx: Influx, run_processor: Any, tmp_path: Path) -> None:
    messages = workload(workers=20, seconds=30)
    bad = [(b"w-bad", b"not json"), (b"w-bad", b'{"schema_version": 1}')]
    produce(kafka.bootstrap, messages + bad)
    database = influx.new_database()
    ql = influx.ql(database)
    base, extra = ops_env()
    proc = run_processor(processor_env(kafka, influx, database, tmp_path / "state", **extra))

    assert wait_for(lambda: get(f"{base}/healthz")[0] == 200, timeout_s=60, what="/healthz")
    _status, snap = wait_for(
        lambda: (proc.running() or pytest.fail(proc.log())) and readyz(base)[0] == 200 and readyz(base),
        timeout_s=60,
        what="/readyz 200",
    )
    assert snap["ready"] is True and snap["service"] == "processor"
    assert set(snap["checks"]) == {"kafka", "partitions", "sink", "checkpoint"}
    assert snap["checks"]["partitions"]["detail"] == "4 partitions assigned"
    wait_for(lambda: stored_frames(ql) >= len(messages), timeout_s=120, what="frames stored")

    def settled() -> dict[str, float] | None:
        m = metrics(base)
        svc = '{service="processor"}'
        return (
            m
            if m.get(f"strainwatch_consumer_lag{svc}") == 0
            and m.get(f"strainwatch_checkpoint_age_seconds{svc}") == 0
            else None
        )

    m = wait_for(settled, timeout_s=60, what="lag and checkpoint age 0")
    svc = '{service="processor"}'
    assert m[f"strainwatch_consumed_total{svc}"] == len(messages) + len(bad)
    assert m[f"strainwatch_processed_total{svc}"] == len(messages)
    dead = {k: v for k, v in m.items() if k.startswith("strainwatch_dead_lettered_total")}
    assert sum(dead.values()) == 2, dead
    assert m[f"strainwatch_sink_write_errors_total{svc}"] == 0
    assert m[f"strainwatch_end_to_end_delay_seconds_count{svc}"] == len(messages)
    # the workload's frames are 4 hours old: every delay is in the top buckets
    assert m['strainwatch_end_to_end_delay_seconds_bucket{le="3600.0",service="processor"}'] == 0
    assert proc.terminate() == 0, proc.log()
    assert events(proc, "ops server started")[0]["url"] == base


def test_default_bind_is_loopback_and_bad_bind_exits_2(kafka: Broker, influx: Influx, tmp_path: Path) -> None:
    env = {**os.environ, **processor_env(kafka, influx, "unused", tmp_path / "state")}
    env.pop("STRAINWATCH_OPS_BIND", None)
    for argv, value in ((["--ops-bind", "nohost:99999"], None), ([], "1.2.3.4:x")):
        if value is not None:
            env["STRAINWATCH_OPS_BIND"] = value
        result = subprocess.run(
            [sys.executable, "-m", "strainwatch.cli", "processor", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert "ops bind" in result.stderr


def test_broker_down_at_start_waits_then_runs(
    kafka: Broker, influx: Influx, run_processor: Any, tmp_path: Path
) -> None:
    stop(kafka.proc)
    database = influx.new_database()
    ql = influx.ql(database)
    base, extra = ops_env()
    proc = run_processor(processor_env(kafka, influx, database, tmp_path / "state", **extra))
    _status, _snap = wait_for(
        lambda: (proc.running() or pytest.fail(proc.log())) and readyz(base)[0] == 503 and readyz(base),
        timeout_s=60,
        what="/readyz 503",
    )
    wait_for(lambda: readyz(base)[1]["checks"]["kafka"]["ok"] is False, timeout_s=30, what="kafka check")
    assert get(f"{base}/healthz")[0] == 200
    # 20 s without a broker: still running, the outage logged once
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.running(), proc.log()
        time.sleep(0.5)
    assert len(events(proc, "kafka_unavailable")) == 1, proc.log()

    restart_kafka(kafka, tmp_path / "broker")
    messages = workload(workers=10, seconds=30)
    produce(kafka.bootstrap, messages)
    wait_for(lambda: stored_frames(ql) >= len(messages), timeout_s=120, what="frames after the broker came")
    wait_for(lambda: readyz(base)[0] == 200, timeout_s=60, what="/readyz 200")
    assert len(events(proc, "kafka_recovered")) == 1
    assert proc.terminate() == 0, proc.log()
    assert stored_frames(ql) == len(messages)


def test_missing_database_is_fatal_and_nothing_is_committed(
    kafka: Broker, influx: Influx, run_processor: Any, tmp_path: Path
) -> None:
    messages = workload(workers=10, seconds=30)
    produce(kafka.bootstrap, messages)
    missing = "t_missing_" + os.urandom(4).hex()  # never created: InfluxDB answers 404
    base, extra = ops_env()
    env = processor_env(kafka, influx, missing, tmp_path / "state", **extra)
    proc = run_processor(env)
    status, snap = wait_for(
        lambda: (
            (proc.running() or pytest.fail(proc.log()))
            and readyz(base)[1].get("checks", {}).get("sink", {}).get("fatal")
            and readyz(base)
        ),
        timeout_s=90,
        what="a fatal sink check",
    )
    assert status == 503 and snap["ready"] is False
    sink = snap["checks"]["sink"]
    assert sink["ok"] is False and "404" in sink["detail"] and "database not found" in sink["detail"]
    # stays so: not retried, nothing acknowledged, no more frames taken
    halted = wait_for(
        lambda: events(proc, "processor halted: not consuming until restarted"), timeout_s=30, what="halt"
    )
    assert halted
    consumed = metrics(base)['strainwatch_consumed_total{service="processor"}']
    checked = time.monotonic()
    while time.monotonic() - checked < 8:  # several checkpoint intervals and health reports
        assert proc.running(), proc.log()
        assert readyz(base)[1]["checks"]["sink"]["fatal"] is True
        time.sleep(0.5)
    assert metrics(base)['strainwatch_consumed_total{service="processor"}'] == consumed
    errors = events(proc, "influx_write_failed")
    assert len(errors) == 1, proc.log()  # one error, naming the cause
    assert "404" in errors[0]["error"] and "database" in errors[0]["error"] and errors[0]["retried"] is False
    assert errors[0]["level"] == "error"
    behind = committed_behind(kafka.bootstrap, env["STRAINWATCH_PROCESSOR_GROUP"])
    assert sum(behind.values()) == len(messages), behind  # no offset committed at all
    assert proc.terminate() == 3, proc.log()  # stopped with work it could not persist


def test_unauthorized_write_is_fatal_at_once(
    kafka: Broker, influx: Influx, run_processor: Any, tmp_path: Path
) -> None:
    """A stand-in for an InfluxDB with authentication (the local one runs without): it answers every
    write 401 as InfluxDB 2.x does for a bad token, and records the requests."""
    from tests.integration.influx_standin import StandIn

    messages = workload(workers=5, seconds=20)
    produce(kafka.bootstrap, messages)
    with StandIn(status=401, body=b'{"code":"unauthorized","message":"unauthorized access"}') as standin:
        base, extra = ops_env(STRAINWATCH_INFLUX_TOKEN="bad-token-for-test")
        env = processor_env(kafka, influx, "plant", tmp_path / "state", **extra)
        env["STRAINWATCH_INFLUX_URL"] = standin.url
        proc = run_processor(env)
        wait_for(
            lambda: (
                (proc.running() or pytest.fail(proc.log()))
                and readyz(base)[1].get("checks", {}).get("sink", {}).get("fatal")
            ),
            timeout_s=90,
            what="a fatal sink check",
        )
        detail = readyz(base)[1]["checks"]["sink"]["detail"]
        assert "401" in detail and "token" in detail
        errors = events(proc, "influx_write_failed")
        assert len(errors) == 1 and "401" in errors[0]["error"], proc.log()
        requests = standin.requests()
        assert requests, "the processor never wrote"
        for method, path, query, auth in requests:
            assert (method, path) == ("POST", "/api/v2/write")
            assert query["precision"] == ["s"] and query["bucket"][0] in ("plant", "plant/windows")
            assert auth == "Token bad-token-for-test"
        # not retried: one request per sink (the points' and the health points'), none after
        count = len(requests)
        assert count <= 2, requests
        assert proc.terminate() in (0, 3), proc.log()
        assert len(standin.requests()) == count


def test_sigterm_broker_up_commits_and_exits_0(
    kafka: Broker, influx: Influx, run_processor: Any, tmp_path: Path
) -> None:
    messages = workload(workers=50, seconds=60)
    produce(kafka.bootstrap, messages)
    database = influx.new_database()
    ql = influx.ql(database)
    base, ops = ops_env(STRAINWATCH_CHECKPOINT_INTERVAL_S="30")
    env = processor_env(kafka, influx, database, tmp_path / "state", **ops)
    proc = run_processor(env)
    consumed_metric = 'strainwatch_consumed_total{service="processor"}'

    def consuming() -> bool:
        assert proc.running(), proc.log()
        if get(f"{base}/metrics")[0] != 200:
            return False  # the ops server is not up yet
        return metrics(base).get(consumed_metric, 0) > 0

    # SIGTERM with work consumed but not yet checkpointed (the interval is 30 s)
    wait_for(consuming, timeout_s=60, what="frames consumed", interval_s=0.05)
    started = time.monotonic()
    code = proc.terminate(timeout_s=30)
    took = time.monotonic() - started
    assert code == 0 and took < 30, (code, took, proc.log())
    stopped = events(proc, "processor stopped cleanly")
    assert stopped, proc.log()
    # everything consumed is stored and its offsets committed: what is left is exactly what was not
    consumed = stopped[-1]["frames_in"]
    applied = stopped[-1]["frames_applied"]
    committed = len(messages) - sum(
        committed_behind(kafka.bootstrap, env["STRAINWATCH_PROCESSOR_GROUP"]).values()
    )
    # every frame handed to the runtime (read from the positions, so none passed over) is committed
    # by the final checkpoint; the applied ones among them are stored
    assert applied <= committed == consumed, (applied, committed, consumed, proc.log())
    assert stored_frames(ql) == applied


def test_sigterm_broker_down_commits_nothing_exits_3_within_30_s_then_second_signal(
    kafka: Broker, influx: Influx, run_processor: Any, tmp_path: Path
) -> None:
    messages = workload(workers=10, seconds=30)
    produce(kafka.bootstrap, messages)
    database = influx.new_database()
    ql = influx.ql(database)
    base, extra = ops_env(STRAINWATCH_CHECKPOINT_INTERVAL_S="45")  # no checkpoint before the stop
    env = processor_env(kafka, influx, database, tmp_path / "state", **extra)
    group = env["STRAINWATCH_PROCESSOR_GROUP"]
    consumed = 'strainwatch_consumed_total{service="processor"}'

    def everything_consumed() -> bool:
        assert proc.running(), proc.log()
        return get(f"{base}/metrics")[0] == 200 and metrics(base).get(consumed) == len(messages)

    proc = run_processor(env)
    wait_for(everything_consumed, timeout_s=60, what="every frame consumed")
    stop(kafka.proc)
    started = time.monotonic()
    code = proc.terminate(timeout_s=30)
    took = time.monotonic() - started
    # docs/operations.md: 3 = the final checkpoint could not commit; nothing acknowledged
    assert code == 3 and took < 30, (code, took, proc.log())
    assert not events(proc, "processor stopped cleanly")

    restart_kafka(kafka, tmp_path / "broker")
    assert sum(committed_behind(kafka.bootstrap, group).values()) == len(messages), "nothing committed"
    # A second signal during a slow shutdown exits at once: a processor with work pending whose
    # broker goes away is sent SIGTERM (its final checkpoint waits for the broker), then SIGINT.
    second = run_processor(env)
    proc = second
    wait_for(everything_consumed, timeout_s=90, what="every frame consumed again")
    stop(kafka.proc)
    assert second.popen is not None
    os.killpg(second.popen.pid, signal.SIGTERM)
    wait_for(lambda: events(second, "stopping"), timeout_s=10, what="the shutdown to begin")
    os.killpg(second.popen.pid, signal.SIGINT)
    started = time.monotonic()
    code = second.popen.wait(30)
    assert time.monotonic() - started < 5, second.log()
    assert code == 130, second.log()
    assert events(second, "second signal: exiting at once")

    # and the frames are all there after a restart: the replay is exact
    restart_kafka(kafka, tmp_path / "broker")
    third = run_processor(
        processor_env(kafka, influx, database, tmp_path / "state", STRAINWATCH_PROCESSOR_GROUP=group)
    )
    wait_for(  # (the first run's final checkpoint stored its points: what counts is the commit)
        lambda: (
            (third.running() or pytest.fail(third.log()))
            and not any(committed_behind(kafka.bootstrap, group).values())
        ),
        timeout_s=120,
        what="every frame committed after the restart",
    )
    assert third.terminate() == 0, third.log()
    assert stored_frames(ql) == len(messages)
    assert not any(committed_behind(kafka.bootstrap, group).values())


@pytest.mark.faults
def test_kafka_gone_for_60_s_mid_stream_gives_the_same_results(
    kafka: Broker, influx: Influx, run_processor: Any, tmp_path: Path
) -> None:
    before = workload(workers=100, seconds=150)
    after = workload(workers=100, seconds=60, offset_s=150)
    total = len(before) + len(after)
    produce(kafka.bootstrap, before)

    database = influx.new_database()
    ql = influx.ql(database)
    base, extra = ops_env(STRAINWATCH_MAX_PENDING_FRAMES="1500")
    env = processor_env(kafka, influx, database, tmp_path / "outage", **extra)
    proc = run_processor(env)
    at_stop = wait_for(
        lambda: (proc.running() or pytest.fail(proc.log())) and stored_frames(ql),
        timeout_s=120,
        what="a first checkpoint",
        interval_s=0.02,
    )
    stop(kafka.proc)
    assert at_stop < len(before), "the processor finished before the broker went: use more frames"
    outage_started = time.monotonic()
    wait_for(
        lambda: readyz(base)[0] == 503 and not readyz(base)[1]["checks"]["kafka"]["ok"],
        timeout_s=30,
        what="/readyz shows the broker gone",
    )
    while time.monotonic() - outage_started < 60:  # the scenario: 60 s without Kafka
        assert proc.running(), proc.log()
        assert get(f"{base}/healthz")[0] == 200
        time.sleep(1)
    lines_during = len(proc.full_log().splitlines())
    restart_kafka(kafka, tmp_path / "broker")
    wait_for(lambda: readyz(base)[0] == 200, timeout_s=90, what="/readyz 200 after the outage")
    produce(kafka.bootstrap, after)
    wait_for(
        lambda: (proc.running() or pytest.fail(proc.log())) and stored_frames(ql) >= total,
        timeout_s=240,
        what="every frame after the outage",
    )
    assert proc.terminate() == 0, proc.log()

    log_text = proc.full_log()
    assert len(events(proc, "kafka_unavailable")) == 1, log_text[-3000:]
    assert len(events(proc, "kafka_still_unavailable")) <= 1
    assert len(events(proc, "kafka_recovered")) == 1
    assert lines_during < 400, f"{lines_during} log lines by the end of the outage"

    reference_db = influx.new_database()
    reference = influx.ql(reference_db)
    run_to_completion(
        run_processor, processor_env(kafka, influx, reference_db, tmp_path / "ref"), reference, total
    )
    assert stored_frames(ql) == total
    assert all_points(ql, "exposure") == all_points(reference, "exposure")
    hours = all_points(reference, "exposure_hourly")
    assert hours and all_points(ql, "exposure_hourly") == hours
    alerts = all_points(reference, "break_alert")
    assert alerts and all_points(ql, "break_alert") == alerts


def test_ops_server_over_a_socket_and_its_port_fallback() -> None:
    import asyncio
    import socket

    from strainwatch.ops.metrics import ServiceMetrics
    from strainwatch.ops.readiness import Readiness
    from strainwatch.ops.server import OpsServer

    async def main() -> None:
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            metrics_ = ServiceMetrics("gateway")
            metrics_.consumed.inc(2)
            strict = OpsServer("gateway", f"127.0.0.1:{port}", Readiness(), metrics_.registry)
            with pytest.raises(OSError):
                await strict.start()
            lenient = OpsServer(
                "gateway", f"127.0.0.1:{port}", Readiness(), metrics_.registry, fallback_to_free_port=True
            )
            await lenient.start()
            try:
                assert lenient.port not in (None, port)
                base = lenient.url
                assert base is not None
                loop = asyncio.get_running_loop()
                status, body = await loop.run_in_executor(None, get, f"{base}/metrics")
                assert status == 200 and b'strainwatch_consumed_total{service="gateway"} 2.0' in body
                status, body = await loop.run_in_executor(None, get, f"{base}/readyz")
                assert status == 200 and json.loads(body)["ready"] is True
            finally:
                await lenient.stop()
        finally:
            taken.close()

    asyncio.run(main())


def test_a_burst_is_stored_once_the_stream_goes_quiet_not_at_the_checkpoint_interval(
    kafka: Broker, influx: Influx, run_processor: Any, tmp_path: Path
) -> None:
    """A burst below `max_pending_frames`, with a checkpoint interval far longer than the test
    waits: its points land once nothing has been delivered for a moment (the "caught up"
    checkpoint), not when the interval ends."""
    frames = workload(workers=20, seconds=30)
    database = influx.new_database()
    ql = influx.ql(database)
    env = processor_env(kafka, influx, database, tmp_path / "state", STRAINWATCH_CHECKPOINT_INTERVAL_S="900")
    proc = run_processor(env)
    produce(kafka.bootstrap, frames)
    wait_for(
        lambda: (proc.running() or pytest.fail(proc.log())) and stored_frames(ql) >= len(frames),
        timeout_s=90,
        what=f"{len(frames)} frames stored before the 900 s interval",
    )
    assert proc.terminate() == 0, proc.log()
    assert stored_frames(ql) == len(frames)
