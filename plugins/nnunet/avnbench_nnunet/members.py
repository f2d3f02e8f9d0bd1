"""A trained nnU-Net member's softmax of a case, kept beside the member's weights.

nnU-Net ensembles from the probabilities its members saved (``--save_probabilities``, then
``nnUNetv2_ensemble``) instead of running the members again. Here ``nnunet-2d`` and ``nnunet-3d``
keep each softmax they compute in their member's folder, and ``nnunet-ensemble``, which runs after
them on the same fold, reads it back: its fold job took 11–13 s on a CPU predicting both members
again and takes 2–3 s reading them (``benchmarks/README.md``). A kept softmax is used only for the same weights, the
same image file (both by sha256) and the same predictor settings and device; anything else is
predicted and kept anew. A member retrained in place (``Workspace.ensure_trained``) loses the folder
with it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PROBABILITIES_DIR = "avnbench_probabilities"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class MemberSoftmax:
    """One member's softmax (classes, z, y, x) float32 for a case image, predicted by
    ``load()``'s nnU-Net predictor the first time and read from the member's folder after.

    ``load`` builds the predictor only when a case is not kept yet; ``settings`` are what changes
    the softmax besides weights and image (tile step, mirroring, device)."""

    def __init__(self, folder: Path, weights: Path, settings: dict[str, Any], load: Callable[[], Any]):
        self.folder = folder / PROBABILITIES_DIR
        identity = {"weights_sha256": file_sha256(weights), **settings}
        self.key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        self._load = load
        self._predictor: Any = None

    def path(self, case_id: str, image_sha256: str) -> Path:
        """Where the softmax of this image under these weights and settings is kept."""
        return self.folder / f"{case_id}-{image_sha256[:16]}-{self.key}.npy"

    def softmax(self, case_id: str, image_sha256: str, read_image: Callable[[], tuple[Any, Any]],
                during_prediction: Callable[[], Any]) -> np.ndarray:
        """The kept softmax, or nnU-Net's prediction from ``read_image()``'s (image, properties),
        kept for next time; ``during_prediction()`` is the context the prediction runs in."""
        path = self.path(case_id, image_sha256)
        if path.is_file():
            try:
                return np.load(path, allow_pickle=False)
            except (OSError, ValueError):
                pass  # a damaged file is predicted again and replaced
        if self._predictor is None:
            self._predictor = self._load()
        image, properties = read_image()
        with during_prediction():
            _, p = self._predictor.predict_single_npy_array(image, properties, None, None, True)
        p = np.ascontiguousarray(p, dtype=np.float32)
        self.folder.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: two jobs predicting the same case never leave half a file.
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        with open(partial, "wb") as f:
            np.save(f, p, allow_pickle=False)
        os.replace(partial, path)
        return p
