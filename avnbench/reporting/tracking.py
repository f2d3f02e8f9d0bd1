"""MLflow tracking as a built-in plugin (DESIGN.md "Tracking and leaderboards").

This module is registered through :data:`avnbench.plugins.DEFAULT_PLUGINS`, like any installed
plugin, and implements the lifecycle hooks of :mod:`avnbench.hookspecs`. It does nothing for a run
whose ``RunInfo.tracking_uri`` is None.

Layout, through MLflow's own client: one experiment per dataset, one parent run per (run key, fold
selection), one child run per fold. A fold's child run is opened when the fold starts and its
training curves are logged while it trains, as ``train/<name>`` with the epoch as step, so MLflow's
UI shows the run as it trains; scores, learned params and artifacts follow when the fold ends.

What a parent run says it ran: the dataset as an MLflow input (name, digest = the fingerprint's
first 36 hex digits, source = the dataset folder), ``mlflow.source.git.commit`` (avnbench's
checkout), ``mlflow.source.name``, a description (``mlflow.note.content``: method, preset,
dataset, folds, the synthetic warning), ``avnbench.source`` (``avnbench``, or ``external`` for
label maps scored by ``avnbench score --name``); its artifacts include overlays of the worst and
best case (:mod:`avnbench.reporting.overlays`). Child runs carry the dataset tags and input too.

Resuming: running the same command again finds the parent with the same selection key.

- parent unfinished (an interrupted run): it is resumed; its unfinished child runs (folds that
  were training when the run stopped) are marked KILLED and a recomputed fold gets a new child;
  folds whose child finished are not logged again.
- parent FINISHED and every fold's result reused (nothing computed): the parent is reused as it
  is and nothing is logged, so no duplicate run appears.
- parent FINISHED but some fold is recomputed: a new parent run, since its numbers may differ.
- an external run (``source == "external"``) whose parent FINISHED: reused as it is, since its
  run key hashes the label maps' bytes, so the same key means the same numbers.

A test run (``avnbench run --data A --test-data B``: each fold's model, trained on A's folds, scored
on every case of B) goes to an experiment of its own, ``<A>--test-<B>`` (:func:`experiment_name`),
tagged with both datasets, so that MLflow's runs table and ``avnbench leaderboard`` never put it
beside A's own validation results. Its runs log A as an input with context ``training`` and B with
context ``test``, carry the tags ``avnbench.train_dataset`` and ``avnbench.test_dataset`` (with its
fingerprint) and say "tested on B" in their names and descriptions.

The plugin keeps the runs it has open in :data:`_OPEN_RUNS`, by store and selection key, from
``avnbench_run_started`` until ``avnbench_run_finished`` or ``avnbench_run_aborted``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avnbench.hookspecs import hookimpl
from avnbench.reporting.mlflow_store import (  # noqa: F401  (re-exported: the store API lives here)
    DEFAULT_TRACKING_FILE,
    artifact_root_for,
    client_for,
    dataset_input,
    default_tracking_uri,
    ensure_experiment,
    environment_tags,
    flatten_params,
)

if TYPE_CHECKING:
    from avnbench.methods import TrainingEvent
    from avnbench.runner import FoldJob, FoldResult
    from avnbench.runs import RunInfo

RUN_KEY_TAG = "avnbench.run_key"
FOLD_TAG = "avnbench.fold"
PARENT_TAG = "mlflow.parentRunId"
DATASET_TAG = "avnbench.dataset"
SYNTHETIC_TAG = "synthetic"
SOURCE_TAG = "avnbench.source"
PREDICTIONS_TAG = "avnbench.predictions"
TRAIN_DATASET_TAG = "avnbench.train_dataset"
TEST_DATASET_TAG = "avnbench.test_dataset"
TEST_SEPARATOR = "--test-"
DESCRIPTION_TAG = "mlflow.note.content"
TRAIN_PREFIX = "train/"
PARENT_RUN_REF = "mlflow.parent_run_id"
REUSED_REF = "mlflow.parent_run_reused"


def _now_ms() -> int:
    return int(time.time() * 1000)


def experiment_name(run: "RunInfo") -> str:
    """The run's experiment: its dataset's name, or ``<train>--test-<test>`` for a test run."""
    return f"{run.dataset_name}{TEST_SEPARATOR}{run.test_dataset_name}" if run.is_test else run.dataset_name


def _experiment_tags(run: "RunInfo") -> dict[str, str] | None:
    if not run.is_test:
        return None
    return {
        TRAIN_DATASET_TAG: run.dataset_name,
        TEST_DATASET_TAG: run.test_dataset_name or "",
        DESCRIPTION_TAG: f"Models trained on the folds of **{run.dataset_name}**, each scored on every case of "
                         f"**{run.test_dataset_name}** (train on one dataset, test on another). Not comparable with "
                         f"the validation folds in experiment {run.dataset_name}.",
    }


class TrackedRun:
    """The parent run of one avnbench run and the child runs of its folds."""

    def __init__(self, run: "RunInfo"):
        from mlflow.entities import RunStatus

        assert run.tracking_uri is not None
        self.info = run
        self.uri = run.tracking_uri
        self.client = client_for(self.uri)
        self.experiment_id = ensure_experiment(self.client, experiment_name(run), self.uri, _experiment_tags(run))
        existing = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{RUN_KEY_TAG}` = '{run.selection_key}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        finished = RunStatus.to_string(RunStatus.FINISHED)
        parent = None
        self.reused = False
        if existing and existing[0].info.status == finished and (run.computes_nothing or run.source == "external"):
            parent, self.reused = existing[0], True
        elif existing and existing[0].info.status != finished:
            parent = existing[0]
            self.client.update_run(parent.info.run_id, status="RUNNING")
        if parent is None:
            parent = self.client.create_run(self.experiment_id, tags=self._parent_tags())
            self._log_params(parent.info.run_id, self._parent_params())
            self._log_dataset(parent.info.run_id, "training" if run.is_test else "evaluation")
        self.run_id = parent.info.run_id
        self.finished_folds = self._finished_child_folds()
        self.open_children: dict[int, str] = {}
        self.predictions: dict[int, Path] = {}  # fold -> folder of its label maps, for the overlays

    def _dataset_tags(self) -> dict[str, str]:
        run = self.info
        tags = {
            DATASET_TAG: run.dataset_name,
            "avnbench.dataset.fingerprint": run.dataset_fingerprint,
            SYNTHETIC_TAG: str(run.dataset_synthetic or bool(run.test_dataset_synthetic)).lower(),
        }
        if run.is_test:
            tags |= {TRAIN_DATASET_TAG: run.dataset_name, TEST_DATASET_TAG: run.test_dataset_name or "",
                     TEST_DATASET_TAG + ".fingerprint": run.test_dataset_fingerprint or ""}
        return tags

    def _log_dataset(self, run_id: str, context: str) -> None:
        """The dataset as an MLflow input with ``context``; a test run's test dataset beside it
        with context ``test``."""
        run = self.info
        inputs = [dataset_input(run.dataset_name, run.dataset_fingerprint, run.dataset_root, run.dataset_synthetic,
                                context)]
        if run.is_test:
            inputs.append(dataset_input(run.test_dataset_name or "", run.test_dataset_fingerprint or "",
                                        run.scored_root, bool(run.test_dataset_synthetic), "test"))
        self.client.log_inputs(run_id, datasets=inputs)

    def _source_tags(self) -> dict[str, str]:
        run = self.info
        tags = {
            SOURCE_TAG: run.source,
            "mlflow.source.type": "LOCAL",
            "mlflow.source.name": "avnbench score" if run.source == "external" else "avnbench run",
        }
        if run.predictions_dir is not None:
            tags[PREDICTIONS_TAG] = str(run.predictions_dir)
        return tags

    def describe(self) -> str:
        """The parent run's description (markdown): what ran on what, and whether it is synthetic."""
        run = self.info
        what = (f"Label maps made outside avnbench, read from `{run.predictions_dir}` and scored by "
                f"`avnbench score --name {run.method}`." if run.source == "external"
                else f"`{run.method}` (plugin `{run.plugin}`), preset `{run.preset}`, seed {run.seed}, on {run.device}.")
        text = (
            f"**{run.method}** on dataset **{run.dataset_name}** (fingerprint `{run.dataset_fingerprint[:12]}`).\n\n"
            f"{what}\n\nFolds {', '.join(map(str, run.folds))} of the {run.split_folds}-fold patient-grouped split "
            f"`{run.split_sha256[:12]}`; one child run per fold, metrics on this run are over all their validation cases."
        )
        if run.is_test:
            text = (
                f"**{run.method}** trained on **{run.dataset_name}** (fingerprint `{run.dataset_fingerprint[:12]}`), "
                f"tested on **{run.test_dataset_name}** "
                f"(fingerprint `{(run.test_dataset_fingerprint or '')[:12]}`).\n\n"
                f"{what}\n\nThe model of each of folds {', '.join(map(str, run.folds))} of the {run.split_folds}-fold "
                f"split `{run.split_sha256[:12]}` of {run.dataset_name} predicts all {run.test_cases} cases of "
                f"{run.test_dataset_name}; one child run per fold, metrics on this run are over every (fold, case)."
            )
        if run.dataset_synthetic or run.test_dataset_synthetic:
            text += "\n\n**SYNTHETIC PHANTOM: not clinical results.**"
        return text

    def _parent_tags(self) -> dict[str, str]:
        run = self.info
        return environment_tags(run.device) | self._dataset_tags() | self._source_tags() | {
            RUN_KEY_TAG: run.selection_key,
            DESCRIPTION_TAG: self.describe(),
            "mlflow.runName": f"{run.method}-{run.preset}" + (f"-test-{run.test_dataset_name}" if run.is_test else ""),
            "avnbench.plugin": run.plugin,
            "avnbench.plugin.distribution": run.plugin_distribution or "",
            "avnbench.plugin.version": run.plugin_version or "",
            "avnbench.task": run.task,
        }

    def _parent_params(self) -> dict[str, str]:
        run = self.info
        params = {
            "method": run.method,
            "preset": run.preset,
            "dataset": run.dataset_name,
            "dataset_fingerprint": run.dataset_fingerprint,
            "dataset_synthetic": str(run.dataset_synthetic),
            "split_sha256": run.split_sha256,
            "split_folds": str(run.split_folds),
            "split_seed": str(run.split_seed),
            "folds": ",".join(map(str, run.folds)),
            "seed": str(run.seed),
            "trains_on": ",".join(run.trains_on) or "nothing (outside predictions)",
            "device": run.device,
        }
        if run.is_test:
            params |= {
                "test_dataset": run.test_dataset_name or "",
                "test_dataset_fingerprint": run.test_dataset_fingerprint or "",
                "test_dataset_synthetic": str(bool(run.test_dataset_synthetic)),
                "test_cases": str(run.test_cases),
            }
        flatten_params("config", run.config, params)
        return params

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def _log_metrics(self, run_id: str, points: list) -> None:
        for i in range(0, len(points), 500):
            self.client.log_batch(run_id, metrics=points[i : i + 500])

    def _finished_child_folds(self) -> set[int]:
        """Folds whose child run finished; unfinished children (a run that stopped) become KILLED."""
        children = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{self.run_id}'", max_results=1000
        )
        done = set()
        for child in children:
            if child.info.status == "FINISHED" and FOLD_TAG in child.data.tags:
                done.add(int(child.data.tags[FOLD_TAG]))
            elif child.info.status in ("RUNNING", "SCHEDULED"):
                self.client.set_terminated(child.info.run_id, status="KILLED")
        return done

    def open_fold(self, job: "FoldJob") -> str:
        """Create the fold's child run (RUNNING) with the params known before training."""
        run = self.info
        name, what = f"{job.method}-{job.preset}-fold{job.fold}", f"{len(job.val_ids)} validation case(s)."
        if job.is_test:
            name += f"-test-{job.test_dataset_name}"
            what = (f"its model (trained on {len(job.train_ids)} case(s)) tested on all {len(job.test_ids or [])} "
                    f"case(s) of {job.test_dataset_name}.")
        synthetic = run.dataset_synthetic or run.test_dataset_synthetic
        tags = {
            PARENT_TAG: self.run_id,
            FOLD_TAG: str(job.fold),
            "mlflow.runName": name,
            DESCRIPTION_TAG: f"Fold {job.fold} of {run.method} on {run.dataset_name}: {what}"
                             + (" SYNTHETIC PHANTOM: not clinical results." if synthetic else ""),
        } | environment_tags(job.device) | self._dataset_tags() | self._source_tags()
        child_id = self.client.create_run(self.experiment_id, tags=tags).info.run_id
        self._log_dataset(child_id, f"training fold {job.fold}" if job.is_test else f"validation fold {job.fold}")
        if job.is_test:
            self._log_params(child_id, {"test_dataset": job.test_dataset_name or "",
                                        "n_test": str(len(job.test_ids or []))})
        self._log_params(child_id, {
            "method": job.method,
            "preset": job.preset,
            "fold": str(job.fold),
            "n_train": str(len(job.train_ids)),
            "n_val": str(len(job.val_ids)),
            "split_sha256": job.split_hash,
            "seed": str(job.seed),
        })
        self.open_children[job.fold] = child_id
        return child_id

    def log_training(self, job: "FoldJob", event: "TrainingEvent") -> None:
        """One epoch's values, now, as ``train/<name>`` at step = epoch."""
        from mlflow.entities import Metric

        child_id = self.open_children.get(job.fold)
        if child_id is None or not event.values:
            return
        now = _now_ms()
        self._log_metrics(child_id, [Metric(TRAIN_PREFIX + k, v, now, event.epoch) for k, v in event.values.items()])

    def finish_fold(self, job: "FoldJob", result: "FoldResult", metrics: dict[str, float], reused: bool) -> None:
        """Scores, learned params and artifacts on the fold's child run, which becomes FINISHED.

        A reused fold whose child run finished before is left alone; a reused fold without one
        (a new fold selection, or a run that stopped before logging it) gets a child run now, its
        curves read back from ``training_log.jsonl``.
        """
        from mlflow.entities import Metric

        from avnbench.methods import TrainingLog

        self.predictions[job.fold] = self.info.predictions_of(job.job_dir)
        if job.fold in self.finished_folds:
            return
        child_id = self.open_children.pop(job.fold, None)
        now = _now_ms()
        points = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        if child_id is None or reused:
            child_id = self.open_fold(job)
            del self.open_children[job.fold]
            points += [
                Metric(TRAIN_PREFIX + p["name"], p["value"], now, p["step"])
                for p in TrainingLog(job.job_dir).read_metrics()
            ]
        params = {"internal_val_cases": ",".join(result.internal_val_ids)}
        learned = (job.fit_dir or job.job_dir) / "training_params.json"  # a test job's model is its fold job's
        if learned.exists():
            for k, v in json.loads(learned.read_text(encoding="utf-8")).items():
                params[f"learned.{k}"] = json.dumps(v) if not isinstance(v, str) else v
        self._log_params(child_id, params)
        self._log_metrics(child_id, points)
        artifacts = job.job_dir / "artifacts"
        if artifacts.is_dir() and any(artifacts.iterdir()):
            self.client.log_artifacts(child_id, str(artifacts))
        with tempfile.TemporaryDirectory() as tmp:
            _write_cases_csv(result.rows, Path(tmp) / "cases.csv")
            self.client.log_artifact(child_id, str(Path(tmp) / "cases.csv"))
        self.client.set_terminated(child_id, status="FINISHED")
        self.finished_folds.add(job.fold)

    def finish(self, rows: list[dict], summary: Any, metrics: dict[str, float]) -> None:
        """Aggregate metrics, per-case table, plots and resolved config; the run is FINISHED.

        A reused finished parent already holds exactly these (nothing was computed): untouched.
        """
        from mlflow.entities import Metric

        if self.reused:
            return
        now = _now_ms()
        self._log_metrics(self.run_id, [Metric(k, float(v), now, 0) for k, v in metrics.items()])
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            _write_cases_csv(rows, tmp / "cases.csv")
            (tmp / "config.json").write_text(json.dumps(self.info.config, indent=2), encoding="utf-8")
            (tmp / "summary.json").write_text(summary.model_dump_json(indent=2), encoding="utf-8")
            plots = tmp / "plots"
            plots.mkdir()
            _make_plots(rows, summary, self.info, plots)
            if self.info.task == "segmentation":
                from avnbench.reporting.overlays import write_overlays

                write_overlays(rows, self.info.scored_root, self.predictions, self.info.method,
                               self.info.test_dataset_name or self.info.dataset_name, plots)
            for p in [tmp / "cases.csv", tmp / "config.json", tmp / "summary.json"]:
                self.client.log_artifact(self.run_id, str(p))
            if any(plots.iterdir()):
                self.client.log_artifacts(self.run_id, str(plots), artifact_path="plots")
        self.client.set_terminated(self.run_id, status="FINISHED")

    def abort(self) -> None:
        """Open child runs and the parent become KILLED; re-running the command resumes them."""
        try:
            for child_id in self.open_children.values():
                self.client.set_terminated(child_id, status="KILLED")
            if not self.reused:
                self.client.set_terminated(self.run_id, status="KILLED")
        except Exception:  # the store may be what failed; the on-disk fold results are what matter
            pass


