"""`strainwatch exposure score FILE.jsonl`: a file of posture frames scored by the processor's runtime.

Each line is one source message for `processor.runtime.Runtime`, the class the processor drives, in
file order (the order of a topic dump): the same validation, deduplication, lateness and ordering,
the same windows, alerts and dead letters, without Kafka. Rescoring history after a thresholds
change, checking a device maker's upload, a quick look at a capture. The per-worker summaries are
computed from the runtime's messages; `--emit DIR` writes the messages themselves.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import typer

if TYPE_CHECKING:
    from strainwatch.exposure import ExposureEngine, FrameOutcome, Thresholds, Violation, WorkerState
    from strainwatch.processor.runtime import Runtime, RuntimeConfig

exposure_app = typer.Typer(no_args_is_help=True, help="Exposure scoring without the stream.")

ZONES = ("acceptable", "conditional", "not_acceptable")
REGIONS = ("trunk", "neck", "arms")
# --emit: one file per output topic, each line one message value as the processor publishes it
EMIT_FILES = {
    "windows": "exposure-windows.jsonl",  # exposure.windows.v1
    "alerts": "break-alerts.jsonl",  # alerts.break.v1
    "dead_letters": "dead-letters.jsonl",  # posture.deadletter.v1
}

Emit = Callable[[str, bytes], None]  # (role in EMIT_FILES, message value)


class Format(StrEnum):
    JSON = "json"
    TABLE = "table"


def _r(value: float) -> float:
    # sums of 1/rate steps over many windows carry float noise (9.999999…): round as the engine does
    return round(value, 6)


# --- summaries of the runtime's messages ------------------------------------------------------


class Invalid:
    """Invalid lines by line number: `line 7: out_of_range: samples.neck_flexion.3: …`."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str, str]] = []

    def add(self, line_no: int, reason: str, detail: str) -> None:
        self.lines.append((line_no, reason, detail))

    def report(self) -> Iterator[str]:
        for line_no, reason, detail in sorted(self.lines):
            yield f"line {line_no}: {reason}: {detail}"


@dataclass
class _WorkerSummary:
    """One worker's windows (closed and the open one), alerts and skipped frames, over the file."""

    worker: str
    version: str
    frames: int = 0
    duplicates: int = 0
    overlapping: int = 0
    wear_s: float = 0.0
    samples: dict[str, int] = field(default_factory=dict)
    zone_s: dict[str, dict[str, float]] = field(default_factory=dict)
    cutpoints_s: dict[str, dict[str, float]] = field(default_factory=dict)
    longest_hold_s: dict[str, float] = field(default_factory=dict)
    violations: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)

    def add_window(self, window: Mapping[str, Any]) -> None:
        """An exposure.windows.v1 message."""
        self.frames += window["frames"]
        self.wear_s += window["wear_s"]
        for name, count in window["samples"].items():
            self.samples[name] = self.samples.get(name, 0) + count
        for name, zones in window["zone_s"].items():
            into = self.zone_s.setdefault(name, dict.fromkeys(ZONES, 0.0))
            for zone, seconds in zones.items():
                into[zone] += seconds
        for name, cuts in window["cutpoints_s"].items():
            into = self.cutpoints_s.setdefault(name, {})
            for cut, seconds in cuts.items():
                into[cut] = into.get(cut, 0.0) + seconds
        for name, seconds in window["longest_hold_s"].items():
            self.longest_hold_s[name] = max(self.longest_hold_s.get(name, 0.0), seconds)

    def add_alert(self, alert: Mapping[str, Any]) -> None:
        """An alerts.break.v1 message."""
        self.alerts.append({k: alert[k] for k in ("kind", "ts", "segment", "dose", "routine")})

    def add_violation(self, violation: Violation) -> None:
        from strainwatch.processor.runtime import iso_ms  # the processor's spelling of event time

        self.violations.append(
            {
                "segment": violation.segment,
                "start": iso_ms(violation.start_s),
                "duration_s": _r(violation.duration_s),
                "mean_angle": _r(violation.mean_angle),
            }
        )

    def as_dict(self, state: WorkerState, segments: Iterable[str]) -> dict[str, Any]:
        dose = {name: _r(state.dose(name)) for name in segments if name in self.samples}
        dose["upper_back"] = _r(sum(state.dose(name) for name in segments))
        return {
            "worker_id": self.worker,
            "thresholds_version": self.version,
            "frames": self.frames,
            "duplicates": self.duplicates,
            "overlapping": self.overlapping,
            "wear_s": _r(self.wear_s),
            "samples": self.samples,
            "zone_s": {name: {z: _r(s) for z, s in zones.items()} for name, zones in self.zone_s.items()},
            "cutpoints_s": {
                name: {c: _r(s) for c, s in cuts.items()} for name, cuts in self.cutpoints_s.items()
            },
            "longest_hold_s": {name: _r(s) for name, s in self.longest_hold_s.items()},
            "violations": self.violations,
            "dose": dose,
            "alerts": self.alerts,
        }


