"""Training augmentation of ``jic-classifier``: affine and intensity, never a left-right flip."""

from __future__ import annotations

from avnbench_jic_classifier.config import JicClassifierConfig


def augment(x, config: JicClassifierConfig, generator):
    """Random rotation, zoom, shift, contrast and noise of a (N, 1, S, S) batch. Never a
    left-right flip: the JIC type depends on how far laterally the lesion reaches."""
    import math

    import torch
    import torch.nn.functional as F

    n = x.shape[0]

    def uniform(half_range: float):
        return (torch.rand(n, generator=generator) * 2 - 1) * half_range

    angle = uniform(math.radians(config.rotation_deg))
    scale = 1 + uniform(config.scale_range)
    shift_x, shift_y = uniform(2 * config.translation_frac), uniform(2 * config.translation_frac)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # position channels are resampled with the image, so they keep naming each pixel's
    # original place relative to the landmarks
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gain = 1 + uniform(config.intensity_range)
    offset = uniform(config.intensity_range)
    image = out[:, :1] * gain.view(n, 1, 1, 1) + offset.view(n, 1, 1, 1)
    if config.noise_std > 0:
        image = image + torch.randn(image.shape, generator=generator) * config.noise_std
    return torch.cat([image, out[:, 1:]], dim=1)
