"""Landmarks estimated from a label map, for sources that come without them (clinical.md §8.3).

The grading needs the head centre and radius, the patient axes, the acetabular lateral edge and
the medial end of the weight-bearing portion. When a dataset gives none, they are estimated here:

- head centre and radius: a least-squares sphere fit to the boundary voxels of labels > 0, leaving
  out the flat neck-cut face (boundary points whose outward normal is within 30° of the neck
  axis n; n is the dominant normal direction of the boundary, which a cut face has and a sphere
  does not), then refitted without outlying points (a collapsed, flattened dome);
- patient axes: from the physical frame, which SimpleITK reads as LPS (x to the patient's left,
  y posterior, z superior), and the side of the hip;
- acetabular lateral edge and weight-bearing medial point: ASSUMED, not measured. They are placed
  on the mid-coronal plane (lateral, superior) through the centre, at a default lateral
  centre-edge angle (``DEFAULT_LCEA_DEG``, mid-normal range 25–40°) on a sphere
  ``DEFAULT_ACETABULAR_GAP_MM`` larger than the head (two cartilage layers), and at
  ``DEFAULT_THETA_MED_DEG`` medial of the vertical on the head surface (clinical.md §3.3).

Every estimate is marked ``estimated=True``; a JIC type computed with it is only as good as these
assumptions, and ``avnbench data check`` lists the cases that carry them.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

from avnbench.data.dataset import Geometry, Landmarks, PatientAxes
from avnbench.errors import DataError

DEFAULT_LCEA_DEG = 32.0
DEFAULT_THETA_MED_DEG = 35.0
DEFAULT_ACETABULAR_GAP_MM = 3.0
NECK_FACE_EXCLUSION_DEG = 30.0
# A flat cut face holds a large share of the boundary normals inside a narrow cone; on a whole
# sphere a 15° cone holds only (1 - cos 15°) / 2 ≈ 1.7 % of them.
_FACE_CONE_DEG = 15.0
_MIN_FACE_FRACTION = 0.05
_MAX_NORMALS_FOR_MODE = 3000
# Calibrated on voxelised truncated spheres (R 12–25 mm, spacing 0.44–1.5 mm): radius bias < 0.1 mm.
_BORDER_OFFSET = 0.3

LPS_LEFT = np.array([1.0, 0.0, 0.0])
LPS_ANTERIOR = np.array([0.0, -1.0, 0.0])
LPS_SUPERIOR = np.array([0.0, 0.0, 1.0])


def patient_axes_lps(side: Literal["L", "R"]) -> PatientAxes:
    """Unit lateral/anterior/superior axes of a hip in the physical LPS frame."""
    lateral = LPS_LEFT if side == "L" else -LPS_LEFT
    return PatientAxes(
        lateral=tuple(lateral.tolist()),
        anterior=tuple(LPS_ANTERIOR.tolist()),
        superior=tuple(LPS_SUPERIOR.tolist()),
    )


def fit_sphere(points_mm: np.ndarray) -> tuple[np.ndarray, float]:
    """Algebraic least-squares sphere through points (n, 3) in mm: (centre in mm, radius in mm)."""
    p = np.asarray(points_mm, dtype=float)
    if len(p) < 4:
        raise ValueError("a sphere fit needs at least 4 points")
    a = np.column_stack([2 * p, np.ones(len(p))])
    b = (p * p).sum(axis=1)
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    centre = sol[:3]
    radius = float(np.sqrt(max(sol[3] + centre @ centre, 0.0)))
    return centre, radius


def fit_robust_sphere(points_mm: np.ndarray, rounds: int = 3) -> tuple[np.ndarray, float]:
    """Sphere fit that drops outlying points (|residual| > 2.5 robust SD, at least 0.3 mm) and
    refits: a collapsed, flattened dome then no longer pulls the centre (mm, mm)."""
    points = np.asarray(points_mm, dtype=float)
    centre, radius = fit_sphere(points)
    for _ in range(rounds):
        residual = np.linalg.norm(points - centre, axis=1) - radius
        spread = 1.4826 * np.median(np.abs(residual - np.median(residual)))
        inliers = np.abs(residual - np.median(residual)) <= max(2.5 * spread, 0.3)
        if inliers.sum() < 20:
            break
        centre, radius = fit_sphere(points[inliers])
    return centre, radius


def boundary_points_and_normals(labels: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Boundary voxels of labels > 0 as physical points (n, 3) mm and unit outward normals (n, 3).

    Normals are the negative gradient of the lightly smoothed head mask, taken per array axis
    in mm and turned into the physical frame with the direction matrix. Voxels on the array's
    edge are not boundary.
    """
    head = np.asarray(labels) > 0
    # Outside the array counts as head, so a head cut by the field of view gets no flat face
    # there: that face is not the head's surface (and would pass for the neck cut).
    border = head & ~ndimage.binary_erosion(head, border_value=1)
    idx = np.argwhere(border)
    spacing_zyx = np.asarray(geometry.spacing_zyx, dtype=float)
    smooth = ndimage.gaussian_filter(head.astype(np.float32), sigma=1.0 / spacing_zyx)
    grads_zyx = np.stack(
        [g[border] / s for g, s in zip(np.gradient(smooth), spacing_zyx)], axis=1
    )
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    normals = -(grads_zyx[:, ::-1] @ direction.T)
    norms = np.linalg.norm(normals, axis=1)
    keep = norms > 1e-6
    normals = normals[keep] / norms[keep, None]
    # Border voxel centres lie inside the true surface; moving them out along the normal by a
    # share of the voxel's extent removes the fitted radius' bias of about half a voxel.
    normals_zyx = (normals @ direction)[:, ::-1]
    half_extent = _BORDER_OFFSET * np.abs(normals_zyx) @ spacing_zyx
    points = geometry.index_to_physical(idx[keep]) + half_extent[:, None] * normals
    return points, normals


