"""The vectorised bootstrap kernels against scikit-learn/numpy and metrics.md §12 T6."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from avnbench.evaluation.bootstrap import (
    auc_rows,
    confusion_rows,
    kappa_from_confusion,
    pearson_rows,
)

# metrics.md §12 T6
T6_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_bootstrap_forms_match_the_libraries():
    rng = np.random.default_rng(8)
    ref, pred = rng.integers(0, 4, size=(50, 30)), rng.integers(0, 4, size=(50, 30))
    cm = confusion_rows(ref, pred, 4)
    for weights in (None, "linear", "quadratic"):
        ours = kappa_from_confusion(cm, weights)
        for b in range(0, 50, 7):
            expected = cohen_kappa_score(ref[b], pred[b], labels=[0, 1, 2, 3], weights=weights)
            assert ours[b] == pytest.approx(expected, abs=1e-12)
    x, y = rng.normal(size=(20, 15)), rng.normal(size=(20, 15))
    x[0, :3] = np.nan
    r = pearson_rows(x, y)
    assert r[1] == pytest.approx(np.corrcoef(x[1], y[1])[0, 1])
    assert r[0] == pytest.approx(np.corrcoef(x[0, 3:], y[0, 3:])[0, 1])
    assert np.isnan(pearson_rows(np.ones((1, 5)), y[:1, :5])[0])
    # metrics.md §12 T6 cumulative AUC: necrosis ratio scores for A vs ≥B and ≤B vs C
    scores = np.array([[.05, .10, .14, .20, .16, .25, .12, .40, .33, .28]])
    grades = np.array([T6_TRUE])
    assert auc_rows(grades >= 1, scores)[0] == pytest.approx(0.875)
    assert auc_rows(grades >= 2, scores)[0] == pytest.approx(1.0)
    tied = np.array([[0.1, 0.5, 0.5, 0.9, 0.5]])
    labels = np.array([[0, 1, 0, 1, 1]], dtype=bool)
    assert auc_rows(labels, tied)[0] == pytest.approx(roc_auc_score(labels[0], tied[0]))


def test_patient_resamples_draw_whole_patients():
    from avnbench.evaluation.bootstrap import (
        PatientResamples,
        patient_codes,
        resample_indices,
    )

    # one hip per patient: exactly the ordinary case bootstrap
    codes, n = patient_codes([f"p{i}" for i in range(9)])
    single = PatientResamples(codes, n, 40, seed=3)
    assert np.array_equal(single.cases, resample_indices(9, 40, 3))
    # bilateral patients: a drawn patient brings all of its hips, and only drawn patients appear
    ids = ["a", "a", "b", "c", "c", "d", None, None]  # no id: a patient of its own
    codes, n = patient_codes(ids)
    assert n == 6 and codes.tolist() == [0, 0, 1, 2, 2, 3, 4, 5]
    resamples = PatientResamples(codes, n, 200, seed=5)
    taken = resamples.take(codes, -1)
    for row, draws in zip(taken, resamples.draws):
        drawn = np.bincount(draws, minlength=n)
        hips = np.bincount(row[row >= 0], minlength=n)
        assert np.array_equal(hips, drawn * np.bincount(codes, minlength=n))
    values = np.arange(8, dtype=float)
    means = np.nanmean(resamples.take(values), axis=1)
    for b in range(0, 200, 37):
        chosen = np.concatenate([np.flatnonzero(codes == p) for p in resamples.draws[b]])
        assert means[b] == pytest.approx(values[chosen].mean())


def test_auc_rows_ignore_the_empty_slots():
    score = np.array([[0.2, 0.9, np.nan, 0.4, 0.7, np.nan]])
    positive = np.array([[0, 1, 1, 0, 1, 0]], dtype=bool)
    finite = np.isfinite(score[0])
    assert auc_rows(positive, score)[0] == pytest.approx(roc_auc_score(positive[0][finite], score[0][finite]))
