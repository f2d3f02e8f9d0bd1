"""Bootstrap kernels: statistics computed for every resample at once, resampling patients.

Hips of one patient are not independent (bilateral patients), so a resample draws *patients*
with replacement and takes all their hips together (:class:`PatientResamples`). Its case matrix
has one row per resample; a row has a slot for every hip of every drawn patient, and slots a
patient with fewer hips leaves free point at a sentinel that reads as NaN (values) or -1 (codes).
Each kernel reduces rows of values to one number per resample, ignores NaN and negative codes,
and returns NaN where the statistic is undefined. With one hip per patient this is exactly the
ordinary case bootstrap. Only the cheap vectorised forms are here (mean,
Pearson r, accuracy, weighted kappa, rank AUC); the point estimates come from scipy.stats and
scikit-learn, and the tests check these kernels against those libraries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from avnbench.evaluation.summaries import RunSummary

CI_LEVEL = 0.95
#: Least fraction of bootstrap resamples in which a metric must be defined to report its CI.
MIN_DEFINED_FRACTION = 0.5


def resample_indices(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """(n_bootstrap, n) indices drawn with replacement from ``default_rng(seed)``."""
    return np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))


def patient_codes(patient_ids: Sequence[object]) -> tuple[np.ndarray, int]:
    """(code per case, number of patients): codes 0..P-1 in order of first appearance. A case
    without a patient id (None, NaN, "") is a patient of its own."""
    index: dict[str, int] = {}
    codes = np.empty(len(patient_ids), dtype=np.int64)
    for i, pid in enumerate(patient_ids):
        missing = pid is None or pid == "" or (isinstance(pid, float) and np.isnan(pid))
        key = f"\0case {i}" if missing else str(pid)
        codes[i] = index.setdefault(key, len(index))
    return codes, len(index)


def per_patient_mean(values: np.ndarray, codes: np.ndarray, n_patients: int) -> np.ndarray:
    """Mean of the finite values of each patient's cases, (n_patients,); NaN without one."""
    values = np.asarray(values, dtype=float)
    ok = np.isfinite(values)
    total = np.bincount(codes[ok], weights=values[ok], minlength=n_patients)
    count = np.bincount(codes[ok], minlength=n_patients)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


