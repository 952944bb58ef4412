"""A seeded, reproducible wearable fleet: task profiles, holds, movement, shifts and breaks.

Each worker does one task; a task is a set of postures (mean angles per segment) a worker moves
between, holding each for a while with sensor noise. Workers wear the device only on shift
(three 8-hour shifts, UTC) and either take it off or send `rest` frames during scheduled breaks.
`invalid_rate` mixes in malformed frames, each labelled with the reason the validator will give.
A device can hold its worker in a neutral posture for a while (`hold_neutral`, a break the worker
takes after a prompt) without changing any other worker's frames.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from strainwatch.events import SEGMENT_RANGES, DeadReason

SEGMENTS4 = ("trunk_flexion", "neck_flexion", "arm_elevation_left", "arm_elevation_right")


@dataclass(frozen=True)
class Posture:
    name: str
    angles: tuple[float, float, float, float]  # trunk, neck, left arm, right arm (degrees)
    hold_s: tuple[float, float]  # how long it is held, uniform range
    weight: float
    jitter: float = 2.0  # sensor noise and sway, degrees (standard deviation)


TASKS: dict[str, tuple[Posture, ...]] = {
    "overhead_assembly": (
        Posture("overhead reach", (8, -10, 125, 115), (15, 90), 2),
        Posture("bench work", (25, 30, 40, 35), (30, 150), 3),
        Posture("reach forward", (15, 20, 70, 65), (10, 40), 2),
        Posture("neutral", (4, 10, 12, 12), (20, 90), 4, jitter=2),
    ),
    "warehouse_picking": (
        Posture("bend to pick", (70, 35, 50, 45), (3, 10), 2),
        Posture("walk", (6, 12, 12, 12), (10, 40), 5, jitter=3),
        Posture("high shelf", (4, 5, 105, 30), (4, 12), 1),
        Posture("carry", (12, 18, 28, 28), (8, 25), 2, jitter=4),
    ),
    "desk_work": (
        Posture("typing", (6, 18, 14, 14), (60, 300), 5),
        Posture("reading", (10, 33, 10, 10), (30, 180), 3),
        Posture("phone", (5, 48, 35, 10), (10, 60), 1),
        Posture("stand and stretch", (2, 5, 20, 20), (10, 30), 1, jitter=4),
    ),
    "construction": (
        Posture("rebar tying", (68, 45, 40, 40), (30, 120), 2),
        Posture("overhead drilling", (5, -10, 130, 125), (20, 90), 1),
        Posture("carry", (15, 20, 30, 30), (10, 30), 2, jitter=4),
        Posture("neutral", (5, 12, 12, 12), (15, 90), 4, jitter=2),
    ),
}

# a worker taking a break: every segment well inside its acceptable zone (trunk 0-20, neck 0-25,
# arms 0-20 degrees), far enough from the edges that sensor noise stays inside too
NEUTRAL_ANGLES: tuple[float, float, float, float] = (8.0, 12.0, 10.0, 10.0)
NEUTRAL_JITTER = 1.5

SHIFTS: dict[str, int] = {"day": 6, "late": 14, "night": 22}  # start hour, UTC; 8 hours each
SHIFT_S = 8 * 3600
# scheduled breaks relative to shift start: (offset s, length s)
BREAKS: tuple[tuple[int, int], ...] = ((3 * 3600, 15 * 60), (5 * 3600, 30 * 60))

INVALID_KINDS: tuple[DeadReason, ...] = (
    DeadReason.MALFORMED_JSON,
    DeadReason.UNSUPPORTED_SCHEMA_VERSION,
    DeadReason.MISSING_FIELD,
    DeadReason.UNKNOWN_FIELD,
    DeadReason.INVALID_FIELD,
    DeadReason.OUT_OF_RANGE,
    DeadReason.NOT_FINITE,
    DeadReason.LENGTH_MISMATCH,
    DeadReason.NO_SEGMENTS,
    DeadReason.FUTURE_TIMESTAMP,
    DeadReason.OVERSIZED,
)


@dataclass(frozen=True)
class SimConfig:
    workers: int
    rate_hz: float = 10.0
    frame_s: float = 1.0
    duration_s: float = 60.0
    start: datetime = datetime(2026, 11, 2, 8, tzinfo=UTC)
    seed: int = 42
    invalid_rate: float = 0.0
    site_id: str = "plant-1"
    teams: int = 4
    shifts: bool = True  # False: everyone wears the device all the time (benchmarks, load tests)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if not 1 <= self.rate_hz <= 100:
            raise ValueError("rate_hz must be within 1..100")
        if self.frame_s <= 0 or self.frame_s * self.rate_hz < 1:
            raise ValueError("a frame must hold at least one sample")
        if self.duration_s < 0:
            raise ValueError("duration_s must not be negative")
        if not 0 <= self.invalid_rate <= 1:
            raise ValueError("invalid_rate must be within 0..1")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")


@dataclass(frozen=True, slots=True)
class SimFrame:
    key: bytes
    value: bytes
    worker_id: str
    start_s: float
    n_samples: int  # 0 when invalid
    expected_reason: DeadReason | None  # None: a valid frame


@dataclass
class _Worker:
    worker_id: str
    device_id: str
    team: str
    task: str
    shift: str
    back_only: bool
    rest_on_break: bool
    posture: int = 0
    posture_until: float = -math.inf
    current: np.ndarray | None = None
    neutral_until: float = -math.inf  # event time; frames starting before it are neutral


def _worker_id(site: str, index: int) -> str:
    # stable per site and index (not per seed), so a backfill and a live run share their workers;
    # the index in hex keeps ids unique (six hash digits alone collided at 10,000 workers)
    return "w-" + hashlib.sha1(f"{site}:{index}".encode()).hexdigest()[:4] + f"{index:04x}"


def _iso(ts_s: float) -> str:
    return datetime.fromtimestamp(ts_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FleetSimulator:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self._rng = np.random.default_rng(cfg.seed)
        tasks = list(TASKS)
        shifts = list(SHIFTS)
        self.workers: list[_Worker] = []
        for i in range(cfg.workers):
            shape = np.random.default_rng([cfg.seed, i])  # per-worker traits, independent of fleet size
            self.workers.append(
                _Worker(
                    worker_id=_worker_id(cfg.site_id, i),
                    device_id=f"dev-{i:04d}",
                    # pairs of workers per team, tasks in turn: every team mixes tasks and every
                    # task spans teams, so reports can tell the work from the team
                    team=f"team-{chr(ord('a') + (i // 2) % max(cfg.teams, 1))}",
                    task=tasks[i % len(tasks)],
                    shift=shifts[(i // len(tasks)) % len(shifts)],
                    back_only=bool(shape.random() < 0.1),
                    rest_on_break=bool(shape.random() < 0.5),
                )
            )
        self._by_worker = {w.worker_id: w for w in self.workers}
        self._by_device = {w.device_id: w for w in self.workers}

    def roster(self) -> list[dict[str, Any]]:
        out = []
        for w in self.workers:
            start_h = SHIFTS[w.shift]
            breaks = []
            for offset, length in BREAKS:
                begin = (start_h * 3600 + offset) % 86_400
                end = (begin + length) % 86_400
                breaks.append(
                    f"{begin // 3600:02d}:{begin % 3600 // 60:02d}-{end // 3600:02d}:{end % 3600 // 60:02d}"
                )
            out.append(
                {
                    "schema_version": 1,
                    "worker_id": w.worker_id,
                    "site_id": self.cfg.site_id,
                    "team": w.team,
                    "shift": w.shift,
                    "device_id": w.device_id,
                    "scheduled_breaks": breaks,
                    "task": w.task,
                }
            )
        return out

    def worker_for_device(self, device_id: str) -> str | None:
        return self._by_device[device_id].worker_id if device_id in self._by_device else None

    def hold_neutral(self, worker_id: str, until_ts: float) -> None:
        """Frames of this worker starting before event time `until_ts` show a neutral posture.

        The random draws stay exactly those of an unheld run, so every other worker's frames (and
        this worker's event ids) are unchanged: only this worker's angles differ.
        """
        worker = self._by_worker[worker_id]
        worker.neutral_until = max(worker.neutral_until, until_ts)

    def _on_shift(self, worker: _Worker, ts: float) -> tuple[bool, bool]:
        """(wearing, on a scheduled break) at event time ts."""
        if not self.cfg.shifts:
            return True, False
        since = (ts - SHIFTS[worker.shift] * 3600) % 86_400
        if since >= SHIFT_S:
            return False, False
        for offset, length in BREAKS:
            if offset <= since < offset + length:
                return worker.rest_on_break, True
        return True, False

    def frames(self) -> Iterator[SimFrame]:
        cfg = self.cfg
        n = max(1, round(cfg.frame_s * cfg.rate_hz))
        frame_s = n / cfg.rate_hz
        t0 = cfg.start.timestamp()
        ticks = math.ceil(cfg.duration_s / frame_s - 1e-9)
        rng = self._rng
        for tick in range(ticks):
            ts = t0 + tick * frame_s
            for worker in self.workers:
                wearing, on_break = self._on_shift(worker, ts)
                if not wearing:
                    continue
                doc = self._frame(worker, ts, n, on_break)
                yield SimFrame(worker.worker_id.encode(), orjson.dumps(doc), worker.worker_id, ts, n, None)
                if cfg.invalid_rate and rng.random() < cfg.invalid_rate:
                    yield self._invalid(worker, doc)

    def _frame(self, worker: _Worker, ts: float, n: int, on_break: bool) -> dict[str, Any]:
        rng = self._rng
        postures = TASKS[worker.task]
        if on_break:
            target = np.array([3.0, 8.0, 10.0, 10.0])
            jitter = 1.5
        else:
            if ts >= worker.posture_until:
                weights = np.array([p.weight for p in postures])
                worker.posture = int(rng.choice(len(postures), p=weights / weights.sum()))
                low, high = postures[worker.posture].hold_s
                worker.posture_until = ts + float(rng.uniform(low, high))
            posture = postures[worker.posture]
            target = np.array(posture.angles, dtype=float)
            jitter = posture.jitter
            if ts < worker.neutral_until:  # after the posture draw, so the random stream is unchanged
                target = np.array(NEUTRAL_ANGLES)
                jitter = NEUTRAL_JITTER
        start = worker.current if worker.current is not None else target
        # move towards the target over about a second, then hold it with noise
        ramp = np.minimum(1.0, (np.arange(1, n + 1) / self.cfg.rate_hz))[:, None]
        path = start[None, :] + (target - start)[None, :] * ramp
        values = path + rng.normal(0.0, jitter, size=(n, 4))
        worker.current = path[-1]
        samples: dict[str, list[float]] = {}
        for k, name in enumerate(SEGMENTS4):
            if worker.back_only and name != "trunk_flexion":
                continue
            low, high = SEGMENT_RANGES[name]
            samples[name] = np.round(np.clip(values[:, k], low, high), 1).tolist()
        doc: dict[str, Any] = {
            "schema_version": 1,
            "event_id": str(
                uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | int(rng.integers(0, 2**63)), version=4)
            ),
            "device_id": worker.device_id,
            "worker_id": worker.worker_id,
            "site_id": self.cfg.site_id,
            "start_ts": _iso(ts),
            "rate_hz": self.cfg.rate_hz,
            "samples": samples,
            "battery_pct": 80.0,
            "firmware": "sim-1.2.0",
        }
        if on_break:
            doc["rest"] = True
        return doc

    def _invalid(self, worker: _Worker, doc: dict[str, Any]) -> SimFrame:
        kind = INVALID_KINDS[int(self._rng.integers(len(INVALID_KINDS)))]
        bad = dict(doc)
        bad["event_id"] = str(uuid.UUID(int=int(self._rng.integers(0, 2**63)), version=4))
        samples = {k: list(v) for k, v in doc["samples"].items()}
        first = next(iter(samples))
        raw: bytes
        if kind is DeadReason.MALFORMED_JSON:
            raw = orjson.dumps(bad)[:-9]
        elif kind is DeadReason.UNSUPPORTED_SCHEMA_VERSION:
            raw = orjson.dumps({**bad, "schema_version": 2})
        elif kind is DeadReason.MISSING_FIELD:
            raw = orjson.dumps({k: v for k, v in bad.items() if k != "device_id"})
        elif kind is DeadReason.UNKNOWN_FIELD:
            raw = orjson.dumps({**bad, "operator_name": "J. Doe"})
        elif kind is DeadReason.INVALID_FIELD:
            raw = orjson.dumps({**bad, "worker_id": "j.doe@example.com"})
        elif kind is DeadReason.OUT_OF_RANGE:
            samples[first][0] = 400.0
            raw = orjson.dumps({**bad, "samples": samples})
        elif kind is DeadReason.NOT_FINITE:
            samples[first][0] = None  # type: ignore[call-overload]
            raw = orjson.dumps({**bad, "samples": samples})
        elif kind is DeadReason.LENGTH_MISMATCH:
            samples = {**samples, "neck_flexion": [10.0] * (len(samples[first]) + 1)}
            raw = orjson.dumps({**bad, "samples": samples})
        elif kind is DeadReason.NO_SEGMENTS:
            raw = orjson.dumps({**bad, "samples": {}})
        elif kind is DeadReason.FUTURE_TIMESTAMP:
            raw = orjson.dumps({**bad, "start_ts": _iso(datetime.now(UTC).timestamp() + 30 * 86_400)})
        else:  # OVERSIZED
            raw = orjson.dumps({**bad, "samples": {"trunk_flexion": [1.0] * 6_500}})
        return SimFrame(worker.worker_id.encode(), raw, worker.worker_id, doc_start(doc), 0, kind)


def doc_start(doc: dict[str, Any]) -> float:
    return datetime.fromisoformat(doc["start_ts"].replace("Z", "+00:00")).timestamp()


def backfill_config(
    days: float,
    workers: int,
    now: datetime,
    *,
    seed: int = 42,
    site_id: str = "plant-1",
    invalid_rate: float = 0.0,
    frame_s: float = 30.0,
    rate_hz: float = 10.0,
) -> SimConfig:
    """History of `days` ending at `now`, in larger frames so days of history stay cheap to move."""
    end = math.floor(now.timestamp() / frame_s) * frame_s
    start = end - days * 86_400
    return SimConfig(
        workers=workers,
        rate_hz=rate_hz,
        frame_s=frame_s,
        duration_s=end - start,
        start=datetime.fromtimestamp(start, UTC),
        seed=seed,
        invalid_rate=invalid_rate,
        site_id=site_id,
    )
