"""Comparing two runs: Holm correction by hand, paired Wilcoxon tests against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from avnbench.evaluation.comparison import (
    holm,
    paired_comparison,
)


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_paired_comparison_matches_scipy_wilcoxon():
    rng = np.random.default_rng(11)
    a = [{"case_id": f"c{i}", "dice": float(v), "assd": float(w)}
         for i, (v, w) in enumerate(zip(rng.uniform(0.7, 0.9, 15), rng.uniform(0, 2, 15)))]
    b = [dict(r, dice=r["dice"] + 0.05 + 0.01 * rng.normal(), assd=r["assd"]) for r in a]
    b = list(reversed(b)) + [{"case_id": "extra", "dice": 0.1, "assd": 9.0}]  # order, extra case
    b[0]["dice"] = float("nan")  # left out of that metric's pairs
    result = paired_comparison(a, b, ["dice", "assd"])
    x = np.array([r["dice"] for r in a])[:-1]
    pairs = {r["case_id"]: r["dice"] for r in b}
    y = np.array([pairs[r["case_id"]] for r in a[:-1]])
    expected = stats.wilcoxon(x, y)
    assert result["dice"]["n"] == 14
    assert result["dice"]["p_value"] == pytest.approx(expected.pvalue)
    assert result["dice"]["mean_diff"] == pytest.approx((x - y).mean())
    assert result["assd"]["p_value"] == 1.0 and result["assd"]["n"] == 15  # identical values
    assert result["dice"]["p_holm"] == pytest.approx(min(1.0, 2 * expected.pvalue))
    assert result["dice"]["significant"] and not result["assd"]["significant"]
    empty = paired_comparison(a, [], ["dice"])
    assert empty["dice"]["n"] == 0 and empty["dice"]["p_holm"] is None


def test_paired_comparison_pairs_patients_not_hips():
    rng = np.random.default_rng(4)
    a = [{"case_id": f"c{i}", "patient_id": f"p{i // 2}", "dice": float(v)}
         for i, v in enumerate(rng.uniform(0.6, 0.9, 16))]  # 8 bilateral patients
    b = [dict(r, dice=r["dice"] - 0.03 + 0.02 * rng.normal()) for r in a]
    result = paired_comparison(a, b, ["dice"])["dice"]
    x = np.array([r["dice"] for r in a]).reshape(8, 2).mean(axis=1)
    y = np.array([r["dice"] for r in b]).reshape(8, 2).mean(axis=1)
    assert result["n_patients"] == 8 and result["n_cases"] == result["n"] == 16
    assert result["p_value"] == pytest.approx(stats.wilcoxon(x, y).pvalue)
    hip_level = stats.wilcoxon([r["dice"] for r in a], [r["dice"] for r in b]).pvalue
    assert result["p_value"] > hip_level  # 16 hips claimed more evidence than 8 patients hold


def test_paired_distances_leave_out_a_missed_lesion():
    # assd_necrosis_mm pairs only hips with both masks non-empty in both runs (as the summary)
    a = [{"case_id": f"c{i}", "patient_id": f"p{i}", "assd_necrosis_mm": 1.0 + 0.1 * i,
          "empty_necrosis": "none"} for i in range(6)]
    b = [dict(r, assd_necrosis_mm=r["assd_necrosis_mm"] + 0.5) for r in a]
    b[0] = dict(b[0], assd_necrosis_mm=127.7, empty_necrosis="pred")
    result = paired_comparison(a, b, ["assd_necrosis_mm", "assd_necrosis_mm_penalized"])
    assert result["assd_necrosis_mm"]["n"] == 5 and result["assd_necrosis_mm"]["mean_diff"] == pytest.approx(-0.5)
    assert result["assd_necrosis_mm_penalized"]["n"] == 6
