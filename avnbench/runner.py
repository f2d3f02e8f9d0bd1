"""Run a method over the folds of a dataset: fit, predict, save, score, track.

Every (method, fold) pair is an independent :class:`FoldJob` (plain data in, a folder and a
:class:`FoldResult` out), so the same jobs can later be handed to a distributed engine without
changing plugins. :func:`run_benchmark` orchestrates them: it resolves the method and split, runs
the jobs that have not finished yet (a finished job leaves ``result.json`` in its folder, so an
interrupted run resumes), and reports every step to the plugins through the lifecycle hooks of
:mod:`avnbench.hookspecs` (MLflow tracking is the built-in plugin :mod:`avnbench.reporting.tracking`).
The runner never prints: it reports progress through a callback.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from avnbench.data.dataset import Case, Dataset, load_dataset
from avnbench.errors import ConfigError, PluginError
from avnbench.methods import (
    ClassificationPrediction,
    JobContext,
    Method,
    SegmentationPrediction,
    TrainingEvent,
    TrainingListener,
    TrainingLog,
)
from avnbench.plugins import Registry, load_registry
from avnbench.data.splits import carve_validation, ensure_splits
from avnbench.runs import RunInfo

VALIDATION_FRACTION = 0.2
RESULT_FILE = "result.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FoldJob(_Strict):
    """Everything one (method, fold) job needs; serialisable, so it can run anywhere."""

    method: str
    preset: str
    config: dict[str, Any]
    dataset_dir: Path
    fold: int
    train_ids: list[str]
    val_ids: list[str]
    device: Literal["cpu", "cuda"]
    job_dir: Path
    shared_dir: Path
    split_hash: str
    splits_file: Path
    run_key: str
    seed: int


class FoldResult(_Strict):
    """What a finished job leaves in ``job_dir/result.json``."""

    run_key: str
    fold: int
    rows: list[dict[str, Any]]
    fit_seconds: float
    predict_seconds: float
    n_cases: int
    internal_val_ids: list[str]

    @property
    def predict_seconds_per_case(self) -> float:
        return self.predict_seconds / max(self.n_cases, 1)


class RunEvent(_Strict):
    """A progress report: ``kind`` is one of run_started, fold_started, fold_skipped, fitting,
    epoch, fitted, case_predicted, fold_finished, scoring, run_finished, warning.

    An ``epoch`` report has ``done`` = the epoch (1-based), ``total`` = the planned epochs (None
    when the method does not say) and ``values`` = its losses and validation scores.
    """

    kind: str
    method: str
    fold: int | None = None
    total: int | None = None
    done: int | None = None
    message: str = ""
    values: dict[str, float] = Field(default_factory=dict)


ProgressCallback = Callable[[RunEvent], None]


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
    tracking: dict[str, str] = Field(
        default_factory=dict, description="where plugins recorded the run (avnbench_run_started's returns)"
    )
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


def run_key_for(method: str, preset: str, config: dict[str, Any], fingerprint: str, split_hash: str) -> str:
    """A short hash naming one (method, resolved config, dataset, split) combination."""
    blob = json.dumps([method, preset, config, fingerprint, split_hash], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def job_dir_for(workdir: Path, dataset_name: str, method: str, preset: str, fold: int) -> Path:
    """``<workdir>/<dataset>/<method>/<preset>/fold_<k>``."""
    return Path(workdir) / dataset_name / method / preset / f"fold_{fold}"


def shared_dir_for(workdir: Path, dataset_name: str) -> Path:
    """Folder shared by all jobs on one dataset within a work folder."""
    return Path(workdir) / dataset_name / "_shared"


def without_labels(cases: Sequence[Case]) -> list[Case]:
    """The cases as ``predict`` sees them: no access to reference labels."""
    return [c.model_copy(update={"label_path": None}) for c in cases]


def load_finished(job: FoldJob) -> FoldResult | None:
    """The job's result if it finished before with the same run key, else None."""
    path = job.job_dir / RESULT_FILE
    if not path.exists():
        return None
    try:
        result = FoldResult.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    return result if result.run_key == job.run_key else None


