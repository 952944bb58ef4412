"""The channels file (STRAINWATCH_CHANNELS_FILE): per site and team, where prompts go and the
delivery policy's settings. YAML, `${ENV_VAR}` substituted (secrets stay out of the file),
validated at start; an error names the file, the line, the key and what is wrong.

    defaults:                    # every site not listed below
      nudges_per_hour: 6
    sites:
      plant-1:
        timezone: Europe/Berlin  # of shifts, quiet hours and the roster's scheduled breaks
        quiet_hours: ["22:00-06:00"]
        shifts: {early: "06:00-14:00", late: "14:00-22:00"}
        nudge_when_neutral: true
        channels:
          - url: "ntfy://${NTFY_TOKEN}@ntfy.example.com/plant-1"
            rate_per_s: 2
        teams:
          assembly:
            nudges_per_shift: 12
            channels: [{url: "json://hooks.example.com/assembly", kinds: [conditioning_break]}]
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from strainwatch.alerts.policy import ClockRange, Policy
from strainwatch.events import AlertKind

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_STR_TAG = "tag:yaml.org,2002:str"


class ChannelsConfigError(ValueError):
    """The channels file is missing, unreadable or invalid; the message says where and why."""


def _clock_ranges(values: list[str]) -> list[str]:
    for value in values:
        ClockRange.parse(value)  # raises ValueError with the offending text
    return values


class Channel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=3, description="an apprise URL; may hold secrets, never logged")
    name: str | None = Field(default=None, max_length=64, description="shown in logs instead of the URL")
    rate_per_s: float = Field(1.0, gt=0, le=1_000, description="messages per second to this URL")
    kinds: tuple[AlertKind, ...] = ("posture_hold", "conditioning_break")

    @field_validator("url")
    @classmethod
    def _has_scheme(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError("not an apprise URL (scheme://...)")
        return value

    @property
    def label(self) -> str:
        return self.name or mask_url(self.url)


class TeamConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    nudges_per_hour: int | None = Field(default=None, ge=0)
    nudges_per_shift: int | None = Field(default=None, ge=0)
    nudge_when_neutral: bool | None = None
    channels: tuple[Channel, ...] = ()


class SiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = "UTC"
    quiet_hours: list[str] = Field(default_factory=list)
    shifts: dict[str, str] = Field(default_factory=dict, description="roster shift name -> 'HH:MM-HH:MM'")
    nudges_per_hour: int = Field(6, ge=0)
    nudges_per_shift: int = Field(24, ge=0)
    nudge_when_neutral: bool = False
    max_alert_age_s: float = Field(
        300.0, ge=0, description="older alerts are suppressed `stale`; 0: no limit"
    )
    channels: tuple[Channel, ...] = ()
    teams: dict[str, TeamConfig] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: list[str]) -> list[str]:
        return _clock_ranges(value)

    @field_validator("shifts")
    @classmethod
    def _shifts(cls, value: dict[str, str]) -> dict[str, str]:
        _clock_ranges(list(value.values()))
        return value


class ChannelsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: SiteConfig = Field(default_factory=SiteConfig)
    sites: dict[str, SiteConfig] = Field(default_factory=dict)

    def site(self, site_id: str) -> SiteConfig:
        return self.sites.get(site_id, self.defaults)

    def policy(self, site_id: str, team: str | None) -> Policy:
        site = self.site(site_id)
        override = site.teams.get(team) if team else None

        def pick(name: str) -> Any:
            value = getattr(override, name, None) if override is not None else None
            return getattr(site, name) if value is None else value

        return Policy(
            timezone=site.timezone,
            quiet_hours=tuple(ClockRange.parse(r) for r in site.quiet_hours),
            shifts={name: ClockRange.parse(r) for name, r in site.shifts.items()},
            nudges_per_hour=pick("nudges_per_hour"),
            nudges_per_shift=pick("nudges_per_shift"),
            nudge_when_neutral=pick("nudge_when_neutral"),
            max_alert_age_s=site.max_alert_age_s,
        )

    def channels(self, site_id: str, team: str | None, kind: str) -> list[Channel]:
        """The site's channels, then the team's, for this kind of alert; each URL once."""
        site = self.site(site_id)
        team_cfg = site.teams.get(team) if team else None
        out: dict[str, Channel] = {}
        for channel in (*site.channels, *(team_cfg.channels if team_cfg else ())):
            if kind in channel.kinds:
                out.setdefault(channel.url, channel)
        return list(out.values())

    def all_channels(self) -> list[Channel]:
        out: dict[str, Channel] = {}
        for site in (self.defaults, *self.sites.values()):
            for channel in (*site.channels, *(c for t in site.teams.values() for c in t.channels)):
                out.setdefault(channel.url, channel)
        return list(out.values())


def mask_url(url: str) -> str:
    """scheme://**** plus the host when it carries no credentials: enough to tell channels apart."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "****"
    host = parts.hostname if parts.username is None and parts.password is None else None
    return f"{parts.scheme}://{host}/****" if host else f"{parts.scheme}://****"


def load_channels(path: Path, environ: dict[str, str] | None = None) -> ChannelsConfig:
    """Read, substitute and validate the channels file; ChannelsConfigError says what is wrong."""
    env = os.environ if environ is None else environ
    try:
        text = path.read_text()
    except OSError as error:
        raise ChannelsConfigError(f"{path}: cannot read the channels file: {error.strerror}") from None
    lines: dict[tuple[str | int, ...], int] = {}
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            data: Any = {}
        else:
            _substitute(node, (), lines, env, path)
            data = loader.construct_document(node)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ChannelsConfigError(f"{where}: not valid YAML: {getattr(error, 'problem', error)}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ChannelsConfigError(f"{path}:1: the channels file must be a mapping (defaults:, sites:)")
    try:
        return ChannelsConfig.model_validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors(include_url=False, include_input=False):
            loc = tuple(item["loc"])
            line = _nearest_line(loc, lines)
            key = ".".join(str(p) for p in loc) or "(top)"
            problems.append(f"{path}:{line}: {key}: {item['msg']}")
        raise ChannelsConfigError("invalid channels file:\n  " + "\n  ".join(problems)) from None


def _substitute(
    node: yaml.Node, at: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int], env: Any, path: Path
) -> None:
    lines[at] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key.start_mark.line)
            lines[(*at, name)] = key.start_mark.line + 1
            _substitute(value, (*at, name), lines, env, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _substitute(item, (*at, i), lines, env, path)
    elif isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG and "${" in node.value:

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                key = ".".join(str(p) for p in at)
                raise ChannelsConfigError(
                    f"{path}:{node.start_mark.line + 1}: {key}: environment variable {name} is not set"
                )
            return str(env[name])

        node.value = _ENV.sub(replace, node.value)


def _nearest_line(loc: tuple[Any, ...], lines: dict[tuple[str | int, ...], int]) -> int:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return 1
