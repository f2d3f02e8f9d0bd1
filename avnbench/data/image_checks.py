"""Checks of one image's voxels and grid, as short problem descriptions (or None).

They return text rather than raise, so that :func:`avnbench.data.imageio.read_image` and import
can raise it as a one-line error naming the file, and ``avnbench data check`` can collect it.
"""

from __future__ import annotations

import numpy as np

from avnbench.data.dataset import Geometry

ALLOWED_LABELS = (0, 1, 2)
SPACING_RTOL = 1e-4
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4


def intensity_problem(image_array: np.ndarray) -> str | None:
    """'N NaN and M infinite intensities' when the image is not finite everywhere, else None."""
    arr = np.asarray(image_array)
    if not np.issubdtype(arr.dtype, np.floating):
        return None
    finite = np.isfinite(arr)
    if finite.all():
        return None
    n_nan = int(np.isnan(arr).sum())
    return nonfinite_problem(n_nan, int((~finite).sum()) - n_nan)


def nonfinite_problem(n_nan: int, n_inf: int) -> str | None:
    """The one-line description of NaN/infinite intensity counts, None when both are 0."""
    parts = [f"{n} {what}" for n, what in ((n_nan, "NaN"), (n_inf, "infinite")) if n]
    if not parts:
        return None
    return f"{' and '.join(parts)} intensities; fix or mask them before importing"


def label_value_problem(label_array: np.ndarray) -> str | None:
    """A description of label values outside {0, 1, 2} (or not integers), else None."""
    arr = np.asarray(label_array)
    if arr.size == 0:
        return None
    if np.issubdtype(arr.dtype, np.unsignedinteger) and int(arr.max()) <= max(ALLOWED_LABELS):
        return None  # the common case, one pass instead of a sort
    values = np.unique(arr)
    bad = [v for v in values.tolist() if v not in ALLOWED_LABELS]
    if not bad:
        return None
    shown = ", ".join(f"{v:g}" for v in bad[:6]) + (", ..." if len(bad) > 6 else "")
    return (
        f"label values {shown} outside {{0, 1, 2}} (0 background, 1 vital, 2 necrosis); "
        "relabel the map"
    )


def grid_mismatch(image, label) -> str | None:
    """How the label map's grid differs from the image's (size, spacing, origin, direction), or
    None when they agree within tolerance. Both are SimpleITK images; values shown x, y, z."""
    if image.GetDimension() != label.GetDimension():
        return f"dimension {label.GetDimension()} vs {image.GetDimension()}"
    return geometry_mismatch(Geometry.of(image), Geometry.of(label))


def geometry_mismatch(expected: Geometry, actual: Geometry) -> str | None:
    """How ``actual`` differs from ``expected`` (size, spacing, origin, direction), or None."""

    def fmt(values) -> str:
        return " x ".join(f"{v:g}" for v in values)

    if tuple(actual.size_xyz) != tuple(expected.size_xyz):
        return f"size {fmt(actual.size_xyz)} vs {fmt(expected.size_xyz)} voxels (x, y, z)"
    if not np.allclose(actual.spacing_xyz, expected.spacing_xyz, rtol=SPACING_RTOL, atol=1e-9):
        return f"spacing {fmt(actual.spacing_xyz)} vs {fmt(expected.spacing_xyz)} mm (x, y, z)"
    if not np.allclose(actual.origin, expected.origin, rtol=0, atol=ORIGIN_ATOL_MM):
        return f"origin {fmt(np.round(actual.origin, 3))} vs {fmt(np.round(expected.origin, 3))} mm"
    if not np.allclose(actual.direction, expected.direction, rtol=0, atol=DIRECTION_ATOL):
        return f"direction {fmt(np.round(actual.direction, 4))} vs {fmt(np.round(expected.direction, 4))}"
    return None
