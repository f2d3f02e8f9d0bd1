"""Run plots (PNG): relative necrosis volume manual vs automatic, Bland–Altman, confusion matrix;
leaderboard figures (SVG text): rank blob plot, significance map, per-case dots and boxes,
Bland–Altman panels per method.

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


# --------------------------------------------------------------------------------------------
# leaderboard figures (SVG, deterministic: fixed hash salt, no date in the metadata)


def svg_text(fig, salt: str) -> str:
    """The figure as SVG text; ``salt`` fixes matplotlib's element ids, so output is reproducible
    and ids differ between figures embedded in one page. Text stays text (``svg.fonttype``
    "none"): searchable and selectable in the page, and no figure carries its own copy of every
    glyph's outline (which made a board's page mostly repeated font paths)."""
    import io

    from matplotlib import rc_context

    buffer = io.StringIO()
    with rc_context({"svg.hashsalt": f"avnbench-{salt}", "svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: the svg goes inline


def _short(label: str, width: int = 30) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def plot_rank_blobs(methods: Sequence[str], frequencies: np.ndarray, ranks: Sequence[int],
                    intervals: Sequence[tuple[int, int]], title: str, salt: str) -> str:
    """challengeR's blob plot: for each method (x) the share of bootstrap resamples giving each
    rank (y, blob area), the point rank (cross) and the rank's 95 % interval (line)."""
    k = len(methods)
    fig, ax = _figure((max(4.5, 1.1 * k + 2.0), 4.2))
    ax.set_title(title, fontsize="medium")
    if k == 0:
        _note(ax, "no methods")
        return svg_text(fig, salt)
    order = np.argsort(np.asarray(ranks), kind="stable")
    for x, j in enumerate(order):
        share = frequencies[j]
        present = np.flatnonzero(share > 0)
        ax.scatter(np.full(len(present), x), present + 1, s=600 * share[present], color="tab:blue", alpha=0.55,
                   linewidths=0)
        lo, hi = intervals[j]
        ax.vlines(x, lo, hi, color="k", linewidth=1.2)
        ax.scatter([x], [ranks[j]], marker="x", color="k", s=30, zorder=3)
    ax.set_xticks(range(k), [_short(methods[j]) for j in order], rotation=30, ha="right", fontsize="small")
    ax.set_yticks(range(1, k + 1))
    ax.set_xlim(-0.6, k - 0.4)
    ax.set_ylim(k + 0.6, 0.4)
    ax.set_ylabel("rank (1 = best)")
    ax.scatter([], [], s=120, color="tab:blue", alpha=0.55, label="share of resamples")
    ax.scatter([], [], marker="x", color="k", label="rank on all patients")
    ax.plot([], [], color="k", label="95 % interval")
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return svg_text(fig, salt)


def plot_significance_map(methods: Sequence[str], p_holm: np.ndarray, order: Sequence[int], title: str,
                          salt: str, alpha: float = 0.05) -> str:
    """challengeR's significance map: cell (row i, column j) dark when method i is significantly
    better than method j (Holm-corrected one-sided test), with the adjusted p-value printed."""
    k = len(methods)
    size = max(4.0, 0.5 * k + 2.5)
    fig, ax = _figure((size + 1.0, size))
    ax.set_title(title, fontsize="medium")
    if k < 2:
        _note(ax, "fewer than two methods: nothing to compare")
        return svg_text(fig, salt)
    order = list(order)
    p = np.asarray(p_holm, dtype=float)[np.ix_(order, order)]
    significant = np.where(np.isfinite(p) & (p < alpha), 1.0, 0.0)
    np.fill_diagonal(significant, np.nan)
    ax.set_facecolor("0.85")  # the diagonal (NaN) shows the background: no self-comparison
    ax.imshow(significant, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            text = "–" if not np.isfinite(p[i, j]) else f"{p[i, j]:.2g}"
            ax.text(j, i, text, ha="center", va="center", fontsize="x-small",
                    color="white" if significant[i, j] == 1 else "black")
    labels = [_short(methods[j]) for j in order]
    ax.set_xticks(range(k), labels, rotation=30, ha="right", fontsize="small")
    ax.set_yticks(range(k), labels, fontsize="small")
    ax.set_xlabel("… than this method")
    ax.set_ylabel("this method is better …")
    return svg_text(fig, salt)


def plot_case_dots(methods: Sequence[str], values: np.ndarray, order: Sequence[int], ylabel: str, title: str,
                   salt: str) -> str:
    """Per-case values of each method: a box (quartiles, whiskers at 1.5 IQR) and every hip as
    a dot (deterministic jitter), with the number of hips under each box."""
    k = len(methods)
    fig, ax = _figure((max(4.5, 1.0 * k + 2.0), 4.2))
    ax.set_title(title, fontsize="medium")
    ax.set_ylabel(ylabel)
    columns = [np.asarray(values[:, j], dtype=float) for j in order]
    columns = [c[np.isfinite(c)] for c in columns]
    if not any(len(c) for c in columns):
        _note(ax, "no case with a value")
        return svg_text(fig, salt)
    ax.boxplot([c if len(c) else [np.nan] for c in columns], positions=range(k), widths=0.5, showfliers=False,
               medianprops={"color": "tab:red"})
    rng = np.random.default_rng(0)
    for x, column in enumerate(columns):
        ax.scatter(x + rng.uniform(-0.15, 0.15, len(column)), column, s=10, color="k", alpha=0.6, zorder=3)
    labels = [f"{_short(methods[j])}\nn = {len(c)}" for j, c in zip(order, columns)]
    ax.set_xticks(range(k), labels, rotation=30, ha="right", fontsize="small")
    return svg_text(fig, salt)


def plot_bland_altman_panels(per_method: dict[str, Rows], title: str, salt: str,
                             quantity: str = "necrosis_relvol") -> str:
    """Bland–Altman (automatic − manual against their mean) of every method, one panel each,
    with the bias and the 95 % limits of agreement, on shared axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(per_method)
    cols = min(3, max(1, len(names)))
    nrows = max(1, -(-len(names) // cols))
    fig = Figure(figsize=(3.6 * cols, 3.0 * nrows + 0.6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize="medium")
    axes = fig.subplots(nrows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    unit = "%" if quantity.endswith("relvol") else "cm³"
    for ax, name in zip(axes, names):
        ref, pred = _volume_pairs(per_method[name], quantity)
        ax.set_title(_short(name, 30), fontsize="small")
        if len(ref) == 0:
            _note(ax, "no cases")
            continue
        mean, diff = (ref + pred) / 2, pred - ref
        ax.scatter(mean, diff, s=12, alpha=0.8, color="tab:blue")
        bias = float(diff.mean())
        ax.axhline(bias, color="k", linewidth=1)
        text = f"n = {len(diff)}, bias {bias:+.2f}"
        if len(diff) >= 2:
            sd = float(diff.std(ddof=1))
            for sign in (-1, 1):
                ax.axhline(bias + sign * 1.96 * sd, color="0.4", linestyle="--", linewidth=1)
            text += f"\nLoA ±{1.96 * sd:.2f}"
        ax.axhline(0, color="0.8", linewidth=0.8)
        ax.text(0.02, 0.97, text, transform=ax.transAxes, va="top", fontsize="x-small")
    for ax in axes[len(names):]:
        ax.set_axis_off()
    for ax in axes[: len(names)]:
        ax.set_xlabel(f"mean of manual and automatic [{unit}]", fontsize="x-small")
        ax.set_ylabel(f"automatic − manual [{unit}]", fontsize="x-small")
    return svg_text(fig, salt)
