"""Workloads and result readers shared by the processor's fault and scale-out tests."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from strainwatch.storage.influxql import InfluxQL
from strainwatch.storage.measurements import source
from strainwatch.topics import POSTURE_EVENTS
from tests.support import aligned_start, encode, frame

PROFILES = [
    {"trunk_flexion": 35.0, "neck_flexion": 30.0, "arm_elevation_left": 70.0, "arm_elevation_right": 100.0},
    {"trunk_flexion": 5.0, "neck_flexion": 10.0, "arm_elevation_left": 15.0, "arm_elevation_right": 10.0},
    {"trunk_flexion": 65.0, "neck_flexion": 50.0, "arm_elevation_left": 30.0, "arm_elevation_right": 30.0},
]


def workload(workers: int, seconds: int, offset_s: int = 0) -> list[tuple[bytes, bytes]]:
    """Frames of `workers` workers, one per second each, postures that raise holds and alerts."""
    start = aligned_start(hours_ago=4) + timedelta(seconds=offset_s)
    out = []
    for second in range(seconds):
        for w in range(workers):
            worker = f"w-{w:04d}"
            angles = PROFILES[w % len(PROFILES)]
            # a posture change every 3 minutes keeps holds, violations and recoveries coming
            if (second // 180 + w) % 4 == 3:
                angles = PROFILES[1]
            doc = frame(worker, start + timedelta(seconds=second), angles=angles)
            out.append((worker.encode(), encode(doc)))
    return out


def produce(bootstrap: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=262_144)
    futures = [producer.send(POSTURE_EVENTS.name, key=key, value=value) for key, value in messages]
    producer.flush(60)
    producer.close()
    for future in futures:
        future.get(0)  # raises if the broker did not take a frame


def stored_frames(ql: InfluxQL) -> int:
    try:
        return int(ql.scalar('SELECT SUM("frames") FROM "windows"."exposure"'))
    except Exception:
        return 0


def all_points(ql: InfluxQL, measurement: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Every point of a measurement keyed by (tags..., time), fields as a dict."""
    points: dict[tuple[Any, ...], dict[str, Any]] = {}
    for series in ql.query(f"SELECT * FROM {source(measurement)} GROUP BY *"):
        tags = tuple(sorted((series.get("tags") or {}).items()))
        columns = series["columns"]
        for row in series["values"]:
            fields = {c: v for c, v in zip(columns, row, strict=True) if c != "time" and v is not None}
            points[(tags, row[0])] = fields
    return points


def frames_by_window(ql: InfluxQL) -> dict[tuple[str, int], int]:
    by_window: dict[tuple[str, int], int] = {}
    for series in ql.query('SELECT "frames" FROM "windows"."exposure" GROUP BY "worker"'):
        worker = (series.get("tags") or {}).get("worker", "?")
        for ts, frames in series["values"]:
            by_window[(worker, ts)] = by_window.get((worker, ts), 0) + int(frames or 0)
    return by_window


def window_diff(want: InfluxQL, have: InfluxQL, limit: int = 20) -> str:
    """Which windows differ between two runs, for a failure message: a count alone does not say why."""
    expected, actual = frames_by_window(want), frames_by_window(have)
    wrong = sorted(k for k in expected.keys() | actual.keys() if expected.get(k) != actual.get(k))
    shown = "; ".join(f"{k}: want {expected.get(k)} have {actual.get(k)}" for k in wrong[:limit])
    return f"{len(wrong)} windows differ: {shown}"


def committed_behind(bootstrap: str, group: str) -> dict[int, int]:
    """Per posture partition, how far the group's committed offset is behind the log end."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        try:
            committed = admin.list_group_offsets({group: None}).get(group, {})  # kafka-python 3.0 name
        except KafkaError:  # the group's coordinator is not up yet: nothing committed so far
            committed = {}
        partitions = consumer.partitions_for_topic(POSTURE_EVENTS.name) or set()
        tps = [TopicPartition(POSTURE_EVENTS.name, p) for p in sorted(partitions)]
        ends = consumer.end_offsets(tps)
        behind = {}
        for tp in tps:
            meta = committed.get(tp)
            offset = meta.offset if meta is not None and meta.offset is not None and meta.offset >= 0 else 0
            behind[tp.partition] = ends[tp] - offset
        return behind
    finally:
        consumer.close()
        admin.close()


def log_events(log_text: str, event: str) -> list[dict[str, Any]]:
    """The structlog JSON records of one event in a processor's log."""
    out = []
    for line in log_text.splitlines():
        if event in line and line.startswith("{"):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if record.get("event") == event:
                out.append(record)
    return out
