"""What the compose and Kubernetes tests share: paths, the CLI check, settings names, image tags."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path

from typer.testing import CliRunner

from strainwatch.config import Settings

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
STRAINWATCH_VAR = re.compile(r"\bSTRAINWATCH_[A-Z0-9_]+\b")
# placeholder secrets in committed files say so: no value here may be a real secret
PLACEHOLDER = re.compile(r"change-me|REPLACE-ME", re.IGNORECASE)


def settings_variables() -> set[str]:
    return {"STRAINWATCH_" + name.upper() for name in Settings.model_fields}


def unknown_variables(names: set[str]) -> list[str]:
    """The STRAINWATCH_* names nothing reads: neither a Settings field nor a variable the code names
    itself (a command's own option read from the environment, `envvar=` or os.environ)."""
    rest = {n for n in names if n.startswith("STRAINWATCH_")} - settings_variables()
    if rest:
        source = "\n".join(p.read_text() for p in (REPO / "services" / "strainwatch").rglob("*.py"))
        rest = {n for n in rest if not re.search(rf"[\"']{n}[\"']", source)}
    return sorted(rest)


def package_version() -> str:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert isinstance(version, str)
    return version


def cli_rejects(argv: Sequence[str]) -> str | None:
    """None if `strainwatch <argv> --help` succeeds (the command and its options exist), else why not.

    click parses the options in order and handles the eager --help where it stands, so an unknown
    command or option before it fails with exit code 2.
    """
    from strainwatch.cli import app

    assert argv and argv[0] == "strainwatch", argv
    result = CliRunner().invoke(app, [*argv[1:], "--help"])
    if result.exit_code == 0 and "Usage:" in result.output:
        return None
    return f"exit {result.exit_code}: {result.output.strip()[-400:]}"


def image_tag(image: str) -> str | None:
    """The tag of an image reference (registry:port/name:tag@digest), None if it has none."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None
