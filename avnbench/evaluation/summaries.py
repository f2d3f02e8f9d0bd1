"""Run summaries over per-case score rows: means, agreement, volumes, grades, bootstrap CIs.

Input rows are what :func:`avnbench.evaluation.scoring.score_case` (segmentation) or the runner
(classification: ``jic_ref``, ``jic_pred``, ``prob_<class>``) produce, as dicts or a pandas
DataFrame (e.g. read back from ``cases.csv``, where None becomes NaN). Output is a
:class:`RunSummary` whose ``metrics`` use the metric names of DESIGN.md "Tracking and
leaderboards" and only ever hold finite numbers; whatever is undefined is left out and said in
``notes``. scipy.stats and scikit-learn compute the statistics; the confidence intervals come
from the vectorised kernels of :mod:`avnbench.evaluation.bootstrap`, and run-vs-run tests from
:mod:`avnbench.evaluation.comparison`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from avnbench.errors import DataError
from avnbench.evaluation.bootstrap import (
    accuracy_from_confusion,
    add_intervals,
    auc_rows,
    confusion_rows,
    kappa_from_confusion,
    nanmean_rows,
    pearson_rows,
    resample_indices,
)

Rows = list[dict[str, Any]] | pd.DataFrame

SEGMENTATION_LABELS = ("vital", "necrosis", "head")
#: Per-case metric columns of one label set (``{}`` is the label set's name).
CASE_METRIC_TEMPLATES = ("dice_{}", "assd_{}_mm", "hd95_{}_mm", "nsd1mm_{}")
#: Ordinal categories of the grades derived from label maps; "none" (no necrosis) ranks lowest.
GRADE_CATEGORIES: dict[str, tuple[str, ...]] = {
    "steinberg": ("none", "A", "B", "C"),
    "jic": ("none", "A", "B", "C1", "C2"),
}
EARLY_ARCO = ("I", "II")
ADVANCED_ARCO = ("IIIA", "IIIB", "IV")
#: Metrics that get bootstrap confidence intervals (when they are defined).
SEGMENTATION_HEADLINE = (
    "dice_vital", "dice_necrosis", "dice_head",
    "assd_vital_mm", "assd_necrosis_mm", "assd_head_mm",
    "hd95_vital_mm", "hd95_necrosis_mm", "hd95_head_mm",
    "nsd1mm_vital", "nsd1mm_necrosis", "nsd1mm_head",
    "necrosis_cm3_mae", "necrosis_relvol_mae", "necrosis_relvol_pearson_r",
    "steinberg_accuracy", "steinberg_kappa_linear", "steinberg_kappa_quadratic",
    "jic_accuracy", "jic_kappa_linear", "jic_kappa_quadratic",
)  # fmt: skip


class RunSummary(BaseModel):
    """Statistics of one run over its cases."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["segmentation", "classification"]
    metrics: dict[str, float] = Field(
        default_factory=dict, description="finite values only, DESIGN.md names (+ extras)"
    )
    notes: list[str] = Field(default_factory=list, description="what was left out and why")
    tables: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="e.g. '<system>_confusion': {labels, matrix (rows reference, columns "
        "prediction), title}",
    )

    def put(self, name: str, value: Any, why_missing: str | None = None) -> None:
        """Record a metric if it is a finite number, else note why it is left out."""
        if value is not None and np.isfinite(value):
            self.metrics[name] = float(value)
        elif why_missing:
            self.notes.append(f"{name}: left out, {why_missing}")


# --------------------------------------------------------------------------------------------
# helpers


def as_frame(rows: Rows) -> pd.DataFrame:
    """Rows (dicts or a DataFrame) as a fresh DataFrame with a 0..n-1 index."""
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    return frame.reset_index(drop=True)


def numeric_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float64 (missing → NaN); all NaN when the column is absent."""
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float, copy=True)


def _strings(frame: pd.DataFrame, column: str) -> list[str | None]:
    """A column of labels with None for missing (None, NaN, empty)."""
    if column not in frame.columns:
        return [None] * len(frame)
    out: list[str | None] = []
    for value in frame[column].tolist():
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
            out.append(None)
        else:
            out.append(str(value))
    return out


def _case_ids(frame: pd.DataFrame) -> list[str]:
    """The rows' case ids, or "row <i>" without a case_id column."""
    if "case_id" in frame.columns:
        return [str(c) for c in frame["case_id"]]
    return [f"row {i}" for i in range(len(frame))]


