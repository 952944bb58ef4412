"""The exposure engine compiled with mypyc: an optional build, with pure Python as the fallback.

`make native` (`strainwatch.native.build()`) compiles `exposure/engine.py` in place into an
extension module next to it and writes a stamp holding the digest of the sources it was built from.
Python prefers an extension module over the `.py` of the same name, so a build left behind after the
source changed would silently run old code: `select_engine()`, called when the `strainwatch` package
is first imported, loads the pure-Python source instead whenever the stamp does not match the
sources (or is missing), or when `STRAINWATCH_ENGINE=python` asks for it. The two must score alike:
tests/unit/exposure/test_native_engine.py compares them frame by frame.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import os
import shutil
import subprocess
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path

ENGINE_MODULE = "strainwatch.exposure.engine"
_PACKAGE = Path(__file__).resolve().parent
EXPOSURE_DIR = _PACKAGE / "exposure"
# the engine and what its compiled code was typed against
SOURCES = ("engine.py", "thresholds.py")
STAMP = "engine.native-stamp"


def source_digest(directory: Path = EXPOSURE_DIR) -> str:
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update(name.encode() + b"\0" + (directory / name).read_bytes() + b"\0")
    return digest.hexdigest()


def compiled_files(directory: Path = EXPOSURE_DIR) -> list[Path]:
    return sorted(p for p in directory.glob("engine*.so") if p.is_file())


def choice(directory: Path = EXPOSURE_DIR, requested: str | None = None) -> str:
    """'compiled' when a current build is there; 'python' when there is none or it is not wanted;
    'stale' when a build is there but its stamp does not match the sources."""
    if not compiled_files(directory):
        return "python"
    if requested == "python":
        return "python"
    stamp = directory / STAMP
    if not stamp.exists() or stamp.read_text().strip() != source_digest(directory):
        return "stale"
    return "compiled"


class _EngineSource(importlib.abc.MetaPathFinder):
    """Finds the engine's `.py` ahead of the extension module, through the ordinary import."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if fullname != ENGINE_MODULE:
            return None
        return importlib.util.spec_from_file_location(fullname, EXPOSURE_DIR / "engine.py")


def select_engine() -> None:
    """Before anything imports the engine: have its source imported when the build must not be used."""
    if ENGINE_MODULE in sys.modules or any(isinstance(f, _EngineSource) for f in sys.meta_path):
        return
    if compiled_files() and choice(requested=os.environ.get("STRAINWATCH_ENGINE")) != "compiled":
        sys.meta_path.insert(0, _EngineSource())


def engine_kind() -> str:
    """'compiled' or 'python': what `strainwatch.exposure.engine` is in this process."""
    import strainwatch.exposure.engine as engine

    return "compiled" if str(engine.__file__).endswith(".so") else "python"


def build() -> None:
    """Compile the engine in place (mypyc and a C compiler), then stamp it."""
    for old in compiled_files():
        old.unlink()
    (EXPOSURE_DIR / STAMP).unlink(missing_ok=True)
    mypyc = shutil.which("mypyc", path=str(Path(sys.executable).parent)) or shutil.which("mypyc")
    if mypyc is None:
        raise SystemExit("mypyc not found: install the dev requirements (requirements-dev.lock)")
    services = _PACKAGE.parent
    done = subprocess.run(
        [mypyc, "strainwatch/exposure/engine.py"], cwd=services, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"mypyc failed (exit {done.returncode}): the engine stays pure Python")
    if not compiled_files():
        raise SystemExit("mypyc reported success but wrote no extension module")
    (EXPOSURE_DIR / STAMP).write_text(source_digest() + "\n")
    print(f"compiled engine: {', '.join(p.name for p in compiled_files())}")
