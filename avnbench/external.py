"""Label maps made outside avnbench, scored and reported as a run of their own method name.

``avnbench score --name NAME`` hands a folder of ``{case}.nii.gz`` label maps (nnU-Net's
``nnUNetv2_predict`` output included: its ``plans.json``, ``dataset.json`` and
``predict_from_raw_data_args.json`` are not label maps and are never read) to
:func:`score_external`. It scores them per fold of the dataset's split and reports them through
the same lifecycle hooks as :func:`avnbench.runner.run_benchmark` (run started, each fold started
and finished, run finished), so the tracking plugin writes the same parent and child runs
(method NAME, preset ``external``, ``avnbench.source = external``) and the leaderboard ranks them
beside the built-in methods. There is one writer path to MLflow, the plugin's.

A fold is scored whole or not at all: a fold with some but not all of its validation cases
predicted is refused, since a row with the hard cases left out would rank above honest rows.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from avnbench.data.dataset import Dataset, load_dataset
from avnbench.errors import ConfigError, DataError
from avnbench.jobs import FoldInputs, FoldJob, FoldResult, code_versions, run_key_for
from avnbench.plugins import Registry, load_registry
from avnbench.runs import RunInfo

EXTERNAL_PRESET = "external"
EXTERNAL_PLUGIN = "external"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


class ExternalScore(BaseModel):
    """What :func:`score_external` scored and where the hooks recorded it."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str
    folds: list[int]
    rows: list[dict[str, Any]]
    summary: Any  # avnbench.evaluation.summaries' segmentation summary
    tracking: dict[str, str]
    unknown_files: list[str] = []  # ``*.nii.gz`` in the folder that name no case of the dataset


def check_name(name: str, registry: Registry) -> None:
    """Refuse a NAME that is not a plain name, or that is a registered method's (an outside
    folder must not pass for a built-in or installed method on the leaderboard)."""
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"--name {name!r}: use letters, digits and . _ + - (at most 100 characters)")
    if name in registry.names():
        raise ConfigError(
            f"--name {name!r} is a registered method; name the outside predictions differently "
            f"(e.g. {name}-external) so they cannot pass for the method's own runs"
        )


def select_folds(pred_dir: Path, dataset: Dataset, folds: Sequence[int] | None) -> tuple[dict[int, Any], Any]:
    """``({fold: its Fold (train and val case ids)}, SplitsMeta)`` to score from ``pred_dir``.

    With ``folds``: those folds (every validation case needs a prediction, checked when scoring).
    Without: every fold with at least one ``{case}.nii.gz`` in the folder, each of them complete.
    A dataset without a split gets the same 5-fold split ``avnbench run`` makes.
    """
    from avnbench.data.splits import ensure_splits
    from avnbench.evaluation.scoring import prediction_path

    fold_list, split_meta = ensure_splits(dataset, seed=0)
    if folds is not None:
        bad = sorted(k for k in set(folds) if not 0 <= k < len(fold_list))
        if bad:
            raise ConfigError(f"--fold {bad}: the split of {dataset.name} has folds 0..{len(fold_list) - 1}")
        return {k: fold_list[k] for k in sorted(set(folds))}, split_meta
    if not Path(pred_dir).is_dir():
        raise DataError(f"{pred_dir}: prediction folder not found")
    present = {c.case_id for c in dataset.cases if prediction_path(pred_dir, c.case_id).is_file()}
    if not present:
        raise DataError(f"{pred_dir}: no {{case}}.nii.gz label map of a case of {dataset.name}; check --pred and --ref")
    selected = {}
    for k, fold in enumerate(fold_list):
        have = [c for c in fold.val if c in present]
        missing = [c for c in fold.val if c not in present]
        if have and missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise DataError(
                f"{pred_dir}: fold {k} has label maps for {len(have)} of its {len(fold.val)} validation cases "
                f"(missing {shown}); predict them, or pass --fold with the folds that are complete"
            )
        if have:
            selected[k] = fold
    return selected, split_meta


