"""Prediction-vs-reference overlays of a run's worst and best case (PNG), for its MLflow run.

A reviewer's first question about a Dice is what it looks like. For each segmentation run the
tracking plugin draws the case with the lowest and the one with the highest necrosis Dice (among
hips whose reference has necrosis; head Dice when none has) on the mid-coronal plane through the
head centre (:func:`avnbench.evaluation.slices.mid_coronal_slice`, the plane the grading reads):
the image, the reference contours and the prediction's. Drawn with matplotlib's object API on
the Agg canvas, like :mod:`avnbench.reporting.plots`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avnbench.reporting.plots import DPI

REFERENCE_COLOR = "tab:green"
PREDICTION_COLOR = "tab:red"


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def pick_cases(rows: Sequence[Mapping[str, Any]]) -> tuple[str, list[tuple[str, Mapping[str, Any]]]]:
    """``(metric, [("worst", row), ("best", row)])``: by ``dice_necrosis`` over the rows whose
    reference has necrosis, else by ``dice_head``; one entry when a single case qualifies, none
    when no row has the metric. Ties keep the first row (stable order)."""
    with_necrosis = [r for r in rows if _number(r.get("necrosis_cm3_ref")) > 0
                     and math.isfinite(_number(r.get("dice_necrosis")))]
    metric, pool = ("dice_necrosis", with_necrosis) if with_necrosis else (
        "dice_head", [r for r in rows if math.isfinite(_number(r.get("dice_head")))])
    if not pool:
        return metric, []
    worst = min(pool, key=lambda r: _number(r[metric]))
    best = max(pool, key=lambda r: _number(r[metric]))
    picked = [("worst", worst)] + ([("best", best)] if best is not worst else [])
    return metric, picked


def plot_overlay(image: np.ndarray, reference: np.ndarray, prediction: np.ndarray, meta,
                 title: str, path: Path | str) -> Path:
    """Mid-coronal overlay of one case: image (grey), reference and predicted head and necrosis
    contours. ``image``, ``reference`` and ``prediction`` are (z, y, x) arrays on the case's grid;
    ``meta`` its :class:`CaseMeta` (landmarks needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from avnbench.evaluation.slices import mid_coronal_slice

    grey = mid_coronal_slice(np.asarray(image, dtype=float), meta, order=1)
    ref = mid_coronal_slice(np.asarray(reference), meta).array
    pred = mid_coronal_slice(np.asarray(prediction), meta).array
    h, v = grey.grid_mm()
    fig = Figure(figsize=(5.0, 5.6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grey.array, cmap="gray", origin="lower", extent=(h.min(), h.max(), v.min(), v.max()))
    handles = []
    for labels, color, who in ((ref, REFERENCE_COLOR, "reference"), (pred, PREDICTION_COLOR, "prediction")):
        for mask, style, what in ((labels >= 1, "-", "head"), (labels == 2, "--", "necrosis")):
            if mask.any() and not mask.all():
                ax.contour(h, v, mask.astype(float), levels=[0.5], colors=color, linestyles=style, linewidths=1.2)
            handles.append(Line2D([], [], color=color, linestyle=style, label=f"{who} {what}"))
    ax.set_xlabel("lateral [mm]")
    ax.set_ylabel("superior [mm]")
    ax.set_title(title, fontsize="medium")
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize="small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def write_overlays(rows: Sequence[Mapping[str, Any]], dataset_root: Path, predictions: Mapping[int, Path],
                   method: str, dataset_name: str, out: Path) -> list[Path]:
    """Overlays of the worst and best case into ``out`` (``overlay_worst_<case>.png``, ...).

    ``predictions`` maps each fold to the folder of its ``{case}.nii.gz`` label maps. A case
    whose prediction file is gone or that has no landmarks is skipped: the overlays illustrate
    the run, its numbers do not depend on them.
    """
    import SimpleITK as sitk

    from avnbench.data.dataset import load_dataset
    from avnbench.errors import AvnbenchError
    from avnbench.evaluation.scoring import prediction_path

    metric, picked = pick_cases(rows)
    if not picked:
        return []
    dataset = load_dataset(dataset_root)
    written = []
    for which, row in picked:
        case_id = str(row["case_id"])
        folder = predictions.get(int(row["fold"])) if "fold" in row else None
        try:
            case = dataset[case_id]
            if folder is None or case.meta.landmarks is None:
                continue
            pred_file = prediction_path(folder, case_id)
            if not pred_file.is_file():
                continue
            prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_file)))
            title = (f"{method} on {dataset_name}\n{case_id}, {which} of the run by "
                     f"{metric.replace('_', ' ')}: {_number(row[metric]):.3f}")
            written.append(plot_overlay(case.image_array(), case.label_array(), prediction, case.meta, title,
                                        out / f"overlay_{which}_{case_id}.png"))
        except (AvnbenchError, KeyError, RuntimeError, OSError):  # RuntimeError: SimpleITK read errors
            continue
    return written
