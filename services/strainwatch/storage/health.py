"""Service health as InfluxDB points (`pipeline`, `dead_letter`), so Grafana shows it from InfluxDB.

A service keeps cumulative counters; every report turns them into deltas since the previous report
(sums over any time range are then totals, whatever the number of instances or restarts) plus the
gauges as they are now. Pure: the caller writes the lines.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from strainwatch.storage.measurements import dead_letter_line, pipeline_line

COUNTERS = ("frames_in", "frames_processed", "dead_lettered", "sink_write_errors")


def instance_name() -> str:
    """host-pid: unique among running instances, and readable in a panel legend."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class HealthPoints:
    service: str
    instance: str = field(default_factory=instance_name)
    _last: dict[str, int] = field(default_factory=dict)
    _last_reasons: dict[str, int] = field(default_factory=dict)
    _last_ts: float | None = None

    def lines(
        self,
        now_s: float,
        counters: Mapping[str, int],
        dead_letters_by_reason: Mapping[str, int],
        gauges: Mapping[str, float | int],
    ) -> list[str]:
        """The points for one report: counters and reasons are cumulative, gauges current."""
        interval_s = now_s - self._last_ts if self._last_ts is not None else 0.0
        fields: dict[str, float | int | str | bool] = {}
        for name in COUNTERS:
            value = int(counters.get(name, 0))
            fields[name] = value - self._last.get(name, 0)
            self._last[name] = value
        for gauge, reading in gauges.items():
            fields[gauge] = int(reading) if isinstance(reading, int) else float(reading)
        fields["interval_s"] = float(round(interval_s, 3))
        out = [pipeline_line(self.service, self.instance, fields, now_s)]
        for reason, total in sorted(dead_letters_by_reason.items()):
            delta = int(total) - self._last_reasons.get(reason, 0)
            self._last_reasons[reason] = int(total)
            if delta:
                out.append(dead_letter_line(self.service, self.instance, reason, delta, now_s))
        self._last_ts = now_s
        return out
