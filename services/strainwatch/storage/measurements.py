"""The one definition of strainwatch's InfluxDB measurements, tags and fields, as line protocol.

InfluxDB identifies a point by measurement + tags + timestamp and a second write of the same
identity replaces the first. strainwatch relies on that in both directions, so every builder here
chooses its tags such that the identity is unique per event it records:

- a replayed or rewritten event (a window rewritten as it fills, a frame replayed after a crash)
  overwrites its own point instead of doubling it;
- two distinct events never share an identity, or one would silently overwrite the other.

Timestamps are whole seconds and every write says so (`precision=s`): /api/v2/write assumes
nanoseconds otherwise. Identities per measurement:

- `exposure`: site, team, task, worker + window start. One window per worker and start; the team
  and task are the ones the window opened with, so rewrites of an open window keep its identity.
  Kept in the short retention policy `windows` (weeks): read it as `"windows"."exposure"`.
- `exposure_hourly`: site, team, task, worker + hour start. The processor's hourly rollup of the
  worker's closed windows, rewritten with the hour's running sums as each window closes. A roster
  change within the hour starts a second point (other team or task tags): both are true.
  Default retention policy (years): reports and long dashboard ranges read this.
- `pipeline`: service, instance + the write second; one point per instance about every 10 s.
- `dead_letter`: service, instance, reason + the write second.
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
EXPOSURE_HOURLY = "exposure_hourly"
PIPELINE = "pipeline"
DEAD_LETTER = "dead_letter"

# The retention policy of the 10-second windows (short); everything else lives in the database's
# default policy (long). InfluxDB 1.x: `<db>/<rp>` as the write bucket; 2.x: a bucket mapped to
# (db, rp) with a DBRP mapping. Queries name it: `"windows"."exposure"`.
WINDOWS_RP = "windows"


def source(measurement: str) -> str:
    """The InfluxQL FROM for a measurement: the 10-second windows are in their own retention policy."""
    return f'"{WINDOWS_RP}"."{measurement}"' if measurement == EXPOSURE else f'"{measurement}"'


EXPOSURE_TAGS = ("site", "team", "task", "worker")
EXPOSURE_HOURLY_TAGS = ("site", "team", "task", "worker")
BREAK_ALERT_TAGS = ("site", "team", "worker", "kind", "segment")
BREAK_ACK_TAGS = ("site", "team", "worker", "outcome", "source", "kind")
BREAK_PROMPT_TAGS = ("site", "team", "worker", "kind", "segment", "status", "reason")
UNASSIGNED_TEAM = "unassigned"  # until the roster names the worker's team
UNASSIGNED_TASK = "unassigned"  # until the roster names the worker's task or station

WRITE_PRECISION = "s"
OUTCOMES = ("taken", "acknowledged", "ignored")


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
    accrued: dict[str, float]


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
    for segment, dose in window.accrued.items():
        fields[f"accrued_{segment}"] = float(dose)
    return fields


def exposure_line(
    site: str, team: str | None, worker: str, window: WindowLike, task: str | None = None
) -> str:
    tags = {"site": site, "team": team or UNASSIGNED_TEAM, "task": task or UNASSIGNED_TASK, "worker": worker}
    return line(EXPOSURE, tags, exposure_fields(window), int(window.window_start_s))


def exposure_hourly_line(
    site: str,
    team: str | None,
    task: str | None,
    worker: str,
    hour_start_s: int,
    fields: Mapping[str, float | int | str | bool],
) -> str:
    """The hourly rollup point: `fields` holds the hour's sums (and longest holds, and `windows`)."""
    tags = {"site": site, "team": team or UNASSIGNED_TEAM, "task": task or UNASSIGNED_TASK, "worker": worker}
    return line(EXPOSURE_HOURLY, tags, fields, int(hour_start_s))


def pipeline_line(
    service: str, instance: str, fields: Mapping[str, float | int | str | bool], ts_s: float
) -> str:
    """Service health as a point (frames_in, frames_processed, dead_lettered, sink_write_errors as
    deltas over `interval_s`; lag_frames and checkpoint_age_s as gauges)."""
    return line(PIPELINE, {"service": service, "instance": instance}, fields, int(ts_s))


def dead_letter_line(service: str, instance: str, reason: str, count: int, ts_s: float) -> str:
    tags = {"service": service, "instance": instance, "reason": reason}
    return line(DEAD_LETTER, tags, {"count": int(count)}, int(ts_s))


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
    # one 0/1 field per outcome, so compliance is SUM("taken") / COUNT("alert_id") in one statement
    fields: dict[str, float | int | str | bool] = {"alert_id": alert_id}
    for name in OUTCOMES:
        fields[name] = int(outcome == name)
    return line(BREAK_ACK, tags, fields, int(alert_ts_s))
