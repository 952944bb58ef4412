"""`strainwatch dashboards build`: the dashboards' JSON and Grafana's provisioning files, from code.

`dashboards/*.json` is output only: `build` writes every dashboard (validated first; an invalid one
stops the build before anything is written) and removes any other JSON there, so the directory is
exactly what the code says. The worker timeline is left out unless `worker_timeline=True` (a site
enables it with `strainwatch dashboards build --worker-timeline`). Files are deterministic: keys
sorted, indent 2, one trailing newline.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from strainwatch.dashboards import injuries, pipeline, prompts, site, team, worker
from strainwatch.dashboards.alert_rules import DATASOURCE_UID
from strainwatch.dashboards.validate import DashboardInvalid, validate_dashboard

DASHBOARDS_DIR = "dashboards"
PROVISIONING_DIR = Path("deploy") / "grafana" / "provisioning"

BUILDERS: dict[str, Callable[[], dict[str, Any]]] = {
    site.UID: site.build,
    team.UID: team.build,
    prompts.UID: prompts.build,
    injuries.UID: injuries.build,
    pipeline.UID: pipeline.build,
}
OPTIONAL: dict[str, Callable[[], dict[str, Any]]] = {worker.UID: worker.build}


def dashboards(worker_timeline: bool = False) -> dict[str, dict[str, Any]]:
    """uid -> dashboard JSON, every one validated against the provisioned data source."""
    builders = dict(BUILDERS)
    if worker_timeline:
        builders |= OPTIONAL
    out = {uid: make() for uid, make in builders.items()}
    problems: list[str] = []
    for d in out.values():
        try:
            validate_dashboard(d, {DATASOURCE_UID})
        except DashboardInvalid as error:
            problems.append(str(error))
    if problems:
        raise DashboardInvalid("\n".join(problems))
    return out


def render_json(d: dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def provisioning_files() -> dict[str, str]:
    """Relative path (under deploy/grafana/provisioning/) -> content, from provisioning.render()."""
    try:
        from strainwatch.dashboards.provisioning import render
    except ImportError as error:
        raise ImportError(
            f"strainwatch.dashboards.provisioning.render() is needed for the provisioning files: {error}"
        ) from error
    return render()


def build(root: Path, worker_timeline: bool = False) -> list[Path]:
    """Write dashboards/*.json and the provisioning files under `root`; returns the paths written."""
    boards = dashboards(worker_timeline)  # raises DashboardInvalid before anything is written
    provisioning = provisioning_files()
    out_dir = root / DASHBOARDS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for uid, d in sorted(boards.items()):
        path = out_dir / f"{uid}.json"
        path.write_text(render_json(d), encoding="utf-8")
        written.append(path)
    for stale in sorted(out_dir.glob("*.json")):
        if stale not in written:
            stale.unlink()
    for rel, content in sorted(provisioning.items()):
        path = root / PROVISIONING_DIR / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if content.endswith("\n") else content + "\n", encoding="utf-8")
        written.append(path)
    return written
