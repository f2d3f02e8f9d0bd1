"""Saving and reading predictions: label maps as NIfTI on the image grid, probabilities as npz."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from avnbench.data.dataset import FILE_ENDING, Case
from avnbench.methods import ClassificationPrediction, SegmentationPrediction


def save_prediction(prediction: SegmentationPrediction | ClassificationPrediction, case: Case, out_dir: Path) -> Path:
    """Write one prediction into ``out_dir``; returns the main file written.

    Segmentation: ``{case}.nii.gz`` (uint8, the case's geometry) and, where given,
    ``{case}_probabilities.npz`` (float16, (3, z, y, x)), like nnU-Net's ``--save_probabilities``.
    Classification: ``{case}.json`` with the class probabilities.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(prediction, SegmentationPrediction):
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(prediction.labels.astype(np.uint8))
        case.meta.geometry.apply_to(image)
        path = out_dir / f"{case.case_id}{FILE_ENDING}"
        sitk.WriteImage(image, str(path), useCompression=True)
        if prediction.probabilities is not None:
            np.savez_compressed(
                out_dir / f"{case.case_id}_probabilities.npz",
                probabilities=prediction.probabilities.astype(np.float16),
            )
        return path
    path = out_dir / f"{case.case_id}.json"
    path.write_text(json.dumps({"case_id": case.case_id, "probabilities": [float(p) for p in prediction.probabilities]}), encoding="utf-8")
    if prediction.heatmap is not None:
        np.save(out_dir / f"{case.case_id}_heatmap.npy", prediction.heatmap.astype(np.float32))
    return path
