"""What the leaderboard computes about its compared rows, from their per-case tables.

Per metric: the values aligned on the hips every compared run scored, the ranking with its
patient-bootstrap distribution, and (for ranked metrics) the pairwise tests. Per grade system:
the same lesion hips and the same label list for segmentation-derived and classifier grades.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from avnbench.evaluation.metrics import MetricRegistry, default_metrics
from avnbench.evaluation.metrics import case_values as metric_case_values
from avnbench.reporting.leaderboard_rows import Board, BoardRow
from avnbench.reporting.ranking import (
    CaseValues,
    PairwiseTests,
    Ranking,
    case_values,
    pairwise_wilcoxon,
    quartiles,
    rank_with_bootstrap,
)

N_BOOTSTRAP = 1000


@dataclass(frozen=True)
class BoardMetric:
    """A per-case metric as the board shows it: mean [CI], median [IQR], optionally a rank."""

    key: str
    title: str
    higher_is_better: bool
    ranked: bool = False
    headline: bool = False
    note: str = ""


#: What a metric's case selection means, said under its column.
_CASES_NOTE = {
    "both_nonempty": "over hips where both masks hold {label}",
    "lesion_free": "on lesion-free hips",
    "not_both_empty": "",
    "all": "",
}


def board_metrics(metrics: MetricRegistry | None = None) -> list[BoardMetric]:
    """The segmentation table's per-case metrics, from the metric registry (plugin metrics
    included when ``metrics`` is :func:`collect_metrics`'s): ranked ones first, primary first."""
    metrics = metrics or default_metrics()
    defs = [d for d in metrics.table("segmentation") if d.is_case_metric and d.higher_is_better is not None]
    defs = metrics.ranked() + [d for d in defs if d.board_rank is None]
    return [
        BoardMetric(d.name, d.title or d.name, bool(d.higher_is_better), ranked=d.board_rank is not None,
                    headline=d.board_rank is not None, note=_CASES_NOTE[d.cases].format(label=d.label))
        for d in defs
    ]


COST_COLUMNS: list[tuple[str, str]] = [("fit_seconds", "fit (s/fold)"), ("predict_seconds_per_case", "predict (s/case)")]
#: The grade systems and their classes, mildest first; "none" (no lesion) sits below them.
GRADE_SYSTEMS: dict[str, tuple[str, ...]] = {"jic": ("A", "B", "C1", "C2"), "steinberg": ("A", "B", "C")}
NO_GRADE = "none"
LESION_FREE_NOTE = (
    "Grading is compared on the same hips for every method: hips whose reference grade is 'none' "
    "(lesion-free) are left out for all of them, since a classifier of grades cannot grade them; on the "
    "hips left, a segmentation that finds no necrosis is graded 'none', counted wrong, and placed below "
    "the mildest grade for kappa, with the same label list for every method."
)


def board_case_columns(frame: pd.DataFrame, metrics: MetricRegistry | None = None) -> pd.DataFrame:
    """The per-case table with each board metric's value under its name, NaN where the metric's
    case selection leaves the hip out (e.g. distances where one mask is empty)."""
    metrics = metrics or default_metrics()
    out = frame.copy()
    values = {m.key: metric_case_values(metrics[m.key], frame)[0] for m in board_metrics(metrics)}
    for key, column in values.items():
        out[key] = column
    return out


def grade_columns(frame: pd.DataFrame, system: str) -> pd.DataFrame:
    """Per hip: ``<system>_correct`` (1/0) and ordinal codes, NaN where the reference has no lesion."""
    frame = frame.copy()
    classes = GRADE_SYSTEMS[system]
    ref_col, pred_col = f"{system}_ref", f"{system}_pred"
    if ref_col not in frame.columns or pred_col not in frame.columns:
        return frame
    codes = {NO_GRADE: 0} | {c: i + 1 for i, c in enumerate(classes)}
    ref = pd.to_numeric(frame[ref_col].map(lambda v: codes.get(str(v), np.nan)), errors="coerce")
    lesion = ref.notna() & (ref > 0)
    # a missing or unknown predicted grade (no lesion found) is "none": wrong on a lesion hip
    pred = pd.to_numeric(frame[pred_col].map(lambda v: codes.get(str(v), 0)), errors="coerce")
    frame[f"{system}_ref_code"] = ref.where(lesion)
    frame[f"{system}_pred_code"] = pred.where(lesion)
    frame[f"{system}_correct"] = (ref == pred).astype(float).where(lesion)
    return frame


def _kappa(ref: np.ndarray, pred: np.ndarray, k: int, weights: str) -> float:
    from avnbench.evaluation.bootstrap import confusion_rows, kappa_from_confusion

    if not len(ref):
        return float("nan")
    cm = confusion_rows(ref[None, :].astype(int), pred[None, :].astype(int), k)
    return float(kappa_from_confusion(cm, weights)[0])


