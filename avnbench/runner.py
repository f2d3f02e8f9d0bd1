"""Run a method over the folds of a dataset: fit, predict, save, score, track.

Every (method, fold) pair is an independent :class:`FoldJob` (plain data in, a folder and a
:class:`FoldResult` out), so the same jobs can later be handed to a distributed engine without
changing plugins. :func:`plan_fold_jobs` makes the jobs, :func:`run_fold_job` runs one: the only
fold path, used by :func:`run_benchmark`, the conformance kit (:mod:`avnbench.testing`) and the
benchmarks. :func:`run_benchmark` (one method, in this process) and
:func:`avnbench.driver.run_invocation` (several methods, on any executor) run the jobs that have
not finished yet (a finished job leaves
a sealed ``result.json`` in its folder, so an interrupted run resumes), holding a lock on the work
folder, and reports every step to the plugins through the lifecycle hooks of
:mod:`avnbench.hookspecs` (MLflow tracking is the built-in plugin :mod:`avnbench.reporting.tracking`).
The runner never prints: it reports progress through a callback.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from avnbench.data.dataset import Case, load_dataset
from avnbench.errors import DataError, PluginError
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
    SegmentationPrediction,
    TrainingEvent,
    TrainingListener,
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
from avnbench.planning import (  # noqa: F401  (re-exported)
    VALIDATION_FRACTION,
    RunPlan,
    fold_cases,
    method_for_fit,
    method_for_predict,
    order_methods,
    plan_fold_jobs,
    resolve_device,
)
from avnbench.runs import RunInfo

PREDICTIONS_DIR = "predictions"
_END = object()  # marks an exhausted prediction iterator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunEvent(_Strict):
    """A progress report: ``kind`` is one of run_started, fold_started, fold_skipped, fitting,
    epoch, fitted, case_predicted, fold_finished, fold_failed, preparing, prepared, scoring,
    run_finished, warning.

    An ``epoch`` report has ``done`` = the epoch (1-based), ``total`` = the planned epochs (None
    when the method does not say) and ``values`` = its losses and validation scores. A ``warning``
    has ``message``: one line for the user, e.g. why a saved fold result was not reused; so has
    ``fold_failed`` (the method, fold and error; under ``--executor ray`` the other folds go on).
    ``preparing``/``prepared`` frame a method's once-per-dataset prepare step. Reports of a test
    run (``--test-data``) name its dataset in ``test_dataset``.
    """

    kind: str
    method: str
    test_dataset: str | None = None
    fold: int | None = None
    total: int | None = None
    done: int | None = None
    message: str = ""
    values: dict[str, float] = Field(default_factory=dict)


ProgressCallback = Callable[[RunEvent], None]
PredictionCallback = Callable[[SegmentationPrediction | ClassificationPrediction, Case], None]


class RunResult(_Strict):
    """The outcome of :func:`run_benchmark`."""

    method: str
    preset: str
    dataset: str
    synthetic: bool
    test_dataset: str | None = Field(default=None, description="a test run's: the dataset every fold's model "
                                     "predicted (``dataset`` is the one it was trained on)")
    run_key: str
    folds: list[int]
    skipped_folds: list[int]
    metrics: dict[str, float]
    rows: list[dict[str, Any]]
    parent_run_id: str | None = None
    tracking: dict[str, str] = Field(
        default_factory=dict, description="where plugins recorded the run (avnbench_run_started's returns)"
    )
    notes: list[str] = Field(default_factory=list)


# --- running one fold -------------------------------------------------------------------------


def run_fold_job(
    job: FoldJob,
    registry: Registry | None = None,
    progress: ProgressCallback | None = None,
    on_prediction: PredictionCallback | None = None,
    training_listener: TrainingListener | None = None,
) -> FoldResult:
    """Fit on the fold's training cases, predict its validation cases, save and score them.

    A test job (``job.is_test``) fits nothing: it predicts every case of its test dataset with
    the model its fold job left in ``job.fit_dir`` (the same sealed cases, checks and scoring).
    ``fit`` runs on one instance; ``predict`` on a fresh one without context, on sealed
    :class:`PredictCase` cases; scoring uses the full cases here. A method that breaks the
    protocol raises :class:`PluginError` and leaves no ``result.json``. ``on_prediction`` gets
    every checked prediction with its case (the conformance kit keeps them);
    ``training_listener`` each :class:`TrainingEvent` the method reports while it fits.
    """
    registry = registry or load_registry()
    entry = registry.get(job.method)
    emit = progress or (lambda e: None)
    if job.is_test:
        return _run_test_job(job, entry, emit, on_prediction)
    dataset = load_dataset(job.dataset_dir)
    fit_train, fit_val, val_cases = fold_cases(job, dataset)

    job.job_dir.mkdir(parents=True, exist_ok=True)
    (job.job_dir / RESULT_FILE).unlink(missing_ok=True)
    trainer = method_for_fit(entry.cls, job, dataset, training_listener)
    emit(RunEvent(kind="fitting", method=job.method, fold=job.fold, total=len(val_cases)))
    t0 = time.perf_counter()
    trainer.fit(fit_train, fit_val, job.job_dir, job.device)
    fit_seconds = time.perf_counter() - t0
    emit(RunEvent(kind="fitted", method=job.method, fold=job.fold, message=f"{fit_seconds:.1f}s"))

    rows, predict_seconds = _predict_and_score(job, entry, val_cases, job.job_dir, emit, on_prediction)
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


def _run_test_job(job: FoldJob, entry: Any, emit: ProgressCallback, on_prediction: PredictionCallback | None
                  ) -> FoldResult:
    """Predict every case of the test dataset with the model the job's fold job fitted (its
    ``fit_dir``, which must hold that job's finished result), then save and score them."""
    fit = load_finished(job.fit_job())
    if fit is None:
        raise DataError(f"{job.fit_dir}: fold {job.fold} of {job.method} has no finished result whose model could be "
                        "tested; run the same command again to fit it")
    test = load_dataset(job.test_dataset_dir)
    if test.fingerprint != job.test_dataset_fingerprint:
        raise DataError(f"{test.root}: the test dataset changed after the run was planned; run the command again")
    cases = test.subset(job.test_ids)
    job.job_dir.mkdir(parents=True, exist_ok=True)
    (job.job_dir / RESULT_FILE).unlink(missing_ok=True)
    rows, predict_seconds = _predict_and_score(job, entry, cases, job.fit_dir, emit, on_prediction)
    result = FoldResult(
        **FoldInputs.of(job).model_dump(),
        rows=rows,
        fit_seconds=fit.fit_seconds,  # what training the tested model cost (in its fold job)
        predict_seconds=predict_seconds,
        n_cases=len(cases),
        internal_val_ids=fit.internal_val_ids,
        fit_digest=fit.digest,
    )
    save_result(result, job.job_dir)
    return result.sealed()


