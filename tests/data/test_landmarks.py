"""Landmark estimation from label maps (clinical.md §8.3 fallback)."""

from __future__ import annotations

import numpy as np
import pytest

from avnbench.data.dataset import Geometry
from avnbench.errors import DataError
from avnbench.data.landmarks import (
    DEFAULT_ACETABULAR_GAP_MM,
    DEFAULT_LCEA_DEG,
    DEFAULT_THETA_MED_DEG,
    estimate_landmarks,
    fit_sphere,
    patient_axes_lps,
    side_from_neck_axis,
)


def _rotation(seed: int) -> tuple[float, ...]:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return tuple(q.ravel().tolist())


def truncated_sphere(shape_zyx, spacing_zyx, radius, side="L", direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
                     cut=0.6, seed=0):
    """Voxelised femoral head: a ball cut by a plane normal to a lateral-inferior neck axis."""
    geom = Geometry(size_xyz=tuple(shape_zyx[::-1]), spacing_xyz=tuple(spacing_zyx[::-1]),
                    origin=(-12.0, 7.0, 40.0), direction=tuple(float(d) for d in direction))
    rng = np.random.default_rng(seed)
    centre = geom.index_to_physical((np.array(shape_zyx) - 1) / 2 + rng.uniform(-1, 1, 3))
    points = geom.index_to_physical(np.indices(shape_zyx).reshape(3, -1).T).reshape(tuple(shape_zyx) + (3,))
    lateral = np.array([1.0, 0, 0]) if side == "L" else np.array([-1.0, 0, 0])
    neck = np.cos(np.deg2rad(35)) * lateral + np.array([0, 0.15, 0]) - np.sin(np.deg2rad(35)) * np.array([0, 0, 1.0])
    neck /= np.linalg.norm(neck)
    q = points - centre
    labels = ((np.linalg.norm(q, axis=-1) <= radius) & (q @ neck <= cut * radius)).astype(np.uint8)
    return labels, geom, centre


