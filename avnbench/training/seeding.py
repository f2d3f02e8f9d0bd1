"""One way to seed a torch method: python, numpy and torch, plus cuDNN's deterministic flags."""

from __future__ import annotations

import random

import numpy as np


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and every GPU).

    ``deterministic`` also turns off cuDNN's benchmark mode and selects its deterministic
    kernels (as MONAI's ``set_determinism`` does); CPU results do not depend on it.
    """
    import torch

    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def torch_generator(seed: int):
    """A CPU ``torch.Generator`` seeded with ``seed``: a private stream for shuffling or
    augmentation that other code drawing from torch's global stream cannot disturb."""
    import torch

    return torch.Generator().manual_seed(seed)
