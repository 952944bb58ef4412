"""What the processor keeps per worker, and its compact table encoding.

The record carries the source offset it has consumed up to *in the same value* as the exposure
state, so one changelog record holds both (docs/processor.md, exactness): on replay after a
crash a frame at or before `last_offset` is skipped instead of being applied twice.
"""

from __future__ import annotations

import base64
import struct
import sys
from array import array
from dataclasses import dataclass, field
from typing import Any

import orjson

from strainwatch.exposure import WorkerState

RECENT_IDS = 8  # event ids remembered per worker: redeliveries come within seconds; older copies overlap
# scored samples and are dead-lettered as `late`, never counted twice (and Kafka replays are caught
# by offset)
_VERSION = 1
_HEADER = struct.Struct("<BI")  # version, length of the metadata JSON


@dataclass(slots=True)
class Buffered:
    """A frame that arrived after a gap, held until the gap fills or the lateness passes."""

    start_s: float
    end_s: float
    offset: int
    event_key: int
    raw: bytes
    frame: Any = None  # the parsed PostureFrame while in memory; re-parsed after a restore


NO_BUFFER: Any = ()


@dataclass(slots=True)
class WorkerRecord:
    state: WorkerState
    site_id: str
    device_id: str
    partition: int
    last_offset: int = -1
    team: str | None = None
    # the team tag of the open window's point: a point's tags never change once written, or a
    # roster update mid-window would leave two points (two series) for one window
    window_team: str | None = None
    window_start: float = float("-inf")
    # the roster's task or station, and the one the open window's point was first written with
    task: str | None = None
    window_task: str | None = None
    # the hourly rollup in progress (processor/rollup.py): its hour, tags and running sums
    hour_start: int = -1
    hour_team: str | None = None
    hour_task: str | None = None
    hour_sums: array | None = None
    recent_ids: array = field(default_factory=lambda: array("Q"))
    # an empty list is 56 bytes a worker; almost every worker's buffer is empty almost always
    buffer: list[Buffered] = field(default=NO_BUFFER)  # type: ignore[assignment]
    # monotonic clock, memory only: a restored record's wait starts when the runtime adopts it
    buffered_since: float = 0.0

    def remember(self, event_key: int) -> None:
        ids = self.recent_ids
        if len(ids) >= RECENT_IDS:
            del ids[0]
        ids.append(event_key)

    def to_bytes(self) -> bytes:
        meta: dict[str, Any] = {
            "site": self.site_id,
            "device": self.device_id,
            "p": self.partition,
            "o": self.last_offset,
            "ids": list(self.recent_ids),
        }
        if self.team:
            meta["team"] = self.team
        if self.window_team:
            meta["wteam"] = self.window_team
        if self.window_start != float("-inf"):
            meta["wstart"] = self.window_start
        if self.task:
            meta["task"] = self.task
        if self.window_task:
            meta["wtask"] = self.window_task
        if self.hour_sums is not None:
            meta["hr"] = [
                self.hour_start,
                self.hour_team,
                self.hour_task,
                base64.b64encode(self.hour_sums.tobytes()).decode(),
            ]
        if self.buffer:
            meta["buf"] = [
                [b.start_s, b.end_s, b.offset, b.event_key, base64.b64encode(b.raw).decode()]
                for b in self.buffer
            ]
        encoded = orjson.dumps(meta)
        return _HEADER.pack(_VERSION, len(encoded)) + encoded + self.state.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> WorkerRecord:
        version, length = _HEADER.unpack_from(data)
        if version != _VERSION:
            raise ValueError(f"unknown worker record version {version}")
        start = _HEADER.size
        meta = orjson.loads(data[start : start + length])
        state = WorkerState.from_bytes(data[start + length :])
        record = cls(
            state=state,
            site_id=sys.intern(meta["site"]),
            device_id=meta["device"],
            partition=int(meta["p"]),
            last_offset=int(meta["o"]),
            team=meta.get("team"),
            window_team=meta.get("wteam"),
            window_start=float(meta.get("wstart", float("-inf"))),
            recent_ids=array("Q", meta.get("ids", [])),
            task=meta.get("task"),
            window_task=meta.get("wtask"),
        )
        if meta.get("hr"):
            hour_start, hour_team, hour_task, sums = meta["hr"]
            record.hour_start, record.hour_team, record.hour_task = int(hour_start), hour_team, hour_task
            record.hour_sums = array("d", base64.b64decode(sums))
        if meta.get("buf"):
            record.buffer = []
        for start_s, end_s, offset, key, raw in meta.get("buf", []):
            record.buffer.append(Buffered(start_s, end_s, offset, key, base64.b64decode(raw)))
        return record
