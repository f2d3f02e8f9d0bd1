"""A PNG preview of one case: mid-axial and mid-coronal planes with the labels overlaid.

The planes go through the head centre along the patient axes of the case's landmarks
(:mod:`avnbench.evaluation.slices`), on square pixels whatever the voxel spacing; lateral is to the right
in both panels, anterior up in the axial one, superior up in the coronal one. The coronal panel
also shows the JIC boundaries (medial end of the weight-bearing portion, the two trisection
lines and the acetabular edge). A case without landmarks is shown on the array's middle slices.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from avnbench.data.dataset import Case, Dataset, load_dataset
from avnbench.data.files import make_folder, temporary_sibling
from avnbench.errors import ConfigError, DataError

#: Most pixels along one side of a panel; finer ``pixel_mm`` would only allocate memory.
MAX_PANEL_PIXELS = 4096
VITAL_RGBA = (0.15, 0.75, 0.35, 0.35)
NECROSIS_RGBA = (0.95, 0.15, 0.1, 0.55)


def _planes(case: Case, image: np.ndarray, labels: np.ndarray, pixel_mm: float):
    """[(panel title, image 2-D, labels 2-D, extent mm or None, h label, v label)]."""
    from avnbench.evaluation.slices import mid_coronal_slice, plane_slice

    meta = case.meta
    if meta.landmarks is None:
        z, y = image.shape[0] // 2, image.shape[1] // 2
        sz, sy, sx = meta.geometry.spacing_zyx
        h_extent = image.shape[2] * sx
        return [
            ("axial (array middle slice)", image[z], labels[z], (0, h_extent, 0, image.shape[1] * sy), "array x (mm)", "array y (mm)"),
            ("coronal (array middle row)", image[:, y], labels[:, y], (0, h_extent, 0, image.shape[0] * sz), "array x (mm)", "array z (mm)"),
        ]
    axes = meta.landmarks.patient_axes
    out = []
    for title, make in (
        ("mid-axial", lambda vol, order: plane_slice(vol, meta, axes.lateral, axes.anterior, pixel_mm, order=order)),
        ("mid-coronal", lambda vol, order: mid_coronal_slice(vol, meta, pixel_mm, order=order)),
    ):
        img, lab = make(image, 1), make(labels, 0)
        extent = (img.h_mm[0] - pixel_mm / 2, img.h_mm[-1] + pixel_mm / 2, img.v_mm[0] - pixel_mm / 2, img.v_mm[-1] + pixel_mm / 2)
        v_name = "anterior (mm)" if title == "mid-axial" else "superior (mm)"
        out.append((title, img.array, lab.array, extent, "lateral (mm)", v_name))
    return out


def panel_pixels(case: Case, pixel_mm: float) -> int:
    """Pixels along one side of a panel of ``case`` at ``pixel_mm`` (square, as the slices)."""
    from avnbench.evaluation.slices import DEFAULT_MARGIN_MM

    if case.meta.landmarks is None:
        return max(case.meta.geometry.size_xyz)  # array middle slices: pixel_mm plays no part
    half = case.meta.landmarks.head_radius_mm + DEFAULT_MARGIN_MM
    return 2 * int(math.floor(half / pixel_mm + 1e-9)) + 1


def render_preview(
    dataset: Dataset | Path | str, case_id: str, out_png: Path | str, pixel_mm: float = 0.4, force: bool = False
) -> Path:
    """Write a PNG of case ``case_id``: mid-axial and mid-coronal planes (``pixel_mm`` square
    pixels) with vital and necrosis overlaid; the title names the case and the dataset, and says
    "synthetic phantom" for a synthetic one. An existing PNG is replaced only with ``force``;
    a ``pixel_mm`` that would make a panel wider than MAX_PANEL_PIXELS is refused. Returns the
    PNG's path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    out_png = Path(out_png)
    if not (math.isfinite(pixel_mm) and pixel_mm > 0):
        raise ConfigError(f"--pixel-mm must be a positive number of mm, got {pixel_mm}")
    if out_png.exists() and not force:
        raise ConfigError(f"--out {out_png}: exists; pass --force to overwrite it or choose another file")
    if not isinstance(dataset, Dataset):
        dataset = load_dataset(dataset)
    case = dataset[case_id]
    meta = case.meta
    n = panel_pixels(case, pixel_mm)
    if n > MAX_PANEL_PIXELS:
        from avnbench.evaluation.slices import DEFAULT_MARGIN_MM

        finest = (meta.landmarks.head_radius_mm + DEFAULT_MARGIN_MM) * 2 / (MAX_PANEL_PIXELS - 1)
        raise ConfigError(
            f"--pixel-mm {pixel_mm:g}: a panel would be {n} x {n} pixels, over the limit of "
            f"{MAX_PANEL_PIXELS}; use --pixel-mm {math.ceil(finest * 1000) / 1000:g} or more"
        )
    image, labels = case.image_array(), case.label_array()
    overlay_cmap = ListedColormap([(0, 0, 0, 0), VITAL_RGBA, NECROSIS_RGBA])

    fig = Figure(figsize=(10, 5.6), dpi=110)
    FigureCanvasAgg(fig)
    planes = _planes(case, image, labels, pixel_mm)
    finite = image[np.isfinite(image)]
    low, high = (np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0))
    for k, (title, img, lab, extent, h_name, v_name) in enumerate(planes):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.imshow(img, cmap="gray", vmin=low, vmax=high, origin="lower", extent=extent, interpolation="nearest")
        ax.imshow(lab, cmap=overlay_cmap, vmin=0, vmax=2, origin="lower", extent=extent, interpolation="nearest")
        ax.set_title(title)
        ax.set_xlabel(h_name)
        ax.set_ylabel(v_name)
        if title == "mid-coronal":
            _draw_jic_boundaries(ax, meta)
    fig.suptitle(preview_title(dataset, case), fontsize=11)
    fig.legend(
        handles=[Patch(color=VITAL_RGBA, label="vital (1)"), Patch(color=NECROSIS_RGBA, label="necrosis (2)")],
        loc="lower center",
        ncol=2,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    make_folder(out_png.parent, "--out")
    # Written beside and renamed, so a failed save never leaves half a PNG in place.
    partial = temporary_sibling(out_png)
    try:
        fig.savefig(partial, format="png")
        os.replace(partial, out_png)
    except OSError as e:
        raise DataError(f"{out_png}: cannot write ({e.strerror or e}); the disk may be full or the folder not writable") from None
    finally:
        partial.unlink(missing_ok=True)
    return out_png


def preview_title(dataset: Dataset, case: Case) -> str:
    """Two lines: dataset, case, side, patient and provenance ("synthetic phantom" or "imported
    data"); then the reference grades and whether the landmarks are estimated."""
    meta = case.meta
    provenance = "synthetic phantom" if dataset.synthetic else "imported data"
    grades = f"Steinberg {meta.steinberg or '-'}, JIC {meta.jic or '-'}, ARCO {meta.arco or '-'}"
    if meta.landmarks is None:
        note = " (no landmarks: array middle slices)"
    elif meta.landmarks.estimated:
        note = " (landmarks estimated)"
    else:
        note = ""
    return (
        f"{dataset.name}: case {case.case_id} ({meta.side} hip, patient {meta.patient_id}) — "
        f"{provenance}\n{grades}{note}"
    )


def _draw_jic_boundaries(ax, meta) -> None:
    from avnbench.evaluation.grading import jic_boundaries_mm

    boundaries = jic_boundaries_mm(meta)
    if boundaries is None:
        return
    x_med, x1, x2, x_edge = boundaries
    for x, style, name in ((x_med, ":", "WB medial"), (x1, "--", None), (x2, "--", None), (x_edge, "-", "acetabular edge")):
        ax.axvline(x, color="yellow", linestyle=style, linewidth=0.8, alpha=0.8)
        if name:
            ax.text(x, ax.get_ylim()[1], f" {name}", color="yellow", fontsize=7, rotation=90, ha="right", va="top")
