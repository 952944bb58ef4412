"""The demo's last step: an injury log imported for the demo site, the month's report, the dashboards.

Each runs the real command (`strainwatch incidents import`, `strainwatch report monthly`) against
the local stack, so the demo shows what EHS staff would run.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE_LOG = REPO / "examples" / "incidents-sample.csv"
DASHBOARDS = REPO / "dashboards"
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
PUBLISH_COMMAND = "strainwatch dashboards publish --url http://127.0.0.1:3000 --token-env GRAFANA_TOKEN"


class DemoStepFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class ReportOutcome:
    incidents_summary: str
    report_files: list[Path]


def demo_incident_log(site: str, teams: list[str], today: date, path: Path) -> Path:
    """The sample injury log, moved to the demo site: its teams, case ids prefixed with the site
    (case ids are unique across sites), dates up to today only."""
    with SAMPLE_LOG.open(newline="") as source:
        rows = list(csv.DictReader(source))
    if not rows or not teams:
        raise DemoStepFailed(f"nothing to import: {SAMPLE_LOG} has no rows or the roster no teams")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        for i, row in enumerate(rows):
            if date.fromisoformat(row["date"]) > today:
                continue
            row["site"] = site
            row["team"] = teams[i % len(teams)]
            row["case_id"] = f"{site}-{row['case_id']}"
            writer.writerow(row)
    return path


def _run(args: list[str], env: dict[str, str], what: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "strainwatch.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise DemoStepFailed(f"{what} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")
    return result.stdout


def import_and_report(
    site: str, teams: list[str], today: date, env: dict[str, str], state_dir: Path
) -> ReportOutcome:
    log_path = demo_incident_log(site, teams, today, state_dir / "demo-incidents.csv")
    imported = _run(["incidents", "import", str(log_path)], env, "incidents import")
    summary = next((line for line in imported.splitlines() if line.startswith("{")), imported.strip())
    out_dir = state_dir / "reports"
    _run(
        ["report", "monthly", "--month", f"{today:%Y-%m}", "--site", site, "--out", str(out_dir)],
        env,
        "report monthly",
    )
    files = sorted(p for p in out_dir.rglob("*") if p.is_file() and site in str(p.relative_to(out_dir)))
    if not files:
        raise DemoStepFailed(f"report monthly wrote no files for {site} under {out_dir}")
    return ReportOutcome(summary, files)
