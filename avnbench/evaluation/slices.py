"""Reformatted planes through the femoral head centre (mid-coronal, mid-sagittal).

One implementation shared by the JIC/ARCO/Kerboul grading and the JIC classifier, so that a
prediction and its reference are read on exactly the same plane. The plane is built from the
case's landmarks (head centre and patient axes in the physical LPS frame), never re-estimated
from a label map, and sampled on an isotropic grid whatever the voxel spacing of the volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from avnbench.data.dataset import CaseMeta
from avnbench.errors import DataError

#: Margin added to the head radius for the default half width of a slice (mm).
DEFAULT_MARGIN_MM = 10.0


@dataclass(frozen=True)
class PlaneSlice:
    """A 2-D plane sampled from a volume.

    ``array[v, h]``: row index v runs along ``v_axis`` (superior for both standard planes, so
    row 0 is the most inferior row: plot with ``origin="lower"``), column index h runs along
    ``h_axis`` (lateral for the coronal plane, anterior for the sagittal plane). ``h_mm`` and
    ``v_mm`` are the coordinates of the columns and rows in mm relative to ``center_mm``.
    """

    array: np.ndarray
    h_mm: np.ndarray
    v_mm: np.ndarray
    center_mm: tuple[float, float, float]
    h_axis: tuple[float, float, float]
    v_axis: tuple[float, float, float]

    @property
    def pixel_mm(self) -> float:
        """Pixel size of the isotropic grid (mm)."""
        return float(self.h_mm[1] - self.h_mm[0]) if len(self.h_mm) > 1 else 0.0

    def grid_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """(H, V): per-pixel in-plane coordinates (mm), each shaped like ``array``."""
        return np.meshgrid(self.h_mm, self.v_mm, indexing="xy")


def plane_slice(
    volume: np.ndarray,
    meta: CaseMeta,
    h_axis: np.ndarray,
    v_axis: np.ndarray,
    pixel_mm: float = 0.5,
    half_width_mm: float | None = None,
    order: int = 0,
) -> PlaneSlice:
    """Sample ``volume`` (z, y, x) on the plane through the head centre spanned by two LPS unit
    vectors; ``order`` 0 (nearest) for label maps, 1 (linear) for images. Outside the volume is 0.
    ``meta``: a :class:`CaseMeta` or anything else with ``case_id``, ``geometry`` and
    ``landmarks`` (a :class:`avnbench.methods.PredictCase`).
    """
    landmarks = _landmarks(meta)
    if pixel_mm <= 0:
        raise ValueError(f"pixel_mm must be > 0, got {pixel_mm}")
    if tuple(volume.shape) != tuple(meta.geometry.shape_zyx):
        raise DataError(
            f"case {meta.case_id}: volume shape {tuple(volume.shape)} does not match its geometry "
            f"{tuple(meta.geometry.shape_zyx)} (z, y, x)"
        )
    half = landmarks.head_radius_mm + DEFAULT_MARGIN_MM if half_width_mm is None else half_width_mm
    n_half = int(np.floor(half / pixel_mm + 1e-9))
    coords = np.arange(-n_half, n_half + 1, dtype=float) * pixel_mm
    h_axis = np.asarray(h_axis, dtype=float)
    v_axis = np.asarray(v_axis, dtype=float)
    center = np.asarray(landmarks.head_center_mm, dtype=float)
    hh, vv = np.meshgrid(coords, coords, indexing="xy")
    points = center + hh[..., None] * h_axis + vv[..., None] * v_axis
    index = meta.geometry.physical_to_index(points)  # (v, h, 3) in (z, y, x)
    sampled = ndimage.map_coordinates(
        volume, np.moveaxis(index, -1, 0), order=order, mode="constant", cval=0,
        prefilter=order > 1,
    )
    return PlaneSlice(
        array=sampled,
        h_mm=coords,
        v_mm=coords.copy(),
        center_mm=tuple(float(c) for c in center),
        h_axis=tuple(float(a) for a in h_axis),
        v_axis=tuple(float(a) for a in v_axis),
    )


def mid_coronal_slice(
    volume: np.ndarray,
    meta: CaseMeta,
    pixel_mm: float = 0.5,
    half_width_mm: float | None = None,
    order: int = 0,
) -> PlaneSlice:
    """The mid-coronal plane: through the head centre, h = patient lateral, v = patient superior.

    Default half width: head radius + 10 mm. Pixels are ``pixel_mm`` square.
    """
    axes = _landmarks(meta).patient_axes
    return plane_slice(volume, meta, axes.lateral, axes.superior, pixel_mm, half_width_mm, order)


def mid_sagittal_slice(
    volume: np.ndarray,
    meta: CaseMeta,
    pixel_mm: float = 0.5,
    half_width_mm: float | None = None,
    order: int = 0,
) -> PlaneSlice:
    """The mid-sagittal plane: through the head centre, h = patient anterior, v = superior."""
    axes = _landmarks(meta).patient_axes
    return plane_slice(volume, meta, axes.anterior, axes.superior, pixel_mm, half_width_mm, order)


def _landmarks(meta: CaseMeta):
    if meta.landmarks is None:
        raise DataError(
            f"case {meta.case_id} has no landmarks (head centre, patient axes) in cases.json; "
            "add them or re-import the dataset with landmark estimation"
        )
    return meta.landmarks