def _observed_engine(
    thresholds: Thresholds, window_s: int
) -> tuple[ExposureEngine, list[tuple[WorkerState, Violation]]]:
    """The processor's engine, noting each violation it finds and whose state it was: the processor
    publishes only their count per window (to InfluxDB), the summaries list them."""
    from strainwatch.exposure import ExposureEngine

    found: list[tuple[WorkerState, Violation]] = []

    class ObservedEngine(ExposureEngine):
        def process(self, state: WorkerState, *args: Any, **kwargs: Any) -> FrameOutcome:
            outcome = super().process(state, *args, **kwargs)
            found.extend((state, violation) for violation in outcome.violations)
            return outcome

    return ObservedEngine(thresholds, window_s=window_s), found


def _key(line: bytes) -> bytes | None:
    """The message key the gateway sends with a frame: its worker_id (None when the line has none)."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    worker = doc.get("worker_id") if isinstance(doc, dict) else None
    return worker.encode() if isinstance(worker, str) else None


class _Rescoring:
    """The runtime fed one line at a time, its messages summarised (and emitted) as they come."""

    def __init__(
        self, runtime: Runtime, violations: list[tuple[WorkerState, Violation]], emit: Emit | None
    ) -> None:
        self.runtime = runtime
        self.violations = violations
        self.emit = emit
        self.invalid = Invalid()
        self.workers: dict[str, _WorkerSummary] = {}
        self._owners: dict[int, str] = {}  # id(state) -> worker

    def worker(self, worker: str) -> _WorkerSummary:
        summary = self.workers.get(worker)
        if summary is None:
            summary = self.workers[worker] = _WorkerSummary(worker, self.runtime.engine.version)
        return summary

    def feed(self, offset: int, line: bytes) -> None:
        runtime = self.runtime
        key = _key(line)
        duplicates = runtime.counters.duplicates
        runtime.on_message(key, line, 0, offset)
        if runtime.counters.duplicates != duplicates and key is not None:
            self.worker(key.decode()).duplicates += 1  # only a valid frame (key = worker_id) gets here
        self.collect()

    def collect(self) -> None:
        runtime = self.runtime
        if self.violations:
            for state, violation in self.violations:
                self.worker(self._owner(state)).add_violation(violation)
            self.violations.clear()
        runtime.lines.clear()  # InfluxDB points: not written offline
        if not runtime.out:
            return
        out = runtime.take_outputs()
        for key, value in out.dead_letters:
            letter = orjson.loads(value)
            # a whole-document error (malformed JSON) has no field: its detail starts ": "
            detail = letter["detail"].removeprefix(": ")
            self.invalid.add(letter["source_offset"] + 1, letter["reason"], detail)
            if letter["reason"] == "late" and key is not None:
                self.worker(key.decode()).overlapping += 1
        for key, value in out.windows:
            self.worker(key.decode()).add_window(orjson.loads(value))
        for key, value in out.alerts:
            self.worker(key.decode()).add_alert(orjson.loads(value))
        if self.emit is not None:
            for role in EMIT_FILES:
                for _, value in getattr(out, role):
                    self.emit(role, value)

    def _owner(self, state: WorkerState) -> str:
        owner = self._owners.get(id(state))
        if owner is None:  # a new worker since the last look
            self._owners = {id(record.state): worker for worker, record in self.runtime.records.items()}
            owner = self._owners[id(state)]
        return owner

    def finish(self) -> list[dict[str, Any]]:
        """End of file: buffered frames are applied (their gaps will not fill); open windows count."""
        runtime = self.runtime
        runtime.end_of_input()
        self.collect()
        segments = list(runtime.engine.thresholds.segments)
        results = []
        for worker in sorted(runtime.records):
            summary = self.worker(worker)
            open_window = runtime.open_window_message(worker)
            if open_window is not None:
                summary.add_window(orjson.loads(open_window))
            results.append(summary.as_dict(runtime.records[worker].state, segments))
        return results


def score_lines(
    lines: Iterable[bytes],
    thresholds: Thresholds,
    window_s: int = 10,
    *,
    config: RuntimeConfig | None = None,
    emit: Emit | None = None,
) -> tuple[list[dict[str, Any]], Invalid]:
    """Per-worker summaries (sorted by worker_id) of a topic dump, and its invalid lines.

    Each non-blank line is one message to the processor's runtime: partition 0, offset = its index,
    key = its worker_id. `emit(role, value)` receives every message the processor would publish.
    """
    from strainwatch.processor.runtime import Runtime, RuntimeConfig

    engine, violations = _observed_engine(thresholds, window_s)
    runtime = Runtime(engine, config or RuntimeConfig(), load=lambda worker: None, log_dead_letters=False)
    rescoring = _Rescoring(runtime, violations, emit)
    for offset, raw in enumerate(lines):
        line = raw.rstrip(b"\r\n")
        if line.strip():
            rescoring.feed(offset, line)
    return rescoring.finish(), rescoring.invalid


def not_acceptable_pct(summary: dict[str, Any], thresholds: Thresholds) -> dict[str, float | None]:
    """Per body region: not-acceptable seconds as a share of the region's segment-seconds.

    A region with several segments (trunk: flexion, lateral, twist; arms: left, right) pools them,
    so this is the mean over its segments, not the share of time any one of them was not acceptable.
    None where the region had no samples.
    """
    totals = dict.fromkeys(REGIONS, 0.0)
    bad = dict.fromkeys(REGIONS, 0.0)
    for name, zones in summary["zone_s"].items():
        region = thresholds.segments[name].region
        totals[region] += sum(zones.values())
        bad[region] += zones["not_acceptable"]
    return {r: (100.0 * bad[r] / totals[r] if totals[r] > 0 else None) for r in REGIONS}


def _table(results: list[dict[str, Any]], thresholds: Thresholds) -> Any:
    from rich.table import Table

    # two-line headers: the table fits 80 columns
    table = Table(title=f"exposure ({thresholds.label})", caption="NA %: share of time not acceptable")
    table.add_column("worker", no_wrap=True)
    table.add_column("wear\nh:mm:ss", justify="right", no_wrap=True)
    for region in REGIONS:
        table.add_column(f"{region}\nNA %", justify="right")
    table.add_column("violations", justify="right")
    table.add_column("breaks", justify="right")
    table.add_column("upper-back\ndose", justify="right")
    for summary in results:
        pct = not_acceptable_pct(summary, thresholds)
        wear = summary["wear_s"]
        table.add_row(
            summary["worker_id"],
            f"{int(wear // 3600)}:{int(wear % 3600 // 60):02d}:{int(wear % 60):02d}",
            *("–" if pct[r] is None else f"{pct[r]:.1f}" for r in REGIONS),
            str(len(summary["violations"])),
            str(sum(1 for a in summary["alerts"] if a["kind"] == "conditioning_break")),
            f"{summary['dose']['upper_back']:.1f}",
        )
    return table


def _emit_to(directory: Path) -> tuple[Emit, Callable[[], None]]:
    """An emit callback writing one JSONL file per output topic into `directory`, and its closer."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        files = {role: (directory / name).open("wb") for role, name in EMIT_FILES.items()}
    except OSError as error:
        raise typer.BadParameter(str(error), param_hint="--emit") from None

    def emit(role: str, value: bytes) -> None:
        files[role].write(value + b"\n")

    def close() -> None:
        for handle in files.values():
            handle.close()

    return emit, close


