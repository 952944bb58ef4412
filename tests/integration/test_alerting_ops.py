"""`strainwatch alerts run` operated: /healthz, /readyz, /metrics, InfluxDB refusing the bucket,
Kafka gone for a minute (under `make faults`), against real Kafka and InfluxDB."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from strainwatch.stack.components import start_kafka
from strainwatch.stack.procs import free_port, stop
from strainwatch.stack.topics import ensure_topics
from tests.integration.conftest import Broker, Influx
from tests.integration.test_alerting import (
    Receiver,
    alert_doc,
    channels_file,
    committed_to_end,
    env_for,
    now_utc,
    produce,
    read_all,
    roster_entry,
)
from tests.integration.test_alerting import alerts_proc as alerts_proc
from tests.integration.test_alerting import receiver as receiver
from tests.integration.test_gateway_ops import get, metric, readyz
from tests.support import wait_for

pytestmark = pytest.mark.integration


def events(proc: Any, name: str) -> int:
    count = 0
    for line in proc.log_path.read_text(errors="replace").splitlines():
        try:
            if json.loads(line).get("event") == name:
                count += 1
        except ValueError:
            continue
    return count


def ops_env(env: dict[str, str]) -> tuple[dict[str, str], str]:
    port = free_port()
    return {**env, "STRAINWATCH_OPS_BIND": f"127.0.0.1:{port}"}, f"http://127.0.0.1:{port}"


def wait_ready(base: str, proc: Any, timeout_s: float = 90) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        assert proc.popen.poll() is None, proc.log()
        doc = readyz(base)
        return doc if doc and doc["status"] == 200 else None

    return wait_for(ready, timeout_s=timeout_s, what=f"/readyz 200 from alerting; log: {proc.log()}")


def test_endpoints_readiness_and_metrics_count_decisions(
    kafka: Broker, influx: Influx, receiver: Receiver, alerts_proc: Any, tmp_path: Path
) -> None:
    database = influx.new_database()
    env, base = ops_env(env_for(kafka, influx, database, channels_file(tmp_path, receiver.port)))
    proc = alerts_proc(env).start()
    wait_for(lambda: get(f"{base}/healthz")[0] == 200, timeout_s=30, what="/healthz")
    doc = wait_ready(base, proc)
    assert set(doc["checks"]) >= {"kafka", "delivery", "outcomes", "influx"}
    at = now_utc() - timedelta(seconds=5)
    workers = [f"w-{i}" for i in range(10)]
    produce(kafka.bootstrap, "roster.v1", [roster_entry(w) for w in workers])
    alerts = [alert_doc(w, "conditioning_break", at) for w in workers]
    produce(kafka.bootstrap, "alerts.break.v1", [*alerts, {"worker_id": "w-0", "not": "an alert"}])
    wait_for(
        lambda: len(read_all(kafka.bootstrap, "alerts.prompts.v1")) >= 10,
        timeout_s=60,
        what=f"ten decisions; log: {proc.log()}",
    )
    wait_for(lambda: committed_to_end(kafka.bootstrap, "alerts.break.v1"), timeout_s=30, what="commit")
    wait_for(
        lambda: metric(base, "strainwatch_end_to_end_delay_seconds_count", service="alerting") == 10,
        timeout_s=10,
        what="ten end-to-end delays",
    )
    assert metric(base, "strainwatch_dead_lettered_total", reason="unreadable_alert") == 1
    # alerts.break.v1's eleven records, and the tracker's reads of the ten decisions
    assert metric(base, "strainwatch_consumed_total", service="alerting") >= 11
    assert metric(base, "strainwatch_processed_total", service="alerting") >= 11
    assert metric(base, "strainwatch_sink_write_errors_total", service="alerting") == 0
    wait_for(
        lambda: metric(base, "strainwatch_consumer_lag", service="alerting") == 0,
        timeout_s=10,
        what="no lag",
    )
    assert metric(base, "strainwatch_checkpoint_age_seconds", service="alerting") == 0
    # delay from the alert's event time: at least the 5 s it was old
    assert metric(base, "strainwatch_end_to_end_delay_seconds_sum", service="alerting") >= 50
    assert readyz(base)["status"] == 200  # type: ignore[index]
    started = time.monotonic()
    assert proc.terminate() == 0
    assert time.monotonic() - started < 30


def test_a_missing_influx_database_is_fatal_at_once_and_nothing_is_committed(
    kafka: Broker, influx: Influx, receiver: Receiver, alerts_proc: Any, tmp_path: Path
) -> None:
    missing = f"nope_{uuid.uuid4().hex[:8]}"  # InfluxDB answers 404 (database not found)
    env, base = ops_env(env_for(kafka, influx, missing, channels_file(tmp_path, receiver.port)))
    produce(kafka.bootstrap, "roster.v1", [roster_entry("w1")])
    produce(kafka.bootstrap, "alerts.break.v1", [alert_doc("w1", "conditioning_break", now_utc())])
    proc = alerts_proc(env).start()
    doc = wait_for(
        lambda: (d := readyz(base)) is not None and d["checks"].get("influx", {}).get("fatal") and d,
        timeout_s=30,
        what=f"/readyz to report InfluxDB fatal; log: {proc.log()}",
    )
    assert doc["status"] == 503 and not doc["ready"]
    assert "404" in doc["checks"]["influx"]["detail"]
    assert get(f"{base}/healthz")[0] == 200  # alive: a restart would not fix the configuration
    # delivery and the outcome tracker stop consuming: one clear line, not a retry loop
    wait_for(lambda: events(proc, "halted") == 1, timeout_s=30, what="delivery and outcomes to halt")
    assert events(proc, "influx_refused") == 1, proc.log()
    assert not committed_to_end(kafka.bootstrap, "alerts.break.v1")
    assert read_all(kafka.bootstrap, "alerts.prompts.v1") == []
    assert proc.terminate() == 0


@pytest.mark.faults
def test_kafka_gone_for_a_minute_every_alert_decided_exactly_once(
    influx: Influx, receiver: Receiver, alerts_proc: Any, tmp_path: Path
) -> None:
    port, controller = free_port(), free_port()
    state = tmp_path / "broker"
    kafka = Broker("kafka", f"127.0.0.1:{port}", start_kafka(state, port, controller), 4)
    ensure_topics(kafka.bootstrap, 4)
    database = influx.new_database()
    env, base = ops_env(env_for(kafka, influx, database, channels_file(tmp_path, receiver.port, 200.0)))
    workers = [f"w-{i}" for i in range(20)]
    produce(kafka.bootstrap, "roster.v1", [roster_entry(w) for w in workers])
    proc = alerts_proc(env).start()
    wanted: list[str] = []

    taken: set[tuple[str, int]] = set()  # (worker, second) of every alert so far

    def batch(n: int) -> None:
        # A worker's break_prompt points are told apart by their time (whole seconds): no worker may
        # have two alerts in one second, across batches too (two batches 20 s apart would collide)
        now = now_utc()
        docs = []
        for i in range(n):
            worker, at = workers[i % len(workers)], now - timedelta(seconds=i)
            while (worker, int(at.timestamp())) in taken:
                at -= timedelta(seconds=1)
            taken.add((worker, int(at.timestamp())))
            docs.append(alert_doc(worker, "conditioning_break", at))
        wanted.extend(d["alert_id"] for d in docs)
        produce(kafka.bootstrap, "alerts.break.v1", docs)

    try:
        wait_ready(base, proc)
        batch(40)  # before
        wait_for(
            lambda: len(read_all(kafka.bootstrap, "alerts.prompts.v1")) >= 40,
            timeout_s=60,
            what="decisions before the outage",
        )
        batch(40)  # mid-stream: the outage starts while these are decided
        stop(kafka.proc)
        down_at = time.monotonic()
        doc = wait_for(
            lambda: (d := readyz(base)) is not None and not d["checks"]["kafka"]["ok"] and d,
            timeout_s=30,
            what="/readyz to report Kafka gone",
        )
        assert doc["status"] == 503
        assert get(f"{base}/healthz")[0] == 200
        time.sleep(max(0.0, 60 - (time.monotonic() - down_at)))  # the outage itself: a minute
        assert proc.popen.poll() is None, "the service must wait for Kafka, not exit"
        kafka.proc = start_kafka(state, port, controller)  # same data directory and ports
        wait_ready(base, proc, timeout_s=180)
        batch(40)  # after
        prompts = wait_for(
            lambda: (
                (p := read_all(kafka.bootstrap, "alerts.prompts.v1"))
                and set(wanted) <= {x["alert_id"] for x in p}
                and p
            ),
            timeout_s=180,
            what=f"every decision; log: {proc.log()}",
        )
        wait_for(lambda: committed_to_end(kafka.bootstrap, "alerts.break.v1"), timeout_s=60, what="commit")
        counts: dict[str, int] = {}
        for p in prompts:
            counts[p["alert_id"]] = counts.get(p["alert_id"], 0) + 1
        twice = [a for a, n in counts.items() if n > 1]
        statuses = {p["status"] for p in prompts}
        commands = read_all(kafka.bootstrap, "device.commands.v1")
        per_alert: dict[str, int] = {}
        for c in commands:
            per_alert[c["alert_id"]] = per_alert.get(c["alert_id"], 0) + 1
        channel_msgs = len(receiver.bodies("/hook"))
        print(
            f"{len(wanted)} alerts, {len(prompts)} decisions ({len(twice)} twice), {len(commands)} commands, "
            f"{channel_msgs} channel messages"
        )
        assert not twice, f"decided twice: {twice[:5]}"
        assert len(prompts) == len(wanted) and statuses == {"sent"}
        # every alert reached its device; a command sent again (a batch whose decisions Kafka had
        # not stored when it went away is decided again) carries the same command_id, which the
        # device drops (docs/alerting.md)
        assert set(per_alert) == set(wanted)
        ids = {a: {c["command_id"] for c in commands if c["alert_id"] == a} for a in wanted}
        assert all(len(v) == 1 for v in ids.values())
        assert channel_msgs >= len(wanted)
        rows = wait_for(
            lambda: (
                (r := influx.ql(database).query('SELECT count("channels_ok") FROM "break_prompt"'))
                and r[0]["values"][0][1] >= len(wanted)
                and r
            ),
            timeout_s=30,
            what="every break_prompt point",
        )
        assert rows[0]["values"][0][1] == len(wanted)
        print(
            {e: events(proc, e) for e in ("kafka_unavailable", "kafka_still_unavailable", "kafka_recovered")}
        )
        assert events(proc, "kafka_unavailable") == 1, proc.log()
        assert events(proc, "kafka_still_unavailable") <= 2
        assert events(proc, "kafka_recovered") >= 1
        started = time.monotonic()
        stop(kafka.proc)  # SIGTERM with the broker down: still within 30 s
        assert proc.terminate() == 0
        print(f"stopped {time.monotonic() - started:.1f} s after SIGTERM with Kafka down")
    finally:
        stop(kafka.proc)


def test_started_without_kafka_the_service_waits_then_decides(
    influx: Influx, receiver: Receiver, alerts_proc: Any, tmp_path: Path
) -> None:
    port, controller = free_port(), free_port()
    kafka = Broker("kafka", f"127.0.0.1:{port}", None, 4)  # type: ignore[arg-type]
    database = influx.new_database()
    env, base = ops_env(env_for(kafka, influx, database, channels_file(tmp_path, receiver.port)))
    proc = alerts_proc(env).start()
    try:
        doc = wait_for(lambda: readyz(base), timeout_s=30, what="/readyz while Kafka is not there")
        assert doc["status"] == 503 and not doc["checks"]["kafka"]["ok"]
        wait_for(lambda: events(proc, "kafka_unavailable") == 1, timeout_s=60, what="the outage logged")
        assert proc.popen.poll() is None
        kafka.proc = start_kafka(tmp_path / "broker", port, controller)
        ensure_topics(kafka.bootstrap, 4)
        produce(kafka.bootstrap, "roster.v1", [roster_entry("w1")])
        alert = alert_doc("w1", "conditioning_break", now_utc())
        produce(kafka.bootstrap, "alerts.break.v1", [alert])
        wait_ready(base, proc, timeout_s=120)
        prompts = wait_for(
            lambda: read_all(kafka.bootstrap, "alerts.prompts.v1"), timeout_s=60, what="the decision"
        )
        assert [(p["alert_id"], p["status"]) for p in prompts] == [(alert["alert_id"], "sent")]
        assert events(proc, "kafka_unavailable") == 1
        assert proc.terminate() == 0
    finally:
        if kafka.proc is not None:
            stop(kafka.proc)