def neck_axis_from_normals(normals: np.ndarray, seed: int = 0) -> np.ndarray | None:
    """The common normal of a flat cut face among boundary normals, or None when there is none."""
    if len(normals) == 0:
        return None
    rng = np.random.default_rng(seed)
    sample = normals
    if len(normals) > _MAX_NORMALS_FOR_MODE:
        sample = normals[rng.choice(len(normals), _MAX_NORMALS_FOR_MODE, replace=False)]
    cos_cone = np.cos(np.deg2rad(_FACE_CONE_DEG))
    neighbours = (sample @ sample.T) >= cos_cone
    counts = neighbours.sum(axis=1)
    best = int(np.argmax(counts))
    if counts[best] < _MIN_FACE_FRACTION * len(sample):
        return None
    mean = sample[neighbours[best]].mean(axis=0)
    return mean / np.linalg.norm(mean)


def estimate_landmarks(
    labels: np.ndarray,
    geometry: Geometry,
    side: Literal["L", "R"],
    *,
    lcea_deg: float = DEFAULT_LCEA_DEG,
    theta_med_deg: float = DEFAULT_THETA_MED_DEG,
    acetabular_gap_mm: float = DEFAULT_ACETABULAR_GAP_MM,
) -> Landmarks:
    """Landmarks of one hip estimated from its label map (z, y, x) on ``geometry``; estimated=True.

    Raises DataError when the label map holds too little of a femoral head to fit a sphere.
    """
    points, normals = boundary_points_and_normals(labels, geometry)
    if len(points) < 20:
        raise DataError(
            f"label map has only {len(points)} femoral-head boundary voxels; "
            "too few to estimate the head centre (give landmarks or check the labels)"
        )
    neck = neck_axis_from_normals(normals)
    if neck is not None:
        away_from_face = normals @ neck < np.cos(np.deg2rad(NECK_FACE_EXCLUSION_DEG))
        if away_from_face.sum() >= 20:
            points = points[away_from_face]
    centre, radius = fit_robust_sphere(points)
    axes = patient_axes_lps(side)
    lateral, superior = np.asarray(axes.lateral), np.asarray(axes.superior)
    lcea, theta_med = np.deg2rad(lcea_deg), np.deg2rad(theta_med_deg)
    edge = centre + (radius + acetabular_gap_mm) * (np.sin(lcea) * lateral + np.cos(lcea) * superior)
    medial = centre + radius * (-np.sin(theta_med) * lateral + np.cos(theta_med) * superior)
    return Landmarks(
        head_center_mm=tuple(centre.tolist()),
        head_radius_mm=radius,
        acetabular_lateral_edge_mm=tuple(edge.tolist()),
        wb_medial_point_mm=tuple(medial.tolist()),
        patient_axes=axes,
        estimated=True,
    )


def side_from_neck_axis(labels: np.ndarray, geometry: Geometry) -> Literal["L", "R"] | None:
    """The hip's side from where its neck-cut face points (lateral), or None without a cut face.

    The neck leaves the head laterally, so the cut face's outward normal has a lateral
    component: toward +x (patient left) in LPS for a left hip.
    """
    _, normals = boundary_points_and_normals(labels, geometry)
    neck = neck_axis_from_normals(normals)
    if neck is None or abs(neck[0]) < 0.2:
        return None
    return "L" if neck[0] > 0 else "R"
