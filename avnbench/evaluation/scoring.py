"""The one scoring implementation of the benchmark: overlap, surface distances, volumes and grades.

Definitions (DESIGN.md "Scoring", reference/metrics.md §0, docs/metrics.md):

- border of a mask: the mask minus its erosion with the 6-neighbour (face) structure, voxels
  outside the array counting as background;
- distances: Euclidean, between voxel centres, in mm, with ``spacing`` in array-axis order;
- ASSD: pooled mean over both border sets (Heimann 2009);
- HD95: the larger of the two directed 95th percentiles (linear interpolation);
- NSD at tau mm: the fraction of both border sets within tau (inclusive) of the other border.

The low-level functions take boolean arrays and return floats; ``NaN`` means "both masks empty"
(undefined), which :func:`score_case` flags so that summaries leave the case out and count it.
One empty mask gives the finite worst case: Dice 0, NSD 0, ASSD = HD95 = the image diagonal.
"""

from __future__ import annotations

import math
from functools import lru_cache
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy.spatial import cKDTree

from avnbench.errors import DataError

if TYPE_CHECKING:
    from avnbench.data.dataset import Case, CaseMeta, Dataset

#: Label sets scored per case: name -> label values that make up the mask.
LABEL_SETS: dict[str, tuple[int, ...]] = {"vital": (1,), "necrosis": (2,), "head": (1, 2)}
DEFAULT_TOLERANCE_MM = 1.0
#: Spatial tolerance of a geometry comparison between a prediction and its reference, in mm.
GEOMETRY_TOLERANCE_MM = 1e-3

EmptyState = Literal["none", "both", "pred", "ref"]


# --------------------------------------------------------------------------------------------
# masks and borders


