"""Overlap and surface distances of two binary masks: Dice, ASSD, HD95 and NSD.

Definitions (DESIGN.md "Scoring", reference/metrics.md §0, docs/metrics.md):

- border of a mask: the mask minus its erosion with the 6-neighbour (face) structure, voxels
  outside the array counting as background;
- distances: Euclidean, between voxel centres, in mm, with ``spacing`` in array-axis order;
- ASSD: pooled mean over both border sets (Heimann 2009);
- HD95: the larger of the two directed 95th percentiles (linear interpolation);
- NSD at tau mm: the fraction of both border sets within tau (inclusive) of the other border.

The functions take boolean arrays and return floats; ``NaN`` means "both masks empty"
(undefined), which :func:`avnbench.evaluation.scoring.score_case` flags so that summaries leave
the case out and count it. One empty mask gives the finite worst case: Dice 0, NSD 0,
ASSD = HD95 = the image diagonal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

DEFAULT_TOLERANCE_MM = 1.0

EmptyState = Literal["none", "both", "pred", "ref"]


# --------------------------------------------------------------------------------------------
# masks and borders


def _check_pair(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> tuple:
    """Both masks as bool arrays of one shape and the spacing (mm) as one float per axis."""
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"pred shape {pred.shape} != ref shape {ref.shape}")
    spacing_arr = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if spacing_arr.size == 1:
        spacing_arr = np.repeat(spacing_arr, pred.ndim)
    if spacing_arr.size != pred.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match {pred.ndim}-D arrays")
    if not np.all(spacing_arr > 0):
        raise ValueError(f"spacing must be positive mm, got {tuple(spacing)}")
    return pred, ref, spacing_arr


def empty_state(pred: np.ndarray, ref: np.ndarray) -> EmptyState:
    """Which side is empty: "none", "both", "pred" (only the prediction) or "ref"."""
    has_pred, has_ref = bool(np.any(pred)), bool(np.any(ref))
    if has_pred and has_ref:
        return "none"
    if not has_pred and not has_ref:
        return "both"
    return "pred" if not has_pred else "ref"


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length of the image's diagonal in mm (array extent x spacing); the worst-case distance."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def _union_crop(pred: np.ndarray, ref: np.ndarray, margin: Sequence[int]) -> tuple:
    """Both masks cropped to their union's bounding box and padded with background voxels.

    Exactly equivalent for borders and distances: everything outside the box is background in
    both masks, and the array edge counts as background too. ``margin`` voxels per axis (>= 1).
    """
    # Reduce along the first axis on contiguous rows, then only within the occupied slab.
    n_first = pred.shape[0]
    rows_hit = pred.reshape(n_first, -1).any(axis=1) | ref.reshape(n_first, -1).any(axis=1)
    first = np.flatnonzero(rows_hit)
    box = [slice(int(first[0]), int(first[-1]) + 1)]
    projection = (pred[box[0]] | ref[box[0]]).any(axis=0)
    for axis in range(projection.ndim):
        other = tuple(a for a in range(projection.ndim) if a != axis)
        hit = np.flatnonzero(projection.any(axis=other) if other else projection)
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    box_t = tuple(box)
    pad = [(m, m) for m in margin]
    return np.pad(pred[box_t], pad), np.pad(ref[box_t], pad)


def _border_of_padded(padded: np.ndarray) -> np.ndarray:
    """Border voxels of a mask whose outer one-voxel frame is background (result unpadded).

    Same as ``mask & ~binary_erosion(mask, generate_binary_structure(ndim, 1), border_value=0)``
    but with shifted views and logical ops, several times faster than a generic erosion.
    """
    ndim = padded.ndim
    centre = (slice(1, -1),) * ndim
    mask = padded[centre]
    interior = mask.copy()
    for axis in range(ndim):
        for lo, hi in ((None, -2), (2, None)):
            shifted = list(centre)
            shifted[axis] = slice(lo, hi)
            interior &= padded[tuple(shifted)]
    return mask & ~interior


def border(mask: np.ndarray) -> np.ndarray:
    """Border voxels of a boolean mask (6-neighbour erosion, array edge counts as outside)."""
    mask = np.asarray(mask, dtype=bool)
    return _border_of_padded(np.pad(mask, 1))


# Most border voxels have a border voxel of the other mask within a few voxels. Looking those
# up at lattice offsets sorted by length gives their exact nearest distance far faster than a
# KD-tree; only the rest (farther than the offsets reach) go to a KD-tree.
_MAX_OFFSET_BOX = 4000  # voxels in the box of lattice offsets looked at
_SINGLE_OFFSETS = 12  # shortest offsets, tested one at a time, dropping resolved voxels
_SHELLS = (0.25, 0.5, 0.75, 1.0)  # then shells out to these fractions of the radius, batched
_GATHER_BUDGET = 1 << 21  # voxel lookups per batched chunk (bounds its memory)


@lru_cache(maxsize=32)
def _local_offsets(spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Lattice offsets sorted by length in mm, their lengths, the reach per axis, the groups.

    Every offset no longer than the longest one kept is included, so the first hit in this order
    is the nearest voxel within that radius. Groups (slices of the offsets) are searched one
    after the other: the shortest one by one, then shells of growing radius in batches.
    """
    spacing_arr = np.asarray(spacing)
    radius = 4.0 * float(spacing_arr.max())
    while True:
        reach = np.floor(radius / spacing_arr + 1e-9).astype(int)
        if np.prod(2 * reach + 1) <= _MAX_OFFSET_BOX or radius <= spacing_arr.min():
            break
        radius *= 0.8
    grids = np.meshgrid(*(np.arange(-r, r + 1) for r in reach), indexing="ij")
    offsets = np.stack([g.ravel() for g in grids], axis=1)
    lengths = np.sqrt(((offsets * spacing_arr) ** 2).sum(axis=1))
    keep = (lengths > 0) & (lengths <= radius * (1 + 1e-12))
    offsets, lengths = offsets[keep], lengths[keep]
    order = np.argsort(lengths, kind="stable")
    offsets, lengths = offsets[order], lengths[order]
    n_single = min(_SINGLE_OFFSETS, len(lengths))
    groups = [slice(i, i + 1) for i in range(n_single)]
    start = n_single
    for fraction in _SHELLS:
        stop = max(start, int(np.searchsorted(lengths, radius * fraction, side="right")))
        if stop > start:
            groups.append(slice(start, stop))
        start = stop
    return offsets, lengths, reach, groups


