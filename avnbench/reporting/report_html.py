"""The report's two pages: markdown (figures as files) and self-contained html (figures inline).

Both carry the dataset's synthetic banner at the top and, per study, the runs used (or the
command for a method not run), its tables with the published figure beside the measured one,
its figures and notes.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from avnbench import __version__

if TYPE_CHECKING:
    from avnbench.reporting.report import Report

HOW_TESTED = (
    "How the numbers are made: each study's statistics are recomputed from the per-case tables "
    "(cases.csv) of the runs named, with avnbench's shared scoring. Means ± SD and medians [IQR] are over "
    "hips, as the studies report them. Hips of one patient are not independent (bilateral patients), so every "
    "test and correlation is on per-patient means (the mean over a patient's hips): paired t-test and Pearson r "
    "for volumes, Mann–Whitney U between ARCO groups, Wilcoxon signed-rank (Holm-corrected) between 2D and 3D. "
    "n is hips/patients."
)


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_md_escape(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return out


def report_markdown(report: Report) -> str:
    """README.md of one dataset's report."""
    lines = [f"# The seed studies regenerated on {report.dataset}", "", f"**{report.banner}**", "",
             (f"Generated {report.created} by avnbench {__version__} (`avnbench report`) from {report.tracking_uri}; "
              f"runs made by avnbench {', '.join(report.versions) or '?'} at commit {', '.join(report.commits) or '?'}. "
              "Open index.html for the same page with its figures inline."), "", HOW_TESTED, ""]
    for study in report.studies:
        lines += [f"## Seed {study.key}: {study.title}", "", f"Study: {study.source}.", "", "Runs:", ""]
        lines += [f"- {m.status()}" for m in study.methods] + [""]
        lines += [f"> {n}" for n in study.notes]
        if study.notes:
            lines.append("")
        for table in study.tables:
            lines += [f"### {table.title}", ""] + _md_table(table.headers, table.rows) + [""]
            if table.note:
                lines += [table.note, ""]
        for fig in study.figures:
            lines += [f"![{fig.caption}](figures/{study.key}_{fig.name}.svg)", "", f"*{fig.caption}*", ""]
    return "\n".join(lines)


def _e(text: object) -> str:
    return html.escape(str(text))


def _code(text: str) -> str:
    # `command` in a status line becomes <code>
    parts = _e(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}"
    ".banner{background:#fff3cd;border:1px solid #e0c36a;padding:.7em 1em;font-weight:600}"
    ".real{background:#e8f4ff;border-color:#8fb8de}"
    "table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:.25em .5em;font-size:.9em}"
    "th{background:#f3f3f3}td.pub{color:#555;background:#fafafa}td.meas{font-weight:600}"
    ".note{font-size:.85em;color:#444;max-width:70em}.notrun{color:#a33}"
    "figure{margin:0 0 1em}figure svg{max-width:100%;height:auto}figcaption{font-size:.85em;color:#444}"
    "section{border-top:2px solid #ddd;margin-top:1.5em}"
)


def _table_html(table) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in table.headers)
    body = []
    for row in table.rows:
        cells = []
        for header, value in zip(table.headers, row):
            cls = " class='pub'" if "published" in header else " class='meas'" if "measured" in header else ""
            cells.append(f"<td{cls}>{_e(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f"<p class='note'>{_e(table.note)}</p>" if table.note else ""
    return f"<h3>{_e(table.title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}"


def report_html(report: Report) -> str:
    """index.html of one dataset's report: one file, figures as inline SVG."""
    banner_cls = "banner" if report.synthetic else "banner real"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Seed studies on {_e(report.dataset)}</title><style>{STYLE}</style></head><body>",
        f"<h1>The seed studies regenerated on {_e(report.dataset)}</h1>",
        f"<p class='{banner_cls}' id='synthetic-banner'>{_e(report.banner)}</p>",
        (f"<p class='note'>Generated {_e(report.created)} by avnbench {_e(__version__)} from {_e(report.tracking_uri)}; "
         f"runs by avnbench {_e(', '.join(report.versions) or '?')} at commit {_e(', '.join(report.commits) or '?')}.</p>"),
        f"<p class='note'>{_e(HOW_TESTED)}</p>",
    ]
    for study in report.studies:
        parts.append(f"<section id='seed-{_e(study.key)}'><h2>Seed {_e(study.key)}: {_e(study.title)}</h2>")
        parts.append(f"<p>Study: {_e(study.source)}.</p><ul>")
        for m in study.methods:
            cls = " class='notrun'" if m.row is None else ""
            parts.append(f"<li{cls}>{_code(m.status())}</li>")
        parts.append("</ul>")
        parts += [f"<p class='note'><b>{_e(n)}</b></p>" for n in study.notes]
        parts += [_table_html(t) for t in study.tables]
        for fig in study.figures:
            parts.append(f"<figure id='fig-{_e(study.key)}-{_e(fig.name)}'>{fig.svg}<figcaption>{_e(fig.caption)}</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
