"""The study's cut-off and post-processing: ROC-chosen threshold, cluster removal, holes, opening.

numpy/scipy/scikit-learn only (no torch), so it is cheap to import and to test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

FALLBACK_CUTOFF = 0.5


@dataclass(frozen=True)
class RocCutoff:
    """A Youden-optimal probability cut-off and the ROC curve it came from."""

    cutoff: float
    auc: float
    fpr: np.ndarray
    tpr: np.ndarray
    sensitivity: float
    specificity: float


def youden_cutoff(is_positive: np.ndarray, scores: np.ndarray) -> RocCutoff | None:
    """The threshold maximising Youden's J = sensitivity + specificity − 1 (sklearn roc_curve).

    A voxel is called positive when its score is >= the cut-off. None when only one class is
    present (no ROC curve exists).
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    is_positive = np.asarray(is_positive, dtype=bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if is_positive.all() or not is_positive.any():
        return None
    fpr, tpr, thresholds = roc_curve(is_positive, scores, drop_intermediate=True)
    finite = np.isfinite(thresholds)  # the first threshold is +inf (nothing positive)
    j = np.where(finite, tpr - fpr, -np.inf)
    best = int(np.argmax(j))
    return RocCutoff(
        cutoff=float(thresholds[best]),
        auc=float(roc_auc_score(is_positive, scores)),
        fpr=fpr,
        tpr=tpr,
        sensitivity=float(tpr[best]),
        specificity=float(1.0 - fpr[best]),
    )


def plot_roc(roc: RocCutoff, path, title: str) -> None:
    """Write the ROC curve with the chosen operating point as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.add_subplot()
    ax.plot(roc.fpr, roc.tpr, lw=1.5, label=f"AUC {roc.auc:.4f}")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.scatter(
        [1 - roc.specificity],
        [roc.sensitivity],
        c="red",
        zorder=3,
        label=f"cut-off {roc.cutoff:.4f} (Youden)",
    )
    ax.set(xlabel="1 − specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def smallest_volume_mm3(
    masks: list[np.ndarray], spacings: list[tuple[float, float, float]]
) -> float:
    """The smallest non-empty mask volume (mm³) among reference masks; 0 when all are empty."""
    volumes = [
        float(mask.sum()) * float(np.prod(spacing)) for mask, spacing in zip(masks, spacings) if mask.any()
    ]
    return min(volumes) if volumes else 0.0


def postprocess_head(
    head_probability: np.ndarray,
    cutoff: float,
    spacing_zyx: tuple[float, float, float],
    min_cluster_mm3: float,
    opening_iterations: int,
) -> np.ndarray:
    """Binary femoral-head mask from P(head): threshold, opening, small clusters, holes.

    Opening (6-neighbour structure, ``opening_iterations`` times) first cuts thin bridges to
    neighbouring bone (neck, acetabulum), then 26-connected clusters smaller than
    ``min_cluster_mm3`` are removed and 3-D holes are filled.
    """
    mask = head_probability >= cutoff
    if opening_iterations > 0 and mask.any():
        opened = ndimage.binary_opening(
            mask, structure=ndimage.generate_binary_structure(3, 1), iterations=opening_iterations
        )
        # Never let opening erase a whole prediction: a thin head is better than none.
        mask = opened if opened.any() else mask
    components, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n:
        sizes_mm3 = np.bincount(components.ravel())[1:] * float(np.prod(spacing_zyx))
        keep = sizes_mm3 >= min_cluster_mm3
        if not keep.any():  # keep the largest rather than predict nothing
            keep[int(np.argmax(sizes_mm3))] = True
        mask = np.concatenate([[False], keep])[components]
    return ndimage.binary_fill_holes(mask)


def label_map(
    probabilities: np.ndarray,
    cutoff: float,
    spacing_zyx: tuple[float, float, float],
    min_cluster_mm3: float,
    opening_iterations: int,
    min_necrosis_cluster_mm3: float = 0.0,
    necrosis_cutoff: float = 0.5,
) -> np.ndarray:
    """uint8 labels from probabilities (3, z, y, x): the post-processed head (see
    :func:`postprocess_head`), then necrosis inside it (see :func:`necrosis_in_head`)."""
    head = postprocess_head(
        probabilities[1] + probabilities[2], cutoff, spacing_zyx, min_cluster_mm3, opening_iterations
    )
    labels = head.astype(np.uint8)
    labels[necrosis_in_head(head, probabilities, necrosis_cutoff, spacing_zyx, min_necrosis_cluster_mm3)] = 2
    return labels


def necrosis_in_head(
    head: np.ndarray,
    probabilities: np.ndarray,
    necrosis_cutoff: float,
    spacing_zyx: tuple[float, float, float],
    min_necrosis_cluster_mm3: float,
) -> np.ndarray:
    """Necrosis mask: head voxels with P(necrosis | head) = p2 / (p1 + p2) above
    ``necrosis_cutoff`` (0.5 is the argmax of the two), without 26-connected clusters smaller
    than ``min_necrosis_cluster_mm3``."""
    necrosis = head & (probabilities[2] > necrosis_cutoff * (probabilities[1] + probabilities[2]))
    if min_necrosis_cluster_mm3 > 0 and necrosis.any():
        components, _ = ndimage.label(necrosis, structure=np.ones((3, 3, 3), dtype=bool))
        sizes_mm3 = np.bincount(components.ravel()) * float(np.prod(spacing_zyx))
        keep = sizes_mm3 >= min_necrosis_cluster_mm3
        keep[0] = False
        necrosis = keep[components]
    return necrosis


NECROSIS_CUTOFF_GRID = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2))


def necrosis_cutoff_by_dice(
    heads: list[np.ndarray],
    probabilities: list[np.ndarray],
    references: list[np.ndarray],
    spacings: list[tuple[float, float, float]],
    min_necrosis_cluster_mm3: float,
) -> tuple[float, float]:
    """The cut-off on P(necrosis | head) that maximises the necrosis Dice pooled over cases
    (so a case without necrosis counts its false positives), and that Dice.

    ``heads`` are the post-processed predicted heads, ``references`` the reference necrosis masks.
    Ties go to the cut-off closest to 0.5.
    """
    best_cutoff, best_dice = 0.5, -1.0
    for cutoff in sorted(NECROSIS_CUTOFF_GRID, key=lambda c: abs(c - 0.5)):
        overlap = predicted = 0
        for head, p, ref, spacing in zip(heads, probabilities, references, spacings):
            necrosis = necrosis_in_head(head, p, cutoff, spacing, min_necrosis_cluster_mm3)
            overlap += int((necrosis & ref).sum())
            predicted += int(necrosis.sum())
        total = predicted + sum(int(r.sum()) for r in references)
        dice = 2 * overlap / total if total else 1.0
        if dice > best_dice:
            best_cutoff, best_dice = float(cutoff), dice
    return best_cutoff, best_dice
