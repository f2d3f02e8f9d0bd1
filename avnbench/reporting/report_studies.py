"""The seed studies regenerated: one function per study, laid out as the study reports its results.

Each function takes the runs of the study's methods (:class:`MethodRun`: the latest comparable
run, or none with the command that would make it) and returns a :class:`Study` of tables whose
rows put the published figure beside the measured one, its figures (inline SVG) and notes.
Every statistic comes from the runs' per-case tables through the shared summaries
(:mod:`avnbench.evaluation.summaries`, :mod:`avnbench.evaluation.comparison`): means ± SD over
hips as the studies report them; tests and correlations on per-patient means, because hips of
one patient are not independent.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avnbench.evaluation.bootstrap import kappa_from_confusion
from avnbench.evaluation.comparison import paired_comparison
from avnbench.evaluation.rows import numeric_column, strings
from avnbench.evaluation.summaries import (
    GRADE_CATEGORIES,
    RunSummary,
    ordinal_agreement,
    summarize_classification,
    summarize_segmentation,
)
from avnbench.reporting import report_figures as figs
from avnbench.reporting.leaderboard_rows import BoardRow
from avnbench.evaluation.voxel_roc import pooled_roc

NA = "–"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Figure:
    name: str
    caption: str
    svg: str


@dataclass
class MethodRun:
    """A study's method: its run (None: not run) and the command that (re)makes it."""

    method: str
    row: BoardRow | None
    command: str
    note: str = ""
    roc_files: list[dict] = field(default_factory=list)
    roc_source: str = "recorded with the run (voxel_roc_head.json of its fold runs)"

    def status(self) -> str:
        if self.row is None:
            return f"{self.method}: not run; run it with `{self.command}`"
        r = self.row
        text = (f"{self.method}: run {r.run_id[:8]} ({r.preset} preset, folds {r.folds or '?'}, "
                f"{r.n_hips} hips of {r.n_patients or '?'} patients, device {r.device})")
        return text + (f"; {self.note}" if self.note else "")


@dataclass
class Study:
    key: str
    title: str
    source: str
    methods: list[MethodRun]
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    measured: dict[str, float] = field(default_factory=dict)


# --- formatting -------------------------------------------------------------------------------


def _m(summary: RunSummary | None, name: str) -> float | None:
    return None if summary is None else summary.metrics.get(name)


def mean_sd(mean: float | None, sd: float | None, scale: float = 1.0, unit: str = "", digits: int = 1) -> str:
    if mean is None:
        return NA
    sd_text = f" ± {sd * scale:.{digits}f}" if sd is not None else ""
    return f"{mean * scale:.{digits}f}{sd_text}{unit}"


def median_iqr(s: RunSummary | None, name: str, unit: str = "", digits: int = 2) -> str:
    med = _m(s, f"{name}_median")
    if med is None:
        return NA
    return f"{med:.{digits}f}{unit} [{_m(s, f'{name}_q1'):.{digits}f}, {_m(s, f'{name}_q3'):.{digits}f}]"


def p_text(p: float | None) -> str:
    if p is None:
        return NA
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def n_text(summary: RunSummary | None, name: str | None = None) -> str:
    if summary is None:
        return NA
    n = _m(summary, f"{name}_n") if name else _m(summary, "n_cases")
    return f"{int(n) if n is not None else 0}/{int(_m(summary, 'n_patients') or 0)}"


def _seg(run: MethodRun) -> RunSummary | None:
    return summarize_segmentation(run.row.cases, n_bootstrap=0) if run.row is not None and run.row.cases else None


# --- seeds 000/001: nnU-Net 2D, 3D and their ensemble --------------------------------------------