def _check_pair(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> tuple:
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


# --------------------------------------------------------------------------------------------
# per case


def _check_label_map(labels: np.ndarray, what: str, case_id: str) -> np.ndarray:
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise DataError(f"case {case_id}: {what} label map is not integer-valued")
        labels = labels.astype(np.int16)
    if labels.size and (labels.min() < 0 or labels.max() > 2):
        found = sorted(int(v) for v in np.unique(labels) if v not in (0, 1, 2))
        raise DataError(
            f"case {case_id}: {what} label map has values {found} outside {{0, 1, 2}} "
            "(0 background, 1 vital head, 2 necrosis)"
        )
    return labels


def score_case(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    spacing: Sequence[float],
    case_meta: CaseMeta,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> dict[str, float | str | None]:
    """One flat row of case metrics: Dice, ASSD, HD95, NSD per label set, volumes, grades.

    ``spacing`` in mm in array-axis order (z, y, x). Label sets: vital (1), necrosis (2) and
    head (1 ∪ 2). Per label set ``empty_<set>`` says which side is empty ("none", "both",
    "pred", "ref"); for "both" the Dice and distance values are NaN and summaries leave them out.
    Volumes in cm³, relative necrosis volume in % of the head (0 when there is no head).
    Grades (Steinberg, JIC) are computed from each label map with :mod:`avnbench.evaluation.grading`;
    ``steinberg_given``/``jic_given``/``arco_ref`` are the case's reference grades from
    ``cases.json``.
    """
    case_id = case_meta.case_id
    pred_labels = _check_label_map(pred_labels, "predicted", case_id)
    ref_labels = _check_label_map(ref_labels, "reference", case_id)
    if pred_labels.shape != ref_labels.shape:
        raise DataError(
            f"case {case_id}: predicted label map shape {pred_labels.shape} != reference "
            f"{ref_labels.shape} (z, y, x); predict on the reference image grid"
        )
    spacing = tuple(float(s) for s in spacing)
    row: dict[str, float | str | None] = {
        "case_id": case_id,
        "patient_id": case_meta.patient_id,
        "side": case_meta.side,
    }
    for name, values in LABEL_SETS.items():
        pred_mask = np.isin(pred_labels, values)
        ref_mask = np.isin(ref_labels, values)
        surface = surface_metrics(pred_mask, ref_mask, spacing, tolerance_mm)
        row[f"dice_{name}"] = dice(pred_mask, ref_mask)
        row[f"assd_{name}_mm"] = surface["assd"]
        row[f"hd95_{name}_mm"] = surface["hd95"]
        row[f"nsd1mm_{name}" if tolerance_mm == 1.0 else f"nsd{tolerance_mm:g}mm_{name}"] = surface[
            "nsd"
        ]
        row[f"empty_{name}"] = empty_state(pred_mask, ref_mask)

    voxel_cm3 = float(np.prod(spacing)) / 1000.0
    for side, labels in (("ref", ref_labels), ("pred", pred_labels)):
        n_vital = int(np.count_nonzero(labels == 1))
        n_necrosis = int(np.count_nonzero(labels == 2))
        row[f"vital_cm3_{side}"] = n_vital * voxel_cm3
        row[f"necrosis_cm3_{side}"] = n_necrosis * voxel_cm3
        row[f"head_cm3_{side}"] = (n_vital + n_necrosis) * voxel_cm3
    for side, labels in (("ref", ref_labels), ("pred", pred_labels)):
        row[f"necrosis_relvol_{side}"] = relative_necrosis_percent(labels)

    row.update(_grades(pred_labels, ref_labels, spacing, case_meta))
    return row


def relative_necrosis_percent(labels: np.ndarray) -> float:
    """Necrosis volume in % of the femoral head (labels 1 ∪ 2), from voxel counts; 0 if no head."""
    n_vital = int(np.count_nonzero(labels == 1))
    n_necrosis = int(np.count_nonzero(labels == 2))
    if n_vital + n_necrosis == 0:
        return 0.0
    return 100.0 * n_necrosis / (n_vital + n_necrosis)


#: Grade of a label map without necrosis (Steinberg/JIC "stage 0"); ranks below the lowest grade.
NO_NECROSIS = "none"


def _grades(pred_labels, ref_labels, spacing, case_meta) -> dict[str, str | None]:
    """Steinberg and JIC grades of both label maps: a grade, "none" (no necrosis), or None
    (not gradable: JIC needs the case's landmarks)."""
    # Imported here: grading pulls in the slicing code, which scoring of distances never needs.
    from avnbench.evaluation import grading

    out: dict[str, str | None] = {}
    for side, labels in (("ref", ref_labels), ("pred", pred_labels)):
        has_necrosis = bool(np.any(labels == 2))
        out[f"steinberg_{side}"] = (
            grading.steinberg_extent(labels, spacing).grade if has_necrosis else NO_NECROSIS
        )
        if case_meta.landmarks is None:
            out[f"jic_{side}"] = None
        else:
            # No necrosis in the upper half of the mid-coronal slice gives no JIC type either.
            out[f"jic_{side}"] = grading.jic_type(labels, case_meta).type or NO_NECROSIS
    out["steinberg_given"] = case_meta.steinberg
    out["jic_given"] = case_meta.jic
    out["arco_ref"] = case_meta.arco
    return out


# --------------------------------------------------------------------------------------------
# many cases


def check_prediction_geometry(case: Case, image) -> None:
    """Raise DataError unless a SimpleITK prediction image lies on the case's reference grid."""
    expected = case.meta.geometry
    size = tuple(int(s) for s in image.GetSize())
    problems = []
    if size != tuple(expected.size_xyz):
        problems.append(f"size (x,y,z) {size} != {tuple(expected.size_xyz)}")
    else:
        spacing = np.asarray(image.GetSpacing())
        if np.any(np.abs(spacing - np.asarray(expected.spacing_xyz)) > 1e-4 * np.maximum(
            1.0, np.abs(spacing)
        )):
            problems.append(
                f"spacing (x,y,z) {tuple(round(s, 5) for s in spacing)} mm != "
                f"{tuple(expected.spacing_xyz)}"
            )
        if np.any(np.abs(np.asarray(image.GetOrigin()) - np.asarray(expected.origin))
                  > GEOMETRY_TOLERANCE_MM):
            problems.append(f"origin {tuple(round(o, 3) for o in image.GetOrigin())} != "
                            f"{tuple(expected.origin)}")
        if np.any(np.abs(np.asarray(image.GetDirection()) - np.asarray(expected.direction))
                  > 1e-4):
            problems.append("direction differs")
    if problems:
        raise DataError(
            f"case {case.case_id}: prediction geometry does not match the reference "
            f"({'; '.join(problems)}); resample the prediction onto the reference image grid"
        )


def score_predictions(
    items: Iterable[tuple[Case, np.ndarray]], tolerance_mm: float = DEFAULT_TOLERANCE_MM
) -> list[dict[str, float | str | None]]:
    """Score (case, predicted label array (z, y, x)) pairs against each case's reference labels."""
    rows = []
    for case, pred_labels in items:
        ref_labels = case.label_array()
        rows.append(score_case(pred_labels, ref_labels, case.spacing, case.meta, tolerance_mm))
    return rows


def prediction_path(pred_dir: Path, case_id: str) -> Path:
    """Where a predicted label map of a case lives in a prediction folder (refused, one line,
    if it resolves outside ``pred_dir``, e.g. through a symbolic link)."""
    from avnbench.data.dataset import FILE_ENDING, path_inside

    return path_inside(Path(pred_dir), f"{case_id}{FILE_ENDING}", Path(pred_dir))


def score_folder(
    pred_dir: Path | str,
    dataset: Dataset,
    case_ids: Sequence[str] | None = None,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> list[dict[str, float | str | None]]:
    """Score ``{case}.nii.gz`` label maps in ``pred_dir`` against a dataset's reference labels.

    Every case of the dataset (or of ``case_ids``) needs a prediction on its reference grid;
    a missing, empty, truncated or non-label file or a geometry mismatch is a DataError naming
    the case. Predictions and references are read by :func:`avnbench.data.imageio.read_image`.
    """
    import SimpleITK as sitk

    from avnbench.data.imageio import read_image

    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DataError(f"{pred_dir}: prediction folder not found")
    cases = dataset.cases if case_ids is None else dataset.subset(list(case_ids))
    if not cases:
        raise DataError(f"{dataset.root}: the dataset has no cases to score")
    missing = [c.case_id for c in cases if not prediction_path(pred_dir, c.case_id).is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(
            f"{pred_dir}: no prediction for case {shown} (expected "
            f"{prediction_path(pred_dir, missing[0]).name}); predict every case or pass the "
            "cases to score"
        )

    def items():
        for case in cases:
            image = read_image(prediction_path(pred_dir, case.case_id), kind="label")
            check_prediction_geometry(case, image)
            yield case, sitk.GetArrayFromImage(image)

    return score_predictions(items(), tolerance_mm)
