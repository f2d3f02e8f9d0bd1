"""The report's figures as inline SVG text: the studies' scatter, ROC and confusion matrix.

Drawn with the leaderboard's deterministic SVG settings (:func:`avnbench.reporting.plots.svg_text`:
fixed hash salt, no date), so a report regenerated from the same runs has the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from avnbench.reporting.plots import _figure, _note, svg_text


def relative_volume_scatter(ref: np.ndarray, pred: np.ndarray, title: str, salt: str) -> str:
    """Seed 000's Figure 3: manual vs automatic relative necrosis volume (%), identity line and
    Pearson r over hips; the legend below the axes hides no point."""
    ok = np.isfinite(ref) & np.isfinite(pred)
    ref, pred = np.asarray(ref)[ok], np.asarray(pred)[ok]
    fig, ax = _figure((5.0, 5.6))
    ax.set_xlabel("manual (reference) relative necrosis volume [%]")
    ax.set_ylabel("automatic relative necrosis volume [%]")
    heading = "Relative necrotic volume, manual vs automatic"
    if len(ref) == 0:
        _note(ax, "no hips")
    else:
        high = float(max(ref.max(), pred.max(), 1e-6)) * 1.05
        ax.plot([0, high], [0, high], color="0.5", linestyle="--", linewidth=1, label="identity")
        ax.scatter(ref, pred, s=18, alpha=0.8, color="tab:red", label=f"hips (n = {len(ref)})")
        ax.set_xlim(-0.03 * high, high)
        ax.set_ylim(-0.03 * high, high)
        ax.set_aspect("equal")
        if len(ref) >= 2 and np.ptp(ref) > 0 and np.ptp(pred) > 0:
            heading += f"\nPearson r over hips = {float(np.corrcoef(ref, pred)[0, 1]):.2f}"
        fig.legend(loc="outside lower center", ncols=2, fontsize="small")
    ax.set_title(f"{title}\n{heading}", fontsize="small")
    return svg_text(fig, salt)


def roc_curve_figure(fpr: np.ndarray, tpr: np.ndarray, auc: float, cutoff: float, sensitivity: float,
                     specificity: float, title: str, salt: str) -> str:
    """Seed 003's Figure 3: the voxel ROC with its AUC and the Youden-optimal cut-off marked."""
    fig, ax = _figure((5.0, 5.4))
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1, label="chance")
    ax.plot(fpr, tpr, color="tab:blue", linewidth=1.5, label=f"ROC (AUC {auc:.3f})")
    ax.scatter([1 - specificity], [sensitivity], color="tab:red", zorder=3,
               label=f"cut-off {cutoff:.3f}: sens. {sensitivity:.3f}, spec. {specificity:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("1 − specificity (false-positive rate)")
    ax.set_ylabel("sensitivity (true-positive rate)")
    ax.set_title(title, fontsize="small")
    fig.legend(loc="outside lower center", ncols=1, fontsize="small")
    return svg_text(fig, salt)


def confusion_figure(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str, salt: str) -> str:
    """A confusion matrix (rows reference, columns prediction) with the counts in the cells."""
    m = np.asarray(matrix, dtype=float)
    size = max(3.5, 0.8 * len(labels) + 2.0)
    fig, ax = _figure((size, size))
    ax.set_title(title, fontsize="small")
    if m.ndim != 2 or m.size == 0:
        _note(ax, "no matrix")
        return svg_text(fig, salt)
    ax.imshow(m, cmap="Blues", vmin=0, vmax=max(float(m.max()), 1.0))
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, list(labels))
    ax.set_yticks(ticks, list(labels))
    ax.set_xlabel("prediction")
    ax.set_ylabel("reference")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black")
    return svg_text(fig, salt)