def study_nnunet(runs: dict[str, MethodRun]) -> Study:
    """Seeds 000/001 (Ruckli et al.): Dice per configuration, 2D vs 3D, necrosis volumes manual
    vs automatic, early vs advanced ARCO, and Figure 3."""
    configs = [("ensemble 2D+3D", "nnunet-ensemble", "89 ± 9 %", "69 ± 25 %"),
               ("2D U-Net", "nnunet-2d", "89 ± 9 %", "67 ± 23 %"),
               ("3D U-Net", "nnunet-3d", "89 ± 10 %", "69 ± 26 %")]
    study = Study("000-001", "nnU-Net 2D, 3D and ensemble: Dice, necrosis volume, ARCO stages",
                  "Ruckli et al., pilot study (seeds 000 and 001): 34 hips, 5-fold cross-validation",
                  [runs[m] for _, m, _, _ in configs])
    summaries = {m: _seg(runs[m]) for _, m, _, _ in configs}
    rows = []
    for label, method, pub_v, pub_n in configs:
        s = summaries[method]
        rows.append([label, method, pub_v, mean_sd(_m(s, "dice_vital"), _m(s, "dice_vital_sd"), 100, " %"),
                     pub_n, mean_sd(_m(s, "dice_necrosis"), _m(s, "dice_necrosis_sd"), 100, " %"),
                     n_text(s, "dice_necrosis")])
        for name in ("dice_vital", "dice_necrosis"):
            if _m(s, name) is not None:
                study.measured[f"{method}.{name}"] = _m(s, name)
    study.tables.append(Table(
        "Dice coefficient per configuration (mean ± SD over hips)",
        ["configuration", "method", "vital bone, published", "vital bone, measured",
         "necrosis, published", "necrosis, measured", "n (hips/patients, necrosis)"], rows,
        "Necrosis Dice leaves out hips where reference and prediction are both lesion-free."))

    a, b = runs["nnunet-2d"].row, runs["nnunet-3d"].row
    test_rows = []
    if a is not None and b is not None and a.cases and b.cases:
        tests = paired_comparison(a.cases, b.cases, ["dice_vital", "dice_necrosis"])
        for name, what in (("dice_vital", "vital bone Dice"), ("dice_necrosis", "necrosis Dice")):
            t = tests[name]
            diff = f"{t['mean_diff'] * 100:+.1f} points" if t["mean_diff"] is not None else NA
            test_rows.append([what, "p > 0.05", f"{p_text(t['p_value'])} (Holm {p_text(t['p_holm'])[2:] if t['p_holm'] is not None else NA})",
                              diff, f"{t['n_cases']}/{t['n_patients']}"])
            if t["p_value"] is not None:
                study.measured[f"2d_vs_3d.{name}.p"] = t["p_value"]
    else:
        test_rows.append(["vital bone and necrosis Dice", "p > 0.05", "not run (needs nnunet-2d and nnunet-3d)", NA, NA])
    study.tables.append(Table(
        "2D vs 3D U-Net (paired)", ["quantity", "published", "measured", "mean 2D − 3D", "n (hips/patients)"],
        test_rows, "Two-sided Wilcoxon signed-rank test on per-patient means of the hips both "
        "configurations scored, Holm-corrected over the two quantities (the study does not name its test)."))

    s = summaries["nnunet-ensemble"]
    vol_rows = []
    for prefix, what, pub_man, pub_auto, pub_r, unit, scale in (
            ("necrosis_cm3", "absolute necrosis volume", "8.2 ± 7.4 cm³", "7.3 ± 6.7 cm³", "0.90", " cm³", 1.0),
            ("necrosis_relvol", "relative necrosis volume", "17 ± 15 %", "15 ± 14 %", "0.92", " %", 1.0)):
        r = _m(s, f"{prefix}_pearson_r")
        vol_rows.append([what, pub_man, mean_sd(_m(s, f"{prefix}_ref"), _m(s, f"{prefix}_ref_sd"), scale, unit),
                         pub_auto, mean_sd(_m(s, f"{prefix}_pred"), _m(s, f"{prefix}_pred_sd"), scale, unit),
                         "p > 0.05", p_text(_m(s, f"{prefix}_ttest_p")),
                         f"{pub_r} (p < 0.001)", f"{r:.2f} ({p_text(_m(s, f'{prefix}_pearson_p'))})" if r is not None else NA,
                         n_text(s)])
        for key in ("ref", "pred", "ttest_p", "pearson_r"):
            if _m(s, f"{prefix}_{key}") is not None:
                study.measured[f"nnunet-ensemble.{prefix}_{key}"] = _m(s, f"{prefix}_{key}")
    study.tables.append(Table(
        "Necrosis volume, manual vs automatic (best configuration: the ensemble)",
        ["quantity", "manual, published", "manual, measured", "automatic, published", "automatic, measured",
         "paired t-test, published", "paired t-test, measured", "Pearson r, published", "Pearson r, measured",
         "n (hips/patients)"], vol_rows,
        "Means ± SD over hips; the paired t-test and Pearson r are computed on per-patient means."))

    early_rows = []
    for side, what, pub_e, pub_a in (("ref", "manual", "8 ± 8 %", "20 ± 16 %"), ("pred", "automatic", "7 ± 8 %", "18 ± 14 %")):
        early_rows.append([what, pub_e, mean_sd(_m(s, f"necrosis_relvol_early_{side}"), _m(s, f"necrosis_relvol_early_{side}_sd"), 1, " %"),
                           pub_a, mean_sd(_m(s, f"necrosis_relvol_advanced_{side}"), _m(s, f"necrosis_relvol_advanced_{side}_sd"), 1, " %"),
                           "p < 0.05", p_text(_m(s, f"necrosis_relvol_early_vs_advanced_p_{side}"))])
    groups = (f"early: {int(_m(s, 'n_arco_early') or 0)} hips of {int(_m(s, 'n_arco_early_patients') or 0)} patients, "
              f"advanced: {int(_m(s, 'n_arco_advanced') or 0)} hips of {int(_m(s, 'n_arco_advanced_patients') or 0)} patients") if s else NA
    study.tables.append(Table(
        "Relative necrosis volume, early (ARCO I/II) vs advanced (ARCO III) AVN (ensemble)",
        ["segmentation", "early, published", "early, measured", "advanced, published", "advanced, measured",
         "Mann–Whitney U, published", "Mann–Whitney U, measured"], early_rows,
        f"Means ± SD over hips ({groups}); the two-sided Mann–Whitney U test compares per-patient means "
        "within each group. The study (8 early, 26 advanced hips) has lesion-free hips in neither group."))

    ens = runs["nnunet-ensemble"].row
    if ens is not None and ens.cases:
        frame = ens.case_frame
        study.figures.append(Figure(
            "figure3_relative_volume_scatter",
            "Figure 3 of seed 000 regenerated: relative necrotic volume, manual vs automatic (nnunet-ensemble).",
            figs.relative_volume_scatter(numeric_column(frame, "necrosis_relvol_ref"), numeric_column(frame, "necrosis_relvol_pred"),
                                         f"nnunet-ensemble ({ens.preset})", "report-fig3")))
    return study


