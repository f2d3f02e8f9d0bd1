"""Test helpers for plugin authors (a pytest plugin, loaded automatically with avnbench).

A plugin's conformance test is three lines::

    from avnbench.testing import check_method

    def test_conformance(tiny_dataset, tmp_path):
        check_method(MyMethod, tiny_dataset, tmp_path, preset="smoke")

``tiny_dataset`` is a session-wide 8-case phantom at 40×80×80 voxels with a 4-fold split.
:func:`check_method` runs the method through the runner's own fold path
(:func:`avnbench.runner.plan_fold_jobs` and :func:`avnbench.runner.run_fold_job`), so what passes
here runs the same way in ``avnbench run``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avnbench import hookimpl
from avnbench.data.dataset import Dataset, load_dataset
from avnbench.errors import PluginError
from avnbench.methods import (
    PRESETS,
    ClassificationPrediction,
    Method,
    MethodCard,
    MethodConfig,
    SegmentationPrediction,
)
from avnbench.workfolder import job_dir_for  # noqa: F401  (re-exported: where a test's fold job keeps its files)

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


class _MethodsPlugin:
    """A plugin registering the given method classes (the conformance kit's registry)."""

    def __init__(self, method_classes: Sequence[type[Method]]):
        self.method_classes = tuple(method_classes)
        names = [getattr(getattr(c, "card", None), "name", c.__name__) for c in self.method_classes]
        self.__name__ = "conformance:" + ",".join(names)

    @hookimpl
    def avnbench_register_methods(self, register):
        for method_cls in self.method_classes:
            register(method_cls)


def registry_of(*method_classes: type[Method]):
    """A registry holding just these method classes (no installed plugin); a class the registry
    refuses is a PluginError."""
    from avnbench.plugins import load_registry

    plugin = _MethodsPlugin(method_classes)
    registry = load_registry(extra_plugins=(plugin,), use_entry_points=False)
    if plugin.__name__ in registry.failures:
        raise PluginError(f"{plugin.__name__} cannot be registered: {registry.failures[plugin.__name__]}")
    return registry


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


def check_predictions(method_cls: type[Method], predictions: Sequence[Any], cases: Sequence[Any]) -> None:
    """One well-formed prediction per case, in order, on the cases' image grids; else PluginError."""
    name = method_cls.card.name
    got, want = [p.case_id for p in predictions], [c.case_id for c in cases]
    if got != want:
        raise PluginError(f"method {name!r} predicted cases {got}, expected {want} (one per case, in order)")
    for p, c in zip(predictions, cases):
        if method_cls.card.task == "segmentation":
            if not isinstance(p, SegmentationPrediction) or p.labels.shape != c.meta.geometry.shape_zyx:
                raise PluginError(f"method {name!r}: case {c.case_id} needs a label map of shape {c.meta.geometry.shape_zyx}")
            if not set(np.unique(p.labels).tolist()) <= {0, 1, 2}:
                raise PluginError(f"method {name!r}: case {c.case_id} has labels outside {{0, 1, 2}}")
            if p.probabilities is not None and not (
                np.all(np.isfinite(p.probabilities)) and np.allclose(p.probabilities.sum(axis=0), 1.0, atol=1e-2)
            ):
                raise PluginError(f"method {name!r}: case {c.case_id} probabilities must be finite and sum to 1")
        elif not isinstance(p, ClassificationPrediction) or len(p.probabilities) != len(method_cls.card.classes):
            raise PluginError(
                f"method {name!r}: case {c.case_id} needs probabilities over {len(method_cls.card.classes)} classes"
            )


def check_method(
    method_cls: type[Method],
    dataset: Dataset,
    workdir: Path,
    preset: str = "smoke",
    fold: int = 0,
    device: str = "cpu",
    **config_overrides: Any,
) -> list[SegmentationPrediction | ClassificationPrediction]:
    """Run one fold of ``method_cls`` exactly as ``avnbench run`` does, and check everything.

    Checks the card and presets; plans the fold's job with the runner (job folder
    ``<workdir>/<dataset>/<method>/<preset>/fold_<k>``, internal validation carve, config =
    preset + ``config_overrides``) and runs it with :func:`avnbench.runner.run_fold_job`: ``fit``
    on the fold's training cases, ``predict`` on a fresh instance without context, on sealed
    cases, then the runner's protocol checks, saving and scoring. A method that breaks the
    protocol raises :class:`PluginError`. Returns the predictions, in case order.
    """
    from avnbench.runner import plan_fold_jobs, run_fold_job

    check_card(method_cls)
    registry = registry_of(method_cls)
    seed = config_overrides.pop("seed", 0)
    plan = plan_fold_jobs(
        method_cls.card.name, dataset.root, Path(workdir), preset=preset, folds=[fold], device=device,
        seed=seed, registry=registry, config_overrides=config_overrides,
    )  # fmt: skip
    predictions: list[SegmentationPrediction | ClassificationPrediction] = []
    run_fold_job(plan.jobs[0], registry, on_prediction=lambda prediction, case: predictions.append(prediction))
    check_predictions(method_cls, predictions, plan.dataset.subset(plan.jobs[0].val_ids))
    return predictions


# --- shapes with known metric values (the scoring and surface-distance tests share them) -------

ANISO = (1.0, 0.44, 0.44)
SPHERE_CENTRE = (20.0123, 17.6057, 17.6091)  # metrics.md §8: off-lattice, no ties at r²


def box_pair(axis: int) -> tuple[np.ndarray, np.ndarray]:
    """A 10×20×20 box and the same box shifted by one voxel along ``axis``: (pred, ref)."""
    ref = np.zeros((20, 40, 40), dtype=bool)
    ref[5:15, 10:30, 10:30] = True
    return np.roll(ref, 1, axis=axis), ref


def sphere(radius: float, shape=(40, 80, 80), spacing=ANISO, centre=SPHERE_CENTRE) -> np.ndarray:
    """A ball of ``radius`` mm around ``centre`` (mm) on a grid of ``spacing`` (z, y, x mm)."""
    grids = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing)), indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius**2


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``avnbench ARGS`` in this process: (exit status, stdout, stderr)."""
    from avnbench.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
