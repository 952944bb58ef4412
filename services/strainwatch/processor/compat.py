"""Start-up check that the processor runs on the library versions it was tested with.

The processor relies on private internals of faust-streaming and the libraries under it (the
`acks_enabled_for` guard on both ack paths, `Consumer._commit`, a table's `data`, changelog
topic and recovery order, the worker's signal hooks; tests/unit/processor/test_faust_surfaces.py
pins each). None of that is API, so a version nobody tested must fail at start-up, not in production.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata

import structlog

log = structlog.get_logger("strainwatch.processor")

#: Exact versions the processor was tested with; keep equal to the `==` pins in pyproject.toml and
#: requirements.lock (tests/unit/processor/test_compat.py checks all three agree).
TESTED_VERSIONS: Mapping[str, str] = {
    "faust-streaming": "0.15.3",
    "mode-streaming": "0.7.1",
    "aiokafka": "0.14.0",
    "intervaltree": "3.2.1",
}

ALLOW_UNTESTED_ENV = "STRAINWATCH_ALLOW_UNTESTED_FAUST"
_TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class Untested:
    package: str
    installed: str | None  # None: not installed at all
    tested: str

    def __str__(self) -> str:
        installed = "not installed" if self.installed is None else f"{self.installed} installed"
        return f"{self.package} {installed}, {self.tested} tested"


class UntestedVersionsError(RuntimeError):
    """Raised at processor start-up when a library it relies on is not at its tested version."""

    def __init__(self, untested: list[Untested]) -> None:
        self.untested = untested
        lines = "\n".join(f"  {item}" for item in untested)
        super().__init__(
            "the processor relies on private internals of these libraries, and this version was not "
            f"tested:\n{lines}\n"
            "Install the tested versions (pip install -r requirements.lock, then pip install --no-deps "
            f"the package), or set {ALLOW_UNTESTED_ENV}=1 to run anyway at your own risk (a warning "
            "is logged instead)."
        )


def untested_versions() -> list[Untested]:
    """Every library of TESTED_VERSIONS whose installed version differs from the tested one."""
    found = []
    for package, tested in TESTED_VERSIONS.items():
        try:
            installed: str | None = metadata.version(package)
        except metadata.PackageNotFoundError:
            installed = None
        # exact string equality: the surfaces can change in any release, even a patch release
        if installed != tested:
            found.append(Untested(package, installed, tested))
    return found


def check_tested_versions(environ: Mapping[str, str] | None = None) -> list[Untested]:
    """Raise UntestedVersionsError unless every library is at its tested version.

    With STRAINWATCH_ALLOW_UNTESTED_FAUST=1 a mismatch is logged as a warning instead. Returns the
    mismatches (empty when everything is as tested)."""
    untested = untested_versions()
    if not untested:
        return untested
    env = os.environ if environ is None else environ
    if env.get(ALLOW_UNTESTED_ENV, "").strip().lower() in _TRUE:
        log.warning(
            "untested library versions; running anyway at your own risk",
            override=f"{ALLOW_UNTESTED_ENV}=1",
            untested={
                item.package: {"installed": item.installed, "tested": item.tested} for item in untested
            },
        )
        return untested
    raise UntestedVersionsError(untested)