def run_fold_job(
    job: FoldJob,
    registry: Registry | None = None,
    progress: ProgressCallback | None = None,
    training_listener: TrainingListener | None = None,
) -> FoldResult:
    """Fit on the fold's training cases, predict its validation cases, save and score them.

    ``training_listener`` receives each :class:`TrainingEvent` the method reports while it fits.
    """
    from avnbench.data import predictions as pred_io

    registry = registry or load_registry()
    entry = registry.get(job.method)
    dataset = load_dataset(job.dataset_dir)
    emit = progress or (lambda e: None)

    train_all = dataset.subset(job.train_ids)
    fit_train, fit_val = carve_validation(train_all, VALIDATION_FRACTION, seed=job.seed + job.fold)
    val_cases = dataset.subset(job.val_ids)
    if set(c.case_id for c in fit_train + fit_val) & set(job.val_ids):
        raise PluginError("internal error: a validation case reached training")  # defensive

    job.job_dir.mkdir(parents=True, exist_ok=True)
    (job.job_dir / RESULT_FILE).unlink(missing_ok=True)
    config = entry.cls.Config.model_validate(job.config)
    method: Method = entry.cls(config)
    method.context = JobContext(
        dataset_dir=dataset.root,
        dataset_name=dataset.name,
        dataset_fingerprint=dataset.fingerprint,
        splits_file=job.splits_file,
        split_hash=job.split_hash,
        fold=job.fold,
        preset=job.preset,
        seed=job.seed,
        shared_dir=job.shared_dir,
    )
    method.log = TrainingLog(job.job_dir, listener=training_listener)

    emit(RunEvent(kind="fitting", method=job.method, fold=job.fold, total=len(val_cases)))
    t0 = time.perf_counter()
    method.fit(fit_train, fit_val, job.job_dir, job.device)
    fit_seconds = time.perf_counter() - t0
    emit(RunEvent(kind="fitted", method=job.method, fold=job.fold, message=f"{fit_seconds:.1f}s"))

    rows: list[dict[str, Any]] = []
    predict_seconds = 0.0
    iterator = iter(method.predict(without_labels(val_cases), job.job_dir, job.device))
    for i, case in enumerate(val_cases):
        t0 = time.perf_counter()
        try:
            prediction = next(iterator)
        except StopIteration:
            raise PluginError(
                f"method {job.method!r} yielded {i} predictions for {len(val_cases)} cases"
            ) from None
        predict_seconds += time.perf_counter() - t0
        _check_prediction(job.method, entry.card.task, prediction, case)
        pred_io.save_prediction(prediction, case, job.job_dir / "predictions")
        row = score_prediction(prediction, case, entry.card.classes)
        row.update(case_id=case.case_id, patient_id=case.patient_id, fold=job.fold)
        rows.append(row)
        emit(RunEvent(kind="case_predicted", method=job.method, fold=job.fold, done=i + 1, total=len(val_cases)))
    if next(iterator, None) is not None:
        raise PluginError(f"method {job.method!r} yielded more predictions than cases")

    result = FoldResult(
        run_key=job.run_key,
        fold=job.fold,
        rows=rows,
        fit_seconds=fit_seconds,
        predict_seconds=predict_seconds,
        n_cases=len(val_cases),
        internal_val_ids=[c.case_id for c in fit_val],
    )
    # Written last and atomically: its presence is what marks the fold as finished.
    tmp = job.job_dir / (RESULT_FILE + ".tmp")
    tmp.write_text(result.model_dump_json(indent=1), encoding="utf-8")
    tmp.replace(job.job_dir / RESULT_FILE)
    return result


def _check_prediction(method: str, task: str, prediction: object, case: Case) -> None:
    expected = SegmentationPrediction if task == "segmentation" else ClassificationPrediction
    if not isinstance(prediction, expected):
        raise PluginError(f"method {method!r} ({task}) yielded {type(prediction).__name__}")
    if prediction.case_id != case.case_id:
        raise PluginError(
            f"method {method!r} yielded case {prediction.case_id!r} where {case.case_id!r} was expected"
        )
    if isinstance(prediction, SegmentationPrediction) and prediction.labels.shape != case.meta.geometry.shape_zyx:
        raise PluginError(
            f"method {method!r}: case {case.case_id} label map shape {prediction.labels.shape} "
            f"!= image shape {case.meta.geometry.shape_zyx}"
        )


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
    """The run statistics of a set of per-case rows (see :mod:`avnbench.evaluation.statistics`)."""
    from avnbench.evaluation import statistics

    if task == "segmentation":
        return statistics.summarize_segmentation(rows, n_bootstrap=n_bootstrap, seed=seed)
    return statistics.summarize_classification(rows, list(classes or []), n_bootstrap=n_bootstrap, seed=seed)