def _distances_to_border(
    source: np.ndarray,
    target: np.ndarray,
    spacing: np.ndarray,
    flat_offsets: np.ndarray,
    offset_lengths: np.ndarray,
    groups: list[slice],
) -> np.ndarray:
    """For each True voxel of ``source`` (C order), the distance in mm to the nearest True voxel
    of ``target``. Both arrays have a background frame at least as wide as the offsets reach.
    """
    target_flat = target.ravel()
    points = np.flatnonzero(source)
    distances = np.zeros(len(points))
    todo = np.flatnonzero(~target_flat[points])  # voxels on both borders are at distance 0
    todo_points = points[todo]
    for group in groups:
        if not len(todo):
            break
        steps, lengths = flat_offsets[group], offset_lengths[group]
        rows = max(1, _GATHER_BUDGET // len(steps))
        found = np.zeros(len(todo), dtype=bool)
        for start in range(0, len(todo), rows):
            chunk = slice(start, start + rows)
            hits = target_flat[todo_points[chunk, None] + steps[None, :]]
            first = hits.argmax(axis=1)  # the shortest offset that hits
            any_hit = hits[np.arange(len(first)), first]
            distances[todo[chunk][any_hit]] = lengths[first[any_hit]]
            found[chunk] = any_hit
        if found.any():
            todo, todo_points = todo[~found], todo_points[~found]
    if len(todo):
        coords = np.column_stack(np.unravel_index(todo_points, source.shape)) * spacing
        tree = cKDTree(np.argwhere(target) * spacing, balanced_tree=False, compact_nodes=False)
        workers = -1 if len(coords) > 20_000 else 1  # threads cost more than they save on few
        distances[todo] = tree.query(coords, k=1, workers=workers)[0]
    return distances


def directed_surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from each border voxel of pred to ref's border, and from ref's to pred's.

    Both masks must be non-empty. Returns float64 arrays (pred_to_ref, ref_to_pred) in the
    C order of the border voxels.
    """
    pred, ref, spacing_arr = _check_pair(pred, ref, spacing)
    if not pred.any() or not ref.any():
        raise ValueError("directed surface distances need two non-empty masks")
    offsets, lengths, reach, groups = _local_offsets(tuple(spacing_arr.tolist()))
    pred_c, ref_c = _union_crop(pred, ref, reach + 1)
    border_pred, border_ref = _border_of_padded(pred_c), _border_of_padded(ref_c)
    flat_offsets = offsets @ np.array(border_pred.strides, dtype=np.int64) // border_pred.itemsize
    args = (spacing_arr, flat_offsets, lengths, groups)
    return (
        _distances_to_border(border_pred, border_ref, *args),
        _distances_to_border(border_ref, border_pred, *args),
    )


# --------------------------------------------------------------------------------------------
# metrics


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient 2|P∩R| / (|P|+|R|) on voxel counts; NaN when both masks are empty."""
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"pred shape {pred.shape} != ref shape {ref.shape}")
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(ref))
    if total == 0:
        return float("nan")
    return 2.0 * int(np.count_nonzero(pred & ref)) / total


def surface_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> dict[str, float]:
    """ASSD (mm), HD95 (mm) and NSD at ``tolerance_mm`` (fraction 0..1) from one computation.

    Keys ``assd``, ``hd95``, ``nsd``. Both masks empty: all NaN (undefined). One empty: ASSD and
    HD95 are the image diagonal in mm, NSD is 0.
    """
    pred, ref, spacing_arr = _check_pair(pred, ref, spacing)
    state = empty_state(pred, ref)
    if state == "both":
        return {"assd": float("nan"), "hd95": float("nan"), "nsd": float("nan")}
    if state != "none":
        worst = image_diagonal_mm(pred.shape, spacing_arr)
        return {"assd": worst, "hd95": worst, "nsd": 0.0}
    pred_to_ref, ref_to_pred = directed_surface_distances(pred, ref, spacing_arr)
    n_total = len(pred_to_ref) + len(ref_to_pred)
    within = int(np.count_nonzero(pred_to_ref <= tolerance_mm)) + int(
        np.count_nonzero(ref_to_pred <= tolerance_mm)
    )
    return {
        "assd": float((pred_to_ref.sum() + ref_to_pred.sum()) / n_total),
        "hd95": float(max(np.percentile(pred_to_ref, 95), np.percentile(ref_to_pred, 95))),
        "nsd": within / n_total,
    }


def assd(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """Average symmetric surface distance in mm (pooled over both border sets)."""
    return surface_metrics(pred, ref, spacing)["assd"]


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile Hausdorff distance in mm: max of the two directed 95th percentiles."""
    return surface_metrics(pred, ref, spacing)["hd95"]


def nsd(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> float:
    """Normalised surface Dice: fraction of both borders within ``tolerance_mm`` of the other."""
    return surface_metrics(pred, ref, spacing, tolerance_mm)["nsd"]