@dataclass
class MetricResult:
    """One metric over the compared rows: aligned values, ranking (bootstrap) and pairwise tests."""

    metric: BoardMetric
    values: CaseValues
    ranking: Ranking
    tests: PairwiseTests | None = None

    def summary(self, name: str) -> dict[str, float | int | None]:
        """Mean, CI, quartiles, n and rank of ``name``; all None (n 0) for a row without a per-case table."""
        if name not in self.values.methods:
            return dict.fromkeys(("mean", "ci_low", "ci_high", "q1", "median", "q3", "rank", "rank_low", "rank_high")) | {
                "n_hips": 0, "n_patients": 0}
        j = self.values.methods.index(name)
        column = self.values.values[:, j]
        hips, patients = self.values.defined(name)
        q = quartiles(column)
        ci = self.ranking.mean_interval(name)
        lo, hi = self.ranking.rank_interval(name)
        return {
            "mean": float(self.ranking.means[j]) if np.isfinite(self.ranking.means[j]) else None,
            "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
            "q1": q[0] if q else None, "median": q[1] if q else None, "q3": q[2] if q else None,
            "n_hips": hips, "n_patients": patients,
            "rank": int(self.ranking.ranks[j]), "rank_low": lo, "rank_high": hi,
        }


@dataclass
class GradeResult:
    """One grade system compared on the same lesion hips for every row that predicts it."""

    system: str
    names: list[str]
    accuracy: MetricResult
    kappa_linear: dict[str, float] = field(default_factory=dict)
    kappa_interval: dict[str, tuple[float, float] | None] = field(default_factory=dict)


@dataclass
class BoardAnalysis:
    """Everything the board shows about its compared rows."""

    board: Board
    names: dict[str, str]  # run id → display name
    segmentation: list[BoardRow]
    metrics: list[MetricResult]
    grades: list[GradeResult]
    n_bootstrap: int = N_BOOTSTRAP

    def name(self, row: BoardRow) -> str:
        return self.names[row.run_id]

    def metric(self, key: str) -> MetricResult | None:
        return next((m for m in self.metrics if m.metric.key == key), None)

    @property
    def primary(self) -> MetricResult | None:
        return self.metrics[0] if self.metrics else None


def display_names(rows: list[BoardRow]) -> dict[str, str]:
    """``method (preset)``, with the plugin version (and folds) added only where needed to tell rows apart."""
    names = {r.run_id: f"{r.method} ({r.preset})" for r in rows}
    for r in rows:
        if sum(n == names[r.run_id] for n in names.values()) > 1:
            names[r.run_id] = r.label + (f" folds {r.folds}" if r.not_compared else "")
    return names


def _metric_result(metric: BoardMetric, tables: dict[str, pd.DataFrame], n_bootstrap: int, seed: int) -> MetricResult:
    values = case_values(tables, metric.key, metric.higher_is_better)
    ranking = rank_with_bootstrap(values, metric.key, n_bootstrap, seed)
    tests = pairwise_wilcoxon(values, metric.key) if metric.ranked and len(values.methods) >= 2 else None
    return MetricResult(metric, values, ranking, tests)


def _grade_result(system: str, rows: list[BoardRow], names: dict[str, str], n_bootstrap: int, seed: int) -> GradeResult | None:
    from avnbench.reporting.ranking import patient_resamples

    graded = [r for r in rows if r.task == "segmentation" or r.predicts == system]
    tables = {names[r.run_id]: grade_columns(r.case_frame, system) for r in graded if r.cases}
    tables = {n: t for n, t in tables.items() if f"{system}_correct" in t.columns}
    if not tables:
        return None
    # the same hips for all: lesion hips every table has
    lesion = set.intersection(*({str(c) for c in t.loc[t[f"{system}_correct"].notna(), "case_id"]} for t in tables.values()))
    tables = {n: t[t["case_id"].astype(str).isin(lesion)] for n, t in tables.items()}
    metric = BoardMetric(f"{system}_correct", f"{system.upper() if system == 'jic' else system.title()} accuracy", True, ranked=True)
    accuracy = _metric_result(metric, tables, n_bootstrap, seed)
    result = GradeResult(system, list(tables), accuracy)
    k = len(GRADE_SYSTEMS[system]) + 1
    ref_values = case_values(tables, f"{system}_ref_code", True)
    pred_values = case_values(tables, f"{system}_pred_code", True)
    resamples = patient_resamples(ref_values.patients, n_bootstrap, seed)
    for j, name in enumerate(ref_values.methods):
        ref, pred = ref_values.values[:, j], pred_values.values[:, j]
        result.kappa_linear[name] = _kappa(ref, pred, k, "linear")
        samples = np.array([_kappa(ref[rows_], pred[rows_], k, "linear") for rows_ in resamples])
        samples = samples[np.isfinite(samples)]
        result.kappa_interval[name] = (
            (float(np.quantile(samples, 0.025)), float(np.quantile(samples, 0.975))) if len(samples) >= n_bootstrap // 2 else None
        )
    return result


def analyse(board: Board, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0,
            metrics: MetricRegistry | None = None) -> BoardAnalysis:
    """Rank, test and summarise the board's compared rows from their per-case tables, over the
    metrics of ``metrics`` (default: the board's own, i.e. built-in plus installed plugins')."""
    metrics = metrics or board.metrics
    names = display_names(board.rows)
    compared = board.compared
    segmentation = [r for r in compared if r.task == "segmentation"]
    tables = {names[r.run_id]: board_case_columns(r.case_frame, metrics) for r in segmentation if r.cases}
    metrics_shown = board_metrics(metrics)
    metrics = [_metric_result(m, tables, n_bootstrap, seed) for m in metrics_shown] if tables else []
    grades = [g for s in GRADE_SYSTEMS if (g := _grade_result(s, compared, names, n_bootstrap, seed)) is not None]
    return BoardAnalysis(board, names, segmentation, metrics, grades, n_bootstrap)
