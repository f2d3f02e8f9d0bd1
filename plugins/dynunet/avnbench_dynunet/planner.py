"""Network topology from voxel spacing, the way nnU-Net's planner derives it.

Pure Python (no torch), so it is cheap to import and to test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

ANISOTROPY_RATIO = 2.0
MIN_FEATURE_MAP = 4


class Topology(BaseModel):
    """Kernel sizes and strides per resolution level, in array order (z, y, x)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kernel_sizes: list[tuple[int, int, int]]
    strides: list[tuple[int, int, int]]
    patch_size: tuple[int, int, int]

    @property
    def divisor(self) -> tuple[int, int, int]:
        """What every input's size must be divisible by, per axis (product of the strides)."""
        return tuple(math.prod(s[axis] for s in self.strides) for axis in range(3))  # type: ignore[return-value]


def plan_topology(
    spacing_zyx: Sequence[float],
    patch_size_zyx: Sequence[int],
    levels: int = 5,
    min_feature_map: int = MIN_FEATURE_MAP,
) -> Topology:
    """Kernels and strides for a ``levels``-level U-Net on voxels of ``spacing_zyx`` mm.

    As nnU-Net v2's ``get_pool_and_conv_props``: an axis is downsampled (stride 2) only while its
    feature map stays at least ``min_feature_map`` voxels and its current spacing is less than 2×
    the finest current spacing among such axes; otherwise its stride is 1, so anisotropic data
    first gets in-plane downsampling until the spacings even out. Kernels are 3 along an axis once its spacing is
    within 2× the finest (and stay 3), else 1, and 3×3×3 at the bottleneck. The first level has
    stride 1; levels beyond what the patch allows get stride 1 (the level count is fixed). The
    patch size is rounded up to a multiple of the total stride per axis.
    """
    if len(spacing_zyx) != 3 or len(patch_size_zyx) != 3:
        raise ValueError("spacing and patch size must have three (z, y, x) values")
    if any(s <= 0 for s in spacing_zyx) or any(p < 1 for p in patch_size_zyx):
        raise ValueError(f"invalid spacing {spacing_zyx} or patch size {patch_size_zyx}")
    if levels < 2:
        raise ValueError(f"a U-Net needs at least 2 levels, got {levels}")
    spacing = [float(s) for s in spacing_zyx]
    size = [float(p) for p in patch_size_zyx]
    kernel = [1, 1, 1]
    kernels: list[tuple[int, int, int]] = []
    strides: list[tuple[int, int, int]] = [(1, 1, 1)]
    for _ in range(levels - 1):
        finest = min(spacing)
        for axis in range(3):
            if spacing[axis] / finest < ANISOTROPY_RATIO:
                kernel[axis] = 3
        kernels.append(tuple(kernel))  # type: ignore[arg-type]
        pooled = _axes_to_pool(spacing, size, min_feature_map)
        stride = tuple(2 if axis in pooled else 1 for axis in range(3))
        for axis in pooled:
            spacing[axis] *= 2
            size[axis] = math.ceil(size[axis] / 2)
        strides.append(stride)  # type: ignore[arg-type]
    kernels.append((3, 3, 3))
    divisor = [math.prod(s[axis] for s in strides) for axis in range(3)]
    patch = tuple(int(math.ceil(p / d) * d) for p, d in zip(patch_size_zyx, divisor))
    return Topology(kernel_sizes=kernels, strides=strides, patch_size=patch)  # type: ignore[arg-type]


def _axes_to_pool(spacing: list[float], size: list[float], min_feature_map: int) -> list[int]:
    """The axes nnU-Net would downsample next: big enough, and within 2× of the finest of those."""
    big_enough = [a for a in range(3) if size[a] >= 2 * min_feature_map]
    if not big_enough:
        return []
    finest = min(spacing[a] for a in big_enough)
    axes = [a for a in big_enough if spacing[a] / finest < ANISOTROPY_RATIO]
    # nnU-Net pools a lone axis only if it keeps at least 1.5× the minimum feature map.
    if len(axes) == 1 and size[axes[0]] < 3 * min_feature_map:
        return []
    return axes
