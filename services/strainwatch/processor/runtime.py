"""The processor's per-message logic, free of faust: validate, order, deduplicate, score, collect outputs.

The faust agent (processor/app.py) and the benchmark's plain aiokafka loop both drive this class,
so the framework stays at the edge. Nothing here awaits: a checkpoint snapshot is taken in one
synchronous step, so the states it captures cover exactly the messages it acknowledges.
"""

from __future__ import annotations

import base64
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import structlog

from strainwatch.events import DeadReason, PostureFrame, Rejected, dead_letter_original, parse_frame
from strainwatch.exposure import Alert, ExposureEngine, WindowAggregate
from strainwatch.logs import RateLimitedLog
from strainwatch.processor.record import NO_BUFFER, Buffered, WorkerRecord
from strainwatch.processor.rollup import HOUR_S, RollupLayout, hour_of
from strainwatch.storage.measurements import break_alert_line, exposure_hourly_line, exposure_line

log = structlog.get_logger("strainwatch.processor")

ALERT_NAMESPACE = uuid.UUID("6f0e3f51-4a53-4c1e-9d2b-5a0c7e2b9d11")


@dataclass(frozen=True)
class RuntimeConfig:
    source_topic: str = "posture.events.v1"
    allowed_lateness_s: float = 30.0
    max_future_s: float = 300.0
    max_frame_bytes: int = 262_144
    max_samples_per_frame: int = 6_000


@dataclass
class Outputs:
    """Messages to publish: (key, value) pairs per topic role."""

    dead_letters: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    windows: list[tuple[bytes, bytes]] = field(default_factory=list)
    alerts: list[tuple[bytes, bytes]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.dead_letters) + len(self.windows) + len(self.alerts)


@dataclass
class Counters:
    frames_in: int = 0
    frames_applied: int = 0
    samples_applied: int = 0
    replayed: int = 0
    duplicates: int = 0
    buffered: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)
    windows_closed: int = 0
    alerts: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "frames_in": self.frames_in,
            "frames_applied": self.frames_applied,
            "samples_applied": self.samples_applied,
            "replayed": self.replayed,
            "duplicates": self.duplicates,
            "dead_lettered": dict(self.dead_lettered),
            "windows_closed": self.windows_closed,
            "alerts": self.alerts,
        }


