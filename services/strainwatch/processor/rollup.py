"""The hourly per-worker rollup (`exposure_hourly`): one hour's closed windows, summed as they close.

A month of 10-second windows for 1,000 workers is about 86 million points; reports and long
dashboard ranges read this rollup instead (24 points per worker and day). The pipeline produces it
itself, so it works on every InfluxDB (continuous queries and tasks differ between 1.x, 2.x and 3.x).

The running sums live in the worker's record, so they reach the changelog in the same value as the
exposure state and the source offset: after a crash the replay adds exactly the windows the restored
sums lack. The hour's point is rewritten with the running sums each time a window closes; a point
carries the sums of the hour's *closed* windows (the open one joins when it closes).

Memory: one array of doubles per worker in a fixed layout shared by all workers (see `RollupLayout`),
not a dict of field names.
"""

from __future__ import annotations

from array import array

from strainwatch.exposure import WindowAggregate
from strainwatch.exposure.thresholds import Thresholds

ZONES = ("acceptable", "conditional", "not_acceptable")
HOUR_S = 3600
# leading slots of every rollup array
WINDOWS, FRAMES, WEAR_S, VIOLATIONS, ACCRUED_UPPER_BACK = range(5)
_HEAD = 5


class RollupLayout:
    """Slot positions of each field, from the thresholds profile (the same for every worker)."""

    def __init__(self, thresholds: Thresholds) -> None:
        names = ["windows", "frames", "wear_s", "violations", "accrued_upper_back"]
        self.segments: list[tuple[str, int, tuple[str, ...]]] = []
        for segment, spec in thresholds.segments.items():
            base = len(names)
            cut_names = tuple(f"gt{c:g}" for c in spec.cutpoints)
            self.segments.append((segment, base, cut_names))
            names += [f"zone_{segment}_{zone}_s" for zone in ZONES]
            names += [f"cut_{segment}_{cut}_s" for cut in cut_names]
            names += [f"hold_{segment}_s", f"accrued_{segment}"]
        self.names = tuple(names)
        self.integers = frozenset({"windows", "frames", "violations"})
        self._zero = array("d", bytes(8 * len(names)))

    def empty(self) -> array[float]:
        return array("d", self._zero)

    def add(self, sums: array[float], window: WindowAggregate) -> None:
        """Add one closed window (longest holds combine as a maximum, everything else as a sum)."""
        sums[WINDOWS] += 1
        sums[FRAMES] += window.frames
        sums[WEAR_S] += window.wear_s
        sums[VIOLATIONS] += window.violations
        sums[ACCRUED_UPPER_BACK] += window.accrued.get("upper_back", 0.0)
        for segment, base, cut_names in self.segments:
            zones = window.zone_s.get(segment)
            if zones is None:
                continue  # the segment was not measured in this window
            sums[base] += zones["acceptable"]
            sums[base + 1] += zones["conditional"]
            sums[base + 2] += zones["not_acceptable"]
            cuts = window.cutpoints_s.get(segment, {})
            for k, cut in enumerate(cut_names):
                sums[base + 3 + k] += cuts.get(cut, 0.0)
            hold_slot = base + 3 + len(cut_names)
            hold = window.longest_hold_s.get(segment, 0.0)
            if hold > sums[hold_slot]:
                sums[hold_slot] = hold
            sums[hold_slot + 1] += window.accrued.get(segment, 0.0)

    def fields(self, sums: array[float], thresholds_version: str) -> dict[str, float | int | str | bool]:
        """Every field, always all of them (InfluxDB rewrites a point field by field)."""
        out: dict[str, float | int | str | bool] = {}
        integers = self.integers
        for name, value in zip(self.names, sums, strict=True):
            out[name] = int(value) if name in integers else round(value, 6)
        out["thresholds"] = thresholds_version
        return out


def hour_of(window_start_s: float) -> int:
    """The hour a window belongs to (windows divide hours evenly, so none spans two)."""
    return int(window_start_s) // HOUR_S * HOUR_S
