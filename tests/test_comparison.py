"""Comparing two runs: Holm correction by hand, paired Wilcoxon tests against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from avnbench.evaluation.comparison import holm, paired_comparison


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
