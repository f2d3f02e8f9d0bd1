"""Tests of the dynunet plugin: planner, conformance, leak audit, determinism, orientation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avnbench.api import PredictCase, read_splits
from avnbench.testing import check_method
from avnbench.training import NotFittedError
from avnbench_dynunet.method import (
    CHECKPOINT_FILE,
    DATA_USAGE_FILE,
    MODEL_SUBDIR,
    DataUsage,
    DynUNetMethod,
    _case_item,
    _loading_transforms,
)
from avnbench_dynunet.planner import plan_topology

NNUNET_LIKE_KERNELS = [(1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)]
NNUNET_LIKE_STRIDES = [(1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2)]


@pytest.mark.parametrize(
    "spacing, patch",
    [((1.0, 0.44, 0.44), (80, 160, 160)), ((2.0, 0.88, 0.88), (40, 80, 80))],
)
def test_planner_pools_in_plane_first_on_anisotropic_spacing(spacing, patch):
    # z is 2.27× coarser than y/x: no z pooling and 1-wide z kernels until the spacing evens out.
    topology = plan_topology(spacing, patch, levels=5)
    assert topology.kernel_sizes == NNUNET_LIKE_KERNELS
    assert topology.strides == NNUNET_LIKE_STRIDES
    assert topology.divisor == (8, 16, 16)
    assert topology.patch_size == patch


def test_planner_very_anisotropic_and_small_patches():
    topology = plan_topology((4.0, 0.5, 0.5), (40, 160, 160), levels=5)
    assert topology.strides == [(1, 1, 1), (1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2)]
    assert topology.kernel_sizes == [(1, 3, 3), (1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3)]
    # An axis stops pooling when its feature map would drop below 4 voxels; the patch is rounded
    # up to the total stride.
    small = plan_topology((1.0, 1.0, 1.0), (10, 30, 30), levels=5)
    assert small.strides == [(1, 1, 1), (2, 2, 2), (1, 2, 2), (1, 2, 2), (1, 1, 1)]
    assert small.patch_size == (10, 32, 32)


@pytest.fixture(scope="module")
def smoke_run(tiny_dataset, tmp_path_factory):
    """One smoke fit + predict through the conformance check, shared by the tests below."""
    workdir = tmp_path_factory.mktemp("dynunet-smoke")
    predictions = check_method(DynUNetMethod, tiny_dataset, workdir, preset="smoke")
    return predictions, _job_dir(workdir)


def _job_dir(workdir: Path) -> Path:
    (job_dir,) = {path.parent.parent for path in workdir.rglob(CHECKPOINT_FILE)}
    return job_dir


def test_conformance(smoke_run):
    predictions, _ = smoke_run
    for p in predictions:
        assert p.probabilities.dtype == np.float32
        np.testing.assert_array_equal(p.labels, p.probabilities.argmax(axis=0))


def test_no_fold_validation_case_reaches_training_or_selection(smoke_run, tiny_dataset):
    _, job_dir = smoke_run
    usage = DataUsage.model_validate_json((job_dir / MODEL_SUBDIR / DATA_USAGE_FILE).read_text())
    fold_val = set(read_splits(tiny_dataset)[0][0].val)
    assert usage.training_batches and usage.selection
    assert set(usage.training_batches) <= set(usage.train_cases)
    assert set(usage.selection) == set(usage.val_cases)
    assert not (set(usage.train_cases) | set(usage.val_cases)) & fold_val
    assert not set(usage.training_batches) & set(usage.selection)


def test_training_curves_are_logged_per_epoch(smoke_run):
    _, job_dir = smoke_run
    points = [json.loads(line) for line in (job_dir / "training_log.jsonl").read_text().splitlines()]
    epochs = DynUNetMethod.Config.preset("smoke").epochs
    # one report per epoch, 1-based (TrainingLog.epoch)
    assert [p["step"] for p in points if p["name"] == "train_loss"] == list(range(1, epochs + 1))
    val = [p for p in points if p["name"] == "val_dice_mean"]
    assert val and all(0.0 <= p["value"] <= 1.0 for p in val)


def test_same_seed_same_weights_and_predictions(smoke_run, tiny_dataset, tmp_path):
    import torch

    first_predictions, first_job = smoke_run
    second_predictions = check_method(DynUNetMethod, tiny_dataset, tmp_path, preset="smoke")
    second_job = _job_dir(tmp_path)
    first = torch.load(first_job / MODEL_SUBDIR / CHECKPOINT_FILE, weights_only=True)
    second = torch.load(second_job / MODEL_SUBDIR / CHECKPOINT_FILE, weights_only=True)
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0, msg=name)
    for a, b in zip(first_predictions, second_predictions):
        np.testing.assert_array_equal(a.probabilities, b.probabilities)


def test_loader_gives_zyx_arrays_from_the_core_reader_z_scored(tiny_dataset):
    case = tiny_dataset.cases[0]
    loaded = _loading_transforms(with_label=True)(_case_item(case, with_label=True))
    np.testing.assert_array_equal(loaded["label"][0].numpy().astype(np.uint8), case.label_array())
    image = case.image_array()
    nonzero = image != 0
    expected = (image - image[nonzero].mean()) / image[nonzero].std()
    np.testing.assert_allclose(loaded["image"][0].numpy()[nonzero], expected[nonzero], rtol=1e-4, atol=1e-4)
    # predict reads the sealed case the same way
    sealed = _case_item(PredictCase.of(case, with_landmarks=False), with_label=False)
    np.testing.assert_array_equal(sealed["image"][0], image)


def test_predict_without_a_trained_model_says_what_to_do(tiny_dataset, tmp_path: Path):
    method = DynUNetMethod.from_preset("smoke")
    with pytest.raises(NotFittedError, match="run fit first"):
        list(method.predict([PredictCase.of(tiny_dataset.cases[0], with_landmarks=False)], tmp_path, "cpu"))
