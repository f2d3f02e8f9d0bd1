"""The target grid of an import and the resampling onto it.

The target grid is the source grid re-sampled at the target spacing (same origin lattice and
direction) and cropped or padded to the target shape around the femoral head centre, so a
source that already has the target spacing is only cropped, not interpolated. Images are
resampled linearly (float32), labels with nearest neighbour (uint8), in one step each.
"""

from __future__ import annotations

import numpy as np

from avnbench.data.dataset import Geometry
from avnbench.errors import ConfigError

#: Fewest voxels per axis of a target grid: below it the head cannot be graded or located.
MIN_TARGET_SHAPE = 16
#: Most voxels per axis of a target grid (4 GiB of float32 at 1024³ is beyond any hip crop).
MAX_TARGET_SHAPE = 1024


def check_target(spacing_zyx, shape_zyx) -> None:
    """Refuse a target spacing that is not three positive finite mm values, or a target shape
    outside MIN_TARGET_SHAPE..MAX_TARGET_SHAPE voxels per axis, with a one-line ConfigError."""
    if len(spacing_zyx) != 3 or any(not (s > 0 and np.isfinite(s)) for s in spacing_zyx):
        raise ConfigError(f"--target-spacing needs three positive numbers (mm, z y x), got {' '.join(map(str, spacing_zyx))}")
    if len(shape_zyx) != 3 or any(not MIN_TARGET_SHAPE <= int(s) <= MAX_TARGET_SHAPE for s in shape_zyx):
        raise ConfigError(
            f"--target-shape needs three voxel counts (z y x) from {MIN_TARGET_SHAPE} to "
            f"{MAX_TARGET_SHAPE}, got {' '.join(map(str, shape_zyx))}"
        )


def target_grid(image, centre_mm: np.ndarray, spacing_zyx, shape_zyx) -> Geometry:
    """The target grid: the image's direction, ``spacing_zyx`` (mm), ``shape_zyx`` voxels, on the
    image's lattice re-sampled at that spacing, with ``centre_mm`` (LPS) at the middle voxel."""
    spacing_xyz = np.asarray(spacing_zyx, dtype=float)[::-1]
    size_xyz = np.asarray(shape_zyx, dtype=int)[::-1]
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    origin = np.asarray(image.GetOrigin(), dtype=float)
    centre_index = (direction.T @ (np.asarray(centre_mm) - origin)) / spacing_xyz
    start = np.round(centre_index - (size_xyz - 1) / 2.0)
    new_origin = origin + direction @ (start * spacing_xyz)
    return Geometry(
        size_xyz=tuple(int(s) for s in size_xyz),
        spacing_xyz=tuple(float(s) for s in spacing_xyz),
        origin=tuple(float(o) for o in new_origin),
        direction=tuple(float(d) for d in direction.ravel()),
    )


def resample_onto(image, grid: Geometry, is_label: bool):
    """Resample a SimpleITK image onto ``grid``: nearest neighbour for labels (uint8), linear for
    images (float32); outside the source is 0."""
    import SimpleITK as sitk

    if is_label:
        image = sitk.Cast(image, sitk.sitkUInt8)
        interpolator, pixel = sitk.sitkNearestNeighbor, sitk.sitkUInt8
    else:
        image = sitk.Cast(image, sitk.sitkFloat32)
        interpolator, pixel = sitk.sitkLinear, sitk.sitkFloat32
    return sitk.Resample(
        image,
        list(grid.size_xyz),
        sitk.Transform(),
        interpolator,
        list(grid.origin),
        list(grid.spacing_xyz),
        list(grid.direction),
        0,
        pixel,
    )


def head_centre_mm(label_image, label_array: np.ndarray) -> np.ndarray:
    """Centroid of labels > 0 in physical LPS mm."""
    idx = np.argwhere(label_array > 0)
    centroid_xyz = idx.mean(axis=0)[::-1]
    return np.asarray(label_image.TransformContinuousIndexToPhysicalPoint(centroid_xyz.tolist()))
