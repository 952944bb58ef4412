"""The mypyc-compiled engine (`make native`) scores exactly as its Python source does.

`make test` builds it first, so the suite runs on the compiled engine; this test loads the source a
second time under another name and runs both over the same simulated shifts (holds, breaks, rest
frames, a gap, two rates), comparing every closed window, alert, violation and the serialised state
after every frame. It also checks that a build whose stamp no longer matches the sources is
never used.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import astuple
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

from strainwatch import native
from strainwatch.exposure import load_thresholds
from strainwatch.fleet.simulator import FleetSimulator, SimConfig
from strainwatch.storage.measurements import exposure_fields

pytestmark = pytest.mark.unit


def source_engine() -> ModuleType:
    name = "strainwatch_engine_from_source"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, native.EXPOSURE_DIR / "engine.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def frames(rate_hz: float, frame_s: float, seed: int) -> list[tuple[str, float, dict[str, Any], bool]]:
    # 06:00 UTC: the day shift starts, with its scheduled breaks 3 h and 5 h in
    cfg = SimConfig(
        workers=4,
        rate_hz=rate_hz,
        frame_s=frame_s,
        duration_s=3.5 * 3600,
        start=datetime(2026, 11, 2, 8, 0, tzinfo=UTC),
        seed=seed,
    )
    out = []
    for item in FleetSimulator(cfg).frames():
        doc = orjson.loads(item.value)
        start_s = datetime.fromisoformat(doc["start_ts"].replace("Z", "+00:00")).timestamp()
        out.append((doc["worker_id"], start_s, doc["samples"], bool(doc.get("rest"))))
    return out


def outcome_rows(outcome: Any) -> list[Any]:
    rows: list[Any] = [("alert", astuple(a)) for a in outcome.alerts]
    rows += [("violation", astuple(v)) for v in outcome.violations]
    rows += [("window", w.window_start_s, exposure_fields(w)) for w in outcome.closed]
    return rows


def test_the_compiled_engine_is_the_one_in_use() -> None:
    assert native.engine_kind() == "compiled", (
        "strainwatch.exposure.engine is the Python source: `make native` builds the compiled one "
        f"({native.choice()})"
    )


@pytest.mark.parametrize(("rate_hz", "frame_s", "seed"), [(10.0, 10.0, 3), (25.0, 4.0, 8)])
def test_compiled_and_source_engines_score_alike(rate_hz: float, frame_s: float, seed: int) -> None:
    from strainwatch.exposure import engine as compiled

    source = source_engine()
    assert compiled is not source and str(source.__file__).endswith(".py")
    thresholds = load_thresholds("default")
    engines = (compiled.ExposureEngine(thresholds), source.ExposureEngine(thresholds))
    states: list[dict[str, Any]] = [{}, {}]
    compared = windows = alerts = 0
    stream = frames(rate_hz, frame_s, seed)
    # one gap of 90 s in a worker's frames: the engine's gap path
    stream = [f for i, f in enumerate(stream) if not (f[0] == stream[0][0] and 300 <= i < 309)]
    for worker, start_s, samples, rest in stream:
        results = []
        for engine, by_worker in zip(engines, states, strict=True):
            state = by_worker.get(worker) or by_worker.setdefault(worker, engine.new_state())
            outcome = engine.process(state, start_s, rate_hz, samples, rest=rest)
            results.append((outcome_rows(outcome), state.to_bytes()))
        assert results[0] == results[1], f"{worker} at {start_s}"
        windows += sum(1 for row in results[0][0] if row[0] == "window")
        alerts += sum(1 for row in results[0][0] if row[0] == "alert")
        compared += 1
    for worker in states[0]:
        open_windows = [
            engine.open_window(by_worker[worker]) for engine, by_worker in zip(engines, states, strict=True)
        ]
        assert [exposure_fields(w) for w in open_windows if w] == [
            exposure_fields(w) for w in reversed(open_windows) if w
        ]
    assert compared == len(stream) and windows > 1_000 and alerts > 0


def test_a_build_whose_stamp_does_not_match_the_sources_is_not_used(tmp_path: Path) -> None:
    for name in native.SOURCES:
        (tmp_path / name).write_text(f"# {name}\n")
    assert native.choice(tmp_path) == "python"  # nothing built
    (tmp_path / "engine.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    assert native.choice(tmp_path) == "stale"  # built, never stamped
    (tmp_path / native.STAMP).write_text(native.source_digest(tmp_path) + "\n")
    assert native.choice(tmp_path) == "compiled"
    assert native.choice(tmp_path, requested="python") == "python"  # STRAINWATCH_ENGINE=python
    (tmp_path / "thresholds.py").write_text("# changed since the build\n")
    assert native.choice(tmp_path) == "stale"


def test_strainwatch_engine_python_runs_the_source() -> None:
    probe = "from strainwatch.native import engine_kind; print(engine_kind())"
    for requested, expected in (("python", "python"), ("", native.choice())):
        env = {**os.environ, "STRAINWATCH_ENGINE": requested}
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == expected
