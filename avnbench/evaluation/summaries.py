"""Run summaries over per-case score rows: case metrics, agreement, volumes, grades, CIs.

Input rows are what :func:`avnbench.evaluation.scoring.score_case` (segmentation) or the runner
(classification: ``jic_ref``, ``jic_pred``, ``prob_<class>``) produce, as dicts or a pandas
DataFrame (e.g. read back from ``cases.csv``, where None becomes NaN). Output is a
:class:`RunSummary` whose ``metrics`` use the names of the metric registry
(:mod:`avnbench.evaluation.metrics`, DESIGN.md "Tracking and leaderboards") and only ever hold
finite numbers; whatever is undefined is left out and said in ``notes``.

Every case metric of the registry (aggregation "mean": Dice, ASSD, HD95, NSD, volume errors,
false-positive volume, plugin metrics) gets its mean, ``_sd``, ``_median``, ``_q1``, ``_q3`` and
``_n``. Statistics are at the patient level: bootstrap intervals
(:mod:`avnbench.evaluation.bootstrap`) resample patients, tests and correlations use per-patient
means (:mod:`avnbench.evaluation.volumes`); run-vs-run tests are in
:mod:`avnbench.evaluation.comparison`. scipy.stats and scikit-learn compute the statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from avnbench.errors import DataError
from avnbench.evaluation.bootstrap import (
    PatientResamples,
    accuracy_from_confusion,
    add_intervals,
    auc_rows,
    confusion_rows,
    kappa_from_confusion,
    nanmean_rows,
    pearson_rows,
    per_patient_mean,
)
from avnbench.evaluation.metrics import (
    LABEL_SETS,
    MetricDef,
    MetricRegistry,
    case_values,
    default_metrics,
    has_values,
)
from avnbench.evaluation.rows import (  # Rows, numeric_column, quietly: also read from here
    Patients,
    Rows,
    as_frame,
    case_ids,
    numeric_column,
    quietly,
    sample_sd,
    strings,
)
from avnbench.evaluation.volumes import early_vs_advanced, volume_agreement

SEGMENTATION_LABELS = tuple(LABEL_SETS)
#: Ordinal categories of the grades derived from label maps; "none" (no necrosis) ranks lowest.
GRADE_CATEGORIES: dict[str, tuple[str, ...]] = {
    "steinberg": ("none", "A", "B", "C"),
    "jic": ("none", "A", "B", "C1", "C2"),
}


class RunSummary(BaseModel):
    """Statistics of one run over its cases."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["segmentation", "classification"]
    metrics: dict[str, float] = Field(
        default_factory=dict, description="finite values only, metric registry names"
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


def case_metric_statistics(summary: RunSummary, frame: pd.DataFrame, metric: MetricDef) -> np.ndarray | None:
    """Mean, ``_sd``, ``_median``, ``_q1``, ``_q3`` and ``_n`` of one case metric (a rate gets
    its value and ``_n``); returns the per-case values (NaN: not counted), None if the rows
    cannot give it."""
    if not has_values(metric, frame):
        return None
    values, applies = case_values(metric, frame)
    missing = applies & ~np.isfinite(values)
    if missing.any():
        ids = [i for i, bad in zip(case_ids(frame), missing) if bad]
        summary.notes.append(
            f"{metric.name}: {len(ids)} case(s) without a value left out ({', '.join(ids[:5])})"
        )
    kept = values[np.isfinite(values)]
    summary.metrics[f"{metric.name}_n"] = float(len(kept))
    if not len(kept):
        summary.notes.append(f"{metric.name}: left out, no case with a value")
        return values
    summary.put(metric.name, kept.mean())
    if metric.aggregation == "mean":
        summary.put(f"{metric.name}_sd", sample_sd(kept))
        q1, median, q3 = np.percentile(kept, [25, 50, 75])
        summary.put(f"{metric.name}_median", median)
        summary.put(f"{metric.name}_q1", q1)
        summary.put(f"{metric.name}_q3", q3)
    return values


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
    ids = case_ids(frame)
    ref = _codes(strings(frame, ref_col), categories, f"{system} grade", ids)
    pred = _codes(strings(frame, pred_col), categories, f"{system} grade", ids)
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


def _empty_counts(summary: RunSummary, frame: pd.DataFrame) -> None:
    for label in SEGMENTATION_LABELS:
        states = strings(frame, f"empty_{label}")
        n_both = sum(s == "both" for s in states)
        summary.metrics[f"n_empty_both_{label}"] = float(n_both)
        summary.metrics[f"n_empty_one_{label}"] = float(sum(s in ("pred", "ref") for s in states))
        summary.metrics[f"n_empty_pred_{label}"] = float(sum(s == "pred" for s in states))
        summary.metrics[f"n_empty_ref_{label}"] = float(sum(s == "ref" for s in states))
        if n_both:
            summary.notes.append(
                f"{label}: {n_both} case(s) with both masks empty left out of its "
                "Dice/distance means"
            )
        n_one = int(summary.metrics[f"n_empty_one_{label}"])
        if n_one and f"assd_{label}_mm" in frame.columns:
            summary.notes.append(
                f"{label}: {n_one} case(s) with one mask empty left out of assd_{label}_mm and "
                f"hd95_{label}_mm (they count as the image diagonal in the _penalized means)"
            )


def summarize_segmentation(
    rows: Rows, n_bootstrap: int = 1000, seed: int = 0, metrics: MetricRegistry | None = None
) -> RunSummary:
    """Run statistics of segmentation rows (from :func:`avnbench.evaluation.scoring.score_case`).

    Every case metric of ``metrics`` (default: the built-in registry; pass
    :func:`avnbench.evaluation.metrics.collect_metrics` for plugin metrics): mean, SD, median,
    quartiles and n over the cases it applies to. Dice and NSD count every case but those with
    both masks empty (``n_empty_both_<set>``); ASSD and HD95 only cases with both masks
    non-empty, the one-empty cases (``n_empty_one_<set>``) are in the ``_penalized`` means as
    the image diagonal. Lesion-free hips: false-positive necrosis volume and rate. Volumes:
    manual vs automatic (MAE, paired t-test, Pearson r, Bland–Altman). Early vs advanced ARCO
    (Mann–Whitney U). Steinberg and JIC agreement. Bootstrap (``n_bootstrap`` resamples of the
    patients, ``seed``) percentile 95 % CIs of the metrics marked ``interval``; 0 skips them.
    """
    registry = metrics or default_metrics()
    frame = as_frame(rows)
    summary = RunSummary(task="segmentation")
    n = len(frame)
    summary.metrics["n_cases"] = float(n)
    if n == 0:
        summary.notes.append("no cases")
        return summary
    patients = Patients.of(frame)
    summary.metrics["n_patients"] = float(patients.n_patients)
    summary.notes.append(patients.note())

    _empty_counts(summary, frame)
    per_case: dict[str, np.ndarray] = {}
    for metric in registry.case_metrics("segmentation"):
        values = case_metric_statistics(summary, frame, metric)
        if values is not None:
            per_case[metric.name] = values

    relvol_ref = numeric_column(frame, "necrosis_relvol_ref")
    relvol_pred = numeric_column(frame, "necrosis_relvol_pred")
    for prefix in ("necrosis_cm3", "necrosis_relvol"):
        volume_agreement(summary, prefix, numeric_column(frame, f"{prefix}_ref"),
                         numeric_column(frame, f"{prefix}_pred"), patients)
    early_vs_advanced(summary, frame, patients)
    grades = {system: _grade_statistics(summary, frame, system) for system in GRADE_CATEGORIES}

    if n_bootstrap > 0:
        resamples = PatientResamples(patients.codes, patients.n_patients, n_bootstrap, seed)
        boot: dict[str, np.ndarray] = {
            name: nanmean_rows(resamples.take(values)) for name, values in per_case.items()
            if registry[name].interval
        }
        ok = np.isfinite(relvol_ref) & np.isfinite(relvol_pred)
        codes, n_p = patients.codes, patients.n_patients
        ref_p = per_patient_mean(np.where(ok, relvol_ref, np.nan), codes, n_p)
        pred_p = per_patient_mean(np.where(ok, relvol_pred, np.nan), codes, n_p)
        boot["necrosis_relvol_pearson_r"] = pearson_rows(resamples.patients(ref_p), resamples.patients(pred_p))
        for system, pair in grades.items():
            if pair is None:
                continue
            k = len(GRADE_CATEGORIES[system])
            cm = confusion_rows(resamples.take(pair[:, 0], -1), resamples.take(pair[:, 1], -1), k)
            boot[f"{system}_accuracy"] = accuracy_from_confusion(cm)
            boot[f"{system}_kappa_linear"] = kappa_from_confusion(cm, "linear")
            boot[f"{system}_kappa_quadratic"] = kappa_from_confusion(cm, "quadratic")
        names = [d.name for d in registry.for_task("segmentation") if d.interval]
        add_intervals(summary, boot, names, n_bootstrap)
    return summary


# --------------------------------------------------------------------------------------------
# classification


def summarize_classification(
    rows: Rows,
    classes: Sequence[str],
    n_bootstrap: int = 1000,
    seed: int = 0,
    prefix: str = "jic",
    metrics: MetricRegistry | None = None,
) -> RunSummary:
    """Run statistics of a classifier's rows: ``<prefix>_ref``, ``<prefix>_pred``, ``prob_<class>``.

    ``classes`` in ordinal order (their positions are the codes for the weighted kappas).
    Accuracy, kappa (unweighted, linear, quadratic), macro one-vs-rest AUC (mean over classes
    present with positives and negatives in the reference), macro precision/recall/F1 over the
    classes that occur in reference or prediction, confusion matrix, the classification case
    metrics of ``metrics`` (e.g. the heat-map score), and bootstrap 95 % CIs over resamples of
    the patients. Cases without a reference class are left out and counted.
    """
    from sklearn.metrics import (
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    classes = list(classes)
    if not classes:
        raise DataError("summarize_classification needs the method's class names")
    frame = as_frame(rows)
    summary = RunSummary(task="classification")
    summary.metrics["n_cases"] = float(len(frame))
    if len(frame):
        summary.metrics["n_patients"] = float(Patients.of(frame).n_patients)
    for metric in (metrics or default_metrics()).case_metrics("classification"):
        case_metric_statistics(summary, frame, metric)
    ids = case_ids(frame)
    ref = _codes(strings(frame, f"{prefix}_ref"), classes, f"{prefix} class", ids)
    prob_columns = [f"prob_{c}" for c in classes]
    has_probs = all(c in frame.columns for c in prob_columns)
    probs = np.column_stack([numeric_column(frame, c) for c in prob_columns]) if has_probs else None
    if f"{prefix}_pred" in frame.columns:
        pred = _codes(strings(frame, f"{prefix}_pred"), classes, f"{prefix} class", ids)
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
    patients = Patients.of(frame).subset(keep)
    summary.notes.append(patients.note())
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
        resamples = PatientResamples(patients.codes, patients.n_patients, n_bootstrap, seed)
        cm = confusion_rows(resamples.take(ref, -1), resamples.take(pred, -1), k)
        boot = {
            f"{prefix}_accuracy": accuracy_from_confusion(cm),
            f"{prefix}_kappa_linear": kappa_from_confusion(cm, "linear"),
            f"{prefix}_kappa_quadratic": kappa_from_confusion(cm, "quadratic"),
        }
        if auc_classes:
            per_class = [auc_rows(resamples.take(ref == c, False), resamples.take(probs[:, c]))
                         for c in auc_classes]
            # A resample's macro AUC averages the same classes as the point estimate; a resample
            # that lost all positives or negatives of one of them is undefined (NaN).
            boot[f"{prefix}_macro_auc"] = np.mean(per_class, axis=0)
        headline = tuple(boot)
        add_intervals(summary, boot, headline, n_bootstrap)
    return summary
