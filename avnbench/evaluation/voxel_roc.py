"""Voxel ROC of a segmentation's femoral-head probability, recorded per case by the runner (read by the report).

Seed 003 picks its probability cut-off from an ROC over the voxels of its test cases. A run keeps
no probability maps in MLflow (they are the size of the images), so the runner records, for
every predicted case that carries ``SegmentationPrediction.probabilities``, a histogram of
P(head) = P(vital) + P(necrosis) in :data:`ROC_BINS` equal bins over [0, 1], split by the
reference (head voxels: label > 0; the rest). Summed over cases, the histograms give the pooled
voxel ROC exactly up to the bin width (cut-offs on a 1/ROC_BINS grid). The counts are written
by the core from the prediction and the reference after ``predict`` returned, never by a method.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Bins of P(head) over [0, 1]: the cut-off resolution of the recorded ROC.
ROC_BINS = 1000
#: The fold's file, in its job folder's ``artifacts/`` (so it goes to the fold's MLflow run).
ROC_FILE = "voxel_roc_head.json"


def head_probability_counts(probabilities: np.ndarray, reference: np.ndarray) -> dict[str, dict[str, int]]:
    """Sparse histograms ``{"positive": {bin: count}, "negative": {...}}`` of P(head) over the
    reference head voxels (label > 0) and the other voxels; ``probabilities`` (3, z, y, x)."""
    p_head = np.asarray(probabilities[1], dtype=np.float64) + np.asarray(probabilities[2], dtype=np.float64)
    bins = np.clip((p_head * ROC_BINS).astype(np.int64), 0, ROC_BINS - 1)
    head = np.asarray(reference) > 0
    out = {}
    for name, mask in (("positive", head), ("negative", ~head)):
        counts = np.bincount(bins[mask], minlength=ROC_BINS)
        out[name] = {str(i): int(counts[i]) for i in np.flatnonzero(counts)}
    return out


def write_fold_counts(path: Path, per_case: Mapping[str, dict]) -> Path:
    """Write one fold's per-case histograms (``{case_id: counts}``) as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"bins": ROC_BINS, "what": "P(vital)+P(necrosis) vs reference label > 0",
                                "cases": dict(per_case)}), encoding="utf-8")
    return path


def dense(counts: Mapping[str, int], bins: int = ROC_BINS) -> np.ndarray:
    out = np.zeros(bins, dtype=np.int64)
    for k, v in counts.items():
        out[int(k)] += int(v)
    return out


@dataclass(frozen=True)
class VoxelRoc:
    """A pooled voxel ROC: points from cut-off 1 down to 0, AUC, Youden-optimal cut-off."""

    fpr: np.ndarray
    tpr: np.ndarray
    cutoffs: np.ndarray
    auc: float
    cutoff: float
    sensitivity: float
    specificity: float
    n_positive: int
    n_negative: int
    n_cases: int


def pooled_roc(fold_files: Iterable[Mapping]) -> VoxelRoc | None:
    """The ROC of every case of the given fold files together (voxels pooled, as the study's
    ROC over its test cases); None without positive and negative voxels. A voxel counts as
    positive at cut-off t when P(head) ≥ t, t on the bin edges k/bins."""
    positive = negative = None
    n_cases, bins = 0, ROC_BINS
    for content in fold_files:
        bins = int(content.get("bins", ROC_BINS))
        for counts in content.get("cases", {}).values():
            pos, neg = dense(counts["positive"], bins), dense(counts["negative"], bins)
            positive = pos if positive is None else positive + pos
            negative = neg if negative is None else negative + neg
            n_cases += 1
    if positive is None or positive.sum() == 0 or negative.sum() == 0:
        return None
    # cut-off k/bins keeps bins k..bins-1; k = bins keeps nothing (the point (0, 0))
    tp = np.concatenate([np.cumsum(positive[::-1])[::-1], [0]])
    fp = np.concatenate([np.cumsum(negative[::-1])[::-1], [0]])
    cutoffs = np.arange(bins + 1) / bins
    tpr, fpr = (tp / positive.sum())[::-1], (fp / negative.sum())[::-1]
    cutoffs = cutoffs[::-1]
    auc = float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))
    best = int(np.argmax(tpr - fpr))
    return VoxelRoc(fpr=fpr, tpr=tpr, cutoffs=cutoffs, auc=auc, cutoff=float(cutoffs[best]),
                    sensitivity=float(tpr[best]), specificity=float(1 - fpr[best]),
                    n_positive=int(positive.sum()), n_negative=int(negative.sum()), n_cases=n_cases)


def counts_from_job_folders(job_dirs: Iterable[Path], cases: list[dict], reference_of) -> list[dict] | None:
    """Fold files rebuilt from the probability maps a run left in its job folders
    (``predictions/<case>_probabilities.npz``), for runs made before the runner recorded them.

    Used only when every folder's ``result.json`` scores are the run's own (same case ids and
    femoral-head Dice as ``cases``, the run's per-case table), so the maps are that run's;
    ``reference_of(case_id)`` gives the reference label map. None if any check fails. The saved
    maps are float16, so a voxel near a bin edge may land one bin off the float32 prediction's.
    """
    by_case = {str(c["case_id"]): c for c in cases}
    files = []
    for job_dir in job_dirs:
        result_path = Path(job_dir) / "result.json"
        if not result_path.exists():
            return None
        rows = json.loads(result_path.read_text(encoding="utf-8"))["rows"]
        per_case = {}
        for row in rows:
            mine = by_case.get(str(row["case_id"]))
            if mine is None or row.get("dice_head") is None or mine.get("dice_head") is None:
                return None
            if abs(float(row["dice_head"]) - float(mine["dice_head"])) > 1e-9:
                return None
            npz = Path(job_dir) / "predictions" / f"{row['case_id']}_probabilities.npz"
            if not npz.exists():
                return None
            with np.load(npz) as saved:
                per_case[str(row["case_id"])] = head_probability_counts(saved["probabilities"], reference_of(str(row["case_id"])))
        files.append({"bins": ROC_BINS, "cases": per_case})
    return files if files and sum(len(f["cases"]) for f in files) == len(by_case) else None
