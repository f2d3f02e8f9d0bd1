"""Leaderboards built from MLflow only: one folder per dataset with README.md, csv and html.

One row per (method, preset): the latest finished parent run. Headline metrics carry their
bootstrap 95 % CIs; cost columns come from the same run; every method is compared with the best
one by paired Wilcoxon tests over the cases both scored (Holm-corrected over the metrics).
"""

from __future__ import annotations

import html
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from avnbench.reporting.tracking import PARENT_TAG, client_for

# (metric, column title, higher is better)
SEGMENTATION_COLUMNS: list[tuple[str, str, bool]] = [
    ("dice_vital", "Dice vital", True),
    ("dice_necrosis", "Dice necrosis", True),
    ("dice_head", "Dice head", True),
    ("assd_vital_mm", "ASSD vital (mm)", False),
    ("assd_necrosis_mm", "ASSD necrosis (mm)", False),
    ("hd95_vital_mm", "HD95 vital (mm)", False),
    ("hd95_necrosis_mm", "HD95 necrosis (mm)", False),
    ("nsd1mm_vital", "NSD@1mm vital", True),
    ("nsd1mm_necrosis", "NSD@1mm necrosis", True),
    ("necrosis_cm3_mae", "necrosis MAE (cm³)", False),
    ("necrosis_relvol_pearson_r", "rel. volume r", True),
]
GRADING_COLUMNS: list[tuple[str, str, bool]] = [
    ("steinberg_accuracy", "Steinberg acc.", True),
    ("steinberg_kappa_linear", "Steinberg κ lin.", True),
    ("steinberg_kappa_quadratic", "Steinberg κ quad.", True),
    ("jic_accuracy", "JIC acc.", True),
    ("jic_kappa_linear", "JIC κ lin.", True),
    ("jic_macro_auc", "JIC macro AUC", True),
]
COST_COLUMNS: list[tuple[str, str]] = [
    ("fit_seconds", "fit (s/fold)"),
    ("predict_seconds_per_case", "predict (s/case)"),
]
PRIMARY = {"segmentation": "dice_necrosis", "classification": "jic_accuracy"}
PAIRED_METRICS = {
    "segmentation": ["dice_vital", "dice_necrosis", "assd_vital_mm", "assd_necrosis_mm"],
    "classification": [],
}


class BoardRow(BaseModel):
    """One method and preset on one dataset."""

    model_config = ConfigDict(extra="forbid")

    method: str
    preset: str
    task: str
    run_id: str
    device: str
    folds: str = ""
    metrics: dict[str, float]
    significance: str = ""
    cases: list[dict[str, Any]] = Field(default_factory=list, repr=False)


class Board(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str
    synthetic: bool
    rows: list[BoardRow]


def collect_boards(tracking_uri: str) -> list[Board]:
    """Read every experiment's latest finished parent run per (method, preset)."""
    client = client_for(tracking_uri)
    boards = []
    for exp in client.search_experiments():
        runs = client.search_runs(
            [exp.experiment_id], filter_string="attributes.status = 'FINISHED'", max_results=5000,
            order_by=["attributes.start_time DESC"],
        )
        latest: dict[tuple[str, str], Any] = {}
        for run in runs:
            if PARENT_TAG in run.data.tags or "method" not in run.data.params:
                continue
            key = (run.data.params["method"], run.data.params.get("preset", "?"))
            latest.setdefault(key, run)
        if not latest:
            continue
        synthetic = any(r.data.params.get("dataset_synthetic") == "True" for r in latest.values())
        rows = []
        for (method, preset), run in sorted(latest.items()):
            rows.append(
                BoardRow(
                    method=method,
                    preset=preset,
                    task=run.data.tags.get("avnbench.task", "segmentation"),
                    run_id=run.info.run_id,
                    device=run.data.tags.get("device", run.data.params.get("device", "?")),
                    folds=run.data.params.get("folds", ""),
                    metrics=dict(run.data.metrics),
                    cases=_read_cases(client, run.info.run_id),
                )
            )
        board = Board(dataset=exp.name, synthetic=synthetic, rows=rows)
        _add_significance(board)
        boards.append(board)
    return boards


def _read_cases(client, run_id: str) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "cases.csv", tmp)
        except Exception:  # a run without its table simply gets no paired tests
            return []
        return pd.read_csv(path).to_dict(orient="records")


def _add_significance(board: Board) -> None:
    from avnbench.evaluation.comparison import paired_comparison

    for task in ("segmentation", "classification"):
        rows = [r for r in board.rows if r.task == task]
        primary = PRIMARY[task]
        scored = [r for r in rows if primary in r.metrics]
        if len(scored) < 2 or not PAIRED_METRICS[task]:
            continue
        best = max(scored, key=lambda r: r.metrics[primary])
        best.significance = "best"
        for row in scored:
            if row is best or not row.cases or not best.cases:
                continue
            result = paired_comparison(row.cases, best.cases, PAIRED_METRICS[task])
            notes = []
            for metric, res in result.items():
                p = res.get("p_holm")
                if p is not None and math.isfinite(p) and p < 0.05:
                    notes.append(f"{metric} p={p:.3g}")
            row.significance = "differs from best: " + ", ".join(notes) if notes else "n.s. vs best"


def _count(metrics: dict[str, float]) -> str:
    return str(int(metrics["n_cases"])) if "n_cases" in metrics else "–"


