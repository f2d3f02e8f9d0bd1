"""Class-balanced voxel sampling for ``patch25d-cnn``: voxel pools per class and batches of
triplanar patches drawn from them."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from avnbench.api import Case, ConfigError

MAX_POOL_VOXELS = 200_000  # per case and class: bounds the sampling index memory on big volumes


class SampledCase:
    """A case held for training: padded normalised volume, labels and voxel pools per class."""

    def __init__(self, case_id, padded, labels, spacing, pools):
        self.case_id = case_id
        self.padded = padded
        self.labels = labels
        self.spacing = spacing
        # pools[k]: flat voxel indices; 0 background anywhere, 1 vital, 2 necrosis,
        # 3 background near the head (hard negatives)
        self.pools = pools

    @classmethod
    def load(cls, case: Case, cfg, device) -> "SampledCase":
        from scipy import ndimage

        from avnbench_patch25d import network as net

        rng = np.random.default_rng([cfg.seed, _stable_hash(case.case_id)])
        labels = case.label_array()
        head = labels > 0
        if head.any():
            near = ~head & (
                ndimage.distance_transform_edt(~head, sampling=case.spacing)
                <= cfg.hard_negative_margin_mm
            )
        else:
            near = np.zeros_like(head)
        flat = labels.ravel()
        pools = [
            np.flatnonzero(flat == 0),
            np.flatnonzero(flat == 1),
            np.flatnonzero(flat == 2),
            np.flatnonzero(near.ravel()),
        ]
        pools = [
            rng.choice(p, MAX_POOL_VOXELS, replace=False) if len(p) > MAX_POOL_VOXELS else p
            for p in pools
        ]
        padded = net.pad_volume(net.normalise_image(case.image_array())).to(device)
        return cls(case.case_id, padded, labels, case.spacing, pools)


def _stable_hash(text: str) -> int:
    return zlib.crc32(text.encode())


def available_fractions(
    fractions: tuple[float, float, float], cases: Sequence[SampledCase]
) -> tuple[float, float, float]:
    """The sampling shares with classes that no case has set to 0 and the rest renormalised."""
    present = [any(len(c.pools[k]) for c in cases) for k in range(3)]
    kept = [f if p else 0.0 for f, p in zip(fractions, present)]
    if sum(kept) == 0:
        raise ConfigError("patch25d-cnn: the training cases have no voxels of any sampled class")
    return tuple(f / sum(kept) for f in kept)  # type: ignore[return-value]


def draw_batch(cases, fractions, n, cfg, rng: np.random.Generator, device):
    """``n`` voxels drawn class by class (shares ``fractions``), each from a random case that
    has that class; returns their patches (n, 3, 32, 32) and class targets (n,)."""
    import torch

    from avnbench_patch25d import network as net

    counts = rng.multinomial(n, fractions)
    n_hard = rng.binomial(counts[0], cfg.hard_negative_fraction)
    # (pool index, class target, how many)
    requests = [(3, 0, n_hard), (0, 0, counts[0] - n_hard), (1, 1, counts[1]), (2, 2, counts[2])]
    per_case: dict[int, list[tuple[np.ndarray, int]]] = {}
    for pool, target, count in requests:
        eligible = [i for i, c in enumerate(cases) if len(c.pools[pool])]
        if pool == 3 and not eligible:  # no head anywhere: hard negatives become plain ones
            pool, eligible = 0, [i for i, c in enumerate(cases) if len(c.pools[0])]
        if count == 0 or not eligible:
            continue
        chosen = rng.choice(eligible, size=count)
        for case_index, k in zip(*np.unique(chosen, return_counts=True)):
            pool_voxels = cases[case_index].pools[pool]
            flat = pool_voxels[rng.integers(0, len(pool_voxels), size=k)]
            per_case.setdefault(int(case_index), []).append((flat, target))
    patches, targets = [], []
    for case_index, parts in sorted(per_case.items()):
        case = cases[case_index]
        flat = np.concatenate([p[0] for p in parts])
        coords = torch.from_numpy(np.stack(np.unravel_index(flat, case.labels.shape), axis=1))
        patches.append(net.extract_patches(case.padded, coords.to(case.padded.device)))
        targets.append(np.concatenate([np.full(len(p[0]), p[1]) for p in parts]))
    return (
        torch.cat(patches).to(device),
        torch.from_numpy(np.concatenate(targets)).long().to(device),
    )
