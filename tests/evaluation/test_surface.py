"""Surface distances and Dice: the analytic cases of reference/metrics.md §12 and agreement with
MONAI and MedPy."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from avnbench.evaluation.surface import (
    assd,
    border,
    dice,
    directed_surface_distances,
    hd95,
    image_diagonal_mm,
    nsd,
    surface_metrics,
)
from avnbench.testing import ANISO, SPHERE_CENTRE, box_pair, sphere



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
