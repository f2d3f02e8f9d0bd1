"""Ranks, patient bootstrap and pairwise tests of avnbench.reporting.ranking against scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from avnbench.evaluation.comparison import holm
from avnbench.reporting.ranking import (
    case_values,
    pairwise_wilcoxon,
    patient_resamples,
    per_patient_means,
    quartiles,
    rank_with_bootstrap,
    ranks_of,
)


@pytest.mark.parametrize(
    ("means", "higher", "expected"),
    [
        ([0.9, 0.5, 0.7], True, [1, 3, 2]),
        ([0.9, 0.5, 0.7], False, [3, 1, 2]),
        ([0.5, 0.5, 0.1], True, [1, 1, 3]),  # ties share the better rank
        ([np.nan, 0.2, 0.3], True, [3, 2, 1]),  # undefined ranks last
        ([np.nan, 0.2, 0.3], False, [3, 1, 2]),
    ],
)
def test_ranks_of(means, higher, expected):
    assert ranks_of(np.asarray(means, dtype=float), higher).tolist() == expected


def test_patient_resamples_keep_the_hips_of_a_patient_together():
    patients = np.array(["p1", "p1", "p2", "p3", "p3", "p4"], dtype=object)
    for rows in patient_resamples(patients, 50, seed=3):
        drawn = pd.Series(patients[rows]).value_counts()
        for patient, count in drawn.items():
            hips = int((patients == patient).sum())
            assert count % hips == 0  # a patient comes with all its hips, each time it is drawn
        assert len(set(patients[rows])) <= 4


def _tables():
    cases = [f"c{i}" for i in range(12)]
    patients = ["p0", "p0", "p1", "p1"] + [f"p{k}" for k in range(2, 10)]
    good = [0.8 + 0.01 * i for i in range(12)]
    bad = [0.3 + 0.02 * (i % 3) for i in range(12)]
    bad[3] = np.nan
    return {
        "good": pd.DataFrame({"case_id": cases, "patient_id": patients, "dice": good}),
        "bad": pd.DataFrame({"case_id": cases[::-1], "patient_id": patients[::-1], "dice": bad[::-1]}),
        "extra": pd.DataFrame({"case_id": cases + ["c99"], "patient_id": patients + ["p99"], "dice": good + [0.1]}),
    }


def test_case_values_align_hips_and_keep_patients():
    values = case_values(_tables(), "dice", higher_is_better=True)
    assert values.case_ids == sorted(f"c{i}" for i in range(12))  # c99 is not in every table
    assert values.n_patients == 10
    j = values.methods.index("bad")
    row = values.case_ids.index("c3")
    assert values.values[0, j] == 0.3 and np.isnan(values.values[row, j])
    assert values.defined("bad") == (11, 10)


def test_rank_with_bootstrap_is_certain_for_a_clear_winner():
    tables = _tables()
    del tables["extra"]
    ranking = rank_with_bootstrap(case_values(tables, "dice", True), "dice", n_bootstrap=200, seed=0)
    assert ranking.ranks.tolist() == [1, 2]
    assert ranking.rank_interval("good") == (1, 1)
    assert ranking.rank_frequencies()[0].tolist() == [1.0, 0.0]
    lo, hi = ranking.mean_interval("good")
    assert lo <= ranking.means[0] <= hi


def test_pairwise_wilcoxon_is_one_sided_on_patient_means_with_holm_over_all_pairs():
    values = case_values(_tables(), "dice", True)
    tests = pairwise_wilcoxon(values, "dice")
    i, j = values.methods.index("good"), values.methods.index("bad")
    pair = per_patient_means(values.values[:, [i, j]], values.patients)
    assert len(pair) == tests.n_patients[i, j] == 10  # c3 (nan for bad) drops, p1 keeps c2
    expected = wilcoxon(pair[:, 0] - pair[:, 1], alternative="greater").pvalue
    assert tests.p_value[i, j] == pytest.approx(expected)
    assert tests.p_value[j, i] == pytest.approx(wilcoxon(pair[:, 1] - pair[:, 0], alternative="greater").pvalue)
    raw = tests.p_value[np.isfinite(tests.p_value)]
    assert sorted(tests.p_holm[np.isfinite(tests.p_holm)].tolist()) == pytest.approx(sorted(holm(raw.tolist())))
    assert "bad" in tests.better_than("good") and tests.better_than("bad") == []


def test_lower_is_better_flips_the_test():
    tables = {k: t.assign(dist=1 - t["dice"]) for k, t in _tables().items() if k != "extra"}
    tests = pairwise_wilcoxon(case_values(tables, "dist", higher_is_better=False), "dist")
    assert tests.better_than("good") == ["bad"]


@pytest.mark.parametrize(
    ("values", "expected"),
    [([1, 2, 3, 4, 5], (2.0, 3.0, 4.0)), ([np.nan, 2.0], (2.0, 2.0, 2.0)), ([np.nan], None), ([], None)],
)
def test_quartiles(values, expected):
    assert quartiles(values) == expected
