"""Test helpers for plugin authors (a pytest plugin, loaded automatically with avnbench).

A plugin's conformance test is three lines::

    from avnbench.testing import check_method

    def test_conformance(tiny_dataset, tmp_path):
        check_method(MyMethod, tiny_dataset, tmp_path, preset="smoke")

``tiny_dataset`` is a session-wide 8-case phantom at 40×80×80 voxels with a 4-fold split.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avnbench.data.dataset import Dataset, load_dataset
from avnbench.methods import (
    PRESETS,
    ClassificationPrediction,
    JobContext,
    Method,
    MethodCard,
    MethodConfig,
    SegmentationPrediction,
    TrainingLog,
)

TINY_SHAPE = (40, 80, 80)
TINY_CASES = 8
TINY_FOLDS = 4


def make_tiny_dataset(out: Path, n_cases: int = TINY_CASES, seed: int = 7, folds: int = TINY_FOLDS) -> Dataset:
    """A small phantom dataset (40×80×80 voxels) with a split, for tests."""
    from avnbench.data.phantom import synthesize
    from avnbench.data.splits import write_splits

    out = Path(out)
    if not (out / "cases.json").exists():
        synthesize(out, n_cases=n_cases, seed=seed, shape=TINY_SHAPE)
    dataset = load_dataset(out)
    if not dataset.splits_path.exists():
        write_splits(dataset, folds, seed=0)
    return dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """A session-wide 8-case phantom at 40×80×80 voxels with a 4-fold split."""
    return make_tiny_dataset(tmp_path_factory.mktemp("avnbench-tiny") / "phantom")


def make_context(dataset: Dataset, fold: int, workdir: Path, preset: str, seed: int = 0) -> JobContext:
    """The :class:`JobContext` the runner would give a method for this fold."""
    from avnbench.runner import shared_dir_for
    from avnbench.data.splits import read_splits

    _, meta = read_splits(dataset)
    return JobContext(
        dataset_dir=dataset.root,
        dataset_name=dataset.name,
        dataset_fingerprint=dataset.fingerprint,
        splits_file=dataset.splits_path,
        split_hash=meta.sha256,
        fold=fold,
        preset=preset,
        seed=seed,
        shared_dir=shared_dir_for(Path(workdir), dataset.name),
    )


def check_card(method_cls: type[Method]) -> None:
    """The method declares a complete card and a strict config with all three presets."""
    assert isinstance(method_cls.card, MethodCard), "card must be a MethodCard"
    assert method_cls.card.description and method_cls.card.citation, "card needs description and citation"
    assert issubclass(method_cls.Config, MethodConfig), "Config must subclass MethodConfig"
    for preset in PRESETS:
        assert preset in method_cls.Config.PRESETS, f"preset {preset!r} missing"
        method_cls.Config.preset(preset)  # validates
    with pytest.raises(Exception):
        method_cls.Config.model_validate({"no_such_option_xyz": 1})


def check_predictions(
    method_cls: type[Method], predictions: Sequence[Any], cases: Sequence[Any]
) -> None:
    """One well-formed prediction per case, in order, on the cases' image grids."""
    assert [p.case_id for p in predictions] == [c.case_id for c in cases], "one prediction per case, in order"
    for p, c in zip(predictions, cases):
        if method_cls.card.task == "segmentation":
            assert isinstance(p, SegmentationPrediction)
            assert p.labels.shape == c.meta.geometry.shape_zyx
            assert set(np.unique(p.labels).tolist()) <= {0, 1, 2}
            if p.probabilities is not None:
                assert np.all(np.isfinite(p.probabilities))
                np.testing.assert_allclose(p.probabilities.sum(axis=0), 1.0, atol=1e-2)
        else:
            assert isinstance(p, ClassificationPrediction)
            assert len(p.probabilities) == len(method_cls.card.classes)


def check_method(
    method_cls: type[Method],
    dataset: Dataset,
    workdir: Path,
    preset: str = "smoke",
    fold: int = 0,
    device: str = "cpu",
    **config_overrides: Any,
) -> list[SegmentationPrediction | ClassificationPrediction]:
    """Fit on a fold's training cases, predict its validation cases, and check everything.

    Checks the card and presets, that ``fit`` sees no validation case of the fold, that ``predict``
    works in a fresh instance from ``workdir`` alone without access to reference labels, and the
    type, shape and values of every prediction. Returns the predictions.
    """
    from avnbench.runner import VALIDATION_FRACTION, job_dir_for, without_labels
    from avnbench.data.splits import carve_validation, read_splits

    check_card(method_cls)
    folds, _ = read_splits(dataset)
    train_all = dataset.subset(folds[fold].train)
    val_cases = dataset.subset(folds[fold].val)
    fit_train, fit_val = carve_validation(train_all, VALIDATION_FRACTION, seed=fold)
    assert not {c.case_id for c in fit_train + fit_val} & {c.case_id for c in val_cases}

    job_dir = job_dir_for(Path(workdir), dataset.name, method_cls.card.name, preset, fold)
    job_dir.mkdir(parents=True, exist_ok=True)
    config = method_cls.Config.preset(preset, **config_overrides)
    context = make_context(dataset, fold, workdir, preset, seed=config.seed)

    trainer = method_cls(config)
    trainer.context, trainer.log = context, TrainingLog(job_dir)
    trainer.fit(fit_train, fit_val, job_dir, device)

    predictor = method_cls(config)
    predictor.context, predictor.log = context, TrainingLog(job_dir)
    predictions = list(predictor.predict(without_labels(val_cases), job_dir, device))
    check_predictions(method_cls, predictions, val_cases)
    return predictions
