"""Scoring: the analytic cases of reference/metrics.md §12 and agreement with MONAI and MedPy."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from avnbench.data.dataset import CaseMeta, Geometry, Landmarks, PatientAxes
from avnbench.evaluation.scoring import (
    assd,
    border,
    dice,
    directed_surface_distances,
    hd95,
    image_diagonal_mm,
    nsd,
    relative_necrosis_percent,
    score_case,
    surface_metrics,
)
from avnbench.evaluation.summaries import summarize_segmentation

ANISO = (1.0, 0.44, 0.44)
SPHERE_CENTRE = (20.0123, 17.6057, 17.6091)  # metrics.md §8: off-lattice, no ties at r²


def box_pair(axis: int) -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((20, 40, 40), dtype=bool)
    ref[5:15, 10:30, 10:30] = True
    return np.roll(ref, 1, axis=axis), ref


def sphere(radius: float, shape=(40, 80, 80), spacing=ANISO, centre=SPHERE_CENTRE) -> np.ndarray:
    grids = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing)), indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius**2


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


# ---- T1: shifted boxes, exact by hand; catches a transposed spacing -------------------------


@pytest.mark.parametrize(
    "axis, spacing, expected",
    [
        (0, ANISO, dict(dice=0.9, hd=1.0, hd95=1.0, assd=678.72 / 1408)),
        (2, ANISO, dict(dice=0.95, hd=0.44, hd95=0.44, assd=151.36 / 1408)),
        # the same shift with the spacing order reversed swaps the distances
        (0, ANISO[::-1], dict(dice=0.9, hd=0.44, hd95=0.44)),
        (1, (0.44, 1.0, 0.44), dict(dice=0.95, hd=1.0, hd95=1.0)),
    ],
)
def test_t1_shifted_boxes(axis, spacing, expected):
    pred, ref = box_pair(axis)
    assert dice(pred, ref) == pytest.approx(expected["dice"], abs=1e-12)
    d_pr, d_rp = directed_surface_distances(pred, ref, spacing)
    assert max(d_pr.max(), d_rp.max()) == pytest.approx(expected["hd"], abs=1e-6)
    m = surface_metrics(pred, ref, spacing)
    assert m["hd95"] == pytest.approx(expected["hd95"], abs=1e-6)
    if "assd" in expected:
        assert m["assd"] == pytest.approx(expected["assd"], abs=1e-6)
        assert assd(pred, ref, spacing) == m["assd"] and hd95(pred, ref, spacing) == m["hd95"]
    assert len(d_pr) == len(d_rp) == 1408  # 10×20×20 box: 2·400 + 2·(8·20 + 8·18) borders


def test_t1_volume():
    _, ref = box_pair(0)
    row = score_case(ref.astype(np.uint8), ref.astype(np.uint8), ANISO, meta())
    assert row["vital_cm3_ref"] == pytest.approx(0.7744, abs=1e-9)
    assert row["head_cm3_pred"] == pytest.approx(0.7744, abs=1e-9)


# ---- T2: concentric spheres --------------------------------------------------------------------


def test_t2_concentric_spheres():
    ref, pred = sphere(10.0), sphere(11.0)
    assert (ref.sum(), pred.sum()) == (21588, 28744)
    assert dice(pred, ref) == pytest.approx(43176 / 50332, abs=1e-9)
    voxel_cm3 = np.prod(ANISO) / 1000
    for mask, radius, volume in ((ref, 10.0, 4.1794), (pred, 11.0, 5.5648)):
        assert mask.sum() * voxel_cm3 == pytest.approx(volume, abs=1e-4)
        assert mask.sum() * voxel_cm3 == pytest.approx(4 / 3 * math.pi * radius**3 / 1000, rel=0.005)
    m = surface_metrics(pred, ref, ANISO)
    assert m["assd"] == pytest.approx(0.9692, abs=1e-4)
    assert abs(m["assd"] - 1.0) / 1.0 < 0.05
    assert m["hd95"] == pytest.approx(1.2445, abs=1e-4)
    d_pr, d_rp = directed_surface_distances(pred, ref, ANISO)
    assert max(d_pr.max(), d_rp.max()) == pytest.approx(1.32, abs=1e-6)
    swapped = surface_metrics(ref, pred, ANISO)
    assert swapped["assd"] == pytest.approx(m["assd"], rel=1e-12)
    assert swapped["hd95"] == pytest.approx(m["hd95"], rel=1e-12)
    assert swapped["nsd"] == pytest.approx(m["nsd"], rel=1e-12)
    assert m["nsd"] == pytest.approx(0.768, abs=1e-3)  # MONAI voxel NSD = MetricsReloaded NSD
    twice = surface_metrics(sphere(12.0), ref, ANISO)["assd"]
    assert twice == pytest.approx(2 * m["assd"], rel=0.10)


# ---- T3: a detached blob separates the definitions ---------------------------------------------


def test_t3_detached_blob():
    ref = sphere(8.0)
    blob_centre = (SPHERE_CENTRE[0], SPHERE_CENTRE[1], SPHERE_CENTRE[2] + 13.0)
    pred = ref | sphere(2.5, centre=blob_centre)
    assert (ref.sum(), pred.sum()) == (11007, 11353)
    d_pr, d_rp = directed_surface_distances(pred, ref, ANISO)
    assert d_pr.mean() == pytest.approx(0.4144, abs=1e-4)
    assert d_rp.max() == 0.0
    assert max(d_pr.max(), d_rp.max()) == pytest.approx(7.48, abs=1e-6)
    m = surface_metrics(pred, ref, ANISO)
    assert m["assd"] == pytest.approx(0.2158, abs=1e-4)  # not the mean of means 0.2072
    assert m["hd95"] == pytest.approx(4.9422, abs=1e-4)  # not MedPy's pooled 0.0
    assert dice(pred, ref) == pytest.approx(22014 / 22360, abs=1e-9)


# ---- T4: empty masks ---------------------------------------------------------------------------


def test_t4_empty_masks_low_level():
    empty = np.zeros((20, 40, 40), dtype=bool)
    _, ref = box_pair(0)
    both = surface_metrics(empty, empty, ANISO)
    assert all(math.isnan(v) for v in both.values()) and math.isnan(dice(empty, empty))
    diagonal = image_diagonal_mm(empty.shape, ANISO)
    assert diagonal == pytest.approx(math.sqrt(20**2 + 2 * 17.6**2))
    for pred, reference in ((empty, ref), (ref, empty)):
        m = surface_metrics(pred, reference, ANISO)
        assert m == {"assd": diagonal, "hd95": diagonal, "nsd": 0.0}
        assert dice(pred, reference) == 0.0
        assert nsd(pred, reference, ANISO) == 0.0


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
    assert metrics["assd_necrosis_mm"] == pytest.approx(diagonal)
    assert metrics["dice_head"] == pytest.approx(0.75)  # 1, 1, 1 and 0 for the empty prediction
    assert metrics["n_empty_pred_head"] == 1
    assert all(math.isfinite(v) for v in metrics.values())
    assert any("both masks empty" in note for note in summary.notes)


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


# ---- definitions against the reference libraries -----------------------------------------------


def test_border_is_mask_minus_face_erosion():
    rng = np.random.default_rng(1)
    for _ in range(20):
        mask = ndimage.gaussian_filter(rng.random((9, 12, 7)), 1.0) > 0.5
        expected = mask & ~ndimage.binary_erosion(
            mask, ndimage.generate_binary_structure(3, 1), border_value=0
        )
        assert np.array_equal(border(mask), expected)


def random_mask_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Two random blobs (smoothed noise, sometimes touching the array edge, sometimes with a far
    outlier or a single voxel) on a random grid with a random anisotropic spacing."""
    shape = tuple(int(n) for n in rng.integers(4, 36, size=3))
    spacing = tuple(float(s) for s in rng.uniform(0.25, 3.0, size=3))
    masks = []
    for _ in range(2):
        kind = rng.random()
        if kind < 0.1:
            mask = np.zeros(shape, dtype=bool)
            mask[tuple(int(rng.integers(0, n)) for n in shape)] = True
        else:
            noise = ndimage.gaussian_filter(rng.random(shape), sigma=float(rng.uniform(0.8, 3.0)))
            mask = noise > np.quantile(noise, rng.uniform(0.3, 0.9))
            if rng.random() < 0.3:
                mask[tuple(int(rng.integers(0, n)) for n in shape)] = True  # far outlier voxel
        if not mask.any():
            mask[0, 0, 0] = True
        masks.append(mask)
    return masks[0], masks[1], spacing


