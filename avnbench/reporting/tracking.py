"""MLflow tracking, through MLflow's own client (DESIGN.md "Tracking and leaderboards").

One experiment per dataset, one parent run per ``avnbench run``, one child run per fold. A parent
run carries the key of its (method, config, dataset, split) combination; running the same command
again finds an unfinished parent with that key and resumes it, skipping folds whose child runs
finished.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from avnbench import __version__

DEFAULT_TRACKING_FILE = "mlflow.db"
RUN_KEY_TAG = "avnbench.run_key"
FOLD_TAG = "avnbench.fold"
PARENT_TAG = "mlflow.parentRunId"


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite file in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_TRACKING_FILE}"


def _quiet_mlflow() -> None:
    # MLflow logs database migrations at INFO on every new store; keep the CLI's output clean.
    import logging

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow  # noqa: F401  (configures its loggers on import; adjust them afterwards)

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def client_for(uri: str):
    """An ``MlflowClient`` on ``uri``."""
    _quiet_mlflow()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def artifact_root_for(uri: str) -> str | None:
    """For a SQLite store, artifacts live beside the database file (not in the cwd)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


def ensure_experiment(client, name: str, uri: str) -> str:
    """The id of the experiment named after the dataset, created if needed."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    root = artifact_root_for(uri)
    location = f"{root}/{name}" if root else None
    return client.create_experiment(name, artifact_location=location)


def environment_tags(device: str) -> dict[str, str]:
    """Versions and machine facts recorded on every run."""
    tags = {
        "avnbench.version": __version__,
        "device": device,
        "python": platform.python_version(),
        "host.platform": platform.platform(),
    }
    try:
        import torch

        tags["torch.version"] = torch.__version__
        tags["cuda.version"] = str(torch.version.cuda)
        if device == "cuda" and torch.cuda.is_available():
            tags["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        tags["torch.version"] = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        if commit.returncode == 0:
            tags["git.commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return tags


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)


class MlflowTracker:
    """Creates and resumes avnbench runs in an MLflow store."""

    def __init__(self, tracking_uri: str | None = None):
        self.uri = tracking_uri or default_tracking_uri()
        self.client = client_for(self.uri)

    def start_run(self, *, dataset, entry, preset, config, split_meta, folds, seed, device, run_key) -> "RunHandle":
        """Open (or resume) the parent run of one ``avnbench run``."""
        from mlflow.entities import RunStatus

        exp_id = ensure_experiment(self.client, dataset.name, self.uri)
        # Fold results are shared across fold selections; a parent run is one selection.
        run_key = f"{run_key}-folds{'_'.join(map(str, folds))}"
        existing = self.client.search_runs(
            [exp_id],
            filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        parent = None
        if existing and existing[0].info.status != RunStatus.to_string(RunStatus.FINISHED):
            parent = existing[0]
            self.client.update_run(parent.info.run_id, status="RUNNING")
        if parent is None:
            tags = environment_tags(device) | {
                RUN_KEY_TAG: run_key,
                "mlflow.runName": f"{entry.name}-{preset}",
                "avnbench.plugin": entry.plugin,
                "avnbench.plugin.distribution": entry.distribution or "",
                "avnbench.plugin.version": entry.version or "",
                "avnbench.task": entry.card.task,
                "synthetic": str(dataset.synthetic).lower(),
            }
            parent = self.client.create_run(exp_id, tags=tags)
            params = {
                "method": entry.name,
                "preset": preset,
                "dataset": dataset.name,
                "dataset_fingerprint": dataset.fingerprint,
                "dataset_synthetic": str(dataset.synthetic),
                "split_sha256": split_meta.sha256,
                "split_folds": str(split_meta.folds),
                "split_seed": str(split_meta.seed),
                "folds": ",".join(map(str, folds)),
                "seed": str(seed),
                "device": device,
            }
            _flatten("config", config, params)
            self._log_params(parent.info.run_id, params)
        return RunHandle(self, exp_id, parent.info.run_id, entry, config)

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])


class RunHandle:
    """The parent run of one ``avnbench run``: logs folds as child runs, then the aggregate."""

    def __init__(self, tracker: MlflowTracker, experiment_id: str, run_id: str, entry, config: dict):
        self.tracker = tracker
        self.client = tracker.client
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.entry = entry
        self.config = config
        self._finished_folds = self._logged_folds()

    def _logged_folds(self) -> set[int]:
        children = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{self.run_id}'", max_results=1000
        )
        done = set()
        for child in children:
            if child.info.status == "FINISHED" and FOLD_TAG in child.data.tags:
                done.add(int(child.data.tags[FOLD_TAG]))
            elif child.info.status != "FINISHED":
                self.client.set_terminated(child.info.run_id, status="KILLED")
        return done

    def fold_is_logged(self, fold: int) -> bool:
        return fold in self._finished_folds

    def log_fold(self, job, result, metrics: dict[str, float]) -> None:
        """A child run for one fold: params, metrics, training curves and artifacts."""
        from mlflow.entities import Metric

        from avnbench.methods import TrainingLog

        tags = {
            PARENT_TAG: self.run_id,
            FOLD_TAG: str(job.fold),
            "mlflow.runName": f"{job.method}-{job.preset}-fold{job.fold}",
        } | environment_tags(job.device)
        child = self.client.create_run(self.experiment_id, tags=tags)
        cid = child.info.run_id
        params = {
            "method": job.method,
            "preset": job.preset,
            "fold": str(job.fold),
            "n_train": str(len(job.train_ids)),
            "n_val": str(len(job.val_ids)),
            "internal_val_cases": ",".join(result.internal_val_ids),
            "split_sha256": job.split_hash,
            "seed": str(job.seed),
        }
        learned = job.job_dir / "training_params.json"
        if learned.exists():
            for k, v in json.loads(learned.read_text(encoding="utf-8")).items():
                params[f"learned.{k}"] = json.dumps(v) if not isinstance(v, str) else v
        self.tracker._log_params(cid, params)
        now = _now_ms()
        points = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        for p in TrainingLog(job.job_dir).read_metrics():
            points.append(Metric(p["name"], p["value"], now, p["step"]))
        for i in range(0, len(points), 500):
            self.client.log_batch(cid, metrics=points[i : i + 500])
        artifacts = job.job_dir / "artifacts"
        if artifacts.is_dir() and any(artifacts.iterdir()):
            self.client.log_artifacts(cid, str(artifacts))
        with tempfile.TemporaryDirectory() as tmp:
            _write_cases_csv(result.rows, Path(tmp) / "cases.csv")
            self.client.log_artifact(cid, str(Path(tmp) / "cases.csv"))
        self.client.set_terminated(cid, status="FINISHED")
        self._finished_folds.add(job.fold)

    def finish(self, rows: list[dict], summary, metrics: dict[str, float]) -> None:
        """Aggregate metrics, per-case table, plots and resolved config; the run is FINISHED."""
        from mlflow.entities import Metric

        now = _now_ms()
        points = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        for i in range(0, len(points), 500):
            self.client.log_batch(self.run_id, metrics=points[i : i + 500])
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            _write_cases_csv(rows, tmp / "cases.csv")
            (tmp / "config.json").write_text(json.dumps(self.config, indent=2), encoding="utf-8")
            (tmp / "summary.json").write_text(summary.model_dump_json(indent=2), encoding="utf-8")
            plots = tmp / "plots"
            plots.mkdir()
            _make_plots(rows, summary, self.entry.card.task, plots)
            for p in [tmp / "cases.csv", tmp / "config.json", tmp / "summary.json"]:
                self.client.log_artifact(self.run_id, str(p))
            if any(plots.iterdir()):
                self.client.log_artifacts(self.run_id, str(plots), artifact_path="plots")
        self.client.set_terminated(self.run_id, status="FINISHED")

    def abort(self) -> None:
        """Mark the parent run killed (an interrupted run); re-running resumes it."""
        try:
            self.client.set_terminated(self.run_id, status="KILLED")
        except Exception:  # the store may be what failed; the on-disk fold results are what matter
            pass


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _write_cases_csv(rows: list[dict], path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    first = [c for c in ("case_id", "patient_id", "fold") if c in frame.columns]
    frame = frame[first + [c for c in frame.columns if c not in first]]
    frame.to_csv(path, index=False)


def _make_plots(rows: list[dict], summary, task: str, out: Path) -> None:
    from avnbench.reporting import plots

    if task == "segmentation":
        plots.plot_relative_volume(rows, out / "relative_volume_manual_vs_auto.png")
        plots.plot_bland_altman(rows, out / "bland_altman_relative_volume.png")
    tables = getattr(summary, "tables", {}) or {}
    for name, table in tables.items():
        if name.endswith("confusion") and isinstance(table, dict) and "matrix" in table:
            plots.plot_confusion(table["matrix"], table["labels"], name.replace("_", " "), out / f"{name}.png")
