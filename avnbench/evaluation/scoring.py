"""The one scoring implementation of the benchmark: a case's label maps to one row of scores.

Per label set (vital, necrosis, head) the overlap and surface distances of
:mod:`avnbench.evaluation.surface`, then volumes and the grades computed from each label map
(DESIGN.md "Scoring", docs/metrics.md). A label set empty on both sides is flagged so that
summaries leave the case out and count it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from avnbench.errors import DataError
from avnbench.evaluation.surface import DEFAULT_TOLERANCE_MM, dice, empty_state, surface_metrics

if TYPE_CHECKING:
    from avnbench.data.dataset import Case, CaseMeta, Dataset

#: Label sets scored per case: name -> label values that make up the mask.
LABEL_SETS: dict[str, tuple[int, ...]] = {"vital": (1,), "necrosis": (2,), "head": (1, 2)}
#: Spatial tolerance of a geometry comparison between a prediction and its reference, in mm.
GEOMETRY_TOLERANCE_MM = 1e-3


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
