"""Shared by the method benchmarks: the data they run on."""

from __future__ import annotations

from pathlib import Path

CPU_PHANTOM_CASES = 24
CPU_PHANTOM_SHAPE = (40, 80, 80)


def dataset_or_phantom(data: Path | None, tmp: str | Path) -> Path:
    """``data`` if given, else a new phantom like the README's CPU benchmark (24 cases, 40×80×80) in ``tmp``."""
    if data is not None:
        return data
    from avnbench.data.phantom import synthesize

    path = Path(tmp) / "phantom"
    synthesize(path, n_cases=CPU_PHANTOM_CASES, seed=0, shape=CPU_PHANTOM_SHAPE)
    return path


def method_bench_parser(description: str, fold_option: bool = True):
    """The options every method benchmark takes: ``--data``, ``--preset``, ``--fold``, ``--device``."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, help="dataset folder (default: a new 24-case phantom)")
    parser.add_argument("--preset", default="quick", choices=["smoke", "quick", "paper"])
    if fold_option:
        parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    return parser


REGIONS = (("vital", lambda a: a == 1), ("necrosis", lambda a: a == 2), ("head", lambda a: a > 0))


def fold_cases(dataset, fold: int):
    """The fold's (fit_train, fit_val, val_cases), carved the way the runner carves them."""
    from avnbench.runner import VALIDATION_FRACTION
    from avnbench.data.splits import carve_validation, ensure_splits

    folds, _ = ensure_splits(dataset)
    fit_train, fit_val = carve_validation(dataset.subset(folds[fold].train), VALIDATION_FRACTION, seed=fold)
    return fit_train, fit_val, dataset.subset(folds[fold].val)


def describe_fold(dataset, fold: int, fit_train, fit_val, val_cases, preset: str, device: str) -> str:
    """The one-line header every method benchmark prints."""
    return (f"{dataset.name}: fold {fold}, {len(fit_train)} train + {len(fit_val)} internal validation "
            f"cases, {len(val_cases)} predicted; preset {preset}, device {device}")


def timed_fit_predict(method, predictor, fit_train, fit_val, val_cases, job_dir: Path, device: str):
    """Fit ``method``, predict the labels-hidden ``val_cases`` with a fresh ``predictor``, as the runner does.

    Returns ``(predictions, (fit s wall, fit s CPU), (predict s/case wall, predict s/case CPU))``.
    """
    import time

    from avnbench.runner import without_labels

    wall, cpu = time.perf_counter(), time.process_time()
    method.fit(fit_train, fit_val, job_dir, device)
    fit = (time.perf_counter() - wall, time.process_time() - cpu)
    wall, cpu = time.perf_counter(), time.process_time()
    predictions = list(predictor.predict(without_labels(val_cases), job_dir, device))
    predict = ((time.perf_counter() - wall) / len(val_cases), (time.process_time() - cpu) / len(val_cases))
    return predictions, fit, predict


def mean_dice(predictions, refs, regions=REGIONS) -> dict[str, float]:
    """Mean Dice per region (vital, necrosis, head) over the cases; NaN (both empty) skipped."""
    import numpy as np

    from avnbench.evaluation.surface import dice

    return {
        name: float(np.nanmean([dice(select(p.labels), select(r)) for p, r in zip(predictions, refs)]))
        for name, select in regions
    }