@exposure_app.command("score")
def score(
    file: Path = typer.Argument(
        ...,
        exists=True,
        dir_okay=False,
        readable=True,
        metavar="FILE.jsonl",
        help="posture frames, one JSON frame per line, in arrival order (a topic dump)",
    ),
    thresholds_name: str = typer.Option(
        None, "--thresholds", help="profile name or thresholds file (default STRAINWATCH_THRESHOLDS)"
    ),
    fmt: Format = typer.Option(
        Format.JSON, "--format", help="json (one object per worker and line) or table"
    ),
    window_s: int = typer.Option(
        None, "--window-s", min=1, max=3600, help="window length (default STRAINWATCH_WINDOW_S)"
    ),
    emit_dir: Path = typer.Option(
        None,
        "--emit",
        file_okay=False,
        metavar="DIR",
        help=f"also write the processor's messages to DIR: {', '.join(EMIT_FILES.values())}",
    ),
) -> None:
    """Score a file of posture frames per worker as the processor does; exit 1 if any line was invalid."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from strainwatch.config import get_settings
    from strainwatch.exposure import load_thresholds
    from strainwatch.processor.runtime import RuntimeConfig
    from strainwatch.topics import POSTURE_EVENTS

    settings = get_settings()
    try:
        thresholds = load_thresholds(thresholds_name or settings.thresholds)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--thresholds") from None
    config = RuntimeConfig(
        source_topic=POSTURE_EVENTS.name,
        allowed_lateness_s=settings.allowed_lateness_s,
        max_future_s=settings.max_future_s,
        max_frame_bytes=settings.max_frame_bytes,
        max_samples_per_frame=settings.max_samples_per_frame,
    )
    emit, close_emit = _emit_to(emit_dir) if emit_dir is not None else (None, lambda: None)

    err = Console(stderr=True)
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    try:
        with bar, file.open("rb") as handle:
            scoring = bar.add_task(f"scoring {file.name}", total=file.stat().st_size)

            def lines() -> Iterator[bytes]:
                for raw in handle:
                    bar.advance(scoring, len(raw))
                    yield raw

            results, invalid = score_lines(
                lines(), thresholds, window_s or settings.window_s, config=config, emit=emit
            )
    finally:
        close_emit()

    if fmt is Format.TABLE:
        Console().print(_table(results, thresholds))
    else:
        for summary in results:
            typer.echo(orjson.dumps(summary).decode())
    for message in invalid.report():
        typer.echo(message, err=True)
    if invalid.lines:
        typer.echo(f"{len(invalid.lines)} invalid line(s) skipped", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(exposure_app, name="exposure")
