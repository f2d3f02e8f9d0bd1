"""Run statistics over per-case score rows: means, agreement, volumes, grades, bootstrap CIs.

Input rows are what :func:`avnbench.evaluation.scoring.score_case` (segmentation) or the runner
(classification: ``jic_ref``, ``jic_pred``, ``prob_<class>``) produce, as dicts or a pandas
DataFrame (e.g. read back from ``cases.csv``, where None becomes NaN). Output is a
:class:`RunSummary` whose ``metrics`` use the metric names of DESIGN.md "Tracking and
leaderboards" and only ever hold finite numbers; whatever is undefined is left out and said in
``notes``. scipy.stats and scikit-learn compute the statistics; the bootstrap re-implements only
the cheap vectorised forms (mean, Pearson r, accuracy, weighted kappa, rank AUC), which the tests
check against those libraries.
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
CI_LEVEL = 0.95
#: Least fraction of bootstrap resamples in which a metric must be defined to report its CI.
MIN_DEFINED_FRACTION = 0.5


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


def _frame(rows: Rows) -> pd.DataFrame:
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    return frame.reset_index(drop=True)


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
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
    if "case_id" in frame.columns:
        return [str(c) for c in frame["case_id"]]
    return [f"row {i}" for i in range(len(frame))]


def _sd(values: np.ndarray) -> float:
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


def _quietly(fn, *args, **kwargs):
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
        value = _quietly(cohen_kappa_score, y_true, y_pred, labels=labels, weights=weights)
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
        result = _quietly(stats.ttest_rel, pred, ref)
        summary.put(f"{prefix}_ttest_p", result.pvalue if result is not None else None, few)
    if np.ptp(ref) == 0 or np.ptp(pred) == 0:
        summary.notes.append(f"{prefix}_pearson_r: left out, a constant series")
    else:
        result = _quietly(stats.pearsonr, ref, pred)
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
        relvol = _numeric(frame, f"necrosis_relvol_{side}")
        a = relvol[early & np.isfinite(relvol)]
        b = relvol[advanced & np.isfinite(relvol)]
        for group, values in (("early", a), ("advanced", b)):
            if len(values):
                summary.put(f"necrosis_relvol_{group}_{side}", values.mean())
                summary.put(f"necrosis_relvol_{group}_{side}_sd", _sd(values))
        if len(a) and len(b):
            result = _quietly(stats.mannwhitneyu, a, b, alternative="two-sided")
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
    frame = _frame(rows)
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
            values = _numeric(frame, column)
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

    necrosis_ref, necrosis_pred = _numeric(frame, "necrosis_cm3_ref"), _numeric(frame, "necrosis_cm3_pred")
    relvol_ref, relvol_pred = _numeric(frame, "necrosis_relvol_ref"), _numeric(frame, "necrosis_relvol_pred")
    _agreement(summary, "necrosis_cm3", necrosis_ref, necrosis_pred)
    _agreement(summary, "necrosis_relvol", relvol_ref, relvol_pred)
    head_err = np.abs(_numeric(frame, "head_cm3_pred") - _numeric(frame, "head_cm3_ref"))
    if np.isfinite(head_err).any():
        summary.put("head_cm3_mae", np.nanmean(head_err))
    _early_vs_advanced(summary, frame)
    grades = {system: _grade_statistics(summary, frame, system) for system in GRADE_CATEGORIES}

    if n_bootstrap > 0:
        resamples = np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))
        boot: dict[str, np.ndarray] = {
            column: _nanmean_rows(values[resamples]) for column, values in per_case.items()
        }
        boot["necrosis_cm3_mae"] = _nanmean_rows(np.abs(necrosis_pred - necrosis_ref)[resamples])
        boot["necrosis_relvol_mae"] = _nanmean_rows(np.abs(relvol_pred - relvol_ref)[resamples])
        boot["necrosis_relvol_pearson_r"] = _pearson_rows(relvol_ref[resamples], relvol_pred[resamples])
        for system, codes in grades.items():
            if codes is None:
                continue
            k = len(GRADE_CATEGORIES[system])
            cm = _confusion_rows(codes[:, 0][resamples], codes[:, 1][resamples], k)
            boot[f"{system}_accuracy"] = _accuracy_from_confusion(cm)
            boot[f"{system}_kappa_linear"] = _kappa_from_confusion(cm, "linear")
            boot[f"{system}_kappa_quadratic"] = _kappa_from_confusion(cm, "quadratic")
        _add_intervals(summary, boot, SEGMENTATION_HEADLINE, n_bootstrap)
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
    frame = _frame(rows)
    summary = RunSummary(task="classification")
    summary.metrics["n_cases"] = float(len(frame))
    ids = _case_ids(frame)
    ref = _codes(_strings(frame, f"{prefix}_ref"), classes, f"{prefix} class", ids)
    prob_columns = [f"prob_{c}" for c in classes]
    has_probs = all(c in frame.columns for c in prob_columns)
    probs = np.column_stack([_numeric(frame, c) for c in prob_columns]) if has_probs else None
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
    precision, recall, f1, _ = _quietly(
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
        resamples = np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))
        cm = _confusion_rows(ref[resamples], pred[resamples], k)
        boot = {
            f"{prefix}_accuracy": _accuracy_from_confusion(cm),
            f"{prefix}_kappa_linear": _kappa_from_confusion(cm, "linear"),
            f"{prefix}_kappa_quadratic": _kappa_from_confusion(cm, "quadratic"),
        }
        if auc_classes:
            per_class = [_auc_rows(ref[resamples] == c, probs[:, c][resamples]) for c in auc_classes]
            # A resample's macro AUC averages the same classes as the point estimate; a resample
            # that lost all positives or negatives of one of them is undefined (NaN).
            boot[f"{prefix}_macro_auc"] = np.mean(per_class, axis=0)
        headline = tuple(boot)
        _add_intervals(summary, boot, headline, n_bootstrap)
    return summary


# --------------------------------------------------------------------------------------------
# bootstrap: vectorised statistics over resamples (rows of a (B, n) matrix)


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    count = finite.sum(axis=1)
    total = np.where(finite, values, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
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


def _confusion_rows(ref: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """(B, k, k) confusion matrices of (B, n) code matrices; negative codes are left out."""
    b = ref.shape[0]
    ok = (ref >= 0) & (pred >= 0)
    flat = (np.arange(b)[:, None] * k * k + ref * k + pred)[ok]
    return np.bincount(flat, minlength=b * k * k).reshape(b, k, k).astype(float)


def _accuracy_from_confusion(cm: np.ndarray) -> np.ndarray:
    total = cm.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.trace(cm, axis1=1, axis2=2) / total


def _kappa_from_confusion(cm: np.ndarray, weights: str | None) -> np.ndarray:
    """Cohen's kappa per confusion matrix, as sklearn.metrics.cohen_kappa_score computes it."""
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


