"""Run plots (PNG): relative necrosis volume manual vs automatic, Bland–Altman, confusion matrix.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no global backend
change). Every function draws what the data allows and never fails on degenerate input (no
case, one case, constant values): it says so on the figure instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from avnbench.evaluation.summaries import Rows

DPI = 120


def _figure(size=(5.0, 5.0)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _volume_pairs(rows: Rows, quantity: str) -> tuple[np.ndarray, np.ndarray]:
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if frame.empty or f"{quantity}_ref" not in frame or f"{quantity}_pred" not in frame:
        return np.zeros(0), np.zeros(0)
    ref = pd.to_numeric(frame[f"{quantity}_ref"], errors="coerce").to_numpy(dtype=float)
    pred = pd.to_numeric(frame[f"{quantity}_pred"], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(ref) & np.isfinite(pred)
    return ref[ok], pred[ok]


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def plot_relative_volume(rows: Rows, path: Path | str, quantity: str = "necrosis_relvol",
                         title: str | None = None) -> Path:
    """Scatter of manual (reference) vs automatic (predicted) relative necrosis volume (% of the
    head) with the identity line and Pearson r (as seed 000, Figure 3). ``title`` names what was
    scored (e.g. ``"unet3d on avn-phantom"``); it heads the plot. The legend sits below the axes,
    so it never hides a point."""
    ref, pred = _volume_pairs(rows, quantity)
    fig, ax = _figure((5.0, 5.6))
    unit = "%" if quantity.endswith("relvol") else "cm³"
    ax.set_xlabel(f"manual (reference) necrosis volume [{unit}]")
    ax.set_ylabel(f"automatic (predicted) necrosis volume [{unit}]")
    heading = "Relative necrosis volume" if unit == "%" else "Necrosis volume"
    if len(ref) == 0:
        _note(ax, "no cases")
        ax.set_title(_titled(title, heading), fontsize="medium")
        return _save(fig, path)
    high = float(max(ref.max(), pred.max(), 1e-6)) * 1.05
    ax.plot([0, high], [0, high], color="0.5", linestyle="--", linewidth=1, label="identity")
    ax.scatter(ref, pred, s=18, alpha=0.8, color="tab:red", label=f"cases (n = {len(ref)})")
    low = -0.03 * high  # a margin, so that points on 0 (lesion-free hips) are not cut in half by the axes
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal")
    if len(ref) >= 2 and np.ptp(ref) > 0 and np.ptp(pred) > 0:
        r = float(np.corrcoef(ref, pred)[0, 1])
        heading += f"  (Pearson r = {r:.2f})"
    ax.set_title(_titled(title, heading), fontsize="medium")
    fig.legend(loc="outside lower center", ncols=2, fontsize="small")
    return _save(fig, path)


def _titled(title: str | None, heading: str) -> str:
    return f"{title}\n{heading}" if title else heading


def plot_bland_altman(rows: Rows, path: Path | str, quantity: str = "necrosis_relvol",
                      title: str | None = None) -> Path:
    """Bland–Altman plot of automatic − manual against their mean, with bias and 95 % limits.
    ``title`` names what was scored; the legend sits below the axes, clear of the points."""
    ref, pred = _volume_pairs(rows, quantity)
    fig, ax = _figure((6.0, 5.0))
    unit = "%" if quantity.endswith("relvol") else "cm³"
    ax.set_xlabel(f"mean of manual and automatic [{unit}]")
    ax.set_ylabel(f"automatic − manual [{unit}]")
    ax.set_title(_titled(title, "Bland–Altman, " + ("relative necrosis volume" if unit == "%" else "necrosis volume")),
                 fontsize="medium")
    if len(ref) == 0:
        _note(ax, "no cases")
        return _save(fig, path)
    mean, diff = (ref + pred) / 2, pred - ref
    ax.scatter(mean, diff, s=18, alpha=0.8, color="tab:blue", label=f"cases (n = {len(diff)})")
    bias = float(diff.mean())
    ax.axhline(bias, color="k", linewidth=1, label=f"bias {bias:+.2f}")
    if len(diff) >= 2:
        sd = float(diff.std(ddof=1))
        for sign in (-1, 1):
            ax.axhline(bias + sign * 1.96 * sd, color="0.4", linestyle="--", linewidth=1,
                       label="bias ± 1.96 SD" if sign > 0 else None)
    else:
        ax.text(0.02, 0.95, "one case: no limits of agreement", transform=ax.transAxes,
                va="top", color="0.4", fontsize="small")
    ax.axhline(0, color="0.8", linewidth=0.8)
    fig.legend(loc="outside lower center", ncols=3, fontsize="small")
    return _save(fig, path)


def plot_confusion(cm: Sequence[Sequence[int]] | np.ndarray, labels: Sequence[str], title: str,
                   path: Path | str) -> Path:
    """Confusion matrix (rows reference, columns prediction) with counts in the cells."""
    matrix = np.asarray(cm, dtype=float)
    labels = [str(label) for label in labels]
    size = max(3.5, 0.8 * len(labels) + 2.0)
    fig, ax = _figure((size, size))
    ax.set_title(title)
    if matrix.ndim != 2 or matrix.shape != (len(labels), len(labels)) or matrix.size == 0:
        _note(ax, f"no matrix to show (shape {matrix.shape}, {len(labels)} labels)")
        return _save(fig, path)
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(float(matrix.max()), 1.0))
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("prediction")
    ax.set_ylabel("reference")
    threshold = matrix.max() / 2 if matrix.max() > 0 else 1
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            value = matrix[i, j]
            text = f"{int(value)}" if float(value).is_integer() else f"{value:.2f}"
            ax.text(j, i, text, ha="center", va="center",
                    color="white" if value > threshold else "black")
    return _save(fig, path)
