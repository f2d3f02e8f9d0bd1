"""The output grid in the patient frame, and smooth random fields evaluated on it.

Patient frame (mm, origin at the head centre): x lateral, y anterior, z superior. It maps to the
physical LPS frame by side: lateral is -x (LPS) for a right hip and +x for a left hip.
"""

from __future__ import annotations

import numpy as np


def unit(v) -> np.ndarray:
    """``v`` scaled to length 1 (float64)."""
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def patient_to_lps(side: str) -> np.ndarray:
    """Columns: LPS vectors of the patient lateral, anterior and superior axes."""
    lateral = [-1.0, 0.0, 0.0] if side == "R" else [1.0, 0.0, 0.0]
    return np.array([lateral, [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]).T


class Grid:
    """Voxel coordinates of the array region ``lo``..``hi`` (indices, z y x; every ``steps``-th
    voxel) in the patient frame.

    ``p`` holds the three patient coordinates (x, y, z; mm, float32 arrays of the region's shape),
    ``r`` their distance from the head centre (mm) and ``axes_mm`` the per-array-axis offsets (mm)
    of the voxel centres from ``center_index``.
    """

    def __init__(self, shape, spacing, center_index, index_axes, lo=(0, 0, 0), hi=None, steps=(1, 1, 1)):
        hi = shape if hi is None else hi
        self.lo, self.hi, self.steps = tuple(lo), tuple(hi), tuple(steps)
        self.axes_mm = [
            (np.arange(lo[d], hi[d], steps[d], dtype=np.float64) - center_index[d]) * spacing[d]
            for d in range(3)
        ]
        shp = tuple(len(a) for a in self.axes_mm)
        coords = []
        for c in range(3):
            comp = np.zeros(shp, dtype=np.float32)
            for d in range(3):
                view = [1, 1, 1]
                view[d] = shp[d]
                comp += (self.axes_mm[d] * index_axes[d][c]).astype(np.float32).reshape(view)
            coords.append(comp)
        self.p = tuple(coords)
        self.r = np.sqrt(coords[0] ** 2 + coords[1] ** 2 + coords[2] ** 2)

    @property
    def slices(self):
        """The region as a tuple of slices into the full array."""
        return tuple(slice(l, h, st) for l, h, st in zip(self.lo, self.hi, self.steps))


def smooth_field(
    rng: np.random.Generator, axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray], sigma_mm: float
) -> np.ndarray:
    """Unit-variance Gaussian random field (float32) with correlation length ``sigma_mm`` (mm),
    evaluated on the grid whose per-axis coordinates (mm) are ``axes_mm``. White noise on nodes
    sigma/2 apart is convolved with a separable Gaussian kernel by three small matrix products
    (fast, exact)."""
    kernels = []
    for coords in axes_mm:
        step = sigma_mm / 2.0
        nodes = np.arange(coords.min() - 3 * sigma_mm, coords.max() + 3 * sigma_mm + step, step)
        k = np.exp(-0.5 * ((coords[:, None] - nodes[None, :]) / sigma_mm) ** 2).astype(np.float32)
        k /= np.sqrt((k * k).sum(axis=1, keepdims=True))
        kernels.append(k)
    white = rng.standard_normal(tuple(k.shape[1] for k in kernels), dtype=np.float32)
    nz, ny, nx = white.shape
    big_z, big_y, big_x = (len(a) for a in axes_mm)
    # three plain 2-D matrix products (BLAS), contracting x, then y, then z
    f = (white.reshape(-1, nx) @ kernels[2].T).reshape(nz, ny, big_x)
    f = np.ascontiguousarray(f.transpose(0, 2, 1)).reshape(-1, ny) @ kernels[1].T  # (nz*X, Y)
    f = np.ascontiguousarray(f.reshape(nz, big_x, big_y).transpose(0, 2, 1))
    return (kernels[0] @ f.reshape(nz, -1)).reshape(big_z, big_y, big_x)


def oriented_field(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    sigmas_mm: tuple[float, float, float],
    shear: float = 0.0,
) -> np.ndarray:
    """Unit-variance anisotropic Gaussian random field (float32) on a grid of ``shape`` voxels of
    ``spacing`` mm (z y x) with correlation lengths ``sigmas_mm`` along z, y, x; with ``shear``
    the z correlation runs along the array direction (z, x) ∝ (1, shear) in mm instead of along
    z. Used for trabecular texture, whose striations follow the principal trabecular
    directions. White noise is smoothed by separable Gaussian filters; the sheared one is
    filtered along z in a frame where each slice is shifted by ``shear``·z."""
    from scipy import ndimage

    field = rng.standard_normal(shape, dtype=np.float32)
    sz, sy, sx = (s / d for s, d in zip(sigmas_mm, spacing))
    field = ndimage.gaussian_filter1d(field, sy, axis=1, mode="reflect")
    field = ndimage.gaussian_filter1d(field, sx, axis=2, mode="reflect")
    if shear == 0.0:
        field = ndimage.gaussian_filter1d(field, sz, axis=0, mode="reflect")
    else:
        per_slice = shear * spacing[0] / spacing[2]  # x shift (voxels) per slice
        centre = (shape[0] - 1) / 2.0
        shifts = [(z - centre) * per_slice for z in range(shape[0])]
        field = np.stack([ndimage.shift(f, (0.0, -d), order=1, mode="nearest") for f, d in zip(field, shifts)])
        field = ndimage.gaussian_filter1d(field, sz, axis=0, mode="reflect")
        field = np.stack([ndimage.shift(f, (0.0, d), order=1, mode="nearest") for f, d in zip(field, shifts)])
    field -= field.mean()
    field /= max(float(field.std()), 1e-6)
    return field


def coarse_steps(spacing: tuple[float, float, float], target_mm: float = 0.85) -> tuple[int, int, int]:
    """Integer sub-sampling steps per axis that bring ``spacing`` (mm) to about ``target_mm``;
    smooth soft-tissue structure is evaluated on that sub-grid and interpolated back."""
    return tuple(max(1, round(target_mm / s)) for s in spacing)  # type: ignore[return-value]


def upsample_linear(coarse: np.ndarray, steps: tuple[int, int, int], shape) -> np.ndarray:
    """Linear interpolation of ``coarse`` (values at every ``steps``-th voxel of ``shape``, from
    index 0) back onto the full grid (float32)."""
    out = coarse.astype(np.float32, copy=False)
    for axis, (step, n) in enumerate(zip(steps, shape)):
        if step == 1:
            continue
        pos = np.arange(n, dtype=np.float32) / step
        i0 = np.minimum(pos.astype(np.int64), out.shape[axis] - 1)
        i1 = np.minimum(i0 + 1, out.shape[axis] - 1)
        frac = (pos - i0).reshape([-1 if a == axis else 1 for a in range(3)])
        out = np.take(out, i0, axis=axis) * (1.0 - frac) + np.take(out, i1, axis=axis) * frac
    return out.astype(np.float32, copy=False)


def ramp(sdf: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume fraction of a region {sdf <= 0} (sdf in mm): 1 inside, 0 outside, linear
    over ``width`` mm (one voxel) across the boundary."""
    out = np.multiply(sdf, -1.0 / width, dtype=np.float32)
    out += 0.5
    np.clip(out, 0.0, 1.0, out=out)
    return out


def paint(signal: np.ndarray, value, fraction: np.ndarray) -> None:
    """Composite a tissue of intensity ``value`` over ``signal`` with a partial-volume fraction."""
    signal += (value - signal) * fraction
