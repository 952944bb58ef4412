"""An optional roster file for the report: JSON lines of roster entries (an export of roster.v1).

It supplies hours worked (`hours_per_week`), the basis of incidence rates when every rostered worker
in the scope has them, and the sites and teams a report may name before any data exists.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from pathlib import Path

import orjson


class RosterError(ValueError):
    pass


@dataclass(frozen=True)
class RosterWorker:
    worker_id: str
    site: str
    team: str
    hours_per_week: float | None
    active: bool


@dataclass(frozen=True)
class Roster:
    workers: tuple[RosterWorker, ...]

    @classmethod
    def load(cls, path: Path) -> Roster:
        workers = []
        try:
            text = path.read_text()
        except OSError as error:
            raise RosterError(f"cannot read roster {path}: {error}") from error
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                doc = orjson.loads(raw)
                hours = doc.get("hours_per_week")
                workers.append(
                    RosterWorker(
                        str(doc["worker_id"]),
                        str(doc["site_id"]),
                        str(doc["team"]),
                        None if hours is None else float(hours),
                        bool(doc.get("active", True)),
                    )
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
                raise RosterError(f"{path}:{number}: not a roster entry ({error})") from error
        return cls(tuple(workers))

    def sites(self) -> set[str]:
        return {w.site for w in self.workers}

    def teams(self) -> set[str]:
        return {w.team for w in self.workers}

    def hours_worked(self, year: int, month: int, site: str | None, team: str | None) -> float | None:
        """Hours worked in the month: hours_per_week × days / 7 over the scope's active workers; None
        unless every one of them has hours_per_week."""
        scope = [
            w
            for w in self.workers
            if w.active and (site is None or w.site == site) and (team is None or w.team == team)
        ]
        if not scope or any(w.hours_per_week is None for w in scope):
            return None
        days = calendar.monthrange(year, month)[1]
        return sum(w.hours_per_week or 0.0 for w in scope) * days / 7.0
