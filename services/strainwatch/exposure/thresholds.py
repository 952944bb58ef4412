"""Every number of the exposure model in one versioned configuration (docs/exposure-model.md).

Two profiles ship: `default` and `iso11226-strict`. `load_thresholds` takes a profile name or the
path of a JSON file with the same shape; every output names `profile@version`.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Region = Literal["trunk", "neck", "arms"]


class SegmentThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    region: Region
    symmetric: bool = Field(False, description="zones apply to |angle| (lateral bend, twist)")
    acceptable_max: float = Field(description="acceptable below this (and at or above 0 unless symmetric)")
    conditional_max: float = Field(
        description="conditional from acceptable_max up to this; not acceptable above"
    )
    negative_not_acceptable: bool = Field(
        True, description="angles below 0 (trunk backward, neck extension) are not acceptable"
    )
    holding_limit: tuple[tuple[float, float], tuple[float, float]] = Field(
        description="[[angle, seconds], [angle, seconds]]: the limit falls linearly between the two "
        "(approximation of ISO 11226's holding-time curves)"
    )
    cutpoints: tuple[float, ...] = Field(description="study cut-points: seconds above each are reported")

    @model_validator(mode="after")
    def _ordered(self) -> SegmentThresholds:
        if not self.acceptable_max <= self.conditional_max:
            raise ValueError("acceptable_max must not exceed conditional_max")
        return self


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str
    version: str
    description: str = ""
    segments: dict[str, SegmentThresholds]
    hold_tolerance_deg: float = Field(5.0, gt=0)
    hold_hysteresis_s: float = Field(3.0, ge=0)
    not_acceptable_limit_s: float = Field(10.0, gt=0)
    dose_rate: dict[Literal["acceptable", "conditional", "not_acceptable"], float]
    over_limit_multiplier: float = Field(2.0, ge=1)
    recovery_half_life_s: float = Field(600.0, gt=0)
    frequent_entries_per_min: float = Field(2.0, gt=0)
    movement_debounce_s: float = Field(
        1.0, ge=0, description="a dip into the acceptable zone shorter than this is not a new movement"
    )
    break_dose: float = Field(600.0, gt=0)
    nudge_interval_s: float = Field(120.0, ge=0)
    break_cooldown_s: float = Field(1200.0, ge=0)
    max_breaks_per_shift: int = Field(8, ge=0)
    shift_s: float = Field(86_400.0, gt=0, description="prompt budget period (approximation: a UTC day)")
    routines: dict[Region, tuple[str, ...]]

    @model_validator(mode="after")
    def _complete(self) -> Thresholds:
        # refuse at load time what would otherwise fail mid-stream (the first break for a region)
        missing_rates = {"acceptable", "conditional", "not_acceptable"} - set(self.dose_rate)
        if missing_rates:
            raise ValueError(f"dose_rate lacks zones: {sorted(missing_rates)}")
        if any(rate < 0 for rate in self.dose_rate.values()):
            raise ValueError("dose_rate values must not be negative")
        regions = {seg.region for seg in self.segments.values()}
        missing_routines = sorted(r for r in regions if not self.routines.get(r))
        if missing_routines:
            raise ValueError(f"routines lacks regions: {missing_routines}")
        return self

    @property
    def label(self) -> str:
        return f"{self.profile}@{self.version}"


SHIPPED = ("default", "iso11226-strict")


def load_thresholds(name_or_path: str) -> Thresholds:
    """A shipped profile by name, or a JSON file by path."""
    if name_or_path in SHIPPED:
        text = resources.files("strainwatch.exposure").joinpath(f"profiles/{name_or_path}.json").read_text()
        source = f"profile {name_or_path}"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            shipped = ", ".join(SHIPPED)
            raise ValueError(
                f"unknown thresholds {name_or_path!r}: not a shipped profile ({shipped}) nor a file"
            )
        text = path.read_text()
        source = str(path)
    try:
        return Thresholds.model_validate(json.loads(text))
    except (ValueError, ValidationError) as error:
        raise ValueError(f"invalid thresholds in {source}: {error}") from None
