"""The start-up version check, with the installed-version lookup monkeypatched."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from strainwatch.processor import compat
from strainwatch.processor.compat import (
    ALLOW_UNTESTED_ENV,
    TESTED_VERSIONS,
    UntestedVersionsError,
    check_tested_versions,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


def installed(monkeypatch: pytest.MonkeyPatch, **overrides: str | None) -> None:
    """Pretend the tested versions are installed, except `overrides` (None: not installed)."""
    versions = {
        name: overrides.get(name.replace("-", "_"), tested) for name, tested in TESTED_VERSIONS.items()
    }

    def version(name: str) -> str:
        found = versions.get(name)
        if found is None:
            raise metadata.PackageNotFoundError(name)
        return found

    monkeypatch.setattr(compat.metadata, "version", version)


class Recorder:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.warnings.append((event, kw))


def test_tested_versions_pass_silently(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch)
    assert check_tested_versions(environ={}) == []


def test_an_untested_version_names_package_installed_and_tested(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, faust_streaming="0.16.0")
    with pytest.raises(UntestedVersionsError) as caught:
        check_tested_versions(environ={})
    message = str(caught.value)
    assert "faust-streaming 0.16.0 installed, 0.15.3 tested" in message
    assert "aiokafka" not in message  # only what differs
    # and says how to proceed
    assert "pip install -r requirements.lock" in message
    assert f"{ALLOW_UNTESTED_ENV}=1" in message
    assert [item.package for item in caught.value.untested] == ["faust-streaming"]


def test_every_untested_package_is_named_and_a_missing_one_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, mode_streaming="0.7.2", aiokafka="0.13.0", intervaltree=None)
    with pytest.raises(UntestedVersionsError) as caught:
        check_tested_versions(environ={})
    message = str(caught.value)
    assert "mode-streaming 0.7.2 installed, 0.7.1 tested" in message
    assert "aiokafka 0.13.0 installed, 0.14.0 tested" in message
    assert "intervaltree not installed, 3.2.1 tested" in message
    assert "faust-streaming" not in message


def test_a_patch_release_is_untested_too(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, aiokafka="0.14.1")
    with pytest.raises(UntestedVersionsError, match=r"aiokafka 0\.14\.1 installed"):
        check_tested_versions(environ={})


def test_the_override_logs_a_warning_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, faust_streaming="0.16.0")
    recorder = Recorder()
    monkeypatch.setattr(compat, "log", recorder)
    untested = check_tested_versions(environ={ALLOW_UNTESTED_ENV: "1"})
    assert [item.package for item in untested] == ["faust-streaming"]
    ((event, fields),) = recorder.warnings
    assert "own risk" in event
    assert fields["untested"] == {"faust-streaming": {"installed": "0.16.0", "tested": "0.15.3"}}


def test_the_override_is_read_from_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, intervaltree="3.1.0")
    monkeypatch.setattr(compat, "log", Recorder())
    monkeypatch.setenv(ALLOW_UNTESTED_ENV, "1")
    assert check_tested_versions()
    monkeypatch.setenv(ALLOW_UNTESTED_ENV, "0")
    with pytest.raises(UntestedVersionsError):
        check_tested_versions()


def test_no_warning_when_everything_is_tested_even_with_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch)
    recorder = Recorder()
    monkeypatch.setattr(compat, "log", recorder)
    assert check_tested_versions(environ={ALLOW_UNTESTED_ENV: "1"}) == []
    assert recorder.warnings == []


def test_this_environment_has_the_tested_versions() -> None:
    # the venv the tests run in must be the tested one, or every other test here proves nothing
    check_tested_versions(environ={})


def test_pyproject_and_lock_pin_the_tested_versions() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = dict(
        match.groups()
        for dep in project["dependencies"]
        if (match := re.fullmatch(r"([A-Za-z0-9_.-]+)==([^,;\s]+)", dep.replace(" ", "")))
    )
    locked = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (REPO / "requirements.lock").read_text(), re.M))
    for package, tested in TESTED_VERSIONS.items():
        assert pins.get(package) == tested, f"pyproject.toml must pin {package}=={tested}"
        assert locked.get(package) == tested, f"requirements.lock must pin {package}=={tested}"