def iso_ms(ts_s: float) -> str:
    """Event time as ISO 8601 UTC with milliseconds and Z: the spelling of the frames' start_ts."""
    return datetime.fromtimestamp(ts_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Runtime:
    def __init__(
        self,
        engine: ExposureEngine,
        config: RuntimeConfig,
        load: Callable[[str], WorkerRecord | None],
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        team_of: Callable[[str], str | None] = lambda worker: None,
        log_dead_letters: bool = True,
        task_of: Callable[[str], str | None] = lambda worker: None,
    ) -> None:
        self.engine = engine
        self.config = config
        self._load = load
        self._team_of = team_of
        self._task_of = task_of
        if HOUR_S % engine.window_s:
            raise ValueError(f"window_s {engine.window_s} must divide an hour (hourly rollups)")
        self.rollup = RollupLayout(engine.thresholds)
        self._hourly_dirty: set[str] = set()  # workers whose hourly point changed since the snapshot
        self._clock = clock
        self._monotonic = monotonic  # how long a reorder buffer has waited: immune to wall-clock steps
        self.records: dict[str, WorkerRecord] = {}
        self.dirty: set[str] = set()
        # Workers whose reorder buffer may be non-empty. Every snapshot checks them, not only the
        # dirty ones: a worker that stops sending after a gap is never dirty again, and its buffered
        # frames must still be released once the lateness has passed.
        self._buffered: set[str] = set()
        self.lines: list[str] = []
        self.out = Outputs()
        self.counters = Counters()
        self._tol_cache: dict[float, float] = {}
        self._reject_log = RateLimitedLog(log, interval_s=10.0)
        # offline rescoring reports every dead letter itself: a log line on stderr would be noise
        self._log_dead_letters = log_dead_letters
        self.thresholds_version = f"{engine.thresholds.profile}@{engine.thresholds.version}"
        # called with (now - frame start_ts) for every frame applied (the processor's delay histogram)
        self.delay_observer: Callable[[float], None] | None = None

    # --- per message -------------------------------------------------------------------------

    def on_message(self, key: bytes | None, value: bytes, partition: int, offset: int) -> None:
        """Handle one source message. Never raises on data: bad input becomes a dead letter."""
        self.counters.frames_in += 1
        try:
            frame = parse_frame(
                value,
                now=datetime.fromtimestamp(self._clock(), UTC),
                max_future_s=self.config.max_future_s,
                max_bytes=self.config.max_frame_bytes,
            )
        except Rejected as rejected:
            self._dead_letter(key, value, partition, offset, rejected.reason, rejected.detail)
            return
        worker = frame.worker_id
        if key is not None and key != worker.encode():
            self._dead_letter(
                key, value, partition, offset, DeadReason.INVALID_FIELD, "message key differs from worker_id"
            )
            return
        n = frame.n_samples
        if n > self.config.max_samples_per_frame:
            self._dead_letter(
                key,
                value,
                partition,
                offset,
                DeadReason.OVERSIZED,
                f"{n} samples > {self.config.max_samples_per_frame}",
            )
            return
        record = self._record(worker, frame, partition)
        if offset <= record.last_offset:
            self.counters.replayed += 1  # already in the persisted state: a replay after a restart
            return
        event_key = frame.event_id.int >> 64
        if event_key in record.recent_ids or any(b.event_key == event_key for b in record.buffer):
            self.counters.duplicates += 1
            if not record.buffer:
                record.last_offset = max(record.last_offset, offset)
            self.dirty.add(worker)
            return
        start_s = frame.start_ts.timestamp()
        end_s = start_s + n / frame.rate_hz
        expected = record.state.end_s
        tolerance = 0.5 / frame.rate_hz
        if expected != expected or expected == float("-inf") or abs(start_s - expected) <= tolerance:
            self._apply(worker, record, frame, start_s)
        elif start_s > expected:
            if not record.buffer:
                record.buffer = []  # records share an empty tuple until they buffer something
            record.buffer.append(Buffered(start_s, end_s, offset, event_key, value, frame))
            record.buffer.sort(key=lambda b: b.start_s)
            if len(record.buffer) == 1:
                record.buffered_since = self._monotonic()
                self._buffered.add(worker)
            self.counters.buffered += 1
        else:
            self._dead_letter(
                key,
                value,
                partition,
                offset,
                DeadReason.LATE,
                f"frame at {iso_ms(start_s)} overlaps samples already scored up to {iso_ms(expected)}",
            )
            if not record.buffer:
                record.last_offset = max(record.last_offset, offset)
            self.dirty.add(worker)
            return
        record.remember(event_key)
        if not record.buffer:
            # Only once nothing waits in the reorder buffer: "every frame of this worker at or
            # before last_offset is in the state" must stay true, or a replay would skip a frame
            # that was still missing (buffered frames advance it when they are applied).
            record.last_offset = max(record.last_offset, offset)
        self._drain(worker, record, gap_timeout=False)
        self.dirty.add(worker)

    def _record(self, worker: str, frame: PostureFrame, partition: int) -> WorkerRecord:
        record = self.records.get(worker)
        if record is None:
            record = self._load(worker)
            if record is not None:
                # a roster update consumed after the record's last checkpoint is in the roster
                # table but not in the record: the roster wins (the open window keeps its team)
                team = self._team_of(worker)
                if team and team != record.team:
                    record.team = sys.intern(team)
                task = self._task_of(worker)
                if task and task != record.task:
                    record.task = sys.intern(task)
            else:
                team = self._team_of(worker)
                task = self._task_of(worker)
                record = WorkerRecord(
                    state=self.engine.new_state(),
                    site_id=sys.intern(frame.site_id),
                    device_id=frame.device_id,
                    partition=partition,
                    team=sys.intern(team) if team else None,
                    task=sys.intern(task) if task else None,
                )
            self._adopt(worker, record)
        return record

    def _adopt(self, worker: str, record: WorkerRecord) -> None:
        """Track a record from now on; one restored with buffered frames starts its lateness wait now
        (when they were buffered is not persisted, and the gap may still fill from a replay)."""
        self.records[worker] = record
        if record.buffer:
            record.buffered_since = self._monotonic()
            self._buffered.add(worker)

    @property
    def waiting(self) -> bool:
        """Some worker has frames in its reorder buffer: a snapshot may release them (lateness)."""
        return bool(self._buffered)

    def adopt_restored(self, records: Iterable[tuple[str, WorkerRecord]]) -> None:
        """Records restored from the table (after a restart or rebalance) whose reorder buffer holds
        frames: the worker may never send again, so without this nothing would load the record and
        its buffered frames would never be scored. Records already tracked are left alone."""
        for worker, record in records:
            if record.buffer and worker not in self.records:
                self._adopt(worker, record)

    def _drain(self, worker: str, record: WorkerRecord, gap_timeout: bool) -> None:
        """Apply buffered frames that now follow on, or all of them once the lateness has passed."""
        buffer = record.buffer
        while buffer:
            head = buffer[0]
            expected = record.state.end_s
            contiguous = abs(head.start_s - expected) <= 0.5 / max(self._rate(head), 1.0)
            waited_long_enough = buffer[-1].end_s - expected > self.config.allowed_lateness_s
            if not (contiguous or waited_long_enough or gap_timeout):
                return
            buffer.pop(0)
            if not buffer:
                record.buffer = NO_BUFFER
            frame = head.frame if head.frame is not None else PostureFrame.model_validate_json(head.raw)
            self._apply(worker, record, frame, head.start_s)
            record.last_offset = max(record.last_offset, head.offset)

    @staticmethod
    def _rate(buffered: Buffered) -> float:
        frame = buffered.frame
        return float(frame.rate_hz) if frame is not None else 100.0

    def _apply(self, worker: str, record: WorkerRecord, frame: PostureFrame, start_s: float) -> None:
        outcome = self.engine.process(
            record.state, start_s, frame.rate_hz, frame.samples.present(), rest=bool(frame.rest)
        )
        self.counters.frames_applied += 1
        self.counters.samples_applied += frame.n_samples
        if self.delay_observer is not None:  # /metrics: end-to-end delay (docs/operations.md)
            self.delay_observer(self._clock() - start_s)
        record.device_id = frame.device_id
        for window in outcome.closed:
            self._emit_window(worker, record, window)
        opened = self.engine.window_start(record.state)
        if opened != record.window_start:
            record.window_start = opened
            record.window_team = record.team
            record.window_task = record.task
        for alert in outcome.alerts:
            self._emit_alert(worker, record, alert)

    def _emit_window(self, worker: str, record: WorkerRecord, window: WindowAggregate) -> None:
        self.counters.windows_closed += 1
        # a window opened before a roster update keeps the team its point was first written with
        if window.window_start_s == record.window_start:
            team, task = record.window_team, record.window_task
        else:
            team, task = record.team, record.task
        self.lines.append(exposure_line(record.site_id, team, worker, window, task))
        self.out.windows.append(
            (worker.encode(), self._window_message(worker, record.site_id, team, window, task))
        )
        self._roll_up(worker, record, window, team, task)

    def _roll_up(
        self, worker: str, record: WorkerRecord, window: WindowAggregate, team: str | None, task: str | None
    ) -> None:
        """Add a closed window to the worker's hour; a new hour (or team or task) starts new sums,
        after writing the finished ones if their last state is not written yet."""
        hour = hour_of(window.window_start_s)
        sums = record.hour_sums
        if sums is None or hour != record.hour_start or team != record.hour_team or task != record.hour_task:
            if sums is not None and worker in self._hourly_dirty:
                self.lines.append(self._hourly_line(worker, record))
            record.hour_start, record.hour_team, record.hour_task = hour, team, task
            record.hour_sums = sums = self.rollup.empty()
        self.rollup.add(sums, window)
        self._hourly_dirty.add(worker)

    def _hourly_line(self, worker: str, record: WorkerRecord) -> str:
        assert record.hour_sums is not None
        fields = self.rollup.fields(record.hour_sums, self.thresholds_version)
        return exposure_hourly_line(
            record.site_id, record.hour_team, record.hour_task, worker, record.hour_start, fields
        )

    @staticmethod
    def _window_message(
        worker: str, site_id: str, team: str | None, window: WindowAggregate, task: str | None = None
    ) -> bytes:
        """An exposure.windows.v1 value (events.ExposureWindow)."""
        message = {
            "schema_version": 1,
            "worker_id": worker,
            "site_id": site_id,
            "team": team,
            "window_start": iso_ms(window.window_start_s),
            "window_s": window.window_s,
            "thresholds_version": window.thresholds_version,
            "frames": window.frames,
            "wear_s": window.wear_s,
            "samples": window.samples,
            "zone_s": window.zone_s,
            "cutpoints_s": window.cutpoints_s,
            "longest_hold_s": window.longest_hold_s,
            "dose": window.dose,
            "accrued": window.accrued,
            "task": task,
        }
        return orjson.dumps(message)

    def _emit_alert(self, worker: str, record: WorkerRecord, alert: Alert) -> None:
        self.counters.alerts += 1
        # deterministic id: a replay after a crash re-emits the same alert, which consumers dedupe
        alert_id = str(uuid.uuid5(ALERT_NAMESPACE, f"{worker}|{alert.kind}|{alert.segment}|{alert.ts_s:.3f}"))
        self.lines.append(
            break_alert_line(
                record.site_id,
                record.team,
                worker,
                alert.kind,
                alert.segment,
                alert.dose,
                alert_id,
                alert.ts_s,
            )
        )
        message = {
            "schema_version": 1,
            "alert_id": alert_id,
            "worker_id": worker,
            "site_id": record.site_id,
            "team": record.team,
            "kind": alert.kind,
            "ts": iso_ms(alert.ts_s),
            "segment": alert.segment,
            "dose": alert.dose,
            "routine": list(alert.routine),
            "thresholds_version": self.thresholds_version,
        }
        self.out.alerts.append((worker.encode(), orjson.dumps(message)))

    def _dead_letter(
        self, key: bytes | None, value: bytes, partition: int, offset: int, reason: DeadReason, detail: str
    ) -> None:
        self.counters.dead_lettered[reason.value] += 1
        if self._log_dead_letters:
            self._reject_log.warning(
                reason.value, "frame dead-lettered", reason=reason.value, detail=detail[:200]
            )
        # a value inflated from a compressed batch can exceed any topic limit: cut, flagged (events.py)
        kept_key, kept, flags = dead_letter_original(key, value)
        letter = {
            "schema_version": 1,
            "reason": reason.value,
            "detail": detail[:2_000],
            "source_topic": self.config.source_topic,
            "source_partition": partition,
            "source_offset": offset,
            "received_at": iso_ms(self._clock()),
            "original_b64": base64.b64encode(kept).decode(),
            "key_b64": base64.b64encode(kept_key).decode() if kept_key is not None else None,
            **flags,
        }
        self.out.dead_letters.append((kept_key, orjson.dumps(letter)))

    # --- checkpoint --------------------------------------------------------------------------

    def take_outputs(self) -> Outputs:
        out, self.out = self.out, Outputs()
        return out

    def snapshot(self) -> tuple[dict[str, WorkerRecord], list[str]]:
        """Dirty records and every point that covers them, in one synchronous step.

        Points: windows closed since the last snapshot plus each dirty worker's open window,
        written as a partial point that later writes of the same window overwrite.
        """
        now = self._monotonic()
        lateness = self.config.allowed_lateness_s
        for worker in list(self._buffered):
            record = self.records.get(worker)
            if record is None or not record.buffer:
                self._buffered.discard(worker)  # drained by a later frame, or dropped
            elif now - record.buffered_since > lateness:
                self._drain(worker, record, gap_timeout=True)  # the gap will not fill: go on
                self._buffered.discard(worker)
                self.dirty.add(worker)  # its state moved: persist it and write its points
        dirty = {worker: self.records[worker] for worker in self.dirty}
        for worker, record in dirty.items():
            window = self.engine.open_window(record.state)
            if window is not None:
                self.lines.append(
                    exposure_line(record.site_id, record.window_team, worker, window, record.window_task)
                )
        for worker in self._hourly_dirty:
            record = self.records.get(worker)
            if record is not None and record.hour_sums is not None:
                self.lines.append(self._hourly_line(worker, record))
        self._hourly_dirty = set()
        self.dirty = set()
        lines, self.lines = self.lines, []
        return dirty, lines

    def set_team(self, worker: str, team: str, task: str | None = None) -> None:
        """A roster update: points and windows from now on carry the new team and task."""
        known = self.records.get(worker)
        record = known or self._load(worker)
        if record is None:
            return
        if known is None and (record.buffer or record.team != team or record.task != task):
            self._adopt(worker, record)
        if record.team != team or record.task != task:
            record.team = sys.intern(team)
            record.task = sys.intern(task) if task else None
            self.dirty.add(worker)

    def end_of_input(self) -> None:
        """No more frames will come (a file rescored offline): gaps will not fill, so every frame
        still in a reorder buffer is applied, as the processor does once the lateness has passed."""
        for worker, record in self.records.items():
            if record.buffer:
                self._drain(worker, record, gap_timeout=True)
                self.dirty.add(worker)

    def open_window_message(self, worker: str) -> bytes | None:
        """The worker's open window as the exposure.windows.v1 value it would be if it closed now
        (with the team of its point), or None when no window is open."""
        record = self.records.get(worker)
        window = self.engine.open_window(record.state) if record is not None else None
        if record is None or window is None:
            return None
        return self._window_message(worker, record.site_id, record.window_team, window, record.window_task)

    def record_count(self) -> int:
        return len(self.records)

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget workers of partitions this instance no longer owns (after a rebalance)."""
        for worker in [w for w, r in self.records.items() if r.partition in partitions]:
            del self.records[worker]
            self.dirty.discard(worker)
            self._buffered.discard(worker)
            self._hourly_dirty.discard(worker)
