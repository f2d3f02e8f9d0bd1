"""What ``jic-classifier`` feeds its network: the mid-coronal slice, z-scored and resized, with
landmark coordinate channels; the training planes and their labels; heat maps back on the
slice grid."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from avnbench.api import (
    Case,
    CaseMeta,
    DataError,
    PlaneSlice,
    PredictCase,
    jic_boundaries_mm,
    jic_classes,
    jic_type,
    mid_coronal_slice,
)
from avnbench_jic_classifier.config import JicClassifierConfig
from avnbench_jic_classifier.network import n_input_channels


def class_weights(labels: Sequence[int], n_classes: int, mode: str) -> list[float]:
    """Cross-entropy weights: n / (k · n_c) for the k classes present (mean 1 over the
    training cases), 0 for absent classes (they never appear as targets)."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=n_classes).astype(float)
    if mode == "none":
        return [1.0 if c > 0 else 0.0 for c in counts]
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return [float(w) for w in weights]


def zscore(slice_array: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the slice (float32)."""
    a = np.asarray(slice_array, dtype=np.float32)
    return (a - a.mean()) / max(float(a.std()), 1e-6)


def network_input(plane: PlaneSlice, meta: CaseMeta | PredictCase, config: JicClassifierConfig):
    """(C, input_size, input_size) float32 tensor: the z-scored slice resized to the network's
    input, and with ``position_channels`` the weight-bearing lateral coordinate and the superior
    coordinate in head radii on the same pixels. ``meta``: anything with ``case_id`` and
    ``landmarks`` (a case's metadata, or the :class:`PredictCase` itself)."""
    import torch

    channels = [zscore(plane.array)]
    if config.position_channels:
        boundaries = jic_boundaries_mm(meta)
        if boundaries is None or meta.landmarks is None:
            raise DataError(f"case {meta.case_id}: no landmarks for the position channels")
        x_med, _, _, x_edge = boundaries
        h_mm, v_mm = plane.grid_mm()
        channels.append((h_mm - x_med) / max(x_edge - x_med, 1e-3))
        channels.append(v_mm / meta.landmarks.head_radius_mm)
    return torch.from_numpy(_resize(np.stack(channels), config.input_size, "bilinear"))


def necrosis_map(lesion_logits, shape: tuple[int, ...]) -> np.ndarray:
    """The network's necrosis probability (0–1, float32), its (1, 1, h, w) logits resized
    bilinearly to the slice ``shape`` (same field of view) before the sigmoid."""
    import torch
    import torch.nn.functional as F

    logits = F.interpolate(lesion_logits.detach().float(), size=tuple(shape), mode="bilinear",
                           align_corners=False)[0, 0]  # fmt: skip
    return torch.sigmoid(logits).cpu().numpy().astype(np.float32)


def _resize(array: np.ndarray, size: int, mode: str) -> np.ndarray:
    """(C, v, h) or (v, h) float array resized to size × size pixels (same field of view)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    t = t[None] if t.ndim == 3 else t[None, None]
    kwargs = {"align_corners": False, "antialias": True} if mode == "bilinear" else {}
    out = F.interpolate(t, size=(size, size), mode=mode, **kwargs)[0]
    return out.numpy() if array.ndim == 3 else out[0].numpy()


def upsample_cam(cam_map, shape: tuple[int, ...]) -> np.ndarray:
    """A (1, 1, h, w) class-activation map, resized bilinearly to the slice ``shape`` (both span
    the same field of view) and scaled to max 1; non-negative float32."""
    import torch
    import torch.nn.functional as F

    heat = F.interpolate(cam_map.detach().float(), size=tuple(shape), mode="bilinear",
                         align_corners=False)[0, 0]  # fmt: skip
    heat = torch.clamp(heat, min=0).cpu().numpy().astype(np.float32)
    peak = float(heat.max())
    return heat / peak if peak > 0 else heat


def prediction_slice(case: PredictCase) -> PlaneSlice:
    """The mid-coronal image slice of a case to classify (linear interpolation); a one-line
    :class:`DataError` when the case comes without landmarks (none in the dataset, or only
    estimated from the reference label, which ``predict`` must not see)."""
    if case.landmarks is None:
        raise DataError(
            f"case {case.case_id}: jic-classifier needs landmarks that do not come from the "
            "reference label; add the head centre and patient axes to the dataset's manifest"
        )
    return mid_coronal_slice(case.image_array(), case, order=1)


def labelled_inputs(
    cases: Sequence[Case], config: JicClassifierConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Network inputs, necrosis masks (area fractions on the input grid) and class indices of
    every training plane that has a JIC type: the
    mid-coronal plane and its anterior/posterior shifts (``plane_jitter_mm``), each labelled by
    the reference grading applied to that plane. Cases whose mid-coronal plane has no JIC type
    are left out, and so are shifted planes without necrosis."""
    classes = jic_classes()
    offsets = _plane_offsets_mm(config)
    inputs, masks, targets = [], [], []
    for case in cases:
        if case.meta.jic is None:
            continue  # no necrosis on its mid-coronal slice: no class, and the core skips it too
        if case.meta.landmarks is None:
            raise DataError(f"case {case.case_id}: no landmarks; the mid-coronal slice needs them")
        image, labels = case.image_array(), case.label_array()
        for offset in offsets:
            meta = _shifted_meta(case.meta, offset)
            jic = case.meta.jic if offset == 0.0 else jic_type(labels, meta).type
            if jic is None:
                continue
            plane = mid_coronal_slice(image, meta, order=1)
            necrosis = mid_coronal_slice(labels, meta, order=0).array == 2
            inputs.append(network_input(plane, meta, config).numpy())
            masks.append(_resize(necrosis.astype(np.float32), config.input_size, "area"))
            targets.append(classes.index(jic))
    size = config.input_size
    if not inputs:
        empty = np.zeros((0, n_input_channels(config), size, size), np.float32)
        return empty, np.zeros((0, 1, size, size), np.float32), np.zeros(0, np.int64)
    return np.stack(inputs), np.stack(masks)[:, None], np.array(targets, dtype=np.int64)


def _plane_offsets_mm(config: JicClassifierConfig) -> list[float]:
    """0 first, then ±step, ±2·step, ... up to ``plane_jitter_mm``."""
    n = int(np.floor(config.plane_jitter_mm / config.plane_jitter_step_mm + 1e-9))
    steps = [k * config.plane_jitter_step_mm for k in range(1, n + 1)]
    return [0.0] + [sign * d for d in steps for sign in (1.0, -1.0)]


def _shifted_meta(meta: CaseMeta, offset_mm: float) -> CaseMeta:
    """The case's metadata with the head centre moved ``offset_mm`` along the anterior axis: a
    parallel coronal plane. Lateral coordinates (and so the JIC boundaries) are unchanged."""
    if offset_mm == 0.0:
        return meta
    landmarks = meta.landmarks
    center = np.asarray(landmarks.head_center_mm) + offset_mm * np.asarray(
        landmarks.patient_axes.anterior
    )
    moved = landmarks.model_copy(update={"head_center_mm": tuple(float(c) for c in center)})
    return meta.model_copy(update={"landmarks": moved})
