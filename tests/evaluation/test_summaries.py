"""Run summaries against scikit-learn/scipy and the hand-checked numbers of metrics.md §11–12."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from avnbench.errors import DataError
from avnbench.evaluation.summaries import (
    ordinal_agreement,
    summarize_classification,
    summarize_segmentation,
)

# metrics.md §12 T6
T6_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
T6_PRED = [0, 0, 1, 2, 1, 1, 0, 2, 2, 1]
ABC = ["A", "B", "C"]


def segmentation_rows(n: int = 12, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        relvol_ref = float(rng.uniform(0, 45))
        relvol_pred = float(np.clip(relvol_ref + rng.normal(0, 4), 0, 100))
        rows.append({
            "case_id": f"c{i:02d}",
            "dice_vital": float(rng.uniform(0.8, 0.98)), "empty_vital": "none",
            "dice_necrosis": float(rng.uniform(0.5, 0.9)), "empty_necrosis": "none",
            "assd_necrosis_mm": float(rng.uniform(0.3, 2.0)),
            "necrosis_cm3_ref": relvol_ref / 10, "necrosis_cm3_pred": relvol_pred / 10 + 0.05,
            "necrosis_relvol_ref": relvol_ref, "necrosis_relvol_pred": relvol_pred,
            "steinberg_ref": ABC[T6_TRUE[i % 10]], "steinberg_pred": ABC[T6_PRED[i % 10]],
            "jic_ref": None, "jic_pred": None,
            "arco_ref": ["I", "II", "IIIA", "IIIB", "IV"][i % 5],
        })
    return rows


def test_t6_steinberg_agreement_matches_the_hand_numbers():
    rows = [{"case_id": str(i), "steinberg_ref": ABC[t], "steinberg_pred": ABC[p]}
            for i, (t, p) in enumerate(zip(T6_TRUE, T6_PRED))]
    summary = summarize_segmentation(rows, n_bootstrap=0)
    m = summary.metrics
    assert m["steinberg_accuracy"] == pytest.approx(0.6)
    assert m["steinberg_kappa"] == pytest.approx(0.402985, abs=1e-6)
    assert m["steinberg_kappa_linear"] == pytest.approx(0.431818, abs=1e-6)
    assert m["steinberg_kappa_quadratic"] == pytest.approx(0.461538, abs=1e-6)
    table = summary.tables["steinberg_confusion"]
    assert table["labels"] == ["none", "A", "B", "C"]
    assert [row[1:] for row in table["matrix"][1:]] == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]


def test_full_label_list_is_passed_to_the_kappa():
    # metrics.md §11: an ARCO stage missing from both vectors must not change the weights
    a, b = [1, 0, 1, 4, 1, 4, 1, 4], [0, 1, 0, 0, 4, 4, 0, 4]
    agreement = ordinal_agreement(a, b, 5)
    assert agreement["kappa_linear"] == pytest.approx(0.2787, abs=1e-4)
    assert agreement["kappa_quadratic"] == pytest.approx(0.4082, abs=1e-4)
    assert cohen_kappa_score(a, b, weights="linear") == pytest.approx(0.0968, abs=1e-4)
    # an absent category at the end of the scale ("none" below A) changes nothing
    shifted = ordinal_agreement([t + 1 for t in T6_TRUE], [p + 1 for p in T6_PRED], 4)
    plain = ordinal_agreement(T6_TRUE, T6_PRED, 3)
    assert shifted == pytest.approx(plain)


def test_classification_summary_matches_sklearn():
    probs = np.random.default_rng(3).dirichlet(np.ones(3), size=10)
    rows = [{"case_id": str(i), "steinberg_ref": ABC[t], "steinberg_pred": ABC[p],
             **{f"prob_{c}": float(probs[i, k]) for k, c in enumerate(ABC)}}
            for i, (t, p) in enumerate(zip(T6_TRUE, T6_PRED))]
    summary = summarize_classification(rows, ABC, n_bootstrap=200, seed=1, prefix="steinberg")
    m = summary.metrics
    assert m["steinberg_macro_precision"] == pytest.approx(0.6111, abs=1e-4)
    assert m["steinberg_macro_recall"] == pytest.approx(0.6111, abs=1e-4)
    assert m["steinberg_macro_f1"] == pytest.approx(0.6032, abs=1e-4)
    assert m["steinberg_kappa_linear"] == pytest.approx(0.431818, abs=1e-6)
    expected_auc = roc_auc_score(T6_TRUE, probs, multi_class="ovr", average="macro", labels=[0, 1, 2])
    assert m["steinberg_macro_auc"] == pytest.approx(expected_auc, rel=1e-12)
    assert summary.tables["steinberg_confusion"]["matrix"] == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    for name in ("steinberg_accuracy", "steinberg_kappa_linear", "steinberg_macro_auc"):
        assert m[f"{name}_ci_low"] <= m[name] <= m[f"{name}_ci_high"]


def test_classification_with_a_class_absent_from_the_reference():
    classes = ["A", "B", "C1", "C2"]
    rows = [{"case_id": str(i), "jic_ref": r, "prob_A": pa, "prob_B": 1 - pa, "prob_C1": 0.0,
             "prob_C2": 0.0}
            for i, (r, pa) in enumerate([("A", 0.9), ("A", 0.6), ("B", 0.3), ("B", 0.7), (None, 0.5)])]
    summary = summarize_classification(rows, classes, n_bootstrap=100)
    m = summary.metrics
    assert m["n_cases"] == 5 and m["n_cases_scored"] == 4
    assert m["jic_accuracy"] == pytest.approx(0.75)  # argmax of the probabilities: A, A, B, A
    assert m["jic_macro_auc"] == pytest.approx(0.75)  # A and B only; C1/C2 have no positives
    assert "jic_auc_C1" not in m and any("averaged over 2 of 4" in n for n in summary.notes)
    with pytest.raises(DataError, match="unknown jic class 'D'"):
        summarize_classification([{"jic_ref": "D", "prob_A": 1, "prob_B": 0, "prob_C1": 0,
                                   "prob_C2": 0}], classes, 0)


def test_segmentation_summary_matches_scipy():
    rows = segmentation_rows()
    rows[3]["steinberg_pred"] = "none"  # a missed lesion: survives the CSV round trip below
    summary = summarize_segmentation(rows, n_bootstrap=300, seed=4)
    m = summary.metrics
    frame = pd.DataFrame(rows)
    assert m["n_cases"] == 12
    assert m["dice_vital"] == pytest.approx(frame["dice_vital"].mean())
    assert m["dice_vital_sd"] == pytest.approx(frame["dice_vital"].std(ddof=1))
    ref, pred = frame["necrosis_relvol_ref"].to_numpy(), frame["necrosis_relvol_pred"].to_numpy()
    assert m["necrosis_relvol_pearson_r"] == pytest.approx(stats.pearsonr(ref, pred).statistic)
    assert m["necrosis_relvol_ttest_p"] == pytest.approx(stats.ttest_rel(pred, ref).pvalue)
    diff = pred - ref
    assert m["necrosis_relvol_bland_altman_bias"] == pytest.approx(diff.mean())
    assert m["necrosis_relvol_bland_altman_loa_high"] == pytest.approx(diff.mean() + 1.96 * diff.std(ddof=1))
    cm3_ref, cm3_pred = frame["necrosis_cm3_ref"].to_numpy(), frame["necrosis_cm3_pred"].to_numpy()
    assert m["necrosis_cm3_mae"] == pytest.approx(np.abs(cm3_pred - cm3_ref).mean())
    early = frame["arco_ref"].isin(["I", "II"]).to_numpy()
    expected = stats.mannwhitneyu(ref[early], ref[~early], alternative="two-sided").pvalue
    assert m["necrosis_relvol_early_vs_advanced_p_ref"] == pytest.approx(expected)
    assert m["n_arco_early"] == 6 and m["n_arco_advanced"] == 6
    assert m["dice_necrosis_ci_low"] < m["dice_necrosis"] < m["dice_necrosis_ci_high"]
    assert all(math.isfinite(v) for v in m.values())
    assert "jic_accuracy" not in m and any("jic" in n for n in summary.notes)

    # the same rows read back from a CSV (None -> NaN) give the same summary; the seed decides
    again = summarize_segmentation(pd.read_csv(_to_csv(rows)), n_bootstrap=300, seed=4)
    assert again.metrics == pytest.approx(m)
    assert again.tables == summary.tables and summary.tables["steinberg_confusion"]["matrix"][1][0] == 1
    assert sum(row[0] for row in summary.tables["steinberg_confusion"]["matrix"]) == 1
    other = summarize_segmentation(rows, n_bootstrap=300, seed=5)
    assert other.metrics["dice_vital_ci_low"] != m["dice_vital_ci_low"]


def _to_csv(rows):
    import io

    buffer = io.StringIO()
    pd.DataFrame(rows).to_csv(buffer, index=False)
    buffer.seek(0)
    return buffer


def test_degenerate_inputs_leave_metrics_out_with_a_note():
    assert summarize_segmentation([], n_bootstrap=10).metrics == {"n_cases": 0.0}
    one = summarize_segmentation(segmentation_rows(1), n_bootstrap=10)
    assert "dice_vital_sd" not in one.metrics and "necrosis_relvol_pearson_r" not in one.metrics
    assert one.metrics["dice_vital"] == segmentation_rows(1)[0]["dice_vital"]
    assert all(math.isfinite(v) for v in one.metrics.values())
    assert any("2+ cases" in n for n in one.notes)


def bilateral_rows() -> list[dict]:
    """The 12 rows of segmentation_rows as 4 bilateral and 4 unilateral patients."""
    rows = segmentation_rows()
    for i, row in enumerate(rows):
        row["patient_id"] = f"p{i // 2}" if i < 8 else f"p{i - 4}"
    return rows


def test_tests_and_correlations_use_per_patient_means():
    rows = bilateral_rows()
    summary = summarize_segmentation(rows, n_bootstrap=0)
    m = summary.metrics
    frame = pd.DataFrame(rows)
    means = frame.groupby("patient_id", sort=False)[["necrosis_relvol_ref", "necrosis_relvol_pred"]].mean()
    ref, pred = means["necrosis_relvol_ref"].to_numpy(), means["necrosis_relvol_pred"].to_numpy()
    assert m["n_patients"] == 8 and m["n_cases"] == 12
    assert m["necrosis_relvol_pearson_r"] == pytest.approx(stats.pearsonr(ref, pred).statistic)
    assert m["necrosis_relvol_pearson_p"] == pytest.approx(stats.pearsonr(ref, pred).pvalue)
    assert m["necrosis_relvol_ttest_p"] == pytest.approx(stats.ttest_rel(pred, ref).pvalue)
    hips = stats.pearsonr(frame["necrosis_relvol_ref"], frame["necrosis_relvol_pred"]).statistic
    assert m["necrosis_relvol_pearson_r_hips"] == pytest.approx(hips)
    # Bland–Altman stays descriptive over hips
    diff = (frame["necrosis_relvol_pred"] - frame["necrosis_relvol_ref"]).to_numpy()
    assert m["necrosis_relvol_bland_altman_bias"] == pytest.approx(diff.mean())
    # Mann–Whitney: per-patient means within each group; p0..p3 have an early and an advanced hip
    early = frame["arco_ref"].isin(["I", "II"])
    groups = [frame[mask].groupby("patient_id")["necrosis_relvol_ref"].mean() for mask in (early, ~early)]
    expected = stats.mannwhitneyu(groups[0], groups[1], alternative="two-sided").pvalue
    assert m["necrosis_relvol_early_vs_advanced_p_ref"] == pytest.approx(expected)
    assert m["n_arco_early"] == 6 and m["n_arco_early_patients"] == len(groups[0])
    assert any("in both groups" in n for n in summary.notes)
    assert any("12 hip(s) of 8 patient(s), 4 bilateral" in n and "per-patient means" in n
               for n in summary.notes)


def test_median_and_quartiles_beside_mean_and_sd():
    rows = segmentation_rows()
    m = summarize_segmentation(rows, n_bootstrap=0).metrics
    values = np.array([r["assd_necrosis_mm"] for r in rows])
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    assert (m["assd_necrosis_mm_q1"], m["assd_necrosis_mm_median"], m["assd_necrosis_mm_q3"]) == pytest.approx(
        (q1, median, q3))
    assert m["assd_necrosis_mm_n"] == 12 and m["dice_vital_n"] == 12
    assert m["necrosis_cm3_mae_median"] == pytest.approx(
        np.median([abs(r["necrosis_cm3_pred"] - r["necrosis_cm3_ref"]) for r in rows]))


def test_the_bootstrap_resamples_patients():
    # each patient's two hips are identical copies: resampling patients sees 6 independent values,
    # so the intervals equal those of the 6 single hips; resampling hips would narrow them
    single = segmentation_rows(6)
    for row in single:
        row["patient_id"] = row["case_id"]
    doubled = single + [dict(r, case_id=r["case_id"] + "L") for r in single]
    by_patient = summarize_segmentation(doubled, n_bootstrap=400, seed=3).metrics
    alone = summarize_segmentation(single, n_bootstrap=400, seed=3).metrics
    for name in ("dice_vital", "necrosis_cm3_mae", "steinberg_accuracy"):
        assert by_patient[f"{name}_ci_low"] == pytest.approx(alone[f"{name}_ci_low"])
        assert by_patient[f"{name}_ci_high"] == pytest.approx(alone[f"{name}_ci_high"])
    as_hips = summarize_segmentation([{k: v for k, v in r.items() if k != "patient_id"} for r in doubled],
                                     n_bootstrap=400, seed=3).metrics
    width = lambda m: m["dice_vital_ci_high"] - m["dice_vital_ci_low"]
    assert width(as_hips) < 0.85 * width(by_patient)