def _sd(values: np.ndarray) -> float:
    """Sample standard deviation (ddof 1); NaN below two values."""
    return float(np.std(values, ddof=1)) if len(values) >= 2 else float("nan")


def _codes(labels: Sequence[str | None], categories: Sequence[str], what: str, ids) -> np.ndarray:
    """Ordinal integer codes (position in ``categories``), -1 for missing."""
    index = {c: i for i, c in enumerate(categories)}
    codes = np.full(len(labels), -1, dtype=int)
    for i, label in enumerate(labels):
        if label is None:
            continue
        if label not in index:
            raise DataError(
                f"case {ids[i]}: unknown {what} {label!r}; expected one of {', '.join(categories)}"
            )
        codes[i] = index[label]
    return codes


def quietly(fn, *args, **kwargs):
    """Call a statistics function, turning its 'undefined' warnings into a NaN result."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn(*args, **kwargs)
        except ValueError:
            return None


# --------------------------------------------------------------------------------------------
# agreement of ordinal grades


def ordinal_agreement(
    y_true: Sequence[int], y_pred: Sequence[int], n_categories: int
) -> dict[str, float]:
    """Accuracy and Cohen's kappa (unweighted, linear, quadratic) of ordinal integer codes.

    The full label list ``range(n_categories)`` is passed, so a grade missing from the data does
    not change the weights. Undefined values (e.g. one class only) are NaN.
    """
    from sklearn.metrics import accuracy_score, cohen_kappa_score

    labels = list(range(n_categories))
    out = {"accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else float("nan")}
    for key, weights in (("kappa", None), ("kappa_linear", "linear"),
                         ("kappa_quadratic", "quadratic")):
        value = quietly(cohen_kappa_score, y_true, y_pred, labels=labels, weights=weights)
        out[key] = float(value) if value is not None else float("nan")
    return out


def _grade_statistics(summary: RunSummary, frame: pd.DataFrame, system: str) -> np.ndarray | None:
    """Accuracy, kappas and the confusion matrix of a grade derived from label maps.

    Returns the (n, 2) codes (reference, prediction), -1 where not gradable, for the bootstrap.
    """
    from sklearn.metrics import confusion_matrix

    categories = GRADE_CATEGORIES[system]
    ref_col, pred_col = f"{system}_ref", f"{system}_pred"
    if ref_col not in frame.columns or pred_col not in frame.columns:
        summary.notes.append(f"{system}: no grades in the rows")
        return None
    ids = _case_ids(frame)
    ref = _codes(_strings(frame, ref_col), categories, f"{system} grade", ids)
    pred = _codes(_strings(frame, pred_col), categories, f"{system} grade", ids)
    graded = (ref >= 0) & (pred >= 0)
    n_ungraded = int((~graded).sum())
    summary.metrics[f"n_{system}_graded"] = float(graded.sum())
    if n_ungraded:
        summary.notes.append(
            f"{system}: {n_ungraded} case(s) not gradable (e.g. no landmarks), left out"
        )
    if not graded.any():
        summary.notes.append(f"{system}: no gradable case; agreement left out")
        return np.column_stack([ref, pred])
    stats = ordinal_agreement(ref[graded], pred[graded], len(categories))
    why = "undefined (a single grade in reference and prediction)"
    summary.put(f"{system}_accuracy", stats["accuracy"])
    summary.put(f"{system}_kappa", stats["kappa"], why)
    summary.put(f"{system}_kappa_linear", stats["kappa_linear"], why)
    summary.put(f"{system}_kappa_quadratic", stats["kappa_quadratic"], why)
    matrix = confusion_matrix(ref[graded], pred[graded], labels=list(range(len(categories))))
    summary.tables[f"{system}_confusion"] = {
        "labels": list(categories),
        "matrix": matrix.tolist(),
        "title": f"{system.capitalize()} grade: rows reference, columns prediction",
    }
    return np.column_stack([ref, pred])


# --------------------------------------------------------------------------------------------
# segmentation


def _agreement(summary: RunSummary, prefix: str, ref: np.ndarray, pred: np.ndarray) -> None:
    """Manual (reference) vs automatic (prediction) agreement of one per-case quantity."""
    from scipy import stats

    ok = np.isfinite(ref) & np.isfinite(pred)
    ref, pred = ref[ok], pred[ok]
    n = len(ref)
    if n == 0:
        summary.notes.append(f"{prefix}: no case with both volumes")
        return
    diff = pred - ref
    summary.put(f"{prefix}_ref", ref.mean())
    summary.put(f"{prefix}_ref_sd", _sd(ref))
    summary.put(f"{prefix}_pred", pred.mean())
    summary.put(f"{prefix}_pred_sd", _sd(pred))
    summary.put(f"{prefix}_mae", np.abs(diff).mean())
    summary.put(f"{prefix}_mae_sd", _sd(np.abs(diff)))
    few = "fewer than 2 cases"
    if n < 2:
        summary.notes.append(f"{prefix}: t-test, Pearson r and Bland–Altman need 2+ cases")
        return
    if np.all(diff == diff[0]):
        summary.notes.append(f"{prefix}_ttest_p: left out, the differences are all equal")
    else:
        result = quietly(stats.ttest_rel, pred, ref)
        summary.put(f"{prefix}_ttest_p", result.pvalue if result is not None else None, few)
    if np.ptp(ref) == 0 or np.ptp(pred) == 0:
        summary.notes.append(f"{prefix}_pearson_r: left out, a constant series")
    else:
        result = quietly(stats.pearsonr, ref, pred)
        if result is not None:
            summary.put(f"{prefix}_pearson_r", result.statistic)
            summary.put(f"{prefix}_pearson_p", result.pvalue)
    bias, sd = diff.mean(), _sd(diff)
    summary.put(f"{prefix}_bland_altman_bias", bias)
    summary.put(f"{prefix}_bland_altman_loa_low", bias - 1.96 * sd)
    summary.put(f"{prefix}_bland_altman_loa_high", bias + 1.96 * sd)


def _early_vs_advanced(summary: RunSummary, frame: pd.DataFrame) -> None:
    """Relative necrosis volume of early (ARCO I/II) vs advanced (III+) hips, Mann–Whitney U."""
    from scipy import stats

    arco = _strings(frame, "arco_ref")
    early = np.array([a in EARLY_ARCO for a in arco], dtype=bool)
    advanced = np.array([a in ADVANCED_ARCO for a in arco], dtype=bool)
    summary.metrics["n_arco_early"] = float(early.sum())
    summary.metrics["n_arco_advanced"] = float(advanced.sum())
    for side in ("ref", "pred"):
        relvol = numeric_column(frame, f"necrosis_relvol_{side}")
        a = relvol[early & np.isfinite(relvol)]
        b = relvol[advanced & np.isfinite(relvol)]
        for group, values in (("early", a), ("advanced", b)):
            if len(values):
                summary.put(f"necrosis_relvol_{group}_{side}", values.mean())
                summary.put(f"necrosis_relvol_{group}_{side}_sd", _sd(values))
        if len(a) and len(b):
            result = quietly(stats.mannwhitneyu, a, b, alternative="two-sided")
            summary.put(f"necrosis_relvol_early_vs_advanced_p_{side}",
                        result.pvalue if result is not None else None, "undefined")
        else:
            summary.notes.append(
                f"necrosis_relvol_early_vs_advanced_p_{side}: left out, needs early (ARCO I/II) "
                f"and advanced (ARCO III+) cases, got {len(a)} and {len(b)}"
            )


def summarize_segmentation(rows: Rows, n_bootstrap: int = 1000, seed: int = 0) -> RunSummary:
    """Run statistics of segmentation rows (from :func:`avnbench.evaluation.scoring.score_case`).

    Per label set (vital, necrosis, head): mean, SD and median of Dice, ASSD (mm), HD95 (mm) and
    NSD@1mm over the cases where at least one mask is non-empty; ``n_empty_both_<set>`` counts
    the cases left out, ``n_empty_one_<set>`` the worst-case ones (one mask empty). Volumes:
    necrosis cm³ and % of head, manual vs automatic (MAE, paired t-test, Pearson r,
    Bland–Altman). Early vs advanced ARCO (Mann–Whitney U). Steinberg and JIC agreement.
    Bootstrap (``n_bootstrap`` resamples of the cases, ``seed``) percentile 95 % CIs of the
    headline metrics; 0 skips them.
    """
    frame = as_frame(rows)
    summary = RunSummary(task="segmentation")
    n = len(frame)
    summary.metrics["n_cases"] = float(n)
    if n == 0:
        summary.notes.append("no cases")
        return summary

    per_case: dict[str, np.ndarray] = {}
    for label in SEGMENTATION_LABELS:
        states = _strings(frame, f"empty_{label}")
        both = np.array([s == "both" for s in states], dtype=bool)
        summary.metrics[f"n_empty_both_{label}"] = float(both.sum())
        summary.metrics[f"n_empty_one_{label}"] = float(sum(s in ("pred", "ref") for s in states))
        summary.metrics[f"n_empty_pred_{label}"] = float(sum(s == "pred" for s in states))
        summary.metrics[f"n_empty_ref_{label}"] = float(sum(s == "ref" for s in states))
        if both.any():
            summary.notes.append(
                f"{label}: {int(both.sum())} case(s) with both masks empty left out of its "
                "Dice/distance means"
            )
        for template in CASE_METRIC_TEMPLATES:
            column = template.format(label)
            if column not in frame.columns:
                continue
            values = numeric_column(frame, column)
            values[both] = np.nan
            unexplained = ~np.isfinite(values) & ~both
            if unexplained.any():
                ids = [i for i, bad in zip(_case_ids(frame), unexplained) if bad]
                summary.notes.append(
                    f"{column}: {len(ids)} case(s) without a value left out ({', '.join(ids[:5])})"
                )
                values[unexplained] = np.nan
            per_case[column] = values
            kept = values[np.isfinite(values)]
            if not len(kept):
                summary.notes.append(f"{column}: left out, no case with a value")
                continue
            summary.put(column, kept.mean())
            summary.put(f"{column}_sd", _sd(kept))
            summary.put(f"{column}_median", float(np.median(kept)))

    necrosis_ref = numeric_column(frame, "necrosis_cm3_ref")
    necrosis_pred = numeric_column(frame, "necrosis_cm3_pred")
    relvol_ref = numeric_column(frame, "necrosis_relvol_ref")
    relvol_pred = numeric_column(frame, "necrosis_relvol_pred")
    _agreement(summary, "necrosis_cm3", necrosis_ref, necrosis_pred)
    _agreement(summary, "necrosis_relvol", relvol_ref, relvol_pred)
    head_err = np.abs(numeric_column(frame, "head_cm3_pred") - numeric_column(frame, "head_cm3_ref"))
    if np.isfinite(head_err).any():
        summary.put("head_cm3_mae", np.nanmean(head_err))
    _early_vs_advanced(summary, frame)
    grades = {system: _grade_statistics(summary, frame, system) for system in GRADE_CATEGORIES}

    if n_bootstrap > 0:
        resamples = resample_indices(n, n_bootstrap, seed)
        boot: dict[str, np.ndarray] = {
            column: nanmean_rows(values[resamples]) for column, values in per_case.items()
        }
        boot["necrosis_cm3_mae"] = nanmean_rows(np.abs(necrosis_pred - necrosis_ref)[resamples])
        boot["necrosis_relvol_mae"] = nanmean_rows(np.abs(relvol_pred - relvol_ref)[resamples])
        boot["necrosis_relvol_pearson_r"] = pearson_rows(relvol_ref[resamples], relvol_pred[resamples])
        for system, codes in grades.items():
            if codes is None:
                continue
            k = len(GRADE_CATEGORIES[system])
            cm = confusion_rows(codes[:, 0][resamples], codes[:, 1][resamples], k)
            boot[f"{system}_accuracy"] = accuracy_from_confusion(cm)
            boot[f"{system}_kappa_linear"] = kappa_from_confusion(cm, "linear")
            boot[f"{system}_kappa_quadratic"] = kappa_from_confusion(cm, "quadratic")
        add_intervals(summary, boot, SEGMENTATION_HEADLINE, n_bootstrap)
    return summary


# --------------------------------------------------------------------------------------------
# classification


def summarize_classification(
    rows: Rows,
    classes: Sequence[str],
    n_bootstrap: int = 1000,
    seed: int = 0,
    prefix: str = "jic",
) -> RunSummary:
    """Run statistics of a classifier's rows: ``<prefix>_ref``, ``<prefix>_pred``, ``prob_<class>``.

    ``classes`` in ordinal order (their positions are the codes for the weighted kappas).
    Accuracy, kappa (unweighted, linear, quadratic), macro one-vs-rest AUC (mean over classes
    present with positives and negatives in the reference), macro precision/recall/F1 over the
    classes that occur in reference or prediction, confusion matrix, bootstrap 95 % CIs.
    Cases without a reference class are left out and counted.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    classes = list(classes)
    if not classes:
        raise DataError("summarize_classification needs the method's class names")
    frame = as_frame(rows)
    summary = RunSummary(task="classification")
    summary.metrics["n_cases"] = float(len(frame))
    ids = _case_ids(frame)
    ref = _codes(_strings(frame, f"{prefix}_ref"), classes, f"{prefix} class", ids)
    prob_columns = [f"prob_{c}" for c in classes]
    has_probs = all(c in frame.columns for c in prob_columns)
    probs = np.column_stack([numeric_column(frame, c) for c in prob_columns]) if has_probs else None
    if f"{prefix}_pred" in frame.columns:
        pred = _codes(_strings(frame, f"{prefix}_pred"), classes, f"{prefix} class", ids)
    elif probs is not None:
        complete = np.isfinite(probs).all(axis=1)
        pred = np.where(complete, np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1), -1)
    else:
        raise DataError(f"classification rows need '{prefix}_pred' or prob_<class> columns")

    keep = (ref >= 0) & (pred >= 0)
    if probs is not None:
        keep &= np.isfinite(probs).all(axis=1)
    n_left_out = int((~keep).sum())
    summary.metrics["n_cases_scored"] = float(keep.sum())
    if n_left_out:
        summary.notes.append(
            f"{n_left_out} case(s) without a reference {prefix} class or prediction left out"
        )
    if not keep.any():
        summary.notes.append("no case to score")
        return summary
    ref, pred = ref[keep], pred[keep]
    k = len(classes)

    stats = ordinal_agreement(ref, pred, k)
    why = "undefined (a single class in reference and prediction)"
    summary.put(f"{prefix}_accuracy", stats["accuracy"])
    summary.put(f"{prefix}_kappa", stats["kappa"], why)
    summary.put(f"{prefix}_kappa_linear", stats["kappa_linear"], why)
    summary.put(f"{prefix}_kappa_quadratic", stats["kappa_quadratic"], why)
    present = sorted(set(ref.tolist()) | set(pred.tolist()))
    precision, recall, f1, _ = quietly(
        precision_recall_fscore_support, ref, pred, labels=present, average="macro",
        zero_division=0,
    )
    summary.put(f"{prefix}_macro_precision", precision)
    summary.put(f"{prefix}_macro_recall", recall)
    summary.put(f"{prefix}_macro_f1", f1)
    summary.tables[f"{prefix}_confusion"] = {
        "labels": classes,
        "matrix": confusion_matrix(ref, pred, labels=list(range(k))).tolist(),
        "title": f"{prefix.upper()} class: rows reference, columns prediction",
    }

    auc_classes: list[int] = []
    if probs is None:
        summary.notes.append(f"{prefix}_macro_auc: left out, no prob_<class> columns")
    else:
        probs = probs[keep]
        probs = probs / np.where(probs.sum(axis=1, keepdims=True) > 0, probs.sum(axis=1, keepdims=True), 1)
        aucs = []
        for c in range(k):
            positives = ref == c
            if positives.all() or not positives.any():
                continue
            auc_classes.append(c)
            aucs.append(roc_auc_score(positives, probs[:, c]))
            summary.put(f"{prefix}_auc_{classes[c]}", aucs[-1])
        skipped = [classes[c] for c in range(k) if c not in auc_classes]
        if aucs:
            summary.put(f"{prefix}_macro_auc", float(np.mean(aucs)))
            if skipped:
                summary.notes.append(
                    f"{prefix}_macro_auc: averaged over {len(aucs)} of {k} classes; "
                    f"{', '.join(skipped)} have no positive or no negative reference case"
                )
        else:
            summary.notes.append(f"{prefix}_macro_auc: left out, needs 2+ reference classes")

    if n_bootstrap > 0:
        n = len(ref)
        resamples = resample_indices(n, n_bootstrap, seed)
        cm = confusion_rows(ref[resamples], pred[resamples], k)
        boot = {
            f"{prefix}_accuracy": accuracy_from_confusion(cm),
            f"{prefix}_kappa_linear": kappa_from_confusion(cm, "linear"),
            f"{prefix}_kappa_quadratic": kappa_from_confusion(cm, "quadratic"),
        }
        if auc_classes:
            per_class = [auc_rows(ref[resamples] == c, probs[:, c][resamples]) for c in auc_classes]
            # A resample's macro AUC averages the same classes as the point estimate; a resample
            # that lost all positives or negatives of one of them is undefined (NaN).
            boot[f"{prefix}_macro_auc"] = np.mean(per_class, axis=0)
        headline = tuple(boot)
        add_intervals(summary, boot, headline, n_bootstrap)
    return summary