# Runs between avnbench_run_started and avnbench_run_finished/_aborted, by (store, selection key).
_OPEN_RUNS: dict[tuple[str, str], TrackedRun] = {}


def _open_run(run: "RunInfo") -> TrackedRun | None:
    if run.tracking_uri is None:
        return None
    return _OPEN_RUNS.get((run.tracking_uri, run.selection_key))


@hookimpl
def avnbench_run_started(run: "RunInfo") -> dict[str, str] | None:
    """Open (or resume, or reuse) the parent run; returns its id under ``mlflow.parent_run_id``."""
    if run.tracking_uri is None:
        return None
    tracked = TrackedRun(run)
    _OPEN_RUNS[(run.tracking_uri, run.selection_key)] = tracked
    return {PARENT_RUN_REF: tracked.run_id, REUSED_REF: str(tracked.reused).lower()}


@hookimpl
def avnbench_fold_started(run: "RunInfo", job: "FoldJob") -> None:
    """Open the fold's child run, so that it is visible (RUNNING) while the fold trains.

    Not for a reused parent (an external run scored again) nor a fold whose child run finished
    before: those are kept as they are, and a new child would stay open.
    """
    tracked = _open_run(run)
    if tracked is not None and not tracked.reused and job.fold not in tracked.finished_folds:
        tracked.open_fold(job)


