"""Manual vs automatic necrosis volumes, and early vs advanced stages, at the patient level.

Descriptive numbers (means, SDs, Bland–Altman bias and limits) are over hips: they describe
single measurements. Tests and correlations (paired t-test, Pearson r, Mann–Whitney U) are on
per-patient means, because the two hips of a bilateral patient are not independent
(docs/metrics.md "Patient level"). With one hip per patient both are the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from avnbench.evaluation.bootstrap import per_patient_mean
from avnbench.evaluation.rows import (
    Patients,
    numeric_column,
    quietly,
    sample_sd,
    strings,
)

if TYPE_CHECKING:
    from avnbench.evaluation.summaries import RunSummary

EARLY_ARCO = ("I", "II")
ADVANCED_ARCO = ("IIIA", "IIIB", "IV")


def paired_patient_means(ref: np.ndarray, pred: np.ndarray, patients: Patients) -> tuple[np.ndarray, np.ndarray]:
    """Per-patient means of the hips that have both values: (ref, pred), patients with none
    left out."""
    ok = np.isfinite(ref) & np.isfinite(pred)
    ref_p = per_patient_mean(np.where(ok, ref, np.nan), patients.codes, patients.n_patients)
    pred_p = per_patient_mean(np.where(ok, pred, np.nan), patients.codes, patients.n_patients)
    keep = np.isfinite(ref_p) & np.isfinite(pred_p)
    return ref_p[keep], pred_p[keep]


def volume_agreement(summary: RunSummary, prefix: str, ref: np.ndarray, pred: np.ndarray,
                     patients: Patients) -> None:
    """Manual (reference) vs automatic (prediction) agreement of one per-case quantity."""
    from scipy import stats

    ok = np.isfinite(ref) & np.isfinite(pred)
    hips_ref, hips_pred = ref[ok], pred[ok]
    if not len(hips_ref):
        summary.notes.append(f"{prefix}: no case with both volumes")
        return
    summary.put(f"{prefix}_ref", hips_ref.mean())
    summary.put(f"{prefix}_ref_sd", sample_sd(hips_ref))
    summary.put(f"{prefix}_pred", hips_pred.mean())
    summary.put(f"{prefix}_pred_sd", sample_sd(hips_pred))
    if len(hips_ref) < 2:
        summary.notes.append(f"{prefix}: t-test, Pearson r and Bland–Altman need 2+ cases")
        return
    diff = hips_pred - hips_ref
    bias, sd = diff.mean(), sample_sd(diff)
    summary.put(f"{prefix}_bland_altman_bias", bias)
    summary.put(f"{prefix}_bland_altman_loa_low", bias - 1.96 * sd)
    summary.put(f"{prefix}_bland_altman_loa_high", bias + 1.96 * sd)
    if np.ptp(hips_ref) > 0 and np.ptp(hips_pred) > 0:
        result = quietly(stats.pearsonr, hips_ref, hips_pred)
        summary.put(f"{prefix}_pearson_r_hips", result.statistic if result is not None else None)

    p_ref, p_pred = paired_patient_means(ref, pred, patients)
    if len(p_ref) < 2:
        summary.notes.append(f"{prefix}: t-test and Pearson r need 2+ patients, got {len(p_ref)}")
        return
    p_diff = p_pred - p_ref
    if np.all(p_diff == p_diff[0]):
        summary.notes.append(f"{prefix}_ttest_p: left out, the differences are all equal")
    else:
        result = quietly(stats.ttest_rel, p_pred, p_ref)
        summary.put(f"{prefix}_ttest_p", result.pvalue if result is not None else None,
                    "fewer than 2 patients")
    if np.ptp(p_ref) == 0 or np.ptp(p_pred) == 0:
        summary.notes.append(f"{prefix}_pearson_r: left out, a constant series")
    else:
        result = quietly(stats.pearsonr, p_ref, p_pred)
        if result is not None:
            summary.put(f"{prefix}_pearson_r", result.statistic)
            summary.put(f"{prefix}_pearson_p", result.pvalue)


def early_vs_advanced(summary: RunSummary, frame: pd.DataFrame, patients: Patients) -> None:
    """Relative necrosis volume of early (ARCO I/II) vs advanced (III+) hips; Mann–Whitney U
    on per-patient means within each group (a patient with hips in both groups is in both)."""
    from scipy import stats

    arco = strings(frame, "arco_ref")
    groups = {"early": np.array([a in EARLY_ARCO for a in arco], dtype=bool),
              "advanced": np.array([a in ADVANCED_ARCO for a in arco], dtype=bool)}
    for group, mask in groups.items():
        summary.metrics[f"n_arco_{group}"] = float(mask.sum())
        summary.metrics[f"n_arco_{group}_patients"] = float(len(set(patients.codes[mask].tolist())))
    both = set(patients.codes[groups["early"]].tolist()) & set(patients.codes[groups["advanced"]].tolist())
    if both:
        summary.notes.append(
            f"necrosis_relvol_early_vs_advanced: {len(both)} patient(s) have an early and an "
            "advanced hip and are in both groups of the Mann–Whitney U test"
        )
    for side in ("ref", "pred"):
        relvol = numeric_column(frame, f"necrosis_relvol_{side}")
        samples = {}
        for group, mask in groups.items():
            hips = relvol[mask & np.isfinite(relvol)]
            if len(hips):
                summary.put(f"necrosis_relvol_{group}_{side}", hips.mean())
                summary.put(f"necrosis_relvol_{group}_{side}_sd", sample_sd(hips))
            means = per_patient_mean(np.where(mask, relvol, np.nan), patients.codes, patients.n_patients)
            samples[group] = means[np.isfinite(means)]
        a, b = samples["early"], samples["advanced"]
        if len(a) and len(b):
            result = quietly(stats.mannwhitneyu, a, b, alternative="two-sided")
            summary.put(f"necrosis_relvol_early_vs_advanced_p_{side}",
                        result.pvalue if result is not None else None, "undefined")
        else:
            summary.notes.append(
                f"necrosis_relvol_early_vs_advanced_p_{side}: left out, needs early (ARCO I/II) "
                f"and advanced (ARCO III+) patients, got {len(a)} and {len(b)}"
            )