def _auc_rows(positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC AUC per row (Mann–Whitney form, ties counted half); NaN without both classes."""
    from scipy.stats import rankdata

    ranks = rankdata(score, axis=1)
    n_pos = positive.sum(axis=1)
    n_neg = positive.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * positive).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def _add_intervals(summary: RunSummary, boot: dict[str, np.ndarray], names, n_bootstrap: int) -> None:
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


# --------------------------------------------------------------------------------------------
# comparing two runs


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


def paired_comparison(
    rows_a: Rows, rows_b: Rows, metrics: list[str], alpha: float = 0.05
) -> dict[str, dict[str, Any]]:
    """Paired Wilcoxon signed-rank tests of two runs over their common cases, Holm-corrected.

    Returns per metric: ``n`` (cases with a finite value in both), ``mean_a``, ``mean_b``,
    ``mean_diff`` and ``median_diff`` (a − b), ``statistic``, ``p_value``, ``p_holm`` (None when
    untestable) and ``significant`` (p_holm < alpha). Cases are matched by ``case_id``.
    """
    from scipy.stats import wilcoxon

    a, b = _frame(rows_a), _frame(rows_b)
    for name, frame in (("rows_a", a), ("rows_b", b)):
        if len(frame) and "case_id" not in frame.columns:
            raise DataError(f"paired_comparison: {name} have no case_id column to match cases")
    if not len(a) or not len(b):
        common: list[str] = []
    else:
        a, b = a.drop_duplicates("case_id"), b.drop_duplicates("case_id")
        a.index, b.index = a["case_id"].astype(str), b["case_id"].astype(str)
        common = sorted(set(a.index) & set(b.index))
    results: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        x = _numeric(a.loc[common], metric) if common else np.zeros(0)
        y = _numeric(b.loc[common], metric) if common else np.zeros(0)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        diff = x - y
        res: dict[str, Any] = {
            "n": int(len(x)),
            "mean_a": float(x.mean()) if len(x) else None,
            "mean_b": float(y.mean()) if len(y) else None,
            "mean_diff": float(diff.mean()) if len(x) else None,
            "median_diff": float(np.median(diff)) if len(x) else None,
            "statistic": None,
            "p_value": None,
        }
        if len(x) and np.all(diff == 0):
            res["statistic"], res["p_value"] = 0.0, 1.0  # identical: no evidence of a difference
        elif len(x):
            test = _quietly(wilcoxon, x, y, alternative="two-sided")
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
