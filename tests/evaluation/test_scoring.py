"""Case scoring: volumes, grades and empty masks of reference/metrics.md §12, and the summary
of scored rows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from avnbench.data.dataset import CaseMeta, Geometry, Landmarks, PatientAxes
from avnbench.evaluation.scoring import relative_necrosis_percent, score_case
from avnbench.evaluation.summaries import summarize_segmentation
from avnbench.evaluation.surface import image_diagonal_mm
from avnbench.testing import ANISO, box_pair, sphere



def meta(case_id: str = "c0", shape=(20, 40, 40), spacing=ANISO, landmarks=None, **grades) -> CaseMeta:
    return CaseMeta(
        case_id=case_id,
        patient_id="p0",
        side="R",
        geometry=Geometry(
            size_xyz=tuple(reversed(shape)),
            spacing_xyz=tuple(reversed(spacing)),
            origin=(0.0, 0.0, 0.0),
            direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
        ),
        landmarks=landmarks,
        **grades,
    )


# ---- T1: the volume of a box --------------------------------------------------------------------


def test_t1_volume():
    _, ref = box_pair(0)
    row = score_case(ref.astype(np.uint8), ref.astype(np.uint8), ANISO, meta())
    assert row["vital_cm3_ref"] == pytest.approx(0.7744, abs=1e-9)
    assert row["head_cm3_pred"] == pytest.approx(0.7744, abs=1e-9)


# ---- T4: empty masks ---------------------------------------------------------------------------


def test_t4_empty_masks_score_case_and_summary():
    head = np.zeros((20, 40, 40), dtype=np.uint8)
    head[5:15, 10:30, 10:30] = 1
    with_necrosis = head.copy()
    with_necrosis[5:12, 10:18, 10:20] = 2
    empty = np.zeros_like(head)
    rows = [
        score_case(head, head, ANISO, meta("a")),  # (a) no necrosis on either side
        score_case(head, with_necrosis, ANISO, meta("b")),  # (b) reference necrosis missed
        score_case(with_necrosis, head, ANISO, meta("c")),  # (c) necrosis where there is none
        score_case(empty, head, ANISO, meta("d")),  # nothing predicted at all
    ]
    a, b, c, d = rows
    assert a["empty_necrosis"] == "both" and math.isnan(a["dice_necrosis"])
    assert math.isnan(a["assd_necrosis_mm"]) and a["dice_head"] == 1.0
    assert (b["empty_necrosis"], c["empty_necrosis"]) == ("pred", "ref")
    diagonal = image_diagonal_mm(head.shape, ANISO)
    for row in (b, c):
        assert row["dice_necrosis"] == 0.0 and row["nsd1mm_necrosis"] == 0.0
        assert row["assd_necrosis_mm"] == row["hd95_necrosis_mm"] == diagonal
    assert d["empty_head"] == "pred" and d["hd95_vital_mm"] == diagonal
    assert d["necrosis_relvol_pred"] == 0.0 and d["steinberg_pred"] == "none"

    summary = summarize_segmentation(rows, n_bootstrap=50)
    metrics = summary.metrics
    # a and d have no necrosis on either side: left out and counted; b and c are worst cases
    assert metrics["n_empty_both_necrosis"] == 2 and metrics["n_empty_one_necrosis"] == 2
    assert metrics["dice_necrosis"] == 0.0
    # no case has both necrosis masks non-empty: the honest distance mean is undefined (left
    # out, n = 0); the penalty-included mean is the image diagonal of b and c
    assert "assd_necrosis_mm" not in metrics and metrics["assd_necrosis_mm_n"] == 0
    assert metrics["assd_necrosis_mm_penalized"] == pytest.approx(diagonal)
    assert metrics["hd95_necrosis_mm_penalized_n"] == 2
    # a, c and d have no reference necrosis: c's invented 7×8×10-voxel lesion is the only
    # false positive
    assert metrics["necrosis_fp_cm3_n"] == 3 and metrics["necrosis_fp_rate"] == pytest.approx(1 / 3)
    assert metrics["necrosis_fp_cm3"] == pytest.approx(560 * 0.44 * 0.44 / 1000 / 3)
    assert metrics["necrosis_fp_cm3_median"] == 0.0
    assert metrics["dice_head"] == pytest.approx(0.75)  # 1, 1, 1 and 0 for the empty prediction
    assert metrics["n_empty_pred_head"] == 1
    assert all(math.isfinite(v) for v in metrics.values())
    assert any("both masks empty" in note for note in summary.notes)
    assert any("2 case(s) with one mask empty left out of assd_necrosis_mm" in note
               for note in summary.notes)


# ---- T5: volumes and relative necrosis ---------------------------------------------------------


@pytest.mark.parametrize(
    "n_necrosis, percent, grade", [(560, 14.0, "A"), (600, 15.0, "B"), (1200, 30.0, "B"), (1201, 30.025, "C")]
)
def test_t5_volumes_and_steinberg(n_necrosis, percent, grade):
    labels = np.zeros((20, 40, 40), dtype=np.uint8)
    labels[5:15, 10:30, 10:30] = 1
    head = np.argwhere(labels == 1)
    labels[tuple(head[:n_necrosis].T)] = 2
    row = score_case(labels, labels, ANISO, meta())
    voxel = 1.0 * 0.44 * 0.44 / 1000
    assert row["necrosis_cm3_ref"] == pytest.approx(n_necrosis * voxel, rel=1e-12)
    assert row["vital_cm3_ref"] == pytest.approx((4000 - n_necrosis) * voxel, rel=1e-12)
    assert row["head_cm3_ref"] == pytest.approx(0.7744, rel=1e-12)
    assert row["necrosis_relvol_ref"] == pytest.approx(percent, rel=1e-12)
    assert relative_necrosis_percent(labels) == row["necrosis_relvol_pred"]
    assert row["steinberg_ref"] == row["steinberg_pred"] == grade
    if n_necrosis == 560:
        assert row["vital_cm3_ref"] == pytest.approx(0.665984, abs=1e-9)
        assert row["necrosis_cm3_ref"] == pytest.approx(0.108416, abs=1e-9)


def test_score_case_grades_jic_with_landmarks_and_rejects_bad_labels():
    from avnbench.errors import DataError

    shape, spacing = (40, 80, 80), (0.5, 0.5, 0.5)
    labels = sphere(12.0, shape, spacing, centre=(10.0, 20.0, 20.0)).astype(np.uint8)
    # necrosis in the superior-lateral quadrant (superior = +z index, lateral = +x here)
    grids = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing)), indexing="ij")
    labels[(labels == 1) & (grids[0] > 14.0) & (grids[2] > 22.0)] = 2
    landmarks = Landmarks(
        head_center_mm=(20.0, 20.0, 10.0),  # physical (x, y, z) of array (z=10, y=20, x=20) mm
        head_radius_mm=12.0,
        acetabular_lateral_edge_mm=(32.0, 20.0, 22.0),
        wb_medial_point_mm=(14.0, 20.0, 20.0),
        patient_axes=PatientAxes(lateral=(1, 0, 0), anterior=(0, -1, 0), superior=(0, 0, 1)),
    )
    case = meta("j", shape, spacing, landmarks=landmarks, arco="II", jic="B")
    row = score_case(labels, labels, spacing, case)
    assert row["jic_ref"] == row["jic_pred"] and row["jic_ref"] in ("A", "B", "C1", "C2")
    assert row["arco_ref"] == "II" and row["jic_given"] == "B"
    no_necrosis = np.where(labels == 2, 1, labels).astype(np.uint8)
    assert score_case(no_necrosis, labels, spacing, case)["jic_pred"] == "none"
    with pytest.raises(DataError, match="case j: predicted label map has values \\[3\\]"):
        score_case(labels * 0 + 3, labels, spacing, case)
    with pytest.raises(DataError, match="case j: .*shape"):
        score_case(labels[:-1], labels, spacing, case)
