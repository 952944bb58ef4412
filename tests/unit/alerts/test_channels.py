"""The channels file: substitution, validation errors that say where and what, policy resolution,
masked URLs; the message templates; the token bucket."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from strainwatch.alerts.channels import ChannelsConfigError, load_channels, mask_url
from strainwatch.alerts.messages import DEVICE_TEXT_MAX, describe
from strainwatch.alerts.notify import TokenBucket
from strainwatch.alerts.policy import ClockRange
from strainwatch.alerts.routines import ROUTINES, routine_for
from strainwatch.events import BreakAlert

pytestmark = pytest.mark.unit

GOOD = """\
defaults:
  nudges_per_hour: 5
sites:
  plant-1:
    timezone: Europe/Berlin
    quiet_hours: ["22:00-06:00"]
    shifts: {early: "06:00-14:00"}
    nudge_when_neutral: true
    channels:
      - url: "json://${HOOK_USER}:${HOOK_SECRET}@hooks.example.com/plant"
        rate_per_s: 2
    teams:
      assembly:
        nudges_per_shift: 12
        channels:
          - {url: "json://hooks.example.com/assembly", kinds: [conditioning_break]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "channels.yaml"
    path.write_text(text)
    return path


def test_good_file_resolves_policies_and_channels(tmp_path: Path) -> None:
    env = {"HOOK_USER": "u", "HOOK_SECRET": "s3cret"}
    config = load_channels(write(tmp_path, GOOD), env)
    policy = config.policy("plant-1", "assembly")
    assert policy.timezone == "Europe/Berlin"
    assert policy.quiet_hours == (ClockRange.parse("22:00-06:00"),)
    assert policy.nudges_per_hour == 6  # the site's own default, not the `defaults` block
    assert policy.nudges_per_shift == 12 and policy.nudge_when_neutral
    assert config.policy("elsewhere", None).nudges_per_hour == 5
    urls = [c.url for c in config.channels("plant-1", "assembly", "conditioning_break")]
    assert urls == ["json://u:s3cret@hooks.example.com/plant", "json://hooks.example.com/assembly"]
    assert len(config.channels("plant-1", "assembly", "posture_hold")) == 1
    assert config.channels("elsewhere", None, "posture_hold") == []


def test_missing_environment_variable_names_file_line_key_and_variable(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    with pytest.raises(ChannelsConfigError) as caught:
        load_channels(path, {"HOOK_USER": "u"})
    message = str(caught.value)
    assert f"{path}:10:" in message and "sites.plant-1.channels.0.url" in message
    assert "HOOK_SECRET is not set" in message


@pytest.mark.parametrize(
    ("text", "line", "key", "what"),
    [
        ("sites:\n  p:\n    nudges_per_hour: -1\n", 3, "sites.p.nudges_per_hour", "greater than or equal"),
        ("sites:\n  p:\n    quiet_hours: ['lunch']\n", 3, "sites.p.quiet_hours", "HH:MM-HH:MM"),
        ("sites:\n  p:\n    timezone: Mars/Olympus\n", 3, "sites.p.timezone", "unknown time zone"),
        ("sites:\n  p:\n    chanels: []\n", 3, "sites.p.chanels", "Extra inputs"),
        ("sites:\n  p:\n    channels:\n      - url: nope\n", 4, "sites.p.channels.0.url", "apprise URL"),
        (
            "sites:\n  p:\n    channels:\n      - {url: 'json://h/x', rate_per_s: 0}\n",
            4,
            "sites.p.channels.0.rate_per_s",
            "greater than 0",
        ),
    ],
)
def test_invalid_values_name_line_and_key(tmp_path: Path, text: str, line: int, key: str, what: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ChannelsConfigError) as caught:
        load_channels(path, {})
    assert f"{path}:{line}: {key}:" in str(caught.value)
    assert what in str(caught.value)


def test_yaml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ChannelsConfigError, match=r"channels.yaml:\d+: not valid YAML"):
        load_channels(write(tmp_path, "sites:\n  p: [unclosed\n"), {})
    with pytest.raises(ChannelsConfigError, match="cannot read"):
        load_channels(tmp_path / "absent.yaml", {})


def test_cli_exits_2_on_a_bad_file_without_printing_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from strainwatch.cli import app

    path = write(tmp_path, GOOD.replace("rate_per_s: 2", "rate_per_s: fast"))
    monkeypatch.setenv("HOOK_USER", "u")
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    result = CliRunner().invoke(app, ["alerts", "run", "--channels-file", str(path)])
    assert result.exit_code == 2
    assert "rate_per_s" in result.output and "s3cret" not in result.output


def test_masked_urls_hide_credentials_and_paths() -> None:
    assert mask_url("json://user:pw@hooks.example.com/secret-path") == "json://****"
    assert mask_url("json://hooks.example.com/secret-path") == "json://hooks.example.com/****"
    assert "T000" not in mask_url("slack://T000/B000/XXXX")


def _alert(kind: str, segment: str, routine: list[str], dose: float = 600.0) -> BreakAlert:
    return BreakAlert(
        schema_version=1,
        alert_id=uuid.uuid4(),
        worker_id="w-17",
        site_id="plant-1",
        kind=kind,  # type: ignore[arg-type]
        ts=datetime(2026, 3, 2, 9, tzinfo=UTC),
        segment=segment,
        dose=dose,
        routine=routine,
        thresholds_version="default@1",
    )


def test_break_message_names_why_dose_and_routine_steps() -> None:
    routine, text, message = describe(_alert("conditioning_break", "neck_flexion", ["chin tucks"]))
    assert routine is ROUTINES["neck"]
    assert text == "Time for a break: Neck reset (2-3 min)"
    assert message.title == "Break prompt for w-17: Neck reset (2-3 min)"
    assert message.body.splitlines() == [
        "Why: neck bent forward - about 10 minutes of strain without enough recovery (upper-back dose 600).",
        "Take 2-3 minutes for the neck reset (2-3 min):",
        *[f"{i}. {step}" for i, step in enumerate(ROUTINES["neck"].steps, 1)],
    ]


def test_nudge_text_fits_the_device_and_names_the_segment() -> None:
    for segment in ("neck_flexion", "arm_elevation_right", "trunk_twist", "a_very_long_unknown_segment_name"):
        _routine, text, _message = describe(_alert("posture_hold", segment, [], dose=30))
        assert len(text) <= DEVICE_TEXT_MAX
    _, text, message = describe(_alert("posture_hold", "arm_elevation_right", [], dose=30))
    assert text == "Right arm raised too long: change position"
    assert "right arm raised, held longer than its safe holding time" in message.body


def test_routines_match_the_exposure_model() -> None:
    assert (
        routine_for("arm_elevation_left", ["scapular retractions (shoulder-blade squeezes)"])
        is ROUTINES["arms"]
    )
    assert routine_for("neck_flexion", ["standing thoracic extension"]) is ROUTINES["trunk"]  # steps win
    for region, words in {
        "neck": ("Chin tucks", "Upper-trapezius stretch", "Slow neck rotations"),
        "arms": ("Scapular retractions", "Band pull-aparts", "Wall angels"),
        "trunk": ("Standing thoracic extension", "Hip-hinge reset", "Gentle thoracic rotation"),
    }.items():
        assert [s.split(":")[0] for s in ROUTINES[region].steps] == list(words)


def test_token_bucket_paces_to_its_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, clock=lambda: now[0])
    assert bucket.wait_s() == 0.0
    bucket._tokens -= 1
    assert bucket.wait_s() == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.wait_s() == 0.0


def test_token_bucket_delays_never_drops() -> None:
    async def main() -> float:
        bucket = TokenBucket(rate=20.0)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*(bucket.take() for _ in range(11)))
        return loop.time() - start

    elapsed = asyncio.run(main())
    assert elapsed >= 10 / 20.0 - 0.01  # one at once (burst 1), ten more at 20 per second


def test_the_example_channels_file_is_valid() -> None:
    example = Path(__file__).resolve().parents[3] / "deploy" / "alerting" / "channels.example.yaml"
    config = load_channels(example, {"NTFY_TOKEN": "tk", "ASSEMBLY_HOOK_ID": "42"})
    assert config.policy("plant-1", "assembly").nudges_per_hour == 4
    assert [c.label for c in config.channels("plant-1", "assembly", "conditioning_break")] == [
        "plant-1-ntfy",
        "assembly-lead-webhook",
    ]
