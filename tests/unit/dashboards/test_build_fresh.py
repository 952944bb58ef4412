"""The committed dashboards and provisioning files are exactly what `strainwatch dashboards build` writes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from strainwatch.dashboards.build import PROVISIONING_DIR, build, dashboards
from strainwatch.storage.figures import WINDOWS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def test_committed_files_equal_a_fresh_build(tmp_path: Path) -> None:
    written = build(tmp_path)
    assert written
    for path in written:
        rel = path.relative_to(tmp_path)
        committed = ROOT / rel
        assert committed.exists(), f"{rel} is not committed: run `strainwatch dashboards build`"
        assert committed.read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), (
            f"{rel} differs from a fresh build: run `strainwatch dashboards build` (never edit it by hand)"
        )
    fresh = {p.relative_to(tmp_path) for p in written}
    stale = {p.relative_to(ROOT) for p in (ROOT / "dashboards").glob("*.json")} - fresh
    assert not stale, f"dashboards/ holds JSON no code generates: {sorted(map(str, stale))}"
    provisioned = {p.relative_to(ROOT) for p in (ROOT / PROVISIONING_DIR).rglob("*") if p.is_file()} - fresh
    assert not provisioned, f"provisioning files no code generates: {sorted(map(str, provisioned))}"


def test_the_build_is_deterministic(tmp_path: Path) -> None:
    first = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in build(tmp_path / "a")}
    second = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in build(tmp_path / "b")}
    assert first == second
    for rel, content in first.items():
        if rel.suffix == ".json":
            assert content.endswith(b"}\n") and not content.endswith(b"\n\n"), rel


def test_the_worker_timeline_only_when_enabled(tmp_path: Path) -> None:
    out = tmp_path / "dashboards"
    names = {p.name for p in build(tmp_path) if p.parent == out}
    assert "strainwatch-worker.json" not in names
    assert len(names) == 5
    with_worker = {p.name for p in build(tmp_path, worker_timeline=True) if p.parent == out}
    assert with_worker == names | {"strainwatch-worker.json"}
    # building without it again removes it: dashboards/ holds exactly what the code says
    assert {p.name for p in build(tmp_path) if p.parent == out} == names
    assert not (tmp_path / "dashboards" / "strainwatch-worker.json").exists()


def _panels() -> list[tuple[str, dict[str, Any]]]:
    return [(uid, p) for uid, d in dashboards(worker_timeline=True).items() for p in d["panels"]]


def test_every_panel_has_unit_decimals_and_thresholds() -> None:
    for uid, p in _panels():
        defaults = p["fieldConfig"]["defaults"]
        assert defaults.get("unit"), (uid, p["title"])
        assert isinstance(defaults.get("decimals"), int), (uid, p["title"])
        steps = defaults["thresholds"]["steps"]
        assert steps and steps[0]["value"] is None, (uid, p["title"])


def test_no_panel_ranks_workers_and_groups_keep_the_minimum() -> None:
    worker_data = ('"exposure_hourly"', '"break_alert"', '"break_prompt"', '"break_ack"')
    for uid, p in _panels():
        if uid == "strainwatch-worker":
            continue  # one pseudonymous worker, chosen; off unless the site enables it
        for target in p["targets"]:
            query = target["query"]
            assert '"worker" =~' not in query, (uid, p["title"])
            # a grouping per worker only inside a subquery, never in the statement's own GROUP BY
            assert not any('"worker"' in g for g in re.findall(r"GROUP BY [^()]*$", query)), (uid, p["title"])
            if any(m in query for m in worker_data):
                assert '"workers" >= 5' in query, (uid, p["title"], query)


def test_long_ranges_read_the_hourly_rollup() -> None:
    for uid, p in _panels():
        for target in p["targets"]:
            query = target["query"]
            if uid == "strainwatch-worker" and p["title"] in {"Longest hold by segment", "Upper-back dose"}:
                assert WINDOWS in query  # 10-s detail for one worker, short ranges
            else:
                assert WINDOWS not in query, (uid, p["title"])
