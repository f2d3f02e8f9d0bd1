import json

import numpy as np
import pytest

from avnbench.api import PredictCase, dice, read_splits
from avnbench.testing import check_method
from avnbench.training import NotFittedError
from avnbench_threshold_baseline.method import PARAMS_FILE, ThresholdBaseline


def test_conformance(tiny_dataset, tmp_path):
    predictions = check_method(ThresholdBaseline, tiny_dataset, tmp_path, preset="smoke")
    # it is a real segmentation: a head of plausible size is found in every case
    for p in predictions:
        head_voxels = int((p.labels > 0).sum())
        assert head_voxels > 1000


def test_learned_thresholds_are_ordered(tiny_dataset, tmp_path):
    folds, _ = read_splits(tiny_dataset)
    method = ThresholdBaseline.from_preset("smoke")
    method.fit(tiny_dataset.subset(folds[0].train), [], tmp_path, "cpu")
    params = json.loads((tmp_path / PARAMS_FILE).read_text())
    # the dark reactive band is darker than the bright marrow/fat boundary of the head
    assert params["necrosis_threshold"] < 1.0
    assert params["head_threshold"] > 0
    assert params["min_lesion_mm3"] > 0


def test_segmentation_overlaps_reference(tiny_dataset, tmp_path):
    folds, _ = read_splits(tiny_dataset)
    method = ThresholdBaseline.from_preset("quick")
    method.fit(tiny_dataset.subset(folds[0].train), [], tmp_path, "cpu")
    cases = tiny_dataset.subset(folds[0].val)
    scores = []
    sealed = [PredictCase.of(c, with_landmarks=ThresholdBaseline.card.uses_landmarks) for c in cases]
    for case, pred in zip(cases, method.predict(sealed, tmp_path, "cpu")):
        scores.append(dice(pred.labels > 0, case.label_array() > 0))
    assert np.mean(scores) > 0.7


def test_predict_before_fit_says_what_to_do(tiny_dataset, tmp_path):
    sealed = [PredictCase.of(tiny_dataset.cases[0], with_landmarks=False)]
    with pytest.raises(NotFittedError, match="run fit first"):
        list(ThresholdBaseline.from_preset("smoke").predict(sealed, tmp_path, "cpu"))
