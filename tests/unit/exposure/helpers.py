"""Running the exposure engine over frames in tests: one outcome for a whole run."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from strainwatch.exposure import (
    Alert,
    ExposureEngine,
    FrameOutcome,
    Violation,
    WindowAggregate,
    WorkerState,
    load_thresholds,
)


@dataclass(frozen=True)
class Frame:
    start_s: float
    rate_hz: float
    samples: Mapping[str, Sequence[float]]
    rest: bool = False


@dataclass
class Run:
    alerts: list[Alert] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    windows: list[WindowAggregate] = field(default_factory=list)

    def add(self, outcome: FrameOutcome) -> None:
        self.alerts += outcome.alerts
        self.violations += outcome.violations
        self.windows += outcome.closed

    def kind(self, kind: str) -> list[Alert]:
        return [a for a in self.alerts if a.kind == kind]


def engine(profile: str = "default", window_s: int = 10) -> ExposureEngine:
    return ExposureEngine(load_thresholds(profile), window_s=window_s)


def run(
    eng: ExposureEngine,
    frames: Iterable[Frame],
    state: WorkerState | None = None,
    finish: bool = True,
) -> tuple[Run, WorkerState]:
    state = state if state is not None else eng.new_state()
    result = Run()
    for f in frames:
        result.add(eng.process(state, f.start_s, f.rate_hz, f.samples, rest=f.rest))
    if finish:
        result.add(eng.finish(state))
    return result, state


def steady(seconds: float, rate_hz: float = 1.0, **angles: float) -> dict[str, list[float]]:
    """Constant angles for `seconds` at `rate_hz`."""
    n = round(seconds * rate_hz)
    return {name: [float(angle)] * n for name, angle in angles.items()}


def concat(*parts: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    """Samples of several phases one after the other (each phase names the same segments)."""
    out: dict[str, list[float]] = {}
    for part in parts:
        for name, values in part.items():
            out.setdefault(name, []).extend(values)
    return out


def split(
    samples: Mapping[str, Sequence[float]], start_ms: int, rate_hz: float, cuts: Sequence[int]
) -> list[Frame]:
    """Contiguous frames cut at the given sample indexes; starts are millisecond timestamps, as a
    device sends them (the runtime converts them with datetime.timestamp())."""
    n = len(next(iter(samples.values())))
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < n)), n]
    return [
        Frame(
            (start_ms + round(a * 1000 / rate_hz)) / 1000,
            rate_hz,
            {name: list(values[a:b]) for name, values in samples.items()},
        )
        for a, b in itertools.pairwise(bounds)
    ]


def window_at(windows: Sequence[WindowAggregate], start_s: float) -> WindowAggregate:
    [window] = [w for w in windows if w.window_start_s == start_s]
    return window