def _predict_and_score(job: FoldJob, entry: Any, cases: list[Case], model_dir: Path, emit: ProgressCallback,
                       on_prediction: PredictionCallback | None) -> tuple[list[dict[str, Any]], float]:
    """``predict`` on a fresh instance with the model in ``model_dir``, on sealed copies of
    ``cases`` staged in the job's folder; every prediction checked, saved there and scored
    against its case's reference. Returns the per-case rows and the seconds spent in predict."""
    from avnbench.data import predictions as pred_io
    from avnbench.evaluation.voxel_roc import ROC_FILE, head_probability_counts, write_fold_counts

    predictor = method_for_predict(entry.cls, job)
    sealed = stage_predict_cases(job, cases, entry.card.uses_landmarks)
    rows: list[dict[str, Any]] = []
    predict_seconds = 0.0
    # P(head) histograms per case for the voxel ROC of the report (seed 003), from the checked
    # prediction and the reference, never inside predict
    roc_counts: dict[str, dict] = {}
    (job.job_dir / "artifacts" / ROC_FILE).unlink(missing_ok=True)
    try:
        iterator = guarded_predictions(job.method, lambda: predictor.predict(sealed, model_dir, job.device))
        for i, case in enumerate(cases):
            t0 = time.perf_counter()
            prediction = next(iterator, _END)
            predict_seconds += time.perf_counter() - t0
            if prediction is _END:
                raise PluginError(f"method {job.method!r} yielded {i} predictions for {len(cases)} cases")
            check_prediction(job.method, entry.card.task, prediction, case, entry.card.classes)
            pred_io.save_prediction(prediction, case, job.job_dir / PREDICTIONS_DIR)
            row = score_prediction(prediction, case, entry.card.classes)
            row.update(case_id=case.case_id, patient_id=case.patient_id, fold=job.fold)
            rows.append(row)
            if isinstance(prediction, SegmentationPrediction) and prediction.probabilities is not None:
                roc_counts[case.case_id] = head_probability_counts(prediction.probabilities, case.label_array())
            if on_prediction is not None:
                on_prediction(prediction, case)
            emit(RunEvent(kind="case_predicted", method=job.method, fold=job.fold, done=i + 1, total=len(cases),
                          test_dataset=job.test_dataset_name))
        if next(iterator, _END) is not _END:
            raise PluginError(f"method {job.method!r} yielded more predictions than its {len(cases)} cases")
    finally:
        shutil.rmtree(job.job_dir / INPUTS_DIR, ignore_errors=True)
    if roc_counts:
        write_fold_counts(job.job_dir / "artifacts" / ROC_FILE, roc_counts)
    return rows, predict_seconds


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


