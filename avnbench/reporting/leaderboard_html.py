"""The board as one self-contained html page: sortable tables, inline SVG figures, run links.

No external resource: the style, the few lines of sorting script and the figures are inline, so
the file opens from disk or a CI artifact. Every compared value carries a tooltip (title) with its
n and interval; every row links to its parent run in MLflow's UI.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from avnbench import __version__
from avnbench.reporting.leaderboard import (
    COST_COLUMNS,
    BoardAnalysis,
    banner,
    better_than_text,
    cost_text,
    fmt_mean_ci,
    fmt_median_iqr,
    fmt_n,
    fmt_rank,
    fmt_value,
    footnotes,
    one_empty_count,
    segmentation_order,
)

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


@dataclass(frozen=True)
class BoardFigure:
    name: str
    title: str
    svg: str
    caption: str


def _figure_title(analysis: BoardAnalysis, what: str) -> str:
    board = analysis.board
    return f"{what}\n{board.dataset}" + (" (synthetic)" if board.synthetic else "")


def board_figures(analysis: BoardAnalysis) -> list[BoardFigure]:
    """Blob plot, significance map and dot-and-box plot per ranked metric; Bland–Altman per method."""
    from avnbench.reporting import plots

    figures = []
    grade_accuracy = [g.accuracy for g in analysis.grades if len(g.names) >= 2]
    for result in analysis.metrics + grade_accuracy:
        m = result.metric
        if not m.ranked or not result.values.methods:
            continue
        methods, ranking = result.values.methods, result.ranking
        order = sorted(range(len(methods)), key=lambda j: (ranking.ranks[j], methods[j]))
        intervals = [ranking.rank_interval(n) for n in methods]
        direction = "higher is better" if m.higher_is_better else "lower is better"
        figures.append(BoardFigure(
            f"rank_blobs_{m.key}", f"Rank stability, {m.title}",
            plots.plot_rank_blobs(methods, ranking.rank_frequencies(), list(ranking.ranks), intervals,
                                  _figure_title(analysis, f"Rank of {m.title}"), f"blobs-{m.key}"),
            f"Share of {ranking.n_bootstrap} patient-bootstrap resamples ({ranking.n_patients} patients, "
            f"{ranking.n_cases} hips) giving each rank by mean {m.title} ({direction}); cross: rank on all patients; "
            "line: 95 % interval."))
        if result.tests is not None:
            figures.append(BoardFigure(
                f"significance_{m.key}", f"Pairwise significance, {m.title}",
                plots.plot_significance_map(methods, result.tests.p_holm, order,
                                            _figure_title(analysis, f"Significance of {m.title}"), f"sig-{m.key}"),
                "Dark cell: the row's method is better than the column's (one-sided Wilcoxon on per-patient means, "
                "Holm-corrected over all ordered pairs, p < 0.05); numbers: adjusted p."))
        if any(result is g for g in grade_accuracy):
            continue  # a hip is right or wrong: dots and boxes of 0/1 say nothing
        figures.append(BoardFigure(
            f"cases_{m.key}", f"Per-hip values, {m.title}",
            plots.plot_case_dots(methods, result.values.values, order, m.title,
                                 _figure_title(analysis, f"Per-hip {m.title}"), f"dots-{m.key}"),
            f"Every hip as a dot, boxes at the quartiles; {m.note or 'all hips with a defined value'}."))
    if analysis.segmentation:
        per_method = {analysis.name(r): r.cases for r in segmentation_order(analysis) if r.cases}
        if per_method:
            figures.append(BoardFigure(
                "bland_altman_relvol", "Bland–Altman, relative necrosis volume",
                plots.plot_bland_altman_panels(per_method, _figure_title(analysis, "Bland–Altman, relative necrosis volume"),
                                               "bland-altman"),
                "Automatic − manual relative necrosis volume (% of the head) against their mean, per method; "
                "line: bias; dashed: 95 % limits of agreement."))
    return figures


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _cell(text: str, sort: object | None = None, title: str = "", href: str = "", wrap: bool = False) -> str:
    attrs = " class='wrap'" if wrap else ""
    if sort is not None and not (isinstance(sort, float) and math.isnan(sort)):  # NaN sorts as missing
        attrs += f" data-sort='{_esc(sort)}'"
    if title:
        attrs += f" title='{_esc(title)}'"
    body = f"<a href='{_esc(href)}'>{_esc(text)}</a>" if href else _esc(text)
    return f"<td{attrs}>{body}</td>"


def _table(table_id: str, headers: list[tuple[str, str]], rows: list[list[str]]) -> str:
    head = "".join(f"<th title='{_esc(tip or 'click to sort')}'>{_esc(h)}</th>" for h, tip in headers)
    body = "\n".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    return f"<table id='{table_id}' class='sortable'><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def _tip(s: dict, title: str) -> str:
    ci = "" if s["ci_low"] is None else f"; 95 % CI {fmt_value(s['ci_low'])} to {fmt_value(s['ci_high'])}"
    iqr = "" if s["median"] is None else f"; median {fmt_value(s['median'])}, IQR {fmt_value(s['q1'])} to {fmt_value(s['q3'])}"
    return f"{title}: n = {s['n_hips']} hips, {s['n_patients']} patients{ci}{iqr}"


def segmentation_html(analysis: BoardAnalysis) -> str:
    board = analysis.board
    primary = analysis.primary.metric.title if analysis.primary else "the first metric"
    headers = [("rank", f"rank by mean {primary} [95 % bootstrap interval]"), ("method", ""),
               ("n", "hips/patients")]
    for result in analysis.metrics:
        headers.append((result.metric.title, f"mean [95 % CI]; {result.metric.note}".rstrip("; ")))
        headers.append((f"{result.metric.title} median [IQR]", "median [interquartile range]"))
    headers += [("one-empty necrosis", "hips where exactly one of the masks holds necrosis")]
    headers += [(title, "") for _, title in COST_COLUMNS] + [("device", ""), ("significant (Holm)", ""), ("MLflow", "")]
    rows = []
    for row in segmentation_order(analysis):
        name = analysis.name(row)
        cells = []
        primary = analysis.primary
        if primary is not None and name in primary.values.methods:
            s = primary.summary(name)
            cells.append(_cell(fmt_rank(s), s["rank"], f"rank {s['rank']}, 95 % interval {s['rank_low']} to {s['rank_high']}"))
        else:
            cells.append(_cell("–"))
        cells.append(_cell(name, name, f"plugin version {row.plugin_version or '?'}; folds {row.folds}"))
        cells.append(_cell(fmt_n(row.n_hips, row.n_patients), row.n_hips, f"{row.n_hips} hips, {row.n_patients} patients"))
        for result in analysis.metrics:
            s = result.summary(name)
            tip = _tip(s, result.metric.title)
            cells.append(_cell(fmt_mean_ci(s), s["mean"], tip))
            cells.append(_cell(fmt_median_iqr(s), s["median"], tip))
        empty = one_empty_count(row)
        cells.append(_cell("–" if empty is None else str(empty), empty))
        for key, _ in COST_COLUMNS:
            tip = "fit time excludes the members it reuses (footnote †)" if key == "fit_seconds" and row.builds_on else ""
            cells.append(_cell(cost_text(row, key), row.metrics.get(key), tip))
        cells.append(_cell(row.device, row.device))
        cells.append(_cell(better_than_text(analysis, name), wrap=True))
        cells.append(_cell("run", row.run_id, f"MLflow run {row.run_id}", board.run_url(row)))
        rows.append(cells)
    return _table("segmentation", headers, rows)


def grading_html(analysis: BoardAnalysis) -> str:
    board = analysis.board
    headers = [("method", ""), ("grade from", "what the method's card says")]
    for g in analysis.grades:
        label = g.accuracy.metric.title.replace(" accuracy", "")
        headers += [(f"{label} n", "hips/patients"), (f"{label} acc.", "accuracy [95 % CI] on the same lesion hips"),
                    (f"{label} rank", "rank by accuracy [95 % interval]"), (f"{label} κ lin.", "linear weighted kappa [95 % CI]")]
    headers.append(("MLflow", ""))
    rows = []
    for row in board.compared:
        name = analysis.name(row)
        if not any(name in g.names for g in analysis.grades):
            continue
        cells = [_cell(name, name, f"plugin version {row.plugin_version or '?'}; folds {row.folds}"),
                 _cell(row.grade_source(), row.grade_source())]
        for g in analysis.grades:
            if name not in g.names:
                cells += [_cell("–")] * 4
                continue
            s = g.accuracy.summary(name)
            tip = _tip(s, g.accuracy.metric.title)
            cells.append(_cell(fmt_n(s["n_hips"], s["n_patients"]), s["n_hips"]))
            cells.append(_cell(fmt_mean_ci(s), s["mean"], tip))
            cells.append(_cell(fmt_rank(s), s["rank"], f"rank {s['rank']}, 95 % interval {s['rank_low']} to {s['rank_high']}"))
            kappa, ci = g.kappa_linear.get(name), g.kappa_interval.get(name)
            text = fmt_value(kappa) + (f" [{fmt_value(ci[0])}, {fmt_value(ci[1])}]" if ci else "")
            cells.append(_cell(text, kappa, f"linear weighted kappa, n = {s['n_hips']} hips, {s['n_patients']} patients"))
        cells.append(_cell("run", row.run_id, f"MLflow run {row.run_id}", board.run_url(row)))
        rows.append(cells)
    return _table("grading", headers, rows)


def apart_html(analysis: BoardAnalysis, frame: pd.DataFrame) -> str:
    board = analysis.board
    headers = [(str(c), "") for c in frame.columns] + [("MLflow", "")]
    rows = []
    for row, values in zip(board.apart, frame.itertuples(index=False)):
        cells = [_cell(v, v) for v in values]
        cells.append(_cell("run", row.run_id, f"MLflow run {row.run_id}", board.run_url(row)))
        rows.append(cells)
    return _table("not-compared", headers, rows)


SORT_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var asc = th.getAttribute('aria-sort') !== 'ascending';
      table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(r) { var c = r.cells[col]; var v = c.getAttribute('data-sort'); return v === null ? c.textContent : v; }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
        var d = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return asc ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""
STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1500px;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;font-size:13px;margin:0.5em 0 1em}td,th{border:1px solid #ccc;padding:4px 8px;"
    "white-space:nowrap}td.wrap{white-space:normal;min-width:18em}th{background:#f0f0f0;cursor:pointer;position:sticky;top:0}th[aria-sort=ascending]::after"
    "{content:' ▲'}th[aria-sort=descending]::after{content:' ▼'}tbody tr:nth-child(even){background:#fafafa}"
    ".banner{background:#fff3cd;border:1px solid #e0c36a;padding:8px 12px;font-weight:600}.scroll{overflow-x:auto}"
    ".figures{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0;max-width:100%}figure svg{max-width:100%;height:auto}"
    "figcaption{font-size:12px;color:#555;max-width:40em}.meta,.note{font-size:12px;color:#555}"
)


def _git_commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def page_html(analysis: BoardAnalysis, tables: dict[str, pd.DataFrame], figures: list[BoardFigure]) -> str:
    """The whole page."""
    board = analysis.board
    commits = sorted({r.git_commit[:12] for r in board.compared if r.git_commit})
    meta = (f"Built {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} by avnbench {__version__}"
            f" (commit {(_git_commit() or 'unknown')[:12]}) from the MLflow store {board.tracking_uri}; "
            f"runs made at commit {', '.join(commits) or 'unknown'}. Links open the runs in MLflow's UI at "
            f"{board.ui_url} (start it with avnbench ui).")
    compared = board.compared
    group = (f"Compared: {len(compared)} runs on dataset fingerprint {compared[0].dataset_fingerprint[:12]}, split "
             f"{compared[0].split_sha256[:12]}, folds {compared[0].folds}.") if compared else "No runs compared."
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>avnbench leaderboard: {_esc(board.dataset)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Leaderboard: {_esc(board.dataset)}</h1>",
        f"<p class='banner'>{_esc(banner(board))}</p>",
        f"<p class='meta'>{_esc(meta)}</p><p>{_esc(group)} Click a column header to sort.</p>",
        "<h2>Segmentation</h2>",
        f"<div class='scroll'>{segmentation_html(analysis)}</div>" if analysis.segmentation else "<p>No compared segmentation runs.</p>",
        "<h2>Grading on the same hips: segmentation-derived and classifier grades</h2>",
        f"<div class='scroll'>{grading_html(analysis)}</div>" if analysis.grades else "<p>No graded runs.</p>",
    ]
    if not tables["not compared"].empty:
        parts += ["<h2>Not compared</h2>",
                  ("<p>These runs used another dataset version, split or fold set than the rows above, so they are "
                   "listed with their own logged numbers and neither ranked nor tested against them.</p>"),
                  f"<div class='scroll'>{apart_html(analysis, tables['not compared'])}</div>"]
    if figures:
        parts.append("<h2>Figures</h2><div class='figures'>")
        for fig in figures:
            parts.append(f"<figure id='fig-{_esc(fig.name)}'>{fig.svg}<figcaption>{_esc(fig.caption)}</figcaption></figure>")
        parts.append("</div>")
    parts += [f"<p class='note'>{_esc(n)}</p>" for n in footnotes(analysis)]
    parts.append(f"<script>{SORT_SCRIPT}</script></body></html>")
    return "\n".join(parts).replace("`", "'")


def find_chromium() -> str | None:
    """A Chromium (or Chrome) executable on PATH, else None."""
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(page: Path, png: Path, width: int = 1500, height: int = 2400, timeout_s: float = 120) -> Path:
    """A PNG of ``page`` rendered by headless Chromium (Debian's ``chromium`` package)."""
    from avnbench.errors import ConfigError

    browser = find_chromium()
    if browser is None:
        raise ConfigError("no Chromium found for --screenshot; install it (apt-get install chromium) and retry")
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
             f"--screenshot={png}", Path(page).resolve().as_uri()],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )
    if done.returncode != 0 or not png.exists():
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"{browser} could not screenshot {page} ({tail}); run it by hand to see why")
    return png
