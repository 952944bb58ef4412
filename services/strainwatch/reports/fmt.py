"""Number formatting for the report: one place, deterministic (no locale), `None` shown as a dash."""

from __future__ import annotations

DASH = "–"  # a value that could not be computed (no hours, no outcomes): never printed as 0


def number(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return DASH
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def percent(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{value:.{digits}f} %"


def csv_value(value: object) -> str:
    """Values in CSV files: raw numbers (floats to 6 decimals, no thousands separator), empty for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = f"{round(value, 6):.6f}".rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    return str(value)


def segment_name(segment: str) -> str:
    return {
        "trunk_flexion": "trunk flexion",
        "trunk_lateral": "trunk lateral bend",
        "trunk_twist": "trunk twist",
        "neck_flexion": "neck flexion",
        "arm_elevation_left": "left upper arm elevation",
        "arm_elevation_right": "right upper arm elevation",
    }.get(segment, segment.replace("_", " "))


def label(name: str) -> str:
    """A tag value (kind, reason, outcome, body part) in plain words."""
    return {
        "posture_hold": "posture nudge",
        "conditioning_break": "conditioning break",
        "upper_back": "upper back",
        "lower_back": "lower back",
        "first_aid": "first aid",
        "not_acceptable": "not acceptable",
        "quiet_hours": "quiet hours",
        "scheduled_break": "scheduled break",
        "not_neutral": "not back in neutral posture",
    }.get(name, name.replace("_", " "))