# --- seed 002: DynUNet and Steinberg --------------------------------------------------------------


def max_kappa(class_counts: tuple[int, ...], n_correct: int, weights: str) -> float:
    """The largest weighted Cohen's kappa of any confusion matrix with these reference class
    counts (rows) and ``n_correct`` hips on the diagonal (every placement of the errors tried)."""
    k = len(class_counts)
    n_wrong = sum(class_counts) - n_correct
    cells = [(i, j) for i in range(k) for j in range(k) if i != j]
    matrices = []
    for combo in itertools.combinations_with_replacement(cells, n_wrong):
        m = np.diag(np.array(class_counts, dtype=float))
        for i, j in combo:
            m[i, i] -= 1
            m[i, j] += 1
        if (np.diag(m) >= 0).all():
            matrices.append(m)
    return float(np.nanmax(kappa_from_confusion(np.stack(matrices), weights)))


def study_dynunet(runs: dict[str, MethodRun]) -> Study:
    """Seed 002: median [IQR] Dice and ASD of head and necrosis, Steinberg accuracy and kappa."""
    run = runs["dynunet"]
    study = Study("002", "DynUNet: segmentation and Steinberg grading",
                  "Seed 002: 63 hips without collapse, 5-layer Dynamic U-Net, 4-fold cross-validation", [run])
    s = _seg(run)
    rows = []
    for label, name, unit, pub in (("femoral head", "dice_head", "", "0.95 [0.95, 0.96]"),
                                   ("femoral head", "assd_head_mm", " mm", "0.65 mm [0.59, 0.75]"),
                                   ("necrotic lesion", "dice_necrosis", "", "0.89 [0.85, 0.92]"),
                                   ("necrotic lesion", "assd_necrosis_mm", " mm", "0.76 mm [0.58, 0.96]")):
        metric = "Dice" if name.startswith("dice") else "ASD"
        rows.append([label, metric, pub, median_iqr(s, name, unit), n_text(s, name)])
        if _m(s, f"{name}_median") is not None:
            study.measured[f"dynunet.{name}_median"] = _m(s, f"{name}_median")
    study.tables.append(Table(
        "Segmentation accuracy (median [interquartile range] over hips)",
        ["region", "metric", "published", "measured", "n (hips/patients)"], rows,
        "ASD (average symmetric surface distance) over hips where both masks are non-empty; necrosis "
        "Dice leaves out hips where both are lesion-free."))

    lin_max = max_kappa((22, 23, 18), 59, "linear")
    quad_max = max_kappa((22, 23, 18), 59, "quadratic")
    grade_rows = [["accuracy", "93.7 % (59 of 63)", NA, NA], ["weighted kappa, linear", "0.98 (weighting not stated)", NA, NA],
                  ["weighted kappa, quadratic", "0.98 (weighting not stated)", NA, NA]]
    cm_fig = None
    if run.row is not None and run.row.cases:
        frame = run.row.case_frame
        categories = GRADE_CATEGORIES["steinberg"]
        ref, pred = strings(frame, "steinberg_ref"), strings(frame, "steinberg_pred")
        keep = [i for i, r in enumerate(ref) if r not in (None, "none") and pred[i] is not None]
        y_true = [categories.index(ref[i]) for i in keep]
        y_pred = [categories.index(pred[i]) for i in keep]
        if keep:
            stats = ordinal_agreement(y_true, y_pred, len(categories))
            n_ok = sum(t == p for t, p in zip(y_true, y_pred))
            n_pat = len({str(frame['patient_id'].iloc[i]) for i in keep}) if "patient_id" in frame else len(keep)
            n = f"{len(keep)}/{n_pat}"
            grade_rows = [["accuracy", "93.7 % (59 of 63)", f"{100 * stats['accuracy']:.1f} % ({n_ok} of {len(keep)})", n],
                          ["weighted kappa, linear", "0.98 (weighting not stated)", f"{stats['kappa_linear']:.2f}", n],
                          ["weighted kappa, quadratic", "0.98 (weighting not stated)", f"{stats['kappa_quadratic']:.2f}", n]]
            study.measured.update({"dynunet.steinberg_accuracy": stats["accuracy"],
                                   "dynunet.steinberg_kappa_linear": stats["kappa_linear"],
                                   "dynunet.steinberg_kappa_quadratic": stats["kappa_quadratic"]})
            from sklearn.metrics import confusion_matrix

            cm = confusion_matrix(y_true, y_pred, labels=list(range(len(categories))))
            cm_fig = Figure("steinberg_confusion", "Steinberg grade from the DynUNet segmentation: rows "
                            "reference, columns prediction ('none': no necrosis found).",
                            figs.confusion_figure(cm, categories, f"dynunet ({run.row.preset}): Steinberg grade", "report-steinberg"))
    study.tables.append(Table(
        "Steinberg classification from the segmentation", ["quantity", "published", "measured", "n (hips/patients)"],
        grade_rows,
        "Graded on hips whose reference grade is A, B or C, as in the study (all its hips had necrosis); a "
        "segmentation that finds no necrosis is graded 'none', counted wrong, and ranks below A for kappa. "
        f"The published kappa of 0.98 is not reachable with 59 of 63 correct over 22/23/18 hips (A/B/C): "
        f"trying every placement of the 4 errors, the largest kappa is {lin_max:.3f} linear and "
        f"{quad_max:.3f} quadratic (computed here)."))
    study.measured.update({"steinberg_max_kappa_linear_59_of_63": lin_max, "steinberg_max_kappa_quadratic_59_of_63": quad_max})
    if cm_fig is not None:
        study.figures.append(cm_fig)
    return study


