"""`strainwatch exposure score FILE.jsonl`: a file of posture frames scored by the processor's engine.

The same pure core as the processor (`events.parse_frame`, `exposure.ExposureEngine`) with no Kafka:
rescoring history after a thresholds change, checking a device maker's upload, a quick look at a
capture. Every line is validated as the processor validates a message; a line it would dead-letter
is reported on stderr with its reason code and skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from uuid import UUID

    from strainwatch.events import PostureFrame
    from strainwatch.exposure import FrameOutcome, Thresholds

exposure_app = typer.Typer(no_args_is_help=True, help="Exposure scoring without the stream.")

ZONES = ("acceptable", "conditional", "not_acceptable")
REGIONS = ("trunk", "neck", "arms")


class Format(StrEnum):
    JSON = "json"
    TABLE = "table"


def iso_ms(ts_s: float) -> str:
    """Event time as ISO 8601 UTC with milliseconds and Z, the contracts' spelling."""
    return datetime.fromtimestamp(ts_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _r(value: float) -> float:
    # sums of 1/rate steps over many windows carry float noise (9.999999…): round as the engine does
    return round(value, 6)


# --- scoring: pure, no I/O --------------------------------------------------------------------


def score_frames(
    frames: Iterable[PostureFrame],
    thresholds: Thresholds,
    window_s: int = 10,
    *,
    on_overlap: Callable[[PostureFrame, str], None] | None = None,
    on_frame: Callable[[PostureFrame], None] | None = None,
) -> list[dict[str, Any]]:
    """One summary per worker (sorted by worker_id) of validated frames in any order.

    Each worker's frames are scored in start_ts order (ties keep input order). A frame whose
    event_id the worker already sent is dropped (a redelivery, as in the processor); a frame that
    starts before the previous one ended is skipped and passed to `on_overlap` with a detail
    (the processor dead-letters it as `late`). `on_frame` is called after each frame (progress).
    """
    from strainwatch.exposure import ExposureEngine

    engine = ExposureEngine(thresholds, window_s=window_s)
    by_worker: dict[str, list[PostureFrame]] = {}
    seen: dict[str, set[UUID]] = {}
    duplicates: dict[str, int] = {}
    for frame in frames:
        worker = frame.worker_id
        ids = seen.setdefault(worker, set())
        if frame.event_id in ids:
            duplicates[worker] = duplicates.get(worker, 0) + 1
            continue
        ids.add(frame.event_id)
        by_worker.setdefault(worker, []).append(frame)

    results: list[dict[str, Any]] = []
    for worker in sorted(by_worker):
        summary = _Summary(worker, engine.version)
        state = engine.new_state()
        present: set[str] = set()
        for frame in sorted(by_worker[worker], key=lambda f: f.start_ts):
            start_s = frame.start_ts.timestamp()
            end_s = state.end_s
            # the engine's own order check: a frame may start up to half a sample early
            if start_s < end_s - 0.5 / frame.rate_hz:
                summary.overlapping += 1
                if on_overlap is not None:
                    on_overlap(
                        frame,
                        f"frame at {iso_ms(start_s)} overlaps an earlier frame of {worker} "
                        f"ending at {iso_ms(end_s)}",
                    )
            else:
                samples = frame.samples.present()
                present.update(samples)
                summary.add(engine.process(state, start_s, frame.rate_hz, samples, rest=bool(frame.rest)))
                summary.frames += 1
            if on_frame is not None:
                on_frame(frame)
        summary.add(engine.finish(state))
        dose = {name: _r(state.dose(name)) for name in engine.thresholds.segments if name in present}
        dose["upper_back"] = _r(sum(state.dose(name) for name in engine.thresholds.segments))
        summary.duplicates = duplicates.get(worker, 0)
        results.append(summary.as_dict(dose))
    return results


class _Summary:
    """Closed windows, violations and alerts of one worker, summed over the whole file."""

    def __init__(self, worker: str, version: str) -> None:
        self.worker = worker
        self.version = version
        self.frames = 0
        self.duplicates = 0
        self.overlapping = 0
        self.wear_s = 0.0
        self.samples: dict[str, int] = {}
        self.zone_s: dict[str, dict[str, float]] = {}
        self.cutpoints_s: dict[str, dict[str, float]] = {}
        self.longest_hold_s: dict[str, float] = {}
        self.violations: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []

    def add(self, outcome: FrameOutcome) -> None:
        for window in outcome.closed:
            self.wear_s += window.wear_s
            for name, count in window.samples.items():
                self.samples[name] = self.samples.get(name, 0) + count
            for name, zones in window.zone_s.items():
                into = self.zone_s.setdefault(name, dict.fromkeys(ZONES, 0.0))
                for zone, seconds in zones.items():
                    into[zone] += seconds
            for name, cuts in window.cutpoints_s.items():
                into = self.cutpoints_s.setdefault(name, {})
                for cut, seconds in cuts.items():
                    into[cut] = into.get(cut, 0.0) + seconds
            for name, seconds in window.longest_hold_s.items():
                self.longest_hold_s[name] = max(self.longest_hold_s.get(name, 0.0), seconds)
        for violation in outcome.violations:
            self.violations.append(
                {
                    "segment": violation.segment,
                    "start": iso_ms(violation.start_s),
                    "duration_s": _r(violation.duration_s),
                    "mean_angle": _r(violation.mean_angle),
                }
            )
        for alert in outcome.alerts:
            self.alerts.append(
                {
                    "kind": alert.kind,
                    "ts": iso_ms(alert.ts_s),
                    "segment": alert.segment,
                    # no alert.dose: the engine reads it mid-chunk, so it depends on how frames and
                    # windows split the samples; the final dose is in "dose"
                    "routine": list(alert.routine),
                }
            )

    def as_dict(self, dose: dict[str, float]) -> dict[str, Any]:
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


# --- file reading -----------------------------------------------------------------------------


class Invalid:
    """Invalid lines by line number: `line 7: out_of_range: samples.neck_flexion.3: …`."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str, str]] = []

    def add(self, line_no: int, reason: str, detail: str) -> None:
        self.lines.append((line_no, reason, detail))

    def report(self) -> Iterator[str]:
        for line_no, reason, detail in sorted(self.lines):
            yield f"line {line_no}: {reason}: {detail}"


def read_frames(
    lines: Iterable[bytes],
    invalid: Invalid,
    *,
    now: datetime,
    max_future_s: float,
    max_bytes: int,
    max_samples: int,
    line_numbers: dict[UUID, int] | None = None,
) -> Iterator[PostureFrame]:
    """Frames of the valid lines, validated as the processor validates a message; blank lines skipped."""
    from strainwatch.events import DeadReason, Rejected, parse_frame

    for line_no, raw in enumerate(lines, start=1):
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        try:
            frame = parse_frame(line, now=now, max_future_s=max_future_s, max_bytes=max_bytes)
        except Rejected as rejected:
            # a whole-document error (malformed JSON) has no field: its detail starts ": "
            invalid.add(line_no, rejected.reason.value, rejected.detail.removeprefix(": "))
            continue
        if frame.n_samples > max_samples:
            invalid.add(line_no, DeadReason.OVERSIZED.value, f"{frame.n_samples} samples > {max_samples}")
            continue
        if line_numbers is not None:
            line_numbers.setdefault(frame.event_id, line_no)  # a duplicate is dropped: keep the first
        yield frame


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


@exposure_app.command("score")
def score(
    file: Path = typer.Argument(
        ...,
        exists=True,
        dir_okay=False,
        readable=True,
        metavar="FILE.jsonl",
        help="posture frames, one JSON frame per line",
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
) -> None:
    """Score a file of posture frames per worker; exit 1 if any line was invalid."""
    import orjson
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from strainwatch.config import get_settings
    from strainwatch.events import DeadReason
    from strainwatch.exposure import load_thresholds

    settings = get_settings()
    try:
        thresholds = load_thresholds(thresholds_name or settings.thresholds)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--thresholds") from None

    err = Console(stderr=True)
    invalid = Invalid()
    line_numbers: dict[UUID, int] = {}
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    with bar, file.open("rb") as handle:
        reading = bar.add_task(f"reading {file.name}", total=file.stat().st_size)

        def lines() -> Iterator[bytes]:
            for raw in handle:
                bar.advance(reading, len(raw))
                yield raw

        frames = list(
            read_frames(
                lines(),
                invalid,
                now=datetime.now(UTC),
                max_future_s=settings.max_future_s,
                max_bytes=settings.max_frame_bytes,
                max_samples=settings.max_samples_per_frame,
                line_numbers=line_numbers,
            )
        )
        bar.remove_task(reading)
        scoring = bar.add_task("scoring", total=len(frames))
        results = score_frames(
            frames,
            thresholds,
            window_s or settings.window_s,
            on_overlap=lambda frame, detail: invalid.add(
                line_numbers[frame.event_id], DeadReason.LATE.value, detail
            ),
            on_frame=lambda frame: bar.advance(scoring),
        )

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