def cost_metrics(results: Sequence[FoldResult]) -> dict[str, float]:
    """``fit_seconds`` (mean over folds, s) and ``predict_seconds_per_case`` (s)."""
    if not results:
        return {}
    n = sum(r.n_cases for r in results)
    return {
        "fit_seconds": float(np.mean([r.fit_seconds for r in results])),
        "predict_seconds_per_case": float(sum(r.predict_seconds for r in results) / max(n, 1)),
    }


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
) -> RunResult:
    """Run one method on all (or some) folds of a dataset, reporting each step to the plugins.

    Args:
        method: registered method name.
        dataset_dir: an avnbench dataset folder (a split with 5 folds is made if it has none).
        workdir: folder for every job's files (``<workdir>/<dataset>/<method>/<preset>/fold_<k>``).
        preset: ``smoke``, ``quick`` or ``paper``.
        folds: fold indices to run; None runs all.
        device: ``auto``, ``cpu`` or ``cuda``.
        seed: seed of the method and of the internal validation split.
        tracking_uri: MLflow store the built-in tracking plugin logs to; None: no MLflow tracking.
        registry: plugins and methods (default: :func:`load_registry`); its ``pm.hook`` is called
            at every step of :mod:`avnbench.hookspecs`' run lifecycle.
        progress: callback receiving :class:`RunEvent` reports.
        n_bootstrap: bootstrap resamples for confidence intervals.
    """
    registry = registry or load_registry()
    entry = registry.get(method)
    emit = progress or (lambda e: None)
    dataset: Dataset = load_dataset(dataset_dir)
    fold_list, split_meta = ensure_splits(dataset, seed=0)
    selected = list(range(len(fold_list))) if folds is None else sorted(set(folds))
    bad = [k for k in selected if not 0 <= k < len(fold_list)]
    if bad:
        raise ConfigError(f"fold(s) {bad} do not exist; the split has folds 0..{len(fold_list) - 1}")
    config = entry.cls.Config.preset(preset, seed=seed)
    config_dict = config.model_dump(mode="json")
    dev = resolve_device(device)
    key = run_key_for(method, preset, config_dict, dataset.fingerprint, split_meta.sha256)

    jobs = [
        FoldJob(
            method=method,
            preset=preset,
            config=config_dict,
            dataset_dir=dataset.root.resolve(),
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
        )
        for k in selected
    ]
    finished = {job.fold: load_finished(job) for job in jobs}

    run = RunInfo(
        method=method,
        task=entry.card.task,
        classes=list(entry.card.classes) if entry.card.classes else None,
        plugin=entry.plugin,
        plugin_distribution=entry.distribution,
        plugin_version=entry.version,
        preset=preset,
        config=config_dict,
        dataset_name=dataset.name,
        dataset_fingerprint=dataset.fingerprint,
        dataset_synthetic=dataset.synthetic,
        dataset_root=dataset.root.resolve(),
        split_sha256=split_meta.sha256,
        split_folds=split_meta.folds,
        split_seed=split_meta.seed,
        folds=selected,
        reused_folds=[k for k, r in finished.items() if r is not None],
        seed=seed,
        device=dev,
        run_key=key,
        tracking_uri=tracking_uri,
    )
    hook = registry.pm.hook
    tracking: dict[str, str] = {}
    results: list[FoldResult] = []
    skipped: list[int] = []
    try:
        for refs in hook.avnbench_run_started(run=run):
            tracking.update(refs or {})
        emit(RunEvent(kind="run_started", method=method, total=len(jobs)))
        for job in jobs:
            previous = finished[job.fold]
            if previous is not None:
                skipped.append(job.fold)
                emit(RunEvent(kind="fold_skipped", method=method, fold=job.fold, total=len(job.val_ids)))
                result = previous
            else:
                emit(RunEvent(kind="fold_started", method=method, fold=job.fold, total=len(job.val_ids)))
                hook.avnbench_fold_started(run=run, job=job)
                listener = _training_listener(registry, run, job, emit)
                result = run_fold_job(job, registry, progress, training_listener=listener)
            results.append(result)
            fold_summary = summarize(result.rows, entry.card.task, entry.card.classes, 0, seed)
            hook.avnbench_fold_finished(
                run=run, job=job, result=result, metrics=fold_summary.metrics | cost_metrics([result]),
                reused=previous is not None,
            )
            emit(RunEvent(kind="fold_finished", method=method, fold=job.fold))

        emit(RunEvent(kind="scoring", method=method))
        rows = [row for r in results for row in r.rows]
        summary = summarize(rows, entry.card.task, entry.card.classes, n_bootstrap, seed)
        metrics = summary.metrics | cost_metrics(results)
        hook.avnbench_run_finished(run=run, rows=rows, summary=summary, metrics=metrics)
    except BaseException as e:
        _report_abort(registry, run, e)
        raise
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
        parent_run_id=tracking.get("mlflow.parent_run_id"),
        tracking=tracking,
        notes=list(getattr(summary, "notes", []) or []),
    )


def _training_listener(registry: Registry, run: RunInfo, job: FoldJob, emit: ProgressCallback) -> TrainingListener:
    """What a fold's ``TrainingLog`` calls on each report: the hook (live tracking), then the CLI."""

    def on_training_event(event: TrainingEvent) -> None:
        registry.pm.hook.avnbench_training_event(run=run, job=job, event=event)
        emit(RunEvent(kind="epoch", method=run.method, fold=job.fold, done=event.epoch, total=event.total,
                      values=event.values))

    return on_training_event


def _report_abort(registry: Registry, run: RunInfo, error: BaseException) -> None:
    # The hook must not raise; if a plugin does anyway, the run's own error is what the user needs.
    reason = f"{type(error).__name__}: {error}".strip().splitlines()[0]
    try:
        registry.pm.hook.avnbench_run_aborted(run=run, reason=reason)
    except Exception:
        pass