def _fmt(metrics: dict[str, float], name: str) -> str:
    if name not in metrics:
        return "–"
    value = metrics[name]
    text = f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    lo, hi = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
    if lo is not None and hi is not None:
        text += f" [{lo:.3f}, {hi:.3f}]" if abs(value) < 100 else f" [{lo:.1f}, {hi:.1f}]"
    return text


def board_tables(board: Board) -> dict[str, pd.DataFrame]:
    """The segmentation, grading and cost tables of a board as data frames."""
    seg_rows = [r for r in board.rows if r.task == "segmentation"]
    seg_rows.sort(key=lambda r: -r.metrics.get("dice_necrosis", -1))
    seg = pd.DataFrame(
        [
            {"method": r.method, "preset": r.preset, "folds": r.folds, "cases": _count(r.metrics)}
            | {title: _fmt(r.metrics, m) for m, title, _ in SEGMENTATION_COLUMNS}
            | {title: _fmt(r.metrics, m) for m, title in COST_COLUMNS}
            | {"device": r.device, "paired tests (Holm)": r.significance}
            for r in seg_rows
        ]
    )
    all_rows = sorted(board.rows, key=lambda r: (-r.metrics.get("steinberg_accuracy", -1), -r.metrics.get("jic_accuracy", -1)))
    grading = pd.DataFrame(
        [
            {"method": r.method, "preset": r.preset, "folds": r.folds,
             "grade from": "segmentation" if r.task == "segmentation" else "direct classification"}
            | {title: _fmt(r.metrics, m) for m, title, _ in GRADING_COLUMNS}
            for r in all_rows
        ]
    )
    return {"segmentation": seg, "grading": grading}


def _numeric_frame(board: Board) -> pd.DataFrame:
    records = []
    for r in board.rows:
        records.append({"dataset": board.dataset, "synthetic": board.synthetic, "method": r.method,
                        "preset": r.preset, "folds": r.folds, "task": r.task, "device": r.device, "run_id": r.run_id,
                        "significance": r.significance} | r.metrics)
    return pd.DataFrame(records)


def _banner(board: Board) -> str:
    if board.synthetic:
        return (f"Dataset `{board.dataset}` is a SYNTHETIC PHANTOM generated by `avnbench data synth`. "
                "These numbers measure the methods on simulated images; they are not clinical results.")
    return f"Dataset `{board.dataset}`."


def _markdown_row(values: Sequence[Any]) -> str:
    return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"


def _markdown(frame: pd.DataFrame) -> str:
    cells = _markdown_row
    lines = [cells(frame.columns), "|" + "---|" * len(frame.columns)]
    lines += [cells(row) for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def write_board(board: Board, out_dir: Path) -> list[Path]:
    """Write README.md, leaderboard.csv and index.html for one dataset; returns the files."""
    folder = Path(out_dir) / board.dataset
    folder.mkdir(parents=True, exist_ok=True)
    tables = board_tables(board)
    note = ("Values: mean over cases [bootstrap 95 % CI]. Paired tests: Wilcoxon signed-rank over the "
            "cases both methods scored, against the best method by necrosis Dice (segmentation), "
            "Holm-corrected over the compared metrics. Generated by `avnbench leaderboard` from MLflow.")
    md = [f"# Leaderboard: {board.dataset}", "", _banner(board), ""]
    for title, frame in (("Segmentation", tables["segmentation"]), ("Grading: from segmentation vs direct classification", tables["grading"])):
        md += [f"## {title}", "", _markdown(frame) if not frame.empty else "_no runs_", ""]
    md += [note, ""]
    readme = folder / "README.md"
    readme.write_text("\n".join(md), encoding="utf-8")
    csv = folder / "leaderboard.csv"
    _numeric_frame(board).to_csv(csv, index=False)
    page = folder / "index.html"
    page.write_text(_html(board, tables, note), encoding="utf-8")
    return [readme, csv, page]


def _html(board: Board, tables: dict[str, pd.DataFrame], note: str) -> str:
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px}"
             "th{background:#f0f0f0}.banner{background:#fff3cd;border:1px solid #e0c36a;padding:8px}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>avnbench: {html.escape(board.dataset)}</title>",
             f"<style>{style}</style></head><body><h1>Leaderboard: {html.escape(board.dataset)}</h1>",
             f"<p class='banner'>{html.escape(_banner(board))}</p>"]
    for title, key in (("Segmentation", "segmentation"), ("Grading: from segmentation vs direct classification", "grading")):
        frame = tables[key]
        parts.append(f"<h2>{title}</h2>")
        parts.append(frame.to_html(index=False, escape=True) if not frame.empty else "<p>no runs</p>")
    parts.append(f"<p>{html.escape(note)}</p></body></html>")
    return "\n".join(parts)


def build_leaderboards(tracking_uri: str, out_dir: Path) -> list[Path]:
    """Collect every dataset's board from MLflow and write it under ``out_dir``."""
    written: list[Path] = []
    for board in collect_boards(tracking_uri):
        written += write_board(board, out_dir)
    return written


def headline(board: Board, names: Sequence[str] = ("dice_vital", "dice_necrosis", "steinberg_accuracy", "jic_accuracy")) -> pd.DataFrame:
    """A compact table for the terminal."""
    return pd.DataFrame([{"method": r.method, "preset": r.preset} | {n: _fmt(r.metrics, n) for n in names} for r in board.rows])
