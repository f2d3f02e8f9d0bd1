import json

import numpy as np
import pytest
import torch

from avnbench.api import (
    DataError,
    PredictCase,
    TrainingLog,
    heatmap_top_decile_on_necrosis,
    jic_classes,
    mid_coronal_slice,
    read_splits,
)
from avnbench.testing import check_method
from avnbench.training import NotFittedError
from avnbench_jic_classifier.augmentation import augment
from avnbench_jic_classifier.config import JicClassifierConfig
from avnbench_jic_classifier.inputs import class_weights, network_input
from avnbench_jic_classifier.method import MODEL_FILE, JicClassifier


def _sealed(cases):
    return [PredictCase.of(c, with_landmarks=JicClassifier.card.uses_landmarks) for c in cases]


@pytest.fixture(scope="module")
def smoke_run(tiny_dataset, tmp_path_factory):
    """One conformance run on the smoke preset, shared by the checks below."""
    workdir = tmp_path_factory.mktemp("jic")
    predictions = check_method(JicClassifier, tiny_dataset, workdir, preset="smoke")
    (job_dir,) = {path.parent for path in workdir.rglob(MODEL_FILE)}
    folds, _ = read_splits(tiny_dataset)
    return predictions, tiny_dataset.subset(folds[0].val), job_dir


def test_conformance(smoke_run):
    predictions, cases, _ = smoke_run
    assert JicClassifier.card.classes == jic_classes() == ("A", "B", "C1", "C2")
    for p in predictions:
        assert p.probabilities.shape == (4,)
        assert p.probabilities.sum() == pytest.approx(1.0, abs=1e-6)
        assert np.all(p.probabilities >= 0)


def test_heatmap_on_the_default_mid_coronal_grid_and_non_negative(smoke_run):
    predictions, cases, job_dir = smoke_run
    for p, case in zip(predictions, cases):
        ref_slice = mid_coronal_slice(case.label_array(), case.meta).array
        assert p.heatmap.shape == ref_slice.shape
        assert p.heatmap.dtype == np.float32
        assert np.all(np.isfinite(p.heatmap)) and p.heatmap.min() >= 0 and p.heatmap.max() <= 1
        score = heatmap_top_decile_on_necrosis(p.heatmap, ref_slice)
        assert score is None or 0.0 <= score <= 1.0
        assert (job_dir / "artifacts" / "heatmaps" / f"{case.case_id}.png").stat().st_size > 0


def test_gradcam_of_the_softmax_head_on_the_slice_grid_and_non_negative(tiny_dataset, tmp_path):
    predictions = check_method(
        JicClassifier, tiny_dataset, tmp_path, preset="smoke", head="softmax", epochs=2
    )
    folds, _ = read_splits(tiny_dataset)
    for p, case in zip(predictions, tiny_dataset.subset(folds[0].val)):
        assert p.heatmap.shape == mid_coronal_slice(case.image_array(), case.meta).array.shape
        assert np.all(np.isfinite(p.heatmap)) and p.heatmap.min() >= 0
        assert p.heatmap.max() in (0.0, pytest.approx(1.0))  # scaled to its peak


def test_fit_records_curves_selection_and_class_weights(smoke_run):
    _, _, job_dir = smoke_run
    names = {row["name"] for row in TrainingLog(job_dir).read_metrics()}
    assert {"train_loss", "val_loss", "val_accuracy"} <= names
    params = json.loads((job_dir / "training_params.json").read_text())
    assert set(params["class_weights"]) == set(jic_classes())
    saved = json.loads((job_dir / MODEL_FILE).read_text())
    assert 0 <= saved["selected_epoch"] < JicClassifierConfig.preset("smoke").epochs


def test_same_seed_same_predictions(tiny_dataset, smoke_run, tmp_path):
    first, cases, _ = smoke_run
    again = check_method(JicClassifier, tiny_dataset, tmp_path, preset="smoke")
    for a, b in zip(first, again):
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=0, atol=1e-6)
        np.testing.assert_allclose(a.heatmap, b.heatmap, rtol=0, atol=1e-5)


def test_class_weights_inverse_frequency_with_absent_classes():
    weights = class_weights([2, 2, 2, 3], n_classes=4, mode="inverse_frequency")
    assert weights[0] == weights[1] == 0.0  # absent: never a target
    assert weights[2] == pytest.approx(4 / (2 * 3))
    assert weights[3] == pytest.approx(4 / (2 * 1))
    assert class_weights([0, 3], 4, "none") == [1.0, 0.0, 0.0, 1.0]


def test_augmentation_never_flips_left_right(tiny_dataset):
    config = JicClassifierConfig.preset("quick", seed=3)
    case = next(c for c in tiny_dataset.cases if c.meta.jic is not None)
    x = network_input(mid_coronal_slice(case.image_array(), case.meta, order=1), case.meta, config)
    batch = augment(x[None].repeat(16, 1, 1, 1), config, torch.Generator().manual_seed(0))
    assert batch.shape == (16, *x.shape)
    # channel 1 is the lateral coordinate: it must still grow from left to right
    centre = slice(config.input_size // 4, 3 * config.input_size // 4)
    lateral_gradient = torch.diff(batch[:, 1, centre, centre], dim=-1)
    assert bool((lateral_gradient > 0).all())


def test_no_case_with_a_jic_type_is_a_clear_error(tiny_dataset, tmp_path):
    without_jic = [c.model_copy(update={"meta": c.meta.model_copy(update={"jic": None})})
                   for c in tiny_dataset.cases[:3]]  # fmt: skip
    method = JicClassifier.from_preset("smoke")
    with pytest.raises(DataError, match="JIC"):
        method.fit(without_jic, [], tmp_path, "cpu")


def test_predict_before_fit_says_what_to_do(tiny_dataset, tmp_path):
    method = JicClassifier.from_preset("smoke")
    with pytest.raises(NotFittedError, match="run fit first"):
        list(method.predict(_sealed(tiny_dataset.cases[:1]), tmp_path, "cpu"))


def test_predict_without_landmarks_is_a_one_line_data_error(smoke_run):
    _, cases, job_dir = smoke_run
    # landmarks estimated from the reference label never reach predict: the sealed case has none
    sealed = PredictCase.of(cases[0], with_landmarks=False)
    with pytest.raises(DataError, match="needs landmarks") as error:
        list(JicClassifier.from_preset("smoke").predict([sealed], job_dir, "cpu"))
    assert "\n" not in str(error.value)


def test_card_declares_landmarks_and_the_graded_reference():
    assert JicClassifier.card.uses_landmarks and JicClassifier.card.predicts == "jic"
