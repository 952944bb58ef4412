"""The report as one self-contained HTML document (inline SVG figures), or the same document with PNG
figures for WeasyPrint (pdf.py). Plain string building with escaping: no template engine needed.

Wording rule: the text states what the site's own data show, as associations with counts; it never
says or implies that prompts or breaks prevent injuries.
"""

from __future__ import annotations

import base64
import calendar
import re
from html import escape

from strainwatch.reports import fmt, tables
from strainwatch.reports.charts import Chart
from strainwatch.reports.model import MonthlyReport
from strainwatch.reports.tables import Table

ASSOCIATION = (
    "Everything in this report describes this site's own data. Where two figures move together "
    "(break compliance and incidents, nudges and time at risk), that is an association with the "
    "counts shown, not evidence that prompts or breaks prevent injuries: teams differ in their work, "
    "staffing and reporting, and small counts vary by chance."
)

CSS = """
@page { size: A4; margin: 16mm 12mm 18mm 12mm;
  @bottom-center { content: "page " counter(page) " of " counter(pages);
    font-family: "DejaVu Sans", sans-serif; font-size: 8pt; color: #555; } }
body { font-family: "DejaVu Sans", sans-serif; font-size: 9.5pt; color: #111;
  max-width: 190mm; margin: auto; }
h1 { font-size: 17pt; margin: 0 0 2mm 0; }
h2 { font-size: 12.5pt; margin: 7mm 0 2mm 0; border-bottom: 0.4mm solid #1f4e79; page-break-after: avoid; }
h3 { font-size: 10pt; margin: 4mm 0 1mm 0; page-break-after: avoid; }
p.scope { font-size: 11pt; color: #1f4e79; margin: 0 0 3mm 0; }
p.note, p.empty { font-size: 8.5pt; color: #444; }
p.empty { font-style: italic; }
p.wording { border-left: 1mm solid #1f4e79; padding-left: 3mm; }
table { border-collapse: collapse; margin: 1mm 0 2mm 0; page-break-inside: avoid; }
th, td { border-bottom: 0.2mm solid #bbb; padding: 0.8mm 2mm; text-align: right; font-size: 8.5pt; }
table.wide th, table.wide td { padding: 0.6mm 1.2mm; font-size: 7.5pt; }
th { background: #e8eef5; }
td.text, th.text { text-align: left; }
figure { margin: 2mm 0; page-break-inside: avoid; }
figure img, figure svg { width: 100%; height: auto; }
figcaption { font-size: 8pt; color: #444; }
"""


