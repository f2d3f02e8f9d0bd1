"""Tests of patch25d-cnn: conformance, exact dense inference, cut-off, post-processing, presets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avnbench.api import PredictCase
from avnbench.testing import check_method
from avnbench.training import NotFittedError
from avnbench_patch25d import network as net
from avnbench_patch25d.method import Patch25dCNN
from avnbench_patch25d.postprocess import (
    label_map,
    necrosis_cutoff_by_dice,
    postprocess_head,
    youden_cutoff,
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # Small convolutions gain little from a second thread and lose a lot when the CPU is shared.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _random_model(seed: int = 0) -> net.TriplanarPatchCNN:
    torch.manual_seed(seed)
    model = net.TriplanarPatchCNN((4, 8, 8), hidden_units=16, bias_init=0.0)
    with torch.no_grad():  # larger weights than Xavier's, so the softmax is far from uniform
        for p in model.parameters():
            p.mul_(3.0)
    return model.eval()


def _all_coords(shape) -> torch.Tensor:
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    return torch.from_numpy(grid.reshape(-1, 3))


def test_conformance(tiny_dataset, tmp_path):
    predictions = check_method(Patch25dCNN, tiny_dataset, tmp_path, preset="smoke")
    job_dirs = list(tmp_path.rglob("postprocess.json"))
    assert len(job_dirs) == 1
    job = job_dirs[0].parent
    post = json.loads((job / "postprocess.json").read_text())
    params = json.loads((job / "training_params.json").read_text())
    assert post["cutoff_source"] == "roc_youden_val_cases"
    assert 0.0 < params["head_cutoff"] < 1.0
    assert (job / "artifacts" / "roc_head.png").stat().st_size > 0
    names = {row["name"] for row in map(json.loads, (job / "training_log.jsonl").read_text().splitlines())}
    assert {"train_loss", "val_loss", "val_roc_auc_head"} <= names
    # The dense probabilities come back with the labels, and labels follow the post-processing.
    for p in predictions:
        assert p.probabilities.dtype == np.float32
        np.testing.assert_array_equal(
            p.labels,
            label_map(p.probabilities, post["head_cutoff"], tiny_dataset[p.case_id].spacing,
                      post["min_cluster_mm3"], post["opening_iterations"],
                      post["min_necrosis_cluster_mm3"], post["necrosis_cutoff"]),
        )


def test_dense_equals_patchwise_on_every_voxel():
    model = _random_model()
    volume = np.random.default_rng(1).normal(size=(9, 13, 11)).astype(np.float32)
    padded = net.pad_volume(net.normalise_image(volume))
    dense = net.predict_dense(model, padded, plane_batch=5, z_chunk=4)
    patchwise = net.predict_patchwise(model, padded, _all_coords(volume.shape))
    patchwise = patchwise.T.reshape(3, *volume.shape)
    assert dense.shape == (3, *volume.shape)
    assert float((dense - patchwise).abs().max()) <= 1e-4
    assert float(dense.std(dim=(1, 2, 3)).min()) > 1e-3  # not a trivially constant output


def test_dense_region_equals_whole_volume():
    model = _random_model(seed=3)
    volume = np.random.default_rng(2).normal(size=(12, 20, 17)).astype(np.float32)
    padded = net.pad_volume(net.normalise_image(volume))
    whole = net.predict_dense(model, padded)
    region = (slice(2, 9), slice(5, 18), slice(0, 6))
    part = net.predict_dense(model, padded, region=region, z_chunk=3)
    assert float((part - whole[(slice(None), *region)]).abs().max()) <= 1e-5


def test_patches_are_the_three_planes_through_the_voxel():
    volume = np.arange(40 * 41 * 42, dtype=np.float32).reshape(40, 41, 42)
    padded = net.pad_volume(volume)
    z, y, x = 20, 21, 22
    patches = net.extract_patches(padded, torch.tensor([[z, y, x]]))[0]
    # Patch centre (row 16, column 16) is the voxel itself in every plane.
    assert patches[:, 16, 16].tolist() == [volume[z, y, x]] * 3
    np.testing.assert_array_equal(patches[0].numpy(), volume[z, y - 16 : y + 16, x - 16 : x + 16])
    np.testing.assert_array_equal(patches[1].numpy(), volume[z - 16 : z + 16, y, x - 16 : x + 16])
    np.testing.assert_array_equal(patches[2].numpy(), volume[z - 16 : z + 16, y - 16 : y + 16, x])


def test_youden_cutoff_separates_and_reports_the_operating_point():
    scores = np.array([0.1, 0.2, 0.3, 0.35, 0.6, 0.7, 0.8, 0.9])
    truth = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=bool)
    roc = youden_cutoff(truth, scores)
    assert roc.cutoff == pytest.approx(0.6)
    assert roc.auc == pytest.approx(1.0)
    assert (roc.sensitivity, roc.specificity) == (1.0, 1.0)
    # One overlap: the best J trades one false positive against one false negative.
    roc = youden_cutoff(truth, np.array([0.1, 0.2, 0.3, 0.75, 0.6, 0.7, 0.8, 0.9]))
    assert roc.sensitivity - (1 - roc.specificity) == pytest.approx(0.75)
    assert youden_cutoff(np.ones(4, bool), scores[:4]) is None


def test_postprocess_removes_small_clusters_fills_holes_and_opens():
    prob = np.zeros((20, 30, 30), dtype=np.float32)
    prob[4:16, 5:20, 5:20] = 0.9  # the head: 12×15×15 voxels
    prob[9, 12, 12] = 0.1  # a hole inside it
    prob[2:4, 25:28, 25:28] = 0.95  # a small false-positive cluster (18 voxels)
    prob[10, 20:28, 12] = 0.8  # a one-voxel-thin spur, removed by opening
    head = postprocess_head(prob, cutoff=0.5, spacing_zyx=(1.0, 1.0, 1.0), min_cluster_mm3=100.0,
                            opening_iterations=1)
    assert head[5:15, 6:19, 6:19].all()  # the interior survives, the hole is filled
    assert not head[10, 21:28, 12].any()  # the spur is opened away
    assert not head[2:4, 25:28, 25:28].any()  # the small cluster is removed
    outside = np.ones_like(head)
    outside[4:16, 5:20, 5:20] = False
    outside[10, 20, 12] = False  # the spur's root is fully supported by the face, opening keeps it
    assert not head[outside].any()


def test_necrosis_is_the_argmax_between_head_classes():
    probs = np.zeros((3, 10, 10, 10), dtype=np.float32)
    probs[0] = 1.0
    probs[:, 2:8, 2:8, 2:8] = np.array([0.1, 0.6, 0.3])[:, None, None, None]
    probs[:, 2:8, 2:8, 2:4] = np.array([0.1, 0.3, 0.6])[:, None, None, None]
    labels = label_map(probs, 0.5, (1.0, 1.0, 1.0), min_cluster_mm3=10.0, opening_iterations=0)
    assert (labels == 2).sum() == 6 * 6 * 2 and (labels == 1).sum() == 6 * 6 * 4
    probs[:, 6, 6, 6] = np.array([0.1, 0.3, 0.6])  # a one-voxel necrosis speck
    labels = label_map(probs, 0.5, (1.0, 1.0, 1.0), min_cluster_mm3=10.0, opening_iterations=0,
                       min_necrosis_cluster_mm3=2.0)
    assert labels[6, 6, 6] == 1 and (labels == 2).sum() == 6 * 6 * 2


def test_necrosis_cutoff_maximises_pooled_dice_on_validation_cases():
    head = np.ones((6, 6, 6), dtype=bool)
    reference = np.zeros_like(head)
    reference[:, :, :2] = True
    probs = np.zeros((3, 6, 6, 6), dtype=np.float32)
    probs[1], probs[2] = 0.8, 0.2  # P(necrosis | head) = 0.2 in vital bone
    probs[1][reference], probs[2][reference] = 0.65, 0.35  # 0.35 in the lesion: argmax misses it
    no_lesion = probs.copy()
    no_lesion[1], no_lesion[2] = 0.75, 0.25  # a case without necrosis penalises cut-offs <= 0.25
    cutoff, dice = necrosis_cutoff_by_dice(
        [head, head], [probs, no_lesion], [reference, np.zeros_like(reference)],
        [(1.0, 1.0, 1.0)] * 2, min_necrosis_cluster_mm3=0.0,
    )
    assert cutoff == pytest.approx(0.3) and dice == pytest.approx(1.0)
    labels = label_map(probs, 0.5, (1.0, 1.0, 1.0), 1.0, 0, necrosis_cutoff=cutoff)
    np.testing.assert_array_equal(labels == 2, reference)


def test_paper_preset_is_the_studys_table_1():
    cfg = Patch25dCNN.Config.preset("paper")
    assert (cfg.epochs, cfg.batch_size, cfg.learning_rate) == (62, 256, 1e-4)
    assert (cfg.conv_dropout, cfg.fc_dropout, cfg.bias_init) == (0.5, 0.5, 0.1)
    assert sum(cfg.class_fractions) == pytest.approx(1.0)


def test_predict_without_fit_says_what_to_do(tiny_dataset, tmp_path):
    method = Patch25dCNN.from_preset("smoke")
    with pytest.raises(NotFittedError, match="run fit first"):
        sealed = [PredictCase.of(tiny_dataset.cases[0], with_landmarks=Patch25dCNN.card.uses_landmarks)]
        list(method.predict(sealed, tmp_path, "cpu"))


def test_fit_is_deterministic_on_cpu(tiny_dataset, tmp_path):
    cases = tiny_dataset.cases
    overrides = dict(epochs=1, iterations_per_epoch=3, batch_size=16, val_patches=30)
    states = []
    for run in ("a", "b"):
        Patch25dCNN.from_preset("smoke", **overrides).fit(cases[:2], cases[2:3], tmp_path / run, "cpu")
        states.append(torch.load(tmp_path / run / "model.pt", weights_only=True))
        assert (tmp_path / run / "postprocess.json").exists()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    different = Patch25dCNN.from_preset("smoke", seed=1, **overrides)
    different.fit(cases[:2], cases[2:3], tmp_path / "c", "cpu")
    other = torch.load(tmp_path / "c" / "model.pt", weights_only=True)
    assert not torch.equal(states[0]["fc1.weight"], other["fc1.weight"])


def test_every_epoch_reaches_the_training_listener_while_fitting(tiny_dataset, tmp_path):
    from avnbench.api import TrainingLog

    events = []
    method = Patch25dCNN.from_preset("smoke", epochs=3, iterations_per_epoch=2, batch_size=16, val_patches=30)
    method.log = TrainingLog(tmp_path, listener=events.append)
    method.fit(tiny_dataset.cases[:2], tiny_dataset.cases[2:3], tmp_path, "cpu")
    epochs = [e for e in events if e.total is not None]
    assert [(e.epoch, e.total) for e in epochs] == [(1, 3), (2, 3), (3, 3)]
    assert all({"train_loss", "val_loss"} <= set(e.values) for e in epochs)
    assert [e.seconds for e in epochs] == sorted(e.seconds for e in epochs)
