"""Comparing two runs case by case: paired Wilcoxon signed-rank tests, Holm-corrected."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from avnbench.errors import DataError
from avnbench.evaluation.summaries import Rows, as_frame, numeric_column, quietly


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


def paired_comparison(
    rows_a: Rows, rows_b: Rows, metrics: list[str], alpha: float = 0.05
) -> dict[str, dict[str, Any]]:
    """Paired Wilcoxon signed-rank tests of two runs over their common cases, Holm-corrected.

    Returns per metric: ``n`` (cases with a finite value in both), ``mean_a``, ``mean_b``,
    ``mean_diff`` and ``median_diff`` (a − b), ``statistic``, ``p_value``, ``p_holm`` (None when
    untestable) and ``significant`` (p_holm < alpha). Cases are matched by ``case_id``.
    """
    from scipy.stats import wilcoxon

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
    results: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        x = numeric_column(a.loc[common], metric) if common else np.zeros(0)
        y = numeric_column(b.loc[common], metric) if common else np.zeros(0)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        diff = x - y
        res: dict[str, Any] = {
            "n": int(len(x)),
            "mean_a": float(x.mean()) if len(x) else None,
            "mean_b": float(y.mean()) if len(y) else None,
            "mean_diff": float(diff.mean()) if len(x) else None,
            "median_diff": float(np.median(diff)) if len(x) else None,
            "statistic": None,
            "p_value": None,
        }
        if len(x) and np.all(diff == 0):
            res["statistic"], res["p_value"] = 0.0, 1.0  # identical: no evidence of a difference
        elif len(x):
            test = quietly(wilcoxon, x, y, alternative="two-sided")
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