def render(report: MonthlyReport, charts: dict[str, Chart], images: str = "svg") -> str:
    """The whole document; `images` is "svg" (inline) or "png" (data URIs, for the PDF)."""
    s = report.scope
    month_name = f"{calendar.month_name[s.month]} {s.year}"
    scope = f"Site {s.site or 'all sites'} · team {s.team or 'all teams'} · {month_name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Injury-risk report {escape(s.label)} {escape(s.site or 'all')}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Monthly injury-risk report</h1>",
        f'<p class="scope">{escape(scope)}</p>',
        f'<p class="wording">{escape(ASSOCIATION)}</p>',
    ]
    if report.empty:
        parts.append(
            '<p class="empty">No device of this scope was worn in this month: there are no exposure '
            "figures. Prompts, incidents and the trend below are shown as far as they exist.</p>"
        )
    for note in report.notes:
        parts.append(f'<p class="note">{escape(note)}</p>')

    def fig(key: str, empty: str) -> None:
        chart = charts.get(key)
        parts.append(_figure(chart, images) if chart else f'<p class="empty">{escape(empty)}</p>')

    parts.append("<h2>1. Summary</h2>")
    parts.append(_table(tables.summary(report)))

    parts.append("<h2>2. Exposure</h2>")
    parts.append(_table(tables.zones(report)))
    fig("zones", "No zone figure: no segment was measured.")
    parts.append(_table(tables.cutpoints(report)))

    parts.append("<h2>3. Hotspots: where the work is hardest</h2>")
    parts.append(
        '<p class="note">Tasks and teams ranked by upper-back dose per monitored hour: a list of work to '
        "change, not of people. No individual worker is ranked anywhere in this report.</p>"
    )
    parts.append(_table(tables.teams(report)))
    parts.append(_table(tables.tasks(report)))
    fig("hotspots", "No hotspot figure: no team or task of 5 or more workers has monitored hours.")

    parts.append("<h2>4. Break prompts and outcomes</h2>")
    parts.append(_table(tables.prompts(report)))
    parts.append(_table(tables.suppressed(report)))

    parts.append("<h2>5. Incidents</h2>")
    parts.append(_table(tables.incident_summary(report)))
    parts.append(_table(tables.incidents(report)))

    parts.append("<h2>6. Break compliance and neck and shoulder incidents</h2>")
    parts.append(f'<p class="wording">{escape(split_sentence(report))}</p>')
    parts.append(_table(tables.split(report)))
    fig("split", "No comparison figure: see the table's note.")

    parts.append("<h2>7. Trend</h2>")
    fig("trend", "No trend figure: no monitored hours in the twelve months.")
    parts.append(_table(tables.trend(report)))

    parts.append("<h2>8. Habituation: do nudges still work?</h2>")
    parts.append(f'<p class="wording">{escape(habituation_sentence(report))}</p>')
    fig("habituation", "No habituation figure: no nudge could be measured (see the note below).")
    parts.append(_table(tables.habituation(report)))

    parts.append("<h2>About these figures</h2>")
    parts.append(
        '<p class="note">Exposure comes from the hourly per-worker rollup of the 10-second windows; '
        "incidents from the injury log; prompts and outcomes from the alerting service. No group of "
        "fewer than 5 workers is shown on its own (merged into 'other'). Definitions: docs/report.md "
        "in the strainwatch repository.</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def split_sentence(report: MonthlyReport) -> str:
    s = report.split
    if len(s.groups) != 2:
        return s.note
    high, low = s.groups

    def teams(n: int) -> str:
        return f"{n} team" if n == 1 else f"{n} teams"

    return (
        f"From {s.period}, teams with high conditioning-break compliance "
        f"({fmt.percent(high.compliance_pct)}, {teams(high.teams)}, {high.workers} workers) had "
        f"{high.neck_shoulder_incidents} neck or shoulder incidents in {fmt.number(high.hours, 0)} "
        f"monitored hours ({fmt.number(high.rate, 2)} per 200,000 h); teams with low compliance "
        f"({fmt.percent(low.compliance_pct)}, {teams(low.teams)}, {low.workers} workers) had "
        f"{low.neck_shoulder_incidents} in {fmt.number(low.hours, 0)} h ({fmt.number(low.rate, 2)} "
        "per 200,000 h). This is an association in this site's data with the counts shown; it does not "
        "show that breaks prevent injuries."
    )


def habituation_sentence(report: MonthlyReport) -> str:
    if not report.habituation:
        return report.habituation_note
    this = report.habituation[-1]
    earlier = [h for h in report.habituation[:-1] if h.nudges_measured]
    if not this.nudges_measured:
        now = f"No posture nudge of {this.month} could be measured ({this.nudges} nudges)."
    else:
        now = (
            f"In {this.month}, the nudged segment spent on average {fmt.percent(this.mean_at_risk_pct)} "
            f"of the 10 minutes after a nudge in its not-acceptable zone ({this.nudges_measured} nudges "
            "measured)."
        )
    if earlier:
        n = sum(h.nudges_measured for h in earlier)
        mean = sum((h.mean_at_risk_pct or 0.0) * h.nudges_measured for h in earlier) / n
        then = (
            f" Earlier months with window data ({', '.join(h.month for h in earlier)}): "
            f"{fmt.percent(mean)} over {n} nudges."
        )
    else:
        then = " No earlier month has 10-second window data to compare with."
    return now + then + " " + report.habituation_note


def _table(table: Table) -> str:
    shown = [i for i, c in enumerate(table.columns) if c[1]]
    out = [f"<h3>{escape(table.title)}</h3>"]
    if not table.rows:
        out.append(f'<p class="empty">{escape(table.empty)}</p>')
        return "\n".join(out)
    out.append('<table class="wide"><thead><tr>' if len(shown) > 7 else "<table><thead><tr>")
    for i in shown:
        kind = "text" if table.columns[i][2] == "text" else "num"
        out.append(f'<th class="{kind}">{escape(table.columns[i][1])}</th>')
    out.append("</tr></thead><tbody>")
    for row in table.rows:
        cells = []
        for i in shown:
            kind = "text" if table.columns[i][2] == "text" else "num"
            cells.append(f'<td class="{kind}">{escape(table.cell(row, i))}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    for note in table.notes:
        out.append(f'<p class="note">{escape(note)}</p>')
    return "\n".join(out)


_SVG_PROLOGUE = re.compile(r"^.*?(?=<svg)", re.DOTALL)


def _figure(chart: Chart, images: str) -> str:
    if images == "png":
        data = base64.b64encode(chart.png).decode()
        body = f'<img src="data:image/png;base64,{data}" alt="{escape(chart.alt)}">'
    else:
        body = _SVG_PROLOGUE.sub("", chart.svg, count=1)
    return f"<figure>{body}<figcaption>{escape(chart.title)}</figcaption></figure>"
