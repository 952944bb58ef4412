"""The one definition of strainwatch's InfluxDB measurements, tags and fields, as line protocol.

InfluxDB identifies a point by measurement + tags + timestamp and a second write of the same
identity replaces the first. strainwatch relies on that in both directions, so every builder here
chooses its tags such that the identity is unique per event it records:

- a replayed or rewritten event (a window rewritten as it fills, a frame replayed after a crash)
  overwrites its own point instead of doubling it;
- two distinct events never share an identity, or one would silently overwrite the other.

Timestamps are whole seconds and every write says so (`precision=s`): /api/v2/write assumes
nanoseconds otherwise. Identities per measurement:

- `exposure`: site, team, worker + window start. One window per worker and start; the team is the
  one the window opened with, so rewrites of an open window keep its identity.
- `break_alert`: site, team, worker, kind, segment + alert second. Segments are scored in lockstep,
  so several segments can cross their limit at the same sample: the segment must be a tag.
  Within one (worker, kind, segment) the engine spaces alerts by the nudge interval or the break
  cooldown (120 s and 1200 s in the shipped profiles); a profile that sets either below 1 s would
  put two alerts in one second and the later one would replace the earlier.
- `break_prompt`: site, team, worker, kind, segment, status, reason + the *alert's* second (event
  time, not the decision's): the same identity as the alert's `break_alert` point plus the decision,
  so a decision written again after a restart replaces itself; a later `duplicate` decision of the
  same alert is a second point with its own reason tag.
- `break_ack`: site, team, worker, outcome, source, kind + the alert's second (its event time, not
  the moment of the outcome). One outcome per alert, and one worker's conditioning breaks are at
  least the break cooldown apart, so the identity is unique per alert; a replay rewrites it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

EXPOSURE = "exposure"
BREAK_ALERT = "break_alert"
BREAK_ACK = "break_ack"
BREAK_PROMPT = "break_prompt"
INCIDENT = "incident"

EXPOSURE_TAGS = ("site", "team", "worker")
BREAK_ALERT_TAGS = ("site", "team", "worker", "kind", "segment")
BREAK_ACK_TAGS = ("site", "team", "worker", "outcome", "source", "kind")
BREAK_PROMPT_TAGS = ("site", "team", "worker", "kind", "segment", "status", "reason")
UNASSIGNED_TEAM = "unassigned"  # until the roster names the worker's team

WRITE_PRECISION = "s"


def _escape_tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def _escape_str_field(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', r"\"") + '"'


def line(
    measurement: str, tags: Mapping[str, str], fields: Mapping[str, float | int | str | bool], ts_s: int
) -> str:
    tag_part = ",".join(f"{k}={_escape_tag(v)}" for k, v in sorted(tags.items()) if v)
    parts = []
    for name, value in fields.items():
        if isinstance(value, bool):
            parts.append(f"{name}={'true' if value else 'false'}")
        elif isinstance(value, int):
            parts.append(f"{name}={value}i")
        elif isinstance(value, float):
            parts.append(f"{name}={value!r}")
        else:
            parts.append(f"{name}={_escape_str_field(value)}")
    head = f"{measurement},{tag_part}" if tag_part else measurement
    return f"{head} {','.join(parts)} {ts_s}"


class WindowLike(Protocol):
    window_start_s: int
    frames: int
    wear_s: float
    samples: dict[str, int]
    zone_s: dict[str, dict[str, float]]
    cutpoints_s: dict[str, dict[str, float]]
    longest_hold_s: dict[str, float]
    dose: dict[str, float]
    violations: int
    thresholds_version: str


def exposure_fields(window: WindowLike) -> dict[str, float | int | str | bool]:
    """Every field of a window, always all of them: InfluxDB rewrites a point field by field."""
    fields: dict[str, float | int | str | bool] = {
        "frames": int(window.frames),
        "wear_s": float(window.wear_s),
        "violations": int(window.violations),
        "thresholds": window.thresholds_version,
    }
    for segment, count in window.samples.items():
        fields[f"samples_{segment}"] = int(count)
    for segment, zones in window.zone_s.items():
        for zone, seconds in zones.items():
            fields[f"zone_{segment}_{zone}_s"] = float(seconds)
    for segment, cuts in window.cutpoints_s.items():
        for cut, seconds in cuts.items():
            fields[f"cut_{segment}_{cut}_s"] = float(seconds)
    for segment, seconds in window.longest_hold_s.items():
        fields[f"hold_{segment}_s"] = float(seconds)
    for segment, dose in window.dose.items():
        fields[f"dose_{segment}"] = float(dose)
    return fields


def exposure_line(site: str, team: str | None, worker: str, window: WindowLike) -> str:
    tags = {"site": site, "team": team or UNASSIGNED_TEAM, "worker": worker}
    return line(EXPOSURE, tags, exposure_fields(window), int(window.window_start_s))


def break_alert_line(
    site: str, team: str | None, worker: str, kind: str, segment: str, dose: float, alert_id: str, ts_s: float
) -> str:
    # segment is a tag: alerts of two segments in the same second are two points, not one
    tags = {
        "site": site,
        "team": team or UNASSIGNED_TEAM,
        "worker": worker,
        "kind": kind,
        "segment": segment,
    }
    fields: dict[str, float | int | str | bool] = {
        "dose": float(dose),
        "alert_id": alert_id,
    }
    return line(BREAK_ALERT, tags, fields, int(ts_s))


def break_prompt_line(
    site: str,
    team: str | None,
    worker: str,
    kind: str,
    segment: str,
    status: str,
    reason: str | None,
    alert_id: str,
    channels_ok: int,
    channels_failed: int,
    alert_ts_s: float,
) -> str:
    """One delivery decision (sent or suppressed) of a break alert; reason empty when sent."""
    tags = {
        "site": site,
        "team": team or UNASSIGNED_TEAM,
        "worker": worker,
        "kind": kind,
        "segment": segment,
        "status": status,
        "reason": reason or "",
    }
    fields: dict[str, float | int | str | bool] = {
        "alert_id": alert_id,
        "channels_ok": int(channels_ok),
        "channels_failed": int(channels_failed),
    }
    return line(BREAK_PROMPT, tags, fields, int(alert_ts_s))


def break_ack_line(
    site: str,
    team: str | None,
    worker: str,
    kind: str,
    outcome: str,
    source: str,
    alert_id: str,
    alert_ts_s: float,
) -> str:
    """The outcome of one break prompt, stamped with the alert's event time (see the module doc)."""
    tags = {
        "site": site,
        "team": team or UNASSIGNED_TEAM,
        "worker": worker,
        "outcome": outcome,
        "source": source,
        "kind": kind,
    }
    return line(BREAK_ACK, tags, {"alert_id": alert_id}, int(alert_ts_s))