class PatientResamples:
    """``n_bootstrap`` resamples of the patients (seeded), with all hips of a drawn patient.

    ``draws`` (B, P) are patient indices, for statistics over per-patient values
    (:meth:`patients`); ``cases`` (B, P·m) are case indices, m the most hips of one patient,
    with the sentinel ``n_cases`` in unused slots, for statistics over hips (:meth:`take`).
    """

    def __init__(self, codes: np.ndarray, n_patients: int, n_bootstrap: int, seed: int):
        codes = np.asarray(codes, dtype=np.int64)
        self.n_cases, self.n_patients, self.n_bootstrap = len(codes), n_patients, n_bootstrap
        self.draws = resample_indices(n_patients, n_bootstrap, seed)
        sizes = np.bincount(codes, minlength=n_patients)
        width = int(sizes.max()) if len(sizes) else 1
        members = np.full((n_patients, width), self.n_cases, dtype=np.int64)
        order = np.argsort(codes, kind="stable")
        slot = np.arange(len(codes)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        members[codes[order], slot] = order
        self.cases = members[self.draws].reshape(n_bootstrap, n_patients * width)

    def take(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """(B, P·m) per-case ``values`` of each resample; unused slots hold ``fill``."""
        values = np.asarray(values)
        dtype = float if isinstance(fill, float) else values.dtype
        return np.append(values.astype(dtype, copy=False), np.array([fill], dtype=dtype))[self.cases]

    def patients(self, values: np.ndarray) -> np.ndarray:
        """(B, P) per-patient ``values`` of each resample."""
        return np.asarray(values)[self.draws]


def nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Mean per row over the finite values (NaN for a row without one)."""
    finite = np.isfinite(values)
    count = finite.sum(axis=1)
    total = np.where(finite, values, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r per row over the positions where both are finite (NaN when undefined)."""
    ok = np.isfinite(x) & np.isfinite(y)
    count = ok.sum(axis=1)
    x0, y0 = np.where(ok, x, 0.0), np.where(ok, y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = x0.sum(axis=1) / count
        my = y0.sum(axis=1) / count
        dx = np.where(ok, x0 - mx[:, None], 0.0)
        dy = np.where(ok, y0 - my[:, None], 0.0)
        sxy, sxx, syy = (dx * dy).sum(axis=1), (dx * dx).sum(axis=1), (dy * dy).sum(axis=1)
        r = sxy / np.sqrt(sxx * syy)
    # Floating-point noise on a (near-)constant series is not a correlation.
    scale_x = np.abs(np.where(ok, x0, 0)).max(axis=1)
    scale_y = np.abs(np.where(ok, y0, 0)).max(axis=1)
    degenerate = (count < 2) | (sxx <= (1e-12 * scale_x) ** 2 * count) | (
        syy <= (1e-12 * scale_y) ** 2 * count
    )
    return np.where(degenerate, np.nan, np.clip(r, -1.0, 1.0))


def confusion_rows(ref: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """(B, k, k) confusion matrices of (B, n) code matrices; negative codes are left out."""
    b = ref.shape[0]
    ok = (ref >= 0) & (pred >= 0)
    flat = (np.arange(b)[:, None] * k * k + ref * k + pred)[ok]
    return np.bincount(flat, minlength=b * k * k).reshape(b, k, k).astype(float)


def accuracy_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Accuracy (fraction) per (k, k) confusion matrix of a (B, k, k) stack."""
    total = cm.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.trace(cm, axis1=1, axis2=2) / total


def kappa_from_confusion(cm: np.ndarray, weights: str | None) -> np.ndarray:
    """Cohen's kappa per confusion matrix, as sklearn.metrics.cohen_kappa_score computes it
    (``weights`` None, "linear" or "quadratic")."""
    k = cm.shape[-1]
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    if weights is None:
        w = (i != j).astype(float)
    elif weights == "linear":
        w = np.abs(i - j).astype(float)
    else:
        w = ((i - j) ** 2).astype(float)
    total = cm.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = cm.sum(axis=2)[:, :, None] * cm.sum(axis=1)[:, None, :] / total[:, None, None]
        return 1.0 - (w * cm).sum(axis=(1, 2)) / (w * expected).sum(axis=(1, 2))


def auc_rows(positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC AUC per row (Mann–Whitney form, ties counted half) over the finite scores; NaN
    without both classes."""
    from scipy.stats import rankdata

    score = np.asarray(score, dtype=float)
    valid = np.isfinite(score)
    ranks = rankdata(np.where(valid, score, np.inf), axis=1)  # NaN slots rank last, never count
    positive = np.asarray(positive, dtype=bool) & valid
    n_pos = positive.sum(axis=1)
    n_neg = valid.sum(axis=1) - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * positive).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def add_intervals(summary: RunSummary, boot: dict[str, np.ndarray], names, n_bootstrap: int) -> None:
    """Put percentile ``CI_LEVEL`` intervals (``<name>_ci_low`` / ``_ci_high``) of the metrics
    ``names`` that the summary holds, from their per-resample values in ``boot``; a metric
    defined in fewer than ``MIN_DEFINED_FRACTION`` of the resamples gets a note instead."""
    alpha = (1 - CI_LEVEL) / 2
    for name in names:
        if name not in summary.metrics or name not in boot:
            continue
        values = boot[name][np.isfinite(boot[name])]
        if len(values) < MIN_DEFINED_FRACTION * n_bootstrap:
            summary.notes.append(
                f"{name}_ci_low/_ci_high: left out, defined in only {len(values)} of "
                f"{n_bootstrap} bootstrap resamples"
            )
            continue
        low, high = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
        summary.put(f"{name}_ci_low", low)
        summary.put(f"{name}_ci_high", high)
