"""Run a method over the folds of a dataset: fit, predict, save, score, track.

Every (method, fold) pair is an independent :class:`FoldJob` (plain data in, a folder and a
:class:`FoldResult` out), so the same jobs can later be handed to a distributed engine without
changing plugins. :func:`plan_fold_jobs` makes the jobs, :func:`run_fold_job` runs one: the only
fold path, used by :func:`run_benchmark`, the conformance kit (:mod:`avnbench.testing`) and the
benchmarks. :func:`run_benchmark` runs the jobs that have not finished yet (a finished job leaves
``result.json`` in its folder, so an interrupted run resumes), holding a lock on the work folder,
and hands everything to a tracker (MLflow, :mod:`avnbench.reporting.tracking`).
The runner never prints: it reports progress through a callback.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from avnbench.data.dataset import Case, Dataset, load_dataset
from avnbench.data.splits import SplitsMeta, carve_validation, ensure_splits
from avnbench.errors import ConfigError, PluginError
from avnbench.jobs import (  # noqa: F401  (re-exported: the runner's public names)
    RESULT_FILE,
    CodeVersions,
    FoldInputs,
    FoldJob,
    FoldResult,
    check_prediction,
    code_versions,
    guarded_predictions,
    load_finished,
    run_key_for,
    save_result,
)
from avnbench.methods import (
    ClassificationPrediction,
    JobContext,
    Method,
    SegmentationPrediction,
    TrainingLog,
)
from avnbench.plugins import Registry, load_registry
from avnbench.workfolder import (  # noqa: F401  (re-exported)
    INPUTS_DIR,
    LOCK_FILE,
    job_dir_for,
    shared_dir_for,
    stage_predict_cases,
    work_folder_lock,
)

VALIDATION_FRACTION = 0.2
PREDICTIONS_DIR = "predictions"
_END = object()  # marks an exhausted prediction iterator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunEvent(_Strict):
    """A progress report: ``kind`` is one of run_started, fold_started, fold_skipped, fitting,
    fitted, case_predicted, fold_finished, scoring, run_finished, or warning (``message`` is
    then one line for the user, e.g. why a saved fold result was not reused)."""

    kind: str
    method: str
    fold: int | None = None
    total: int | None = None
    done: int | None = None
    message: str = ""


ProgressCallback = Callable[[RunEvent], None]
PredictionCallback = Callable[[SegmentationPrediction | ClassificationPrediction, Case], None]


class RunResult(_Strict):
    """The outcome of :func:`run_benchmark`."""

    method: str
    preset: str
    dataset: str
    synthetic: bool
    run_key: str
    folds: list[int]
    skipped_folds: list[int]
    metrics: dict[str, float]
    rows: list[dict[str, Any]]
    parent_run_id: str | None = None
    notes: list[str] = Field(default_factory=list)


def resolve_device(device: str) -> Literal["cpu", "cuda"]:
    """``auto`` becomes ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without one is an error."""
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r}. Available: auto, cpu, cuda")
    if device == "cpu":
        return "cpu"
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if device == "cuda" and not has_cuda:
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return "cuda" if has_cuda else "cpu"


# --- planning: the one way a fold job is made -------------------------------------------------


@dataclass(frozen=True)
class RunPlan:
    """The jobs of one method on one dataset, and what they were planned from."""

    entry: Any  # the registry's RegisteredMethod
    dataset: Dataset
    split_meta: SplitsMeta
    config: dict[str, Any]
    device: Literal["cpu", "cuda"]
    run_key: str
    folds: list[int]
    jobs: list[FoldJob]


def plan_fold_jobs(
    method: str,
    dataset_dir: Path,
    workdir: Path,
    preset: str = "quick",
    folds: Sequence[int] | None = None,
    device: str = "auto",
    seed: int = 0,
    registry: Registry | None = None,
    config_overrides: dict[str, Any] | None = None,
) -> RunPlan:
    """The :class:`FoldJob` of each selected fold (all when ``folds`` is None).

    A dataset without a split gets one with 5 folds. ``config_overrides`` are applied on top of
    the preset (the conformance kit's keyword arguments); ``seed`` seeds the method and the
    internal validation carve.
    """
    registry = registry or load_registry()
    entry = registry.get(method)
    dataset = load_dataset(dataset_dir)
    fold_list, split_meta = ensure_splits(dataset, seed=0)
    selected = list(range(len(fold_list))) if folds is None else sorted(set(folds))
    bad = [k for k in selected if not 0 <= k < len(fold_list)]
    if bad:
        raise ConfigError(f"fold(s) {bad} do not exist; the split has folds 0..{len(fold_list) - 1}")
    config = entry.cls.Config.preset(preset, seed=seed, **(config_overrides or {}))
    config_dict = config.model_dump(mode="json")
    dev = resolve_device(device)
    code = code_versions(entry)
    key = run_key_for(method, preset, config_dict, dataset.fingerprint, split_meta.sha256, code)
    jobs = [
        FoldJob(
            method=method,
            preset=preset,
            config=config_dict,
            dataset_dir=dataset.root.resolve(),
            dataset_fingerprint=dataset.fingerprint,
            fold=k,
            train_ids=fold_list[k].train,
            val_ids=fold_list[k].val,
            device=dev,
            job_dir=job_dir_for(workdir, dataset.name, method, preset, k).resolve(),
            shared_dir=shared_dir_for(workdir, dataset.name).resolve(),
            split_hash=split_meta.sha256,
            splits_file=dataset.splits_path.resolve(),
            run_key=key,
            seed=seed,
            **code.model_dump(),
        )
        for k in selected
    ]
    return RunPlan(entry, dataset, split_meta, config_dict, dev, key, selected, jobs)


def fold_cases(job: FoldJob, dataset: Dataset) -> tuple[list[Case], list[Case], list[Case]]:
    """The job's ``(fit_train, fit_val, val_cases)``: ``fit`` gets the first two, carved by
    patient out of the fold's training cases (seed ``seed + fold``); ``predict`` the third."""
    fit_train, fit_val = carve_validation(
        dataset.subset(job.train_ids), VALIDATION_FRACTION, seed=job.seed + job.fold
    )
    val_cases = dataset.subset(job.val_ids)
    if {c.case_id for c in fit_train + fit_val} & set(job.val_ids):
        raise PluginError("internal error: a validation case reached training")  # defensive
    return fit_train, fit_val, val_cases


def method_for_fit(cls: type[Method], job: FoldJob, dataset: Dataset) -> Method:
    """An instance of ``cls`` with the job's config, :class:`JobContext` and training log."""
    method = cls(cls.Config.model_validate(job.config))
    method.context = JobContext(
        dataset_dir=dataset.root,
        dataset_name=dataset.name,
        dataset_fingerprint=job.dataset_fingerprint,
        splits_file=job.splits_file,
        split_hash=job.split_hash,
        fold=job.fold,
        preset=job.preset,
        seed=job.seed,
        shared_dir=job.shared_dir,
    )
    method.log = TrainingLog(job.job_dir)
    return method


def method_for_predict(cls: type[Method], job: FoldJob) -> Method:
    """A fresh instance for ``predict``: the job's config and log, no context (so no dataset
    folder, split or shared folder); it must rely on what ``fit`` left in the job folder."""
    method = cls(cls.Config.model_validate(job.config))
    method.log = TrainingLog(job.job_dir)
    return method


# --- running one fold -------------------------------------------------------------------------


def run_fold_job(
    job: FoldJob,
    registry: Registry | None = None,
    progress: ProgressCallback | None = None,
    on_prediction: PredictionCallback | None = None,
) -> FoldResult:
    """Fit on the fold's training cases, predict its validation cases, save and score them.

    ``fit`` runs on one instance; ``predict`` on a fresh one without context, on sealed
    :class:`PredictCase` cases; scoring uses the full cases here. A method that breaks the
    protocol raises :class:`PluginError` and leaves no ``result.json``. ``on_prediction`` gets
    every checked prediction with its case (the conformance kit keeps them).
    """
    from avnbench.data import predictions as pred_io

    registry = registry or load_registry()
    entry = registry.get(job.method)
    dataset = load_dataset(job.dataset_dir)
    emit = progress or (lambda e: None)
    fit_train, fit_val, val_cases = fold_cases(job, dataset)

    job.job_dir.mkdir(parents=True, exist_ok=True)
    (job.job_dir / RESULT_FILE).unlink(missing_ok=True)
    trainer = method_for_fit(entry.cls, job, dataset)
    emit(RunEvent(kind="fitting", method=job.method, fold=job.fold, total=len(val_cases)))
    t0 = time.perf_counter()
    trainer.fit(fit_train, fit_val, job.job_dir, job.device)
    fit_seconds = time.perf_counter() - t0
    emit(RunEvent(kind="fitted", method=job.method, fold=job.fold, message=f"{fit_seconds:.1f}s"))

    predictor = method_for_predict(entry.cls, job)
    sealed = stage_predict_cases(job, val_cases, entry.card.uses_landmarks)
    rows: list[dict[str, Any]] = []
    predict_seconds = 0.0
    try:
        iterator = guarded_predictions(job.method, lambda: predictor.predict(sealed, job.job_dir, job.device))
        for i, case in enumerate(val_cases):
            t0 = time.perf_counter()
            prediction = next(iterator, _END)
            predict_seconds += time.perf_counter() - t0
            if prediction is _END:
                raise PluginError(f"method {job.method!r} yielded {i} predictions for {len(val_cases)} cases")
            check_prediction(job.method, entry.card.task, prediction, case, entry.card.classes)
            pred_io.save_prediction(prediction, case, job.job_dir / PREDICTIONS_DIR)
            row = score_prediction(prediction, case, entry.card.classes)
            row.update(case_id=case.case_id, patient_id=case.patient_id, fold=job.fold)
            rows.append(row)
            if on_prediction is not None:
                on_prediction(prediction, case)
            emit(RunEvent(kind="case_predicted", method=job.method, fold=job.fold, done=i + 1, total=len(val_cases)))
        if next(iterator, _END) is not _END:
            raise PluginError(f"method {job.method!r} yielded more predictions than its {len(val_cases)} cases")
    finally:
        shutil.rmtree(job.job_dir / INPUTS_DIR, ignore_errors=True)

    result = FoldResult(
        **FoldInputs.of(job).model_dump(),
        rows=rows,
        fit_seconds=fit_seconds,
        predict_seconds=predict_seconds,
        n_cases=len(val_cases),
        internal_val_ids=[c.case_id for c in fit_val],
    )
    save_result(result, job.job_dir)
    return result.sealed()


def score_prediction(
    prediction: SegmentationPrediction | ClassificationPrediction,
    case: Case,
    classes: Sequence[str] | None,
) -> dict[str, Any]:
    """One per-case row of scores (the shared scoring; a plugin never scores itself)."""
    if isinstance(prediction, SegmentationPrediction):
        from avnbench.evaluation.scoring import score_case

        ref = case.label_array()
        return dict(score_case(prediction.labels, ref, case.spacing, case.meta))
    probs = np.asarray(prediction.probabilities, dtype=float)
    classes = list(classes or [])
    if len(probs) != len(classes):
        raise PluginError(f"case {case.case_id}: {len(probs)} probabilities for classes {classes}")
    row: dict[str, Any] = {f"prob_{c}": float(p) for c, p in zip(classes, probs)}
    row["jic_pred"] = classes[int(np.argmax(probs))]
    row["jic_ref"] = case.meta.jic
    row["arco_ref"] = case.meta.arco
    if prediction.heatmap is not None:
        from avnbench.evaluation.localization import heatmap_top_decile_on_necrosis
        from avnbench.evaluation.slices import mid_coronal_slice

        if case.meta.landmarks is not None:
            ref_slice = mid_coronal_slice(case.label_array(), case.meta).array
            if prediction.heatmap.shape == ref_slice.shape:
                row["heatmap_top_decile_on_necrosis"] = heatmap_top_decile_on_necrosis(
                    prediction.heatmap, ref_slice
                )
    return row


def summarize(rows: list[dict[str, Any]], task: str, classes: Sequence[str] | None, n_bootstrap: int, seed: int):
    """The run statistics of a set of per-case rows (see :mod:`avnbench.evaluation.summaries`)."""
    from avnbench.evaluation import summaries

    if task == "segmentation":
        return summaries.summarize_segmentation(rows, n_bootstrap=n_bootstrap, seed=seed)
    return summaries.summarize_classification(rows, list(classes or []), n_bootstrap=n_bootstrap, seed=seed)


def cost_metrics(results: Sequence[FoldResult]) -> dict[str, float]:
    """``fit_seconds`` (mean over folds, s) and ``predict_seconds_per_case`` (s)."""
    if not results:
        return {}
    n = sum(r.n_cases for r in results)
    return {
        "fit_seconds": float(np.mean([r.fit_seconds for r in results])),
        "predict_seconds_per_case": float(sum(r.predict_seconds for r in results) / max(n, 1)),
    }


# --- ordering by declaration ---------------------------------------------------------------------


def order_methods(names: Sequence[str], registry: Registry) -> list[str]:
    """``names`` with every method after the methods its card ``builds_on`` (directly or through
    others: an ensemble after its members), otherwise in the given order. Only the given names
    are returned: a member not among them is the method's own business (it may train it itself).
    A dependency cycle or an unregistered dependency is a ConfigError."""
    needs: dict[str, set[str]] = {}  # every method a method builds on, transitively

    def visit(name: str, path: list[str]) -> set[str]:
        if name in path:
            cycle = " -> ".join(path[path.index(name):] + [name])
            raise ConfigError(f"methods build on each other in a cycle ({cycle}); fix their cards' builds_on")
        if name not in needs:
            found: set[str] = set()
            for member in registry.get(name).card.builds_on:
                try:
                    registry.get(member)
                except ConfigError:
                    raise ConfigError(
                        f"method {name!r} builds on {member!r}, which is not registered; install the "
                        "plugin that provides it (avnbench methods lists the registered ones)"
                    ) from None
                found |= {member} | visit(member, path + [name])
            needs[name] = found
        return needs[name]

    for name in names:
        visit(name, [])
    ordered: list[str] = []
    pending = list(dict.fromkeys(names))
    while pending:  # the first method whose invoked dependencies have all been placed
        ready = next(n for n in pending if not (needs[n] & set(pending)))
        ordered.append(ready)
        pending.remove(ready)
    return ordered


def _warner(emit: ProgressCallback, method: str, fold: int) -> Callable[[str], None]:
    return lambda message: emit(RunEvent(kind="warning", method=method, fold=fold, message=message))


# --- a whole run ------------------------------------------------------------------------------


def run_benchmark(
    method: str,
    dataset_dir: Path,
    workdir: Path,
    preset: str = "quick",
    folds: Sequence[int] | None = None,
    device: str = "auto",
    seed: int = 0,
    tracker: Any = None,
    registry: Registry | None = None,
    progress: ProgressCallback | None = None,
    n_bootstrap: int = 1000,
) -> RunResult:
    """Run one method on all (or some) folds of a dataset and track it.

    Args:
        method: registered method name.
        dataset_dir: an avnbench dataset folder (a split with 5 folds is made if it has none).
        workdir: folder for every job's files (``<workdir>/<dataset>/<method>/<preset>/fold_<k>``);
            locked for the whole run, so a second run on it is refused.
        preset: ``smoke``, ``quick`` or ``paper``.
        folds: fold indices to run; None runs all.
        device: ``auto``, ``cpu`` or ``cuda``.
        seed: seed of the method and of the internal validation split.
        tracker: an object with the :class:`avnbench.reporting.tracking.MlflowTracker` interface, or None.
        progress: callback receiving :class:`RunEvent` reports.
        n_bootstrap: bootstrap resamples for confidence intervals.
    """
    registry = registry or load_registry()
    emit = progress or (lambda e: None)
    # job planning (runner): the same jobs the conformance kit and the benchmarks run
    plan = plan_fold_jobs(method, dataset_dir, workdir, preset, folds, device, seed, registry)
    with work_folder_lock(workdir, plan.dataset.name):  # lock (runner): one run per work folder
        return _run_planned(method, preset, seed, plan, tracker, registry, emit, n_bootstrap)


def _run_planned(
    method: str, preset: str, seed: int, plan: RunPlan, tracker: Any, registry: Registry,
    emit: ProgressCallback, n_bootstrap: int,
) -> RunResult:
    """:func:`run_benchmark` after planning, with the work folder locked."""
    entry, dataset, split_meta, jobs = plan.entry, plan.dataset, plan.split_meta, plan.jobs
    selected, config_dict, dev, key = plan.folds, plan.config, plan.device, plan.run_key

    handle = None
    if tracker is not None:
        handle = tracker.start_run(
            dataset=dataset,
            entry=entry,
            preset=preset,
            config=config_dict,
            split_meta=split_meta,
            folds=selected,
            seed=seed,
            device=dev,
            run_key=key,
        )
    emit(RunEvent(kind="run_started", method=method, total=len(jobs)))

    results: list[FoldResult] = []
    skipped: list[int] = []
    try:
        for job in jobs:
            previous = load_finished(job, warn=_warner(emit, method, job.fold))  # digest + inputs checked
            if previous is not None:
                skipped.append(job.fold)
                emit(RunEvent(kind="fold_skipped", method=method, fold=job.fold, total=len(job.val_ids)))
                result = previous
            else:
                emit(RunEvent(kind="fold_started", method=method, fold=job.fold, total=len(job.val_ids)))
                result = run_fold_job(job, registry, emit)
            results.append(result)
            if handle is not None and not handle.fold_is_logged(job.fold):
                fold_summary = summarize(result.rows, entry.card.task, entry.card.classes, 0, seed)
                handle.log_fold(job, result, fold_summary.metrics | cost_metrics([result]))
            emit(RunEvent(kind="fold_finished", method=method, fold=job.fold))
    except BaseException:
        if handle is not None:
            handle.abort()
        raise

    emit(RunEvent(kind="scoring", method=method))
    rows = [row for r in results for row in r.rows]
    summary = summarize(rows, entry.card.task, entry.card.classes, n_bootstrap, seed)
    metrics = summary.metrics | cost_metrics(results)
    if handle is not None:
        handle.finish(rows, summary, metrics)
    emit(RunEvent(kind="run_finished", method=method))
    return RunResult(
        method=method,
        preset=preset,
        dataset=dataset.name,
        synthetic=dataset.synthetic,
        run_key=key,
        folds=selected,
        skipped_folds=skipped,
        metrics=metrics,
        rows=rows,
        parent_run_id=handle.run_id if handle is not None else None,
        notes=list(getattr(summary, "notes", []) or []),
    )
