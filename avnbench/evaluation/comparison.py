"""Comparing two runs case by case: paired Wilcoxon signed-rank tests at the patient level,
Holm-corrected.

Hips of one patient are not independent, so the test pairs *patients*: for each metric, the
mean over a patient's common hips in run a against the same in run b. Registered case metrics
are read as the summaries read them (:func:`avnbench.evaluation.metrics.case_values`), so e.g.
``assd_necrosis_mm`` pairs only hips with both necrosis masks non-empty in both runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from avnbench.errors import DataError
from avnbench.evaluation.bootstrap import patient_codes, per_patient_mean
from avnbench.evaluation.metrics import MetricRegistry, case_values, default_metrics
from avnbench.evaluation.rows import Rows, as_frame, numeric_column, quietly


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given)."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adjusted[idx] = running
    return adjusted.tolist()


def _patient_of(a, b, i: int) -> str | None:
    """The patient of common case ``i``: from rows a, else rows b, else None (its own)."""
    for frame in (a, b):
        if "patient_id" in frame.columns:
            value = frame["patient_id"].iloc[i]
            if isinstance(value, str) and value or not (isinstance(value, str) or pd.isna(value)):
                return str(value)
    return None


def metric_values(frame, metric: str, registry: MetricRegistry) -> np.ndarray:
    """Per-case values of ``metric``: a registered case metric as the summary counts it (NaN
    for cases it leaves out), any other name as the plain column."""
    definition = registry.get(metric)
    if definition is not None and definition.is_case_metric:
        return case_values(definition, frame)[0]
    return numeric_column(frame, metric)


def paired_comparison(
    rows_a: Rows, rows_b: Rows, metrics: list[str], alpha: float = 0.05,
    registry: MetricRegistry | None = None,
) -> dict[str, dict[str, Any]]:
    """Paired Wilcoxon signed-rank tests of two runs over their common patients, Holm-corrected.

    Cases are matched by ``case_id``; a case's patient is its ``patient_id`` in ``rows_a`` (else
    in ``rows_b``; without one, the case is its own patient). Per metric only the cases with a
    finite value in both runs count; the test compares per-patient means of those cases.
    Returns per metric: ``n`` and ``n_cases`` (common cases with a value), ``n_patients`` (the
    test's pairs), ``mean_a``, ``mean_b``, ``mean_diff`` and ``median_diff`` (a − b, over cases),
    ``statistic``, ``p_value``, ``p_holm`` (None when untestable) and ``significant``
    (p_holm < alpha).
    """
    from scipy.stats import wilcoxon

    registry = registry or default_metrics()
    a, b = as_frame(rows_a), as_frame(rows_b)
    for name, frame in (("rows_a", a), ("rows_b", b)):
        if len(frame) and "case_id" not in frame.columns:
            raise DataError(f"paired_comparison: {name} have no case_id column to match cases")
    if not len(a) or not len(b):
        common: list[str] = []
    else:
        a, b = a.drop_duplicates("case_id"), b.drop_duplicates("case_id")
        a.index, b.index = a["case_id"].astype(str), b["case_id"].astype(str)
        common = sorted(set(a.index) & set(b.index))
    a_common = a.loc[common].reset_index(drop=True) if common else a.iloc[:0]
    b_common = b.loc[common].reset_index(drop=True) if common else b.iloc[:0]
    patient_ids = [_patient_of(a_common, b_common, i) for i in range(len(common))]
    results: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        x = metric_values(a_common, metric, registry) if common else np.zeros(0)
        y = metric_values(b_common, metric, registry) if common else np.zeros(0)
        ok = np.isfinite(x) & np.isfinite(y)
        codes, n_patients = patient_codes([p for p, keep in zip(patient_ids, ok) if keep])
        x, y = x[ok], y[ok]
        diff = x - y
        px = per_patient_mean(x, codes, n_patients)
        py = per_patient_mean(y, codes, n_patients)
        res: dict[str, Any] = {
            "n": int(len(x)),
            "n_cases": int(len(x)),
            "n_patients": int(n_patients),
            "mean_a": float(x.mean()) if len(x) else None,
            "mean_b": float(y.mean()) if len(y) else None,
            "mean_diff": float(diff.mean()) if len(x) else None,
            "median_diff": float(np.median(diff)) if len(x) else None,
            "statistic": None,
            "p_value": None,
        }
        if len(x) and np.all(px == py):
            res["statistic"], res["p_value"] = 0.0, 1.0  # identical: no evidence of a difference
        elif len(x):
            test = quietly(wilcoxon, px, py, alternative="two-sided")
            if test is not None and np.isfinite(test.pvalue):
                res["statistic"], res["p_value"] = float(test.statistic), float(test.pvalue)
        results[metric] = res
    tested = [m for m in metrics if results[m]["p_value"] is not None]
    adjusted = holm([results[m]["p_value"] for m in tested]) if tested else []
    for metric in metrics:
        results[metric]["p_holm"] = None
        results[metric]["significant"] = False
    for metric, p in zip(tested, adjusted):
        results[metric]["p_holm"] = p
        results[metric]["significant"] = bool(p < alpha)
    return results
