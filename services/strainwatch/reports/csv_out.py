"""Every table of the report as a CSV file (raw values: no thousands separators, empty for none)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from strainwatch.reports import fmt
from strainwatch.reports.tables import Table


def table_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([c[0] for c in table.columns])
    for row in table.rows:
        writer.writerow([fmt.csv_value(v) for v in row])
    return out.getvalue()


def write_csvs(tables: list[Table], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for table in tables:
        path = directory / f"{table.key}.csv"
        path.write_text(table_csv(table), encoding="utf-8")
        paths.append(path)
    return paths