def monai_surface_metrics(pred, ref, spacing, tolerance_mm):
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    p, g = torch.from_numpy(pred)[None, None], torch.from_numpy(ref)[None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "assd": float(compute_average_surface_distance(p, g, symmetric=True, spacing=spacing)),
            "hd95": float(compute_hausdorff_distance(p, g, percentile=95, spacing=spacing)),
            "nsd": float(
                compute_surface_dice(p, g, class_thresholds=[tolerance_mm], spacing=spacing,
                                     use_subvoxels=False)
            ),
        }


def test_matches_monai_on_random_shapes_and_spacings():
    rng = np.random.default_rng(2026)
    for trial in range(60):
        pred, ref, spacing = random_mask_pair(rng)
        tolerance = float(rng.choice([0.5, 1.0, 2.0, 3.7]))
        ours = surface_metrics(pred, ref, spacing, tolerance)
        theirs = monai_surface_metrics(pred, ref, spacing, tolerance)
        for key in ours:
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-6), (
                trial, key, pred.shape, spacing)


def test_assd_matches_medpy():
    from medpy.metric.binary import assd as medpy_assd

    rng = np.random.default_rng(5)
    for _ in range(20):
        pred, ref, spacing = random_mask_pair(rng)
        expected = medpy_assd(pred, ref, voxelspacing=spacing, connectivity=1)
        assert assd(pred, ref, spacing) == pytest.approx(expected, rel=1e-9)


def test_far_apart_masks_use_the_exact_fallback():
    # Distances beyond the local lattice search must still be exact (KD-tree fallback).
    pred = np.zeros((10, 60, 60), dtype=bool)
    ref = np.zeros_like(pred)
    pred[2:4, 2:5, 2:5] = True
    ref[6:9, 50:58, 40:52] = True
    spacing = (2.0, 0.5, 0.7)
    theirs = monai_surface_metrics(pred, ref, spacing, 1.0)
    ours = surface_metrics(pred, ref, spacing)
    for key in ours:
        assert ours[key] == pytest.approx(theirs[key], rel=1e-6)
    assert ours["nsd"] == 0.0 and ours["hd95"] > 20
