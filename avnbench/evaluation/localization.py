"""Does a classifier look at the lesion? Heat-map localisation scores on the mid-coronal slice.

Seed study 004 claims its CNN "correctly locates the necrotic area". The score here makes that
claim measurable: take the hottest tenth of a class-activation heat map and ask which fraction
of it lies on reference necrosis. The heat map and the reference slice share one grid, the
default grid of :func:`avnbench.evaluation.slices.mid_coronal_slice`.
"""

from __future__ import annotations

import numpy as np

NECROSIS_LABEL = 2
TOP_PERCENTILE = 90.0


def heatmap_top_decile_on_necrosis(heatmap: np.ndarray, ref_slice: np.ndarray) -> float | None:
    """Fraction (0–1) of the heat map's top-decile pixels that lie on reference necrosis.

    ``heatmap`` and ``ref_slice`` (the reference label slice, values in {0, 1, 2}) are 2-D
    arrays on the same grid. The top decile is every pixel whose heat is at or above the 90th
    percentile (linear interpolation) of the heat map's finite values; non-finite pixels
    (NaN, inf) count as outside the image and are never part of it.

    Ties: pixels tied at the threshold are all included, but pixels at the map's minimum never
    are (Grad-CAM maps are often exactly 0 on most of the image; a map that is hot on 5 % of the
    pixels has a top "decile" of those 5 %). A constant heat map selects the whole image and so
    scores the necrosis' share of the image: the chance level of a map that localises nothing.

    Returns None when the slice has no necrosis (nothing to locate) or the heat map has no
    finite pixel (nothing that points anywhere).
    """
    heat = np.asarray(heatmap, dtype=float)
    ref = np.asarray(ref_slice)
    if heat.ndim != 2 or heat.shape != ref.shape:
        raise ValueError(
            f"heat map shape {heat.shape} must equal the reference slice shape {ref.shape} "
            "(both 2-D, on the default mid-coronal grid)"
        )
    necrosis = ref == NECROSIS_LABEL
    inside = np.isfinite(heat)
    if not necrosis.any() or not inside.any():
        return None
    values = heat[inside]
    lowest, highest = values.min(), values.max()
    if lowest == highest:
        top = inside
    else:
        threshold = np.percentile(values, TOP_PERCENTILE)
        # threshold <= highest and highest > lowest, so `top` always holds the maximum
        top = inside & (heat >= threshold) & (heat > lowest)
    return float(np.count_nonzero(top & necrosis) / np.count_nonzero(top))