def predictions_sha256(pred_dir: Path, case_ids: Sequence[str]) -> str:
    """sha256 over the scored label maps (name and content), so equal bytes give an equal run key."""
    from avnbench.evaluation.scoring import prediction_path

    digest = hashlib.sha256()
    for case_id in sorted(case_ids):
        path = prediction_path(pred_dir, case_id)
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def score_external(
    name: str,
    pred_dir: Path,
    dataset_dir: Path,
    folds: Sequence[int] | None = None,
    tracking_uri: str | None = None,
    registry: Registry | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    scratch_dir: Path = Path("scores"),
) -> ExternalScore:
    """Score ``pred_dir`` per fold and report it through the run lifecycle as method ``name``.

    Args:
        name: the method name the run is recorded under (not a registered method's).
        pred_dir: folder of ``{case}.nii.gz`` label maps on the reference grids.
        dataset_dir: the avnbench dataset folder with the reference labels.
        folds: folds whose validation cases to score; None: every fold present in ``pred_dir``.
        tracking_uri: MLflow store for the tracking plugin; None: the hooks run without MLflow.
        registry: plugins (default :func:`load_registry`); its ``pm.hook`` gets the lifecycle.
        n_bootstrap: bootstrap resamples for the run's confidence intervals.
        seed: seed of the bootstrap.
        scratch_dir: the fold jobs' folders are ``<scratch_dir>/fold_<k>`` (the hooks may look
            for a job's files there; this function writes nothing): the command's output folder.
    """
    from avnbench.evaluation.metrics import collect_metrics
    from avnbench.evaluation.scoring import score_folder
    from avnbench.evaluation.summaries import summarize_segmentation

    registry = registry or load_registry()
    check_name(name, registry)
    metrics = collect_metrics(registry.pm)  # plugin metrics too, as for avnbench's own runs
    pred_dir = Path(pred_dir).resolve()
    dataset = load_dataset(dataset_dir)
    chosen, split_meta = select_folds(pred_dir, dataset, folds)
    rows_by_fold: dict[int, list[dict[str, Any]]] = {}
    for k, fold in chosen.items():  # scoring first: a bad file fails before anything is logged
        case_ids = list(fold.val)
        rows = score_folder(pred_dir, dataset, case_ids)
        for row, case_id in zip(rows, case_ids):
            row.update(case_id=case_id, patient_id=dataset[case_id].patient_id, fold=k)
        rows_by_fold[k] = rows
    all_ids = [c for fold in chosen.values() for c in fold.val]
    config = {"predictions": str(pred_dir), "predictions_sha256": predictions_sha256(pred_dir, all_ids)}
    code = code_versions(None)
    key = run_key_for(name, EXTERNAL_PRESET, config, dataset.fingerprint, split_meta.sha256, code)
    fold_ids = sorted(chosen)
    run = RunInfo(
        method=name, task="segmentation", plugin=EXTERNAL_PLUGIN, preset=EXTERNAL_PRESET, config=config,
        dataset_name=dataset.name, dataset_fingerprint=dataset.fingerprint, dataset_synthetic=dataset.synthetic,
        dataset_root=dataset.root.resolve(), split_sha256=split_meta.sha256, split_folds=split_meta.folds,
        split_seed=split_meta.seed, folds=fold_ids, seed=seed, device="cpu", run_key=key,
        tracking_uri=tracking_uri, source="external", predictions_dir=pred_dir,
    )
    scratch = Path(scratch_dir).resolve()
    hook = registry.pm.hook
    tracking: dict[str, str] = {}
    try:
        for refs in hook.avnbench_run_started(run=run):
            tracking.update(refs or {})
        for k in fold_ids:
            job = _fold_job(run, dataset, split_meta, k, chosen[k], scratch, code)
            result = FoldResult(**FoldInputs.of(job).model_dump(), rows=rows_by_fold[k], fit_seconds=0.0,
                                predict_seconds=0.0, n_cases=len(job.val_ids), internal_val_ids=[])
            hook.avnbench_fold_started(run=run, job=job)
            fold_summary = summarize_segmentation(rows_by_fold[k], n_bootstrap=0, seed=seed, metrics=metrics)
            # no fit_seconds/predict_seconds: avnbench did not time the outside method
            hook.avnbench_fold_finished(run=run, job=job, result=result, metrics=fold_summary.metrics, reused=False)
        rows = [row for k in fold_ids for row in rows_by_fold[k]]
        summary = summarize_segmentation(rows, n_bootstrap=n_bootstrap, seed=seed, metrics=metrics)
        hook.avnbench_run_finished(run=run, rows=rows, summary=summary, metrics=summary.metrics)
    except BaseException as e:
        reason = f"{type(e).__name__}: {e}".strip().splitlines()[0]
        try:
            hook.avnbench_run_aborted(run=run, reason=reason)
        except Exception:  # the run's own error is what the user needs
            pass
        raise
    return ExternalScore(name=name, folds=fold_ids, rows=rows, summary=summary, tracking=tracking,
                         unknown_files=unknown_label_maps(pred_dir, dataset))


def unknown_label_maps(pred_dir: Path, dataset: Dataset) -> list[str]:
    """Names of the ``*.nii.gz`` files in ``pred_dir`` that are no case's label map (not scored)."""
    from avnbench.data.dataset import FILE_ENDING

    known = {f"{c.case_id}{FILE_ENDING}" for c in dataset.cases}
    return sorted(p.name for p in Path(pred_dir).glob(f"*{FILE_ENDING}") if p.name not in known)


def _fold_job(run: RunInfo, dataset: Dataset, split_meta, k: int, fold, scratch: Path, code) -> FoldJob:
    """The :class:`FoldJob` the hooks are told about: fold ``k`` as the split defines it."""
    return FoldJob(
        method=run.method, preset=run.preset, config=run.config, dataset_dir=run.dataset_root,
        dataset_fingerprint=run.dataset_fingerprint, fold=k, train_ids=list(fold.train), val_ids=list(fold.val),
        device=run.device, job_dir=scratch / f"fold_{k}", shared_dir=scratch, split_hash=split_meta.sha256,
        splits_file=dataset.splits_path.resolve(), run_key=run.run_key, seed=run.seed, **code.model_dump(),
    )
