"""Saving and reading predictions: label maps as NIfTI on the image grid, probabilities as npz."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from avnbench.data.dataset import FILE_ENDING, Case, path_inside
from avnbench.data.files import make_folder, write_text_atomic
from avnbench.data.imageio import write_image
from avnbench.methods import ClassificationPrediction, SegmentationPrediction


def save_prediction(prediction: SegmentationPrediction | ClassificationPrediction, case: Case, out_dir: Path) -> Path:
    """Write one prediction into ``out_dir``; returns the main file written.

    Segmentation: ``{case}.nii.gz`` (uint8, the case's geometry) and, where given,
    ``{case}_probabilities.npz`` (float16, (3, z, y, x)), like nnU-Net's ``--save_probabilities``.
    Classification: ``{case}.json`` with the class probabilities. Every path stays inside
    ``out_dir`` (:func:`avnbench.data.dataset.path_inside`); the label map is written and
    verified by :func:`avnbench.data.imageio.write_image`.
    """
    out_dir = make_folder(Path(out_dir), "prediction folder")

    def inside(name: str) -> Path:
        return path_inside(out_dir, name, out_dir)

    if isinstance(prediction, SegmentationPrediction):
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(prediction.labels.astype(np.uint8))
        case.meta.geometry.apply_to(image)
        path = write_image(image, inside(f"{case.case_id}{FILE_ENDING}"))
        if prediction.probabilities is not None:
            np.savez_compressed(
                inside(f"{case.case_id}_probabilities.npz"),
                probabilities=prediction.probabilities.astype(np.float16),
            )
        return path
    path = inside(f"{case.case_id}.json")
    write_text_atomic(path, json.dumps({"case_id": case.case_id, "probabilities": [float(p) for p in prediction.probabilities]}))
    if prediction.heatmap is not None:
        np.save(inside(f"{case.case_id}_heatmap.npy"), prediction.heatmap.astype(np.float32))
    return path