def test_sphere_fit_is_exact_on_sphere_points():
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(200, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    centre, radius = fit_sphere(np.array([3.0, -4.0, 5.0]) + 21.5 * directions)
    np.testing.assert_allclose(centre, [3.0, -4.0, 5.0], atol=1e-9)
    assert radius == pytest.approx(21.5)


@pytest.mark.parametrize(
    ("shape", "spacing", "radius", "side", "seed"),
    [
        ((40, 80, 80), (1.0, 0.44, 0.44), 12.0, "L", 1),  # the phantom's anisotropic grid
        ((60, 60, 60), (0.8, 0.8, 0.8), 20.0, "R", 2),
        ((30, 30, 30), (1.5, 1.5, 1.5), 15.0, "L", 3),
    ],
)
def test_centre_and_radius_of_a_neck_cut_head(shape, spacing, radius, side, seed):
    labels, geom, centre = truncated_sphere(shape, spacing, radius, side, direction=_rotation(seed), seed=seed)
    lm = estimate_landmarks(labels, geom, side)
    assert lm.estimated
    assert np.linalg.norm(np.asarray(lm.head_center_mm) - centre) < 0.15
    assert lm.head_radius_mm == pytest.approx(radius, abs=0.15)


def test_the_neck_cut_face_is_left_out_of_the_fit():
    # A deep cut (flat face close to the centre) drags a naive fit by millimetres.
    labels, geom, centre = truncated_sphere((40, 70, 70), (1.0, 0.5, 0.5), 14.0, cut=0.3)
    lm = estimate_landmarks(labels, geom, "L")
    assert np.linalg.norm(np.asarray(lm.head_center_mm) - centre) < 0.2
    from avnbench.data.landmarks import boundary_points_and_normals

    naive_centre, _ = fit_sphere(boundary_points_and_normals(labels, geom)[0])
    assert np.linalg.norm(naive_centre - centre) > 1.0


def test_assumed_acetabular_landmarks_lie_on_the_coronal_plane():
    labels, geom, _ = truncated_sphere((40, 70, 70), (1.0, 0.5, 0.5), 14.0, side="R")
    lm = estimate_landmarks(labels, geom, "R")
    c = np.asarray(lm.head_center_mm)
    axes = lm.patient_axes
    lateral, anterior, superior = map(np.asarray, (axes.lateral, axes.anterior, axes.superior))
    np.testing.assert_allclose(lateral, [-1, 0, 0])  # right hip: lateral is patient right, -x in LPS
    np.testing.assert_allclose(anterior, [0, -1, 0])
    edge = np.asarray(lm.acetabular_lateral_edge_mm) - c
    medial = np.asarray(lm.wb_medial_point_mm) - c
    assert edge @ anterior == pytest.approx(0) and medial @ anterior == pytest.approx(0)
    assert np.degrees(np.arctan2(edge @ lateral, edge @ superior)) == pytest.approx(DEFAULT_LCEA_DEG)
    assert np.linalg.norm(edge) == pytest.approx(lm.head_radius_mm + DEFAULT_ACETABULAR_GAP_MM)
    assert np.degrees(np.arctan2(-(medial @ lateral), medial @ superior)) == pytest.approx(DEFAULT_THETA_MED_DEG)


@pytest.mark.parametrize("side", ["L", "R"])
def test_side_from_the_neck_cut(side):
    labels, geom, _ = truncated_sphere((30, 50, 50), (1.0, 0.6, 0.6), 10.0, side=side, direction=_rotation(7))
    assert side_from_neck_axis(labels, geom) == side


def test_a_whole_sphere_has_no_side_but_still_fits():
    labels, geom, centre = truncated_sphere((30, 50, 50), (1.0, 0.6, 0.6), 10.0, cut=2.0)
    assert side_from_neck_axis(labels, geom) is None
    lm = estimate_landmarks(labels, geom, "L")
    assert np.linalg.norm(np.asarray(lm.head_center_mm) - centre) < 0.15


def test_too_small_a_head_is_a_data_error():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[5, 5, 5] = 1
    geom = Geometry(size_xyz=(10, 10, 10), spacing_xyz=(1, 1, 1), origin=(0, 0, 0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(DataError, match="too few"):
        estimate_landmarks(labels, geom, "L")


def test_patient_axes_are_orthonormal():
    for side in "LR":
        axes = patient_axes_lps(side)
        m = np.array([axes.lateral, axes.anterior, axes.superior])
        np.testing.assert_allclose(m @ m.T, np.eye(3))


@pytest.fixture(scope="module")
def phantom_cases():
    from avnbench.data.phantom import generate_case, plan_case

    return [generate_case(plan_case(i), shape=(40, 80, 80), seed=i) for i in range(3)]


def test_estimates_match_the_phantoms_own_landmarks(phantom_cases):
    for case in phantom_cases:
        truth = case.meta.landmarks
        est = estimate_landmarks(case.labels, case.meta.geometry, case.meta.side)
        assert np.linalg.norm(np.subtract(est.head_center_mm, truth.head_center_mm)) < 0.8
        assert est.head_radius_mm == pytest.approx(truth.head_radius_mm, abs=0.6)
        assert est.patient_axes == truth.patient_axes  # the phantom's physical frame is LPS too
        assert side_from_neck_axis(case.labels, case.meta.geometry) == case.meta.side


def test_a_head_cut_by_the_field_of_view_is_still_fitted():
    labels, geom, centre = truncated_sphere((40, 70, 70), (1.0, 0.5, 0.5), 14.0, side="L")
    # the field of view ends 3 mm above the centre: a flat face larger than the neck cut
    top = int(np.ceil(geom.physical_to_index(centre)[0] + 3.0))
    cut = labels[:top]
    geom_cut = geom.model_copy(update={"size_xyz": (70, 70, top)})
    lm = estimate_landmarks(cut, geom_cut, "L")
    assert np.linalg.norm(np.asarray(lm.head_center_mm) - centre) < 0.4
    assert side_from_neck_axis(cut, geom_cut) == "L"
