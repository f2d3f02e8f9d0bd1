"""nnU-Net's postprocessing, decided per fold on the fit's internal validation cases.

nnU-Net's pipeline ends with ``nnUNetv2_find_best_configuration``, whose
``determine_postprocessing`` looks at cross-validation predictions and keeps

1. only the largest connected component of the whole foreground, if that raises the mean
   foreground Dice and lowers no class's Dice, then
2. for each foreground label in turn, only that label's largest component, if that raises its
   Dice,

and ``nnUNetv2_apply_postprocessing`` applies the kept steps to every prediction. avnbench makes
the same decision for each fold and method (an ensemble decides on its own averaged
predictions), on the internal validation cases ``fit`` is given, never on the fold's test cases;
``predict`` applies it with nnU-Net's ``remove_all_but_largest_component_from_segmentation``.

The rule is nnU-Net's, run here on arrays in memory: ``determine_postprocessing`` itself reads
and writes NIfTI folders and starts a process pool for each of its evaluations, which on the CPU
presets costs more than the fold's predictions. ``tests/test_postprocessing.py`` checks that
both reach the same steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

# Foreground labels of the dataset format (DESIGN.md): 1 vital bone, 2 necrosis.
FOREGROUND_LABELS = (1, 2)


class PostprocessingStep(BaseModel):
    """Keep only the largest connected component of the union of ``labels`` (others → 0)."""

    model_config = ConfigDict(extra="forbid")

    labels: list[int]


class Postprocessing(BaseModel):
    """The steps a fold's predictions get, and the Dice they were chosen on."""

    model_config = ConfigDict(extra="forbid")

    steps: list[PostprocessingStep] = Field(default_factory=list)
    cases: list[str] = Field(default_factory=list, description="internal validation cases decided on")
    dice_before: dict[str, float | None] = Field(
        default_factory=dict, description="mean Dice per label on those cases, raw predictions")
    dice_after: dict[str, float | None] = Field(
        default_factory=dict, description="mean Dice per label with the kept steps")

    def describe(self) -> str:
        """One line for the run's params, e.g. ``keep largest 1+2``, ``none``."""
        return ", ".join("keep largest " + "+".join(map(str, s.labels)) for s in self.steps) or "none"


def apply_postprocessing(segmentation: np.ndarray, postprocessing: Postprocessing) -> np.ndarray:
    """The label map with ``postprocessing``'s steps applied, in order (a new array)."""
    from nnunetv2.postprocessing.remove_connected_components import (
        remove_all_but_largest_component_from_segmentation,
    )

    for step in postprocessing.steps:
        segmentation = remove_all_but_largest_component_from_segmentation(segmentation, list(step.labels))
    return segmentation


def determine_postprocessing(
    case_ids: Sequence[str], predictions: Sequence[np.ndarray], references: Sequence[np.ndarray],
    labels: Sequence[int] = FOREGROUND_LABELS,
) -> Postprocessing:
    """nnU-Net's choice of postprocessing steps for these predicted and reference label maps."""
    predictions = [np.asarray(p) for p in predictions]
    references = [np.asarray(r) for r in references]
    if not predictions:
        return Postprocessing()

    def scores(maps: list[np.ndarray]) -> dict[int, float]:
        return {k: _mean_dice(maps, references, k) for k in labels}

    def with_step(maps: list[np.ndarray], step: PostprocessingStep) -> list[np.ndarray]:
        return [apply_postprocessing(m, Postprocessing(steps=[step])) for m in maps]

    before = scores(predictions)
    steps: list[PostprocessingStep] = []
    current, current_scores = predictions, before
    whole = PostprocessingStep(labels=list(labels))
    candidate = with_step(current, whole)
    candidate_scores = scores(candidate)
    if _foreground_mean(candidate_scores) > _foreground_mean(current_scores) and not any(
        candidate_scores[k] < current_scores[k] for k in labels
    ):
        steps.append(whole)
        current, current_scores = candidate, candidate_scores
    if len(labels) > 1:
        for k in labels:
            step = PostprocessingStep(labels=[k])
            candidate = with_step(current, step)
            candidate_scores = scores(candidate)
            if candidate_scores[k] > current_scores[k]:
                steps.append(step)
                current, current_scores = candidate, candidate_scores
    return Postprocessing(
        steps=steps, cases=list(case_ids),
        dice_before={str(k): _finite(v) for k, v in before.items()},
        dice_after={str(k): _finite(v) for k, v in current_scores.items()},
    )


def _mean_dice(predictions: list[np.ndarray], references: list[np.ndarray], label: int) -> float:
    """nnU-Net's per-label mean: Dice per case, NaN where the label is in neither map, nanmean."""
    values = []
    for p, r in zip(predictions, references):
        pred, ref = p == label, r == label
        tp = np.count_nonzero(pred & ref)
        fp_fn = np.count_nonzero(pred ^ ref)
        values.append(2 * tp / (2 * tp + fp_fn) if tp + fp_fn else np.nan)
    return _nanmean(values)


def _nanmean(values) -> float:
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def _foreground_mean(per_label: dict[int, float]) -> float:
    """nnU-Net's ``foreground_mean``: the plain mean of the labels' means (NaN if one is NaN, and
    a comparison with NaN is False, so no step is taken on it)."""
    return float(np.mean(list(per_label.values())))


def _finite(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 6)
