"""What a prompt says: the device's line (<= 60 characters) and the channel message. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from strainwatch.alerts.routines import Routine, routine_for, segment_words
from strainwatch.events import BreakAlert

DEVICE_TEXT_MAX = 60


@dataclass(frozen=True, slots=True)
class ChannelMessage:
    title: str
    body: str


def dose_words(dose: float) -> str:
    """The dose in plain words: one unit is one second in a conditional zone (docs/exposure-model.md)."""
    minutes = dose / 60.0
    if minutes < 1.5:
        return "about a minute of strain without enough recovery"
    return f"about {round(minutes)} minutes of strain without enough recovery"


def device_text(alert: BreakAlert, routine: Routine | None) -> str:
    if alert.kind == "posture_hold":
        text = f"{segment_words(alert.segment).capitalize()} too long: change position"
    else:
        text = f"Time for a break: {routine.title}" if routine else "Time for a 2-3 minute break"
    return text if len(text) <= DEVICE_TEXT_MAX else text[: DEVICE_TEXT_MAX - 3] + "..."


def channel_message(alert: BreakAlert, routine: Routine | None) -> ChannelMessage:
    where = segment_words(alert.segment)
    if alert.kind == "posture_hold":
        title = f"Posture nudge for {alert.worker_id}: {where}"
        lines = [
            f"Why: {where}, held longer than its safe holding time ({dose_words(alert.dose)} so far).",
            "A change of position is enough.",
        ]
        if routine is not None:
            lines.append(f"If it keeps happening, try the {routine.title.lower()}:")
    else:
        title = f"Break prompt for {alert.worker_id}: {routine.title if routine else '2-3 minute break'}"
        lines = [
            f"Why: {where} - {dose_words(alert.dose)} (upper-back dose {alert.dose:.0f}).",
            f"Take 2-3 minutes for the {routine.title.lower()}:" if routine else "Take 2-3 minutes.",
        ]
    if routine is not None:
        lines.extend(f"{i}. {step}" for i, step in enumerate(routine.steps, 1))
    return ChannelMessage(title, "\n".join(lines))


def describe(alert: BreakAlert) -> tuple[Routine | None, str, ChannelMessage]:
    routine = routine_for(alert.segment, alert.routine)
    return routine, device_text(alert, routine), channel_message(alert, routine)