@hookimpl
def avnbench_training_event(run: "RunInfo", job: "FoldJob", event: "TrainingEvent") -> None:
    """Log the epoch's values to the fold's child run right away."""
    tracked = _open_run(run)
    if tracked is not None:
        tracked.log_training(job, event)


@hookimpl
def avnbench_fold_finished(run: "RunInfo", job: "FoldJob", result: "FoldResult", metrics, reused: bool) -> None:
    """Complete the fold's child run (or create it for a reused fold that has none)."""
    tracked = _open_run(run)
    if tracked is not None:
        tracked.finish_fold(job, result, dict(metrics), reused)


@hookimpl
def avnbench_run_finished(run: "RunInfo", rows, summary, metrics) -> None:
    """Log the aggregate and close the parent run."""
    tracked = _open_run(run)
    if tracked is not None:
        tracked.finish(list(rows), summary, dict(metrics))
        _OPEN_RUNS.pop((run.tracking_uri, run.selection_key), None)


@hookimpl
def avnbench_run_aborted(run: "RunInfo", reason: str) -> None:
    """Mark what was open KILLED."""
    tracked = _open_run(run)
    if tracked is not None:
        tracked.abort()
        _OPEN_RUNS.pop((run.tracking_uri, run.selection_key), None)


def _write_cases_csv(rows: list[dict], path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    first = [c for c in ("case_id", "patient_id", "fold") if c in frame.columns]
    frame = frame[first + [c for c in frame.columns if c not in first]]
    frame.to_csv(path, index=False)


def _make_plots(rows: list[dict], summary, run: "RunInfo", out: Path) -> None:
    from avnbench.reporting import plots

    title = f"{run.method} ({run.preset})\non {run.dataset_name}"
    if run.is_test:
        title = f"{run.method} ({run.preset})\ntrained on {run.dataset_name}, tested on {run.test_dataset_name}"
    if run.task == "segmentation":
        plots.plot_relative_volume(rows, out / "relative_volume_manual_vs_auto.png", title=title)
        plots.plot_bland_altman(rows, out / "bland_altman_relative_volume.png", title=title)
    tables = getattr(summary, "tables", {}) or {}
    for name, table in tables.items():
        if name.endswith("confusion") and isinstance(table, dict) and "matrix" in table:
            plots.plot_confusion(table["matrix"], table["labels"], f"{title}\n{name.replace('_', ' ')}",
                                 out / f"{name}.png")