# --- seed 003: the 2.5D patch CNN -----------------------------------------------------------------


def _ppv_sensitivity(frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-hip Dice, PPV and sensitivity of the femoral head: from Dice and the two volumes
    (TP = Dice·(|pred| + |ref|)/2, exact on voxel counts)."""
    dice = numeric_column(frame, "dice_head")
    ref, pred = numeric_column(frame, "head_cm3_ref"), numeric_column(frame, "head_cm3_pred")
    tp = dice * (ref + pred) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        ppv = np.where(pred > 0, tp / pred, np.nan)
        sens = np.where(ref > 0, tp / ref, np.nan)
    return dice, ppv, sens


def _msd(values: np.ndarray) -> tuple[float | None, float | None, int]:
    v = values[np.isfinite(values)]
    if not len(v):
        return None, None, 0
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else None), len(v)


def study_patch25d(runs: dict[str, MethodRun]) -> Study:
    """Seed 003 (Hallyburton et al.): DSC, PPV, sensitivity, voxel ROC AUC and cut-off."""
    run = runs["patch25d-cnn"]
    study = Study("003", "2.5D patch CNN: segmentation overlap and voxel ROC",
                  "Hallyburton et al., ISMRM 2017 (seed 003): 25 test subjects", [run])
    study.notes.append("Task measured: the study segments the whole proximal femur (bone vs not bone); here "
                       "the same network segments the femoral head (vital bone + necrosis vs the rest), so "
                       "DSC, PPV, sensitivity and the ROC are of the femoral head.")
    rows = [["DSC", "70.2 ± 11.3 %"], ["PPV", "58.5 ± 15.0 %"], ["sensitivity", "92.6 ± 4.7 %"]]
    if run.row is not None and run.row.cases:
        frame = run.row.case_frame
        n_pat = frame["patient_id"].nunique() if "patient_id" in frame else len(frame)
        for row, values, key in zip(rows, _ppv_sensitivity(frame), ("dsc", "ppv", "sensitivity")):
            mean, sd, n = _msd(values)
            row += [mean_sd(mean, sd, 100, " %"), f"{n}/{n_pat}"]
            if mean is not None:
                study.measured[f"patch25d-cnn.head_{key}"] = mean
    else:
        for row in rows:
            row += [NA, NA]
    roc = pooled_roc(run.roc_files) if run.roc_files else None
    if roc is not None:
        where = f"{roc.n_cases} hips, {roc.n_positive + roc.n_negative:,} voxels"
        rows += [["ROC AUC", "0.933", f"{roc.auc:.3f}", where],
                 ["ROC-optimal probability cut-off", "0.9266", f"{roc.cutoff:.3f}", where],
                 ["ROC sensitivity at the cut-off", "0.611", f"{roc.sensitivity:.3f}", where],
                 ["ROC specificity at the cut-off", "0.971", f"{roc.specificity:.3f}", where]]
        study.measured.update({"patch25d-cnn.roc_auc": roc.auc, "patch25d-cnn.roc_cutoff": roc.cutoff})
        study.figures.append(Figure(
            "figure3_voxel_roc", "Figure 3 of seed 003 regenerated: voxel ROC of P(femoral head) over every "
            "voxel of the held-out hips, with the Youden-optimal cut-off.",
            figs.roc_curve_figure(roc.fpr, roc.tpr, roc.auc, roc.cutoff, roc.sensitivity, roc.specificity,
                                  f"patch25d-cnn ({run.row.preset}): femoral head vs rest, {where}", "report-roc")))
    else:
        why = ("not run" if run.row is None else
               "not available: the run has no voxel_roc_head.json on its fold runs (runs made before the runner "
               "recorded P(head) histograms); re-run the method to record it")
        rows += [["ROC AUC", "0.933", why, NA], ["ROC-optimal probability cut-off", "0.9266", why, NA]]
    study.tables.append(Table(
        "Segmentation of the femoral head (DSC, PPV, sensitivity: mean ± SD over hips) and voxel ROC",
        ["quantity", "published", "measured", "n (hips/patients or voxels)"], rows,
        "PPV and sensitivity are derived per hip from its Dice and the two head volumes (TP = Dice × (|pred| + "
        "|ref|) / 2). The ROC pools every voxel of the held-out hips (as the study pools its test cases): "
        "P(head) = P(vital) + P(necrosis) of the method's output probabilities, binned at 0.001 (the cut-off's "
        "resolution); the cut-off maximises sensitivity + specificity − 1 (Youden). Voxels of one hip are not "
        f"independent; no test is made on them. ROC counts: {run.roc_source if roc is not None else 'none'}."))
    return study


# --- seed 004: the JIC classifier ------------------------------------------------------------------


def study_jic(runs: dict[str, MethodRun]) -> Study:
    """Seed 004 (Shen et al.): accuracy, macro AUC, per-class AUC and the confusion matrix."""
    run = runs["jic-classifier"]
    study = Study("004", "JIC classifier: accuracy, AUC, confusion matrix",
                  "Shen et al., J Arthroplasty 2024 (seed 004): internal validation on 20 % of 1,155 hips", [run])
    s: RunSummary | None = None
    classes: list[str] = []
    if run.row is not None and run.row.cases:
        classes = [c[5:] for c in run.row.case_frame.columns if c.startswith("prob_")]
        s = summarize_classification(run.row.cases, classes, n_bootstrap=0)
    n = NA
    if s is not None:
        frame = run.row.case_frame
        scored = frame[frame["jic_ref"].isin(classes)] if "jic_ref" in frame else frame.iloc[:0]
        n_pat = scored["patient_id"].nunique() if "patient_id" in scored else len(scored)
        n = f"{len(scored)}/{n_pat}"
    pct = lambda name: f"{100 * _m(s, name):.1f} %" if _m(s, name) is not None else NA
    num = lambda name: f"{_m(s, name):.2f}" if _m(s, name) is not None else NA
    rows = [["overall accuracy", "87.8 %", pct("jic_accuracy"), n],
            ["macro-average AUC (one vs rest)", "0.90", num("jic_macro_auc"), n],
            ["macro precision", "84.8 %", pct("jic_macro_precision"), n],
            ["macro recall", "84.8 %", pct("jic_macro_recall"), n],
            ["macro F1", "84.6 %", pct("jic_macro_f1"), n]]
    rows += [[f"AUC of type {c} (one vs rest)", "not reported per class", num(f"jic_auc_{c}"), n] for c in classes]
    for name in ("jic_accuracy", "jic_macro_auc"):
        if _m(s, name) is not None:
            study.measured[f"jic-classifier.{name}"] = _m(s, name)
    study.tables.append(Table(
        "JIC classification (internal validation)", ["quantity", "published", "measured", "n (hips/patients)"], rows,
        "Hips whose reference JIC type is one of the classifier's classes; lesion-free hips have no JIC type and "
        "are left out. Macro AUC is the mean one-vs-rest AUC over the classes present in the reference."))
    if s is not None and "jic_confusion" in s.tables:
        table = s.tables["jic_confusion"]
        study.figures.append(Figure(
            "jic_confusion", "Confusion matrix of the JIC classifier: rows reference, columns prediction.",
            figs.confusion_figure(table["matrix"], table["labels"], f"jic-classifier ({run.row.preset}): JIC type", "report-jic")))
    return study


STUDIES: dict[str, tuple[tuple[str, ...], Any]] = {
    "000-001": (("nnunet-ensemble", "nnunet-2d", "nnunet-3d"), study_nnunet),
    "002": (("dynunet",), study_dynunet),
    "003": (("patch25d-cnn",), study_patch25d),
    "004": (("jic-classifier",), study_jic),
}
