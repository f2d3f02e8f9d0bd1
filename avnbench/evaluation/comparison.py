"""Comparing two runs case by case: paired Wilcoxon signed-rank tests at the patient level,
Holm-corrected.

Hips of one patient are not independent, so the test pairs *patients*: for each metric, the
mean over a patient's common hips in run a against the same in run b. Registered case metrics
are read as the summaries read them (:func:`avnbench.evaluation.metrics.case_values`), so e.g.
``assd_necrosis_mm`` pairs only hips with both necrosis masks non-empty in both runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def _indexed(what: str, rows: Rows) -> pd.DataFrame:
    """Rows indexed by their case id (first row of a repeated id kept)."""
    frame = as_frame(rows)
    if not len(frame):
        return frame
    if "case_id" not in frame.columns:
        raise DataError(f"{what}: the rows have no case_id column to match cases")
    frame = frame.drop_duplicates("case_id")
    frame.index = frame["case_id"].astype(str)
    return frame


def _patient_of(frames: Sequence[pd.DataFrame], i: int) -> str | None:
    """The patient of row ``i``: from the first frame that says, else None (its own)."""
    for frame in frames:
        if "patient_id" in frame.columns:
            value = frame["patient_id"].iloc[i]
            if not pd.isna(value) and value != "":
                return str(value)
    return None


def _common_cases(runs: Mapping[str, Rows], metric: str, registry: MetricRegistry):
    """(values (n_runs, n) of the cases every run scored with a finite value, their patient
    codes, the number of patients); a case's patient is taken from the first run that says."""
    frames = [_indexed(f"run {name!r}", rows) for name, rows in runs.items()]
    # in the first run's order, so that resamples follow its patients
    common = [c for c in frames[0].index if all(c in f.index for f in frames[1:])] if frames else []
    tables = [f.loc[common].reset_index(drop=True) for f in frames] if common else []
    values = np.array([metric_values(t, metric, registry) for t in tables]).reshape(len(tables), len(common))
    ok = np.isfinite(values).all(axis=0)
    ids = [_patient_of(tables, i) for i in np.flatnonzero(ok)]
    codes, n_patients = patient_codes(ids)
    return values[:, ok], codes, n_patients


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
    results: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        values, codes, n_patients = _common_cases({"rows_a": rows_a, "rows_b": rows_b}, metric, registry)
        x, y = (values[0], values[1]) if len(values) else (np.zeros(0), np.zeros(0))
        diff = x - y
        px = per_patient_mean(x, codes, n_patients)
        py = per_patient_mean(y, codes, n_patients)
        res: dict[str, Any] = {
            "n": len(x),
            "n_cases": len(x),
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
