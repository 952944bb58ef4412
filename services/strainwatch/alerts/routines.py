"""The 2-3 minute conditioning routines, by body region, in plain words (docs/exposure-model.md).

The processor names a routine by its body region (`BreakAlert.routine` holds the region's routine
steps, `routine_id` on a device command is the region); this module gives each a title and a short
description of its steps for channel messages and the device's 60-character line.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Routine:
    routine_id: str
    title: str
    steps: tuple[str, ...]


ROUTINES: dict[str, Routine] = {
    "neck": Routine(
        "neck",
        "Neck reset (2-3 min)",
        (
            "Chin tucks: draw the chin straight back, hold 5 s, 8 times",
            "Upper-trapezius stretch: ear towards shoulder, 20 s each side",
            "Slow neck rotations: look over each shoulder, 5 times each way",
        ),
    ),
    "arms": Routine(
        "arms",
        "Shoulder reset (2-3 min)",
        (
            "Scapular retractions: squeeze the shoulder blades together, hold 5 s, 10 times",
            "Band pull-aparts: arms straight, pull the band apart to the chest, 12 times",
            "Wall angels: back to the wall, slide the arms up and down slowly, 8 times",
        ),
    ),
    "trunk": Routine(
        "trunk",
        "Back reset (2-3 min)",
        (
            "Standing thoracic extension: hands on the lower back, lean back gently, 5 times",
            "Hip-hinge reset: bend from the hips with a straight back and stand tall, 8 times",
            "Gentle thoracic rotation: arms crossed, turn the upper body side to side, 8 times",
        ),
    ),
}

# A segment's body region, for alerts whose routine list the processor left empty (posture nudges).
SEGMENT_REGIONS: dict[str, str] = {
    "neck_flexion": "neck",
    "arm_elevation_left": "arms",
    "arm_elevation_right": "arms",
    "trunk_flexion": "trunk",
    "trunk_lateral": "trunk",
    "trunk_twist": "trunk",
}

# The segment in plain words: what the worker's body is doing.
SEGMENT_WORDS: dict[str, str] = {
    "neck_flexion": "neck bent forward",
    "trunk_flexion": "back bent forward",
    "trunk_lateral": "back bent to the side",
    "trunk_twist": "back twisted",
    "arm_elevation_left": "left arm raised",
    "arm_elevation_right": "right arm raised",
    "upper_back": "upper back under load",
}

_STEP_WORDS = {
    "chin tucks": "neck",
    "upper-trapezius stretch": "neck",
    "slow neck rotations": "neck",
    "band pull-aparts": "arms",
    "wall angels": "arms",
    "standing thoracic extension": "trunk",
    "hip-hinge reset": "trunk",
    "gentle thoracic rotation": "trunk",
}


def routine_for(segment: str, routine_steps: list[str] | tuple[str, ...]) -> Routine | None:
    """The routine an alert names: by the steps the processor listed, else by the segment's region."""
    for step in routine_steps:
        region = _STEP_WORDS.get(step.lower()) or (
            "arms" if step.lower().startswith("scapular retractions") else None
        )
        if region is not None:
            return ROUTINES[region]
    region = SEGMENT_REGIONS.get(segment)
    return ROUTINES[region] if region else None


def segment_words(segment: str) -> str:
    return SEGMENT_WORDS.get(segment, segment.replace("_", " "))
