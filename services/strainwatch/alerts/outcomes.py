"""Break outcomes: what became of each sent conditioning-break prompt (taken, acknowledged, ignored).

Pure: no Kafka, no InfluxDB, no wall clock. The runner (`outcome_runner.py`) feeds it prompts
(PromptDecision, status sent), exposure windows and acknowledgements (BreakAck, stage
acknowledgement) and publishes what it returns. The rules are in docs/alerting.md, "Break outcomes":

- **taken** as soon as, within [alert_ts, alert_ts + 10 min], the worker's acceptable windows form a
  contiguous run covering >= 120 s (source `posture`), or a rest acknowledgement with ts <= the
  horizon exists (source `rest`); when both exist, the earlier moment wins;
- otherwise, once the horizon has passed: **acknowledged** (source device or channel: the earliest
  acknowledgement with ts <= horizon) or **ignored** (source `timeout`).

Every decision is a function of the evidence (the set of windows and acks), not of arrival order,
except that `taken` is decided the moment one kind of evidence suffices. The outcome's `ts` is event
time (the moment the rule held, or the horizon), so a replay publishes identical messages.
Times are kept as integer microseconds since the epoch: exact, so a state round trip is too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from strainwatch.events import BreakAck, ExposureWindow, Ident, Message, PromptDecision

US = 1_000_000
HORIZON_S = 600  # a prompt's outcome is judged over the 10 minutes after it
TAKEN_RUN_S = 120  # acceptable for 2 minutes = the break was taken
MIN_WEAR_FRACTION = 0.5  # a window counts only if the device was worn for most of it
# Windows and stray acks are kept this far behind the worker's newest window, so a prompt read
# after the windows that follow it (another topic, another fetch) is still judged on all of them.
EVIDENCE_RETENTION_S = 1_800
MAX_STRAY_ACKS = 64  # per worker: acks for alert ids not (yet) known as sent prompts
# Decided alert ids are remembered this long (event time) so a redelivered prompt is not judged twice.
DECIDED_RETENTION_S = 86_400
DEFAULT_IDLE_TIMEOUT_S = 900.0  # processing time; above the horizon, see docs/alerting.md
TRACKED_KINDS = frozenset({"conditioning_break"})  # posture nudges get no outcome (docs/alerting.md)

Outcome = Literal["taken", "acknowledged", "ignored"]


def to_us(ts: datetime) -> int:
    delta = ts - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds


def from_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def window_is_acceptable(window: ExposureWindow) -> bool:
    """Every present segment spent no time in a conditional or not-acceptable zone, and the device
    was worn for most of the window. A window without segments says nothing about posture."""
    if not window.zone_s or window.wear_s < MIN_WEAR_FRACTION * window.window_s:
        return False
    return all(z.conditional <= 1e-9 and z.not_acceptable <= 1e-9 for z in window.zone_s.values())


@dataclass(frozen=True)
class OutcomeRecord:
    """One decided outcome: the BreakAck to publish and what the InfluxDB point needs besides."""

    ack: BreakAck
    team: str | None
    kind: str
    alert_ts: datetime


@dataclass
class _Prompt:
    alert_id: str
    site_id: str
    team: str | None
    kind: str
    alert_us: int

    @property
    def horizon_us(self) -> int:
        return self.alert_us + HORIZON_S * US


@dataclass(frozen=True, order=True)
class _Ack:
    ts_us: int
    outcome: str
    source: str


@dataclass
class _Worker:
    site_id: str = ""
    pending: dict[str, _Prompt] = field(default_factory=dict)
    acceptable: dict[int, int] = field(default_factory=dict)  # window start -> end (us)
    acks: dict[str, list[_Ack]] = field(default_factory=dict)  # alert id -> acks
    decided: dict[str, int] = field(default_factory=dict)  # alert id -> horizon (us)
    latest_window_us: int | None = None  # start of the newest window seen
    last_activity: float = 0.0  # processing time (injected clock); not persisted

    def to_record(self, worker_id: str) -> bytes:
        return (
            OutcomeState(
                schema_version=1,
                worker_id=worker_id,
                site_id=self.site_id,
                pending=[
                    PendingPrompt(
                        alert_id=p.alert_id, site_id=p.site_id, team=p.team, kind=p.kind, alert_us=p.alert_us
                    )
                    for p in sorted(self.pending.values(), key=lambda p: (p.alert_us, p.alert_id))
                ],
                acceptable=sorted(self.acceptable.items()),
                acks={
                    a: [AckEvidence(ts_us=x.ts_us, outcome=x.outcome, source=x.source) for x in v]
                    for a, v in sorted(self.acks.items())
                },
                decided=dict(sorted(self.decided.items())),
                latest_window_us=self.latest_window_us,
            )
            .model_dump_json()
            .encode()
        )

    @classmethod
    def from_record(cls, raw: bytes, now: float) -> tuple[str, _Worker]:
        """Raises pydantic.ValidationError on a record this version cannot read."""
        record = OutcomeState.model_validate_json(raw)
        worker = cls(
            site_id=record.site_id,
            pending={
                p.alert_id: _Prompt(p.alert_id, p.site_id, p.team, p.kind, p.alert_us) for p in record.pending
            },
            acceptable=dict(record.acceptable),
            acks={a: [_Ack(x.ts_us, x.outcome, x.source) for x in v] for a, v in record.acks.items()},
            decided=dict(record.decided),
            latest_window_us=record.latest_window_us,
        )
        worker.last_activity = now  # the idle timeout starts again after a restore
        return record.worker_id, worker


class PendingPrompt(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    alert_id: str
    site_id: str
    team: str | None
    kind: str
    alert_us: int = Field(description="the alert's event time, microseconds since the epoch")


class AckEvidence(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    ts_us: int
    outcome: str
    source: str


class OutcomeState(Message):
    """The outcome tracker's state of one worker: a record of the compacted topic
    alerts.outcomes.state.v1, key worker_id. Internal: not a contract for other services (it can
    change with the tracker). Times are integer microseconds since the epoch (exact round trip)."""

    worker_id: Ident
    site_id: str
    pending: list[PendingPrompt] = Field(default_factory=list, description="sent prompts not decided yet")
    acceptable: list[tuple[int, int]] = Field(
        default_factory=list, description="(start, end) of the acceptable windows kept as evidence"
    )
    acks: dict[str, list[AckEvidence]] = Field(default_factory=dict, description="alert id -> acks")
    decided: dict[str, int] = Field(default_factory=dict, description="alert id -> its horizon")
    latest_window_us: int | None = None


class OutcomeTracker:
    """Per-worker state and the outcome rules. Feed events with `on_*`, call `due()` regularly."""

    def __init__(
        self,
        *,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_timeout_s = idle_timeout_s
        self._clock = clock
        self._workers: dict[str, _Worker] = {}
        self._dirty: set[str] = set()

    # -- inputs -----------------------------------------------------------------------------------

    def on_prompt(self, decision: PromptDecision) -> list[OutcomeRecord]:
        """A prompt decision; only sent conditioning breaks are tracked."""
        if decision.status != "sent" or decision.kind not in TRACKED_KINDS:
            return []
        worker = self._touch(decision.worker_id, decision.site_id)
        alert_id = str(decision.alert_id)
        if alert_id in worker.decided or alert_id in worker.pending:
            return []  # a redelivered decision
        worker.pending[alert_id] = _Prompt(
            alert_id, decision.site_id, decision.team, decision.kind, to_us(decision.alert_ts)
        )
        return self._decide_taken(decision.worker_id, worker)

    def on_ack(self, ack: BreakAck) -> list[OutcomeRecord]:
        """An acknowledgement (device or channel) or a rest report; outcome messages are ignored."""
        if ack.stage != "acknowledgement":
            return []
        if (ack.outcome, ack.source) not in {
            ("acknowledged", "device"),
            ("acknowledged", "channel"),
            ("taken", "rest"),
        }:
            return []
        worker = self._touch(ack.worker_id, ack.site_id)
        alert_id = str(ack.alert_id)
        if alert_id in worker.decided:
            return []
        evidence = _Ack(to_us(ack.ts), ack.outcome, ack.source)
        acks = worker.acks.setdefault(alert_id, [])
        if evidence not in acks:
            acks.append(evidence)
            acks.sort()
        if alert_id not in worker.pending:
            self._cap_stray_acks(worker)
            return []
        return self._decide_taken(ack.worker_id, worker)

    def on_window(self, window: ExposureWindow) -> list[OutcomeRecord]:
        """An exposure window (a rewrite of a window replaces the earlier version)."""
        worker = self._touch(window.worker_id, window.site_id)
        start = to_us(window.window_start)
        if window_is_acceptable(window):
            worker.acceptable[start] = start + window.window_s * US
        else:
            worker.acceptable.pop(start, None)
        if worker.latest_window_us is None or start > worker.latest_window_us:
            worker.latest_window_us = start
            self._prune(worker)
        return self._decide_taken(window.worker_id, worker)

    # -- decisions at the horizon ------------------------------------------------------------------

    def due(self, ready: Callable[[str], bool] = lambda _worker: True) -> list[OutcomeRecord]:
        """Prompts whose horizon has passed: a window of the worker starts at or after it, or the
        worker has sent nothing for `idle_timeout_s` (processing time). `ready(worker)` says whether
        every input that could still carry evidence for the worker has been read (the runner: its
        partitions are caught up); until then nothing is decided."""
        out: list[OutcomeRecord] = []
        now = self._clock()
        for worker_id in sorted(self._workers):
            worker = self._workers[worker_id]
            if not worker.pending:
                continue
            idle = now - worker.last_activity >= self.idle_timeout_s
            latest = worker.latest_window_us
            expired = [
                p
                for p in sorted(worker.pending.values(), key=lambda p: (p.alert_us, p.alert_id))
                if idle or (latest is not None and latest >= p.horizon_us)
            ]
            if not expired or not ready(worker_id):
                continue
            for prompt in expired:
                acks = [
                    a
                    for a in worker.acks.get(prompt.alert_id, [])
                    if a.outcome == "acknowledged" and a.ts_us <= prompt.horizon_us
                ]
                if acks:
                    out.append(self._decide(worker_id, worker, prompt, "acknowledged", acks[0].source, None))
                else:
                    out.append(self._decide(worker_id, worker, prompt, "ignored", "timeout", None))
        return out

    # -- state ---------------------------------------------------------------------------------------

    def take_dirty(self) -> set[str]:
        """Workers whose state changed since the last call (to persist)."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def export_worker(self, worker_id: str) -> bytes | None:
        """One worker's state as an OutcomeState record (None: unknown worker)."""
        worker = self._workers.get(worker_id)
        return worker.to_record(worker_id) if worker is not None else None

    def restore_worker(self, raw: bytes) -> str:
        """Load one worker's persisted state; returns its worker id. Raises pydantic.ValidationError
        on a record this version cannot read."""
        worker_id, worker = _Worker.from_record(raw, self._clock())
        self._workers[worker_id] = worker
        return worker_id

    def forget(self, worker_ids: Iterable[str]) -> None:
        """Drop workers another instance now owns (their partitions were revoked)."""
        for worker_id in worker_ids:
            self._workers.pop(worker_id, None)
            self._dirty.discard(worker_id)

    def workers(self) -> list[str]:
        return sorted(self._workers)

    def pending(self, worker_id: str) -> list[str]:
        worker = self._workers.get(worker_id)
        return sorted(worker.pending) if worker else []

    # -- internals -----------------------------------------------------------------------------------

    def _touch(self, worker_id: str, site_id: str) -> _Worker:
        worker = self._workers.get(worker_id)
        if worker is None:
            worker = self._workers[worker_id] = _Worker(site_id=site_id)
        worker.last_activity = self._clock()
        self._dirty.add(worker_id)
        return worker

    def _decide_taken(self, worker_id: str, worker: _Worker) -> list[OutcomeRecord]:
        out: list[OutcomeRecord] = []
        for prompt in sorted(worker.pending.values(), key=lambda p: (p.alert_us, p.alert_id)):
            candidates: list[tuple[int, str]] = []
            posture = _posture_taken_at(worker.acceptable, prompt)
            if posture is not None:
                candidates.append((posture, "posture"))
            rests = [
                a
                for a in worker.acks.get(prompt.alert_id, [])
                if a.source == "rest" and a.ts_us <= prompt.horizon_us
            ]
            if rests:
                candidates.append((max(rests[0].ts_us, prompt.alert_us), "rest"))
            if candidates:
                at, source = min(candidates)
                out.append(self._decide(worker_id, worker, prompt, "taken", source, at))
        return out

    def _decide(
        self,
        worker_id: str,
        worker: _Worker,
        prompt: _Prompt,
        outcome: Outcome,
        source: str,
        at_us: int | None,
    ) -> OutcomeRecord:
        del worker.pending[prompt.alert_id]
        worker.acks.pop(prompt.alert_id, None)
        worker.decided[prompt.alert_id] = prompt.horizon_us
        self._dirty.add(worker_id)
        ack = BreakAck(
            schema_version=1,
            alert_id=prompt.alert_id,
            worker_id=worker_id,
            site_id=prompt.site_id,
            ts=from_us(at_us if at_us is not None else prompt.horizon_us),
            stage="outcome",
            outcome=outcome,
            source=source,
        )
        return OutcomeRecord(ack=ack, team=prompt.team, kind=prompt.kind, alert_ts=from_us(prompt.alert_us))

    def _prune(self, worker: _Worker) -> None:
        assert worker.latest_window_us is not None
        oldest_pending = min((p.alert_us for p in worker.pending.values()), default=None)
        keep_from = worker.latest_window_us - EVIDENCE_RETENTION_S * US
        if oldest_pending is not None:
            keep_from = min(keep_from, oldest_pending)  # a pending prompt keeps all its evidence
        for start in [s for s, end in worker.acceptable.items() if end < keep_from]:
            del worker.acceptable[start]
        for alert_id in [
            a for a, v in worker.acks.items() if a not in worker.pending and v[-1].ts_us < keep_from
        ]:
            del worker.acks[alert_id]
        forget_before = worker.latest_window_us - DECIDED_RETENTION_S * US
        for alert_id in [a for a, h in worker.decided.items() if h < forget_before]:
            del worker.decided[alert_id]

    @staticmethod
    def _cap_stray_acks(worker: _Worker) -> None:
        stray = sorted((v[-1].ts_us, a) for a, v in worker.acks.items() if a not in worker.pending)
        for _ts, alert_id in stray[: max(0, len(stray) - MAX_STRAY_ACKS)]:
            del worker.acks[alert_id]


def _posture_taken_at(acceptable: dict[int, int], prompt: _Prompt) -> int | None:
    """The moment (us) a contiguous run of acceptable windows, clipped to [alert, horizon], first
    covers TAKEN_RUN_S; None if it does not (yet). Window granularity: a window counts whole or not
    at all, so the run is measured in whole windows except where the prompt or horizon cuts one."""
    lo, hi = prompt.alert_us, prompt.horizon_us
    need = TAKEN_RUN_S * US
    run_start: int | None = None
    run_end: int | None = None
    for start in sorted(s for s, e in acceptable.items() if e > lo and s < hi):
        end = acceptable[start]
        if run_end is None or start != run_end:
            run_start = max(start, lo)  # a gap (missing or unacceptable window) starts a new run
        run_end = end
        assert run_start is not None
        if min(end, hi) - run_start >= need:
            return run_start + need
    return None
