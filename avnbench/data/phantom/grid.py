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
    """Voxel coordinates of the array region ``lo``..``hi`` (indices, z y x) in the patient frame.

    ``p`` holds the three patient coordinates (x, y, z; mm, float32 arrays of the region's shape),
    ``r`` their distance from the head centre (mm) and ``axes_mm`` the per-array-axis offsets (mm)
    of the voxel centres from ``center_index``.
    """

    def __init__(self, shape, spacing, center_index, index_axes, lo=(0, 0, 0), hi=None):
        hi = shape if hi is None else hi
        self.lo, self.hi = tuple(lo), tuple(hi)
        self.axes_mm = [
            (np.arange(lo[d], hi[d], dtype=np.float64) - center_index[d]) * spacing[d]
            for d in range(3)
        ]
        shp = tuple(h - l for l, h in zip(self.lo, self.hi))
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
        return tuple(slice(l, h) for l, h in zip(self.lo, self.hi))


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