def summarize(rows: list[dict[str, Any]], task: str, classes: Sequence[str] | None, n_bootstrap: int, seed: int,
              metrics=None):
    """The run statistics of a set of per-case rows (see :mod:`avnbench.evaluation.summaries`);
    ``metrics``: the metric registry (default: the built-in metrics)."""
    from avnbench.evaluation import summaries

    if task == "segmentation":
        return summaries.summarize_segmentation(rows, n_bootstrap=n_bootstrap, seed=seed, metrics=metrics)
    return summaries.summarize_classification(rows, list(classes or []), n_bootstrap=n_bootstrap, seed=seed,
                                              metrics=metrics)


def cost_metrics(results: Sequence[FoldResult]) -> dict[str, float]:
    """``fit_seconds`` (mean over folds, s) and ``predict_seconds_per_case`` (s)."""
    if not results:
        return {}
    n = sum(r.n_cases for r in results)
    return {
        "fit_seconds": float(np.mean([r.fit_seconds for r in results])),
        "predict_seconds_per_case": float(sum(r.predict_seconds for r in results) / max(n, 1)),
    }


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
    tracking_uri: str | None = None,
    registry: Registry | None = None,
    progress: ProgressCallback | None = None,
    n_bootstrap: int = 1000,
    config_overrides: dict[str, Any] | None = None,
    test_dataset_dir: Path | None = None,
    on_result: Callable[[RunResult], None] | None = None,
) -> RunResult:
    """Run one method on all (or some) folds of a dataset, reporting each step to the plugins.

    Args:
        method: registered method name.
        dataset_dir: an avnbench dataset folder (a split with 5 folds is made if it has none).
        workdir: folder for every job's files (``<workdir>/<dataset>/<method>/<preset>/fold_<k>``);
            locked for the whole run, so a second run on it is refused.
        preset: ``smoke``, ``quick`` or ``paper``.
        folds: fold indices to run; None runs all.
        device: ``auto``, ``cpu`` or ``cuda``.
        seed: seed of the method and of the internal validation split.
        tracking_uri: MLflow store the built-in tracking plugin logs to; None: no MLflow tracking.
        registry: plugins and methods (default: :func:`load_registry`); its ``pm.hook`` is called
            at every step of :mod:`avnbench.hookspecs`' run lifecycle.
        progress: callback receiving :class:`RunEvent` reports.
        n_bootstrap: bootstrap resamples for confidence intervals.
        config_overrides: config field values on top of the preset (``--set``/``--config``),
            validated against the method's ``Config``; they enter the run key and the params.
        test_dataset_dir: another dataset (``--test-data``): each fold's model also predicts all of
            its cases, scored and tracked as a run of its own (trained on ``dataset_dir``, tested on
            this one), which is then what is returned.
        on_result: called with each :class:`RunResult` as it is in (the folds' run, then the test run).
    """
    from avnbench.driver import run_invocation
    from avnbench.executors import LocalExecutor

    outcome = run_invocation(
        [method], dataset_dir, workdir, preset, folds, device, seed, tracking_uri, registry, progress,
        n_bootstrap, {method: config_overrides} if config_overrides else None, executor=LocalExecutor(),
        on_result=on_result, test_dataset_dir=test_dataset_dir,
    )
    if outcome.failures:  # the fold's own exception, as when the fold ran inline
        raise outcome.failures[0].exception
    return outcome.test_results[method] if test_dataset_dir is not None else outcome.results[method]
