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


def fold_job(method: str, dataset, fold: int, workdir: Path, preset: str, device: str):
    """The runner's job for ``method`` on ``fold`` and its ``(fit_train, fit_val, val_cases)``,
    planned and carved by the runner itself (``avnbench.runner.plan_fold_jobs`` / ``fold_cases``)."""
    from avnbench.runner import fold_cases, plan_fold_jobs

    job = plan_fold_jobs(method, dataset.root, workdir, preset=preset, folds=[fold], device=device).jobs[0]
    return (job, *fold_cases(job, dataset))


def describe_fold(dataset, fold: int, fit_train, fit_val, val_cases, preset: str, device: str) -> str:
    """The one-line header every method benchmark prints."""
    return (f"{dataset.name}: fold {fold}, {len(fit_train)} train + {len(fit_val)} internal validation "
            f"cases, {len(val_cases)} predicted; preset {preset}, device {device}")


def timed_fit_predict(method_cls, job, dataset, fit_train, fit_val, val_cases):
    """Fit ``method_cls`` and predict ``val_cases`` exactly as the runner does: ``fit`` on an
    instance with the job's context and log, ``predict`` on a fresh one without context, on the
    sealed cases with their images staged in the job folder.

    Returns ``(predictions, (fit s wall, fit s CPU), (predict s/case wall, predict s/case CPU))``.
    """
    import shutil
    import time

    from avnbench.runner import INPUTS_DIR, method_for_fit, method_for_predict, stage_predict_cases

    method = method_for_fit(method_cls, job, dataset)
    wall, cpu = time.perf_counter(), time.process_time()
    method.fit(fit_train, fit_val, job.job_dir, job.device)
    fit = (time.perf_counter() - wall, time.process_time() - cpu)
    sealed = stage_predict_cases(job, val_cases, method_cls.card.uses_landmarks)
    predictor = method_for_predict(method_cls, job)
    wall, cpu = time.perf_counter(), time.process_time()
    predictions = list(predictor.predict(sealed, job.job_dir, job.device))
    predict = ((time.perf_counter() - wall) / len(val_cases), (time.process_time() - cpu) / len(val_cases))
    shutil.rmtree(job.job_dir / INPUTS_DIR, ignore_errors=True)
    return predictions, fit, predict


def mean_dice(predictions, refs, regions=REGIONS) -> dict[str, float]:
    """Mean Dice per region (vital, necrosis, head) over the cases; NaN (both empty) skipped."""
    import numpy as np

    from avnbench.evaluation.surface import dice

    return {
        name: float(np.nanmean([dice(select(p.labels), select(r)) for p, r in zip(predictions, refs)]))
        for name, select in regions
    }
