"""Lifecycle hooks, MLflow tracking as a plugin on them (live curves, no duplicates), store errors."""

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from mlflow import MlflowClient

from avnbench import hookimpl
from avnbench.errors import ConfigError, DataError
from avnbench.methods import Method, MethodCard, MethodConfig, SegmentationPrediction
from avnbench.plugins import DEFAULT_PLUGINS, load_registry
from avnbench.reporting.tracking import FOLD_TAG, PARENT_TAG, client_for
from avnbench.runner import run_benchmark

EPOCHS = 3


class _EpochsConfig(MethodConfig):
    PRESETS = {"smoke": {}, "quick": {}, "paper": {}}


class _Epochs(Method):
    """Reports EPOCHS epochs with a pause between them; predicts empty label maps.

    On its last epoch it looks into the store (``store_uri``) and records what MLflow already holds
    of its curve, so a test can tell live logging from logging after the fold.
    """

    card = MethodCard(name="epochs", task="segmentation", description="reports epochs", citation="-")
    Config = _EpochsConfig
    store_uri: str | None = None
    seen_while_training: list[list[tuple[int, int]]] = []
    interrupt_after_epoch: int | None = None

    def fit(self, train_cases, val_cases, workdir, device):
        for epoch in range(1, EPOCHS + 1):
            time.sleep(0.05)  # distinct millisecond timestamps between epochs
            if epoch == EPOCHS and self.store_uri:
                _Epochs.seen_while_training.append(_running_child_history(self.store_uri, self.context.fold))
            self.log.epoch(epoch, EPOCHS, loss=1.0 / epoch, val_dice=0.2 * epoch)
            if epoch == _Epochs.interrupt_after_epoch:
                raise KeyboardInterrupt

    def predict(self, cases, workdir, device):
        for case in cases:
            yield SegmentationPrediction(case_id=case.case_id, labels=np.zeros(case.geometry.shape_zyx, np.uint8))


def _running_child_history(uri: str, fold: int) -> list[tuple[int, int]]:
    client = MlflowClient(uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`{FOLD_TAG}` = '{fold}' and attributes.status = 'RUNNING'",
    )
    assert len(runs) == 1, "the fold's child run is open (RUNNING) while it trains"
    return [(m.step, m.timestamp) for m in client.get_metric_history(runs[0].info.run_id, "train/loss")]


class _Recorder:
    """A third-party plugin: registers the method and records every lifecycle hook call."""

    __name__ = "recorder"

    def __init__(self):
        self.calls: list[tuple] = []

    @hookimpl
    def avnbench_register_methods(self, register):
        register(_Epochs)

    @hookimpl
    def avnbench_run_started(self, run):
        self.calls.append(("run_started", tuple(run.folds), tuple(run.reused_folds)))
        return {"recorder.seen": run.method}

    @hookimpl
    def avnbench_fold_started(self, run, job):
        self.calls.append(("fold_started", job.fold))

    @hookimpl
    def avnbench_training_event(self, run, job, event):
        self.calls.append(("training_event", job.fold, event.epoch, event.total, event.values["loss"]))

    @hookimpl
    def avnbench_fold_finished(self, run, job, result, metrics, reused):
        self.calls.append(("fold_finished", job.fold, reused, "dice_vital" in metrics))

    @hookimpl
    def avnbench_run_finished(self, run, rows, summary, metrics):
        self.calls.append(("run_finished", len(rows)))

    @hookimpl
    def avnbench_run_aborted(self, run, reason):
        self.calls.append(("run_aborted", reason))


@pytest.fixture
def epochs_registry():
    _Epochs.seen_while_training = []
    _Epochs.interrupt_after_epoch = None
    recorder = _Recorder()
    return load_registry(extra_plugins=(recorder,), use_entry_points=False), recorder


def _runs(uri, dataset_name):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(dataset_name)
    runs = client.search_runs([exp.experiment_id])
    return [r for r in runs if PARENT_TAG not in r.data.tags], [r for r in runs if PARENT_TAG in r.data.tags]


def test_tracking_is_a_default_plugin_on_the_same_manager(epochs_registry):
    registry, recorder = epochs_registry
    names = [name for name, _ in registry.pm.list_name_plugin()]
    assert names[: len(DEFAULT_PLUGINS)] == list(DEFAULT_PLUGINS)
    assert "recorder" in names
    impls = {h.plugin_name for h in registry.pm.hook.avnbench_fold_finished.get_hookimpls()}
    assert {"avnbench.reporting.tracking", "recorder"} <= impls


def test_third_party_plugin_sees_the_lifecycle_in_order(epochs_registry, tiny_dataset, tmp_path):
    registry, recorder = epochs_registry
    result = run_benchmark("epochs", tiny_dataset.root, tmp_path / "work", preset="smoke", folds=[0],
                           registry=registry, n_bootstrap=10)
    n_val = len(result.rows)
    assert recorder.calls == [
        ("run_started", (0,), ()),
        ("fold_started", 0),
        *[("training_event", 0, e, EPOCHS, pytest.approx(1.0 / e)) for e in range(1, EPOCHS + 1)],
        ("fold_finished", 0, False, True),
        ("run_finished", n_val),
    ]
    assert result.tracking == {"recorder.seen": "epochs"} and result.parent_run_id is None

    recorder.calls.clear()
    run_benchmark("epochs", tiny_dataset.root, tmp_path / "work", preset="smoke", folds=[0],
                  registry=registry, n_bootstrap=10)
    assert recorder.calls == [("run_started", (0,), (0,)), ("fold_finished", 0, True, True), ("run_finished", n_val)]


def test_curves_are_logged_live_and_a_rerun_duplicates_nothing(epochs_registry, tiny_dataset, tmp_path):
    registry, _ = epochs_registry
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _Epochs.store_uri = uri
    try:
        first = run_benchmark("epochs", tiny_dataset.root, tmp_path / "work", preset="smoke", folds=[0, 1],
                              tracking_uri=uri, registry=registry, n_bootstrap=10)
    finally:
        _Epochs.store_uri = None
    # On its last epoch, each fold's child run already held the earlier epochs' points.
    assert [[step for step, _ in seen] for seen in _Epochs.seen_while_training] == [[1, 2], [1, 2]]

    client = MlflowClient(uri)
    parents, children = _runs(uri, tiny_dataset.name)
    assert [p.info.run_id for p in parents] == [first.parent_run_id]
    assert sorted(int(c.data.tags[FOLD_TAG]) for c in children) == [0, 1]
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["synthetic"] == "true"
        assert child.data.tags["avnbench.dataset"] == tiny_dataset.name
        history = client.get_metric_history(child.info.run_id, "train/loss")
        assert [m.step for m in history] == [1, 2, 3]
        stamps = [m.timestamp for m in history]
        assert stamps == sorted(stamps) and len(set(stamps)) == EPOCHS, "logged as the epochs happened"
        assert [m.step for m in client.get_metric_history(child.info.run_id, "train/val_dice")] == [1, 2, 3]
        assert stamps[-1] < child.info.end_time
        assert "dice_vital" in child.data.metrics

    again = run_benchmark("epochs", tiny_dataset.root, tmp_path / "work", preset="smoke", folds=[0, 1],
                          tracking_uri=uri, registry=registry, n_bootstrap=10)
    assert again.parent_run_id == first.parent_run_id
    assert again.tracking["mlflow.parent_run_reused"] == "true"
    parents_after, children_after = _runs(uri, tiny_dataset.name)
    assert len(parents_after) == 1 and parents_after[0].info.status == "FINISHED"
    assert sorted(c.info.run_id for c in children_after) == sorted(c.info.run_id for c in children)
    for child in children_after:
        assert len(client.get_metric_history(child.info.run_id, "train/loss")) == EPOCHS


def test_a_fold_interrupted_while_training_is_killed_then_recomputed_in_a_new_child(
    epochs_registry, tiny_dataset, tmp_path
):
    registry, recorder = epochs_registry
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _Epochs.interrupt_after_epoch = 2
    with pytest.raises(KeyboardInterrupt):
        run_benchmark("epochs", tiny_dataset.root, tmp_path / "work", preset="smoke", folds=[0],
                      tracking_uri=uri, registry=registry, n_bootstrap=10)
    assert recorder.calls[-1][0] == "run_aborted" and "KeyboardInterrupt" in recorder.calls[-1][1]
    client = MlflowClient(uri)
    (parent,), (killed,) = _runs(uri, tiny_dataset.name)
    assert parent.info.status == "KILLED" and killed.info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(killed.info.run_id, "train/loss")] == [1, 2]

    _Epochs.interrupt_after_epoch = None
    resumed = run_benchmark("epochs", tiny_dataset.root, tmp_path / "work", preset="smoke", folds=[0],
                            tracking_uri=uri, registry=registry, n_bootstrap=10)
    assert resumed.parent_run_id == parent.info.run_id and resumed.skipped_folds == []
    (parent_after,), children = _runs(uri, tiny_dataset.name)
    assert parent_after.info.status == "FINISHED"
    assert sorted(c.info.status for c in children) == ["FINISHED", "KILLED"]
    (done,) = [c for c in children if c.info.status == "FINISHED"]
    assert [m.step for m in client.get_metric_history(done.info.run_id, "train/loss")] == [1, 2, 3]


def _random_bytes_db(tmp_path):
    path = tmp_path / "mlflow.db"
    path.write_bytes(np.random.default_rng(0).bytes(8192))
    return f"sqlite:///{path}"


@pytest.mark.parametrize(
    "make_uri, error, message",
    [
        (_random_bytes_db, DataError, "is not an MLflow SQLite store; move it away or pass --tracking-uri"),
        (lambda tmp: "foo://x", ConfigError, "Supported: sqlite, postgresql"),
        (lambda tmp: f"sqlite:///{tmp / 'no' / 'such' / 'mlflow.db'}", ConfigError, "does not exist"),
    ],
    ids=["corrupt-sqlite-file", "unknown-scheme", "missing-folder"],
)
def test_store_errors_are_one_line_that_says_what_to_do(make_uri, error, message, tiny_dataset, tmp_path):
    uri = make_uri(tmp_path)
    with pytest.raises(error, match=message) as caught:
        client_for(uri)
    assert "\n" not in str(caught.value)

    env = os.environ | {"MLFLOW_TRACKING_URI": "", "PYTHONIOENCODING": "utf-8"}
    out = subprocess.run(
        [sys.executable, "-m", "avnbench", "run", "--method", "threshold-baseline", "--data", str(tiny_dataset.root),
         "--tracking-uri", uri, "--workdir", str(tmp_path / "w")],
        capture_output=True, encoding="utf-8", env=env,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [f"error: {caught.value}"]


FIRST_USE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from avnbench.reporting.tracking import client_for, ensure_experiment
    uri, go = sys.argv[1], Path(sys.argv[2])
    while not go.exists():  # both processes start the store's first use at the same moment
        time.sleep(0.01)
    client = client_for(uri)
    exp = ensure_experiment(client, "phantom-race", uri)
    client.create_run(exp)
    print("ok")
    """
)


def test_two_first_runs_on_a_new_sqlite_store_both_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    go = tmp_path / "go"
    env = os.environ | {"MLFLOW_TRACKING_URI": ""}
    procs = [
        subprocess.Popen([sys.executable, "-c", FIRST_USE, uri, str(go)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, encoding="utf-8", env=env)
        for _ in range(2)
    ]
    time.sleep(3)  # let both import avnbench and MLflow
    go.touch()
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1500:] for _, err in outs]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("phantom-race")
    assert len(client.search_runs([exp.experiment_id])) == 2


@pytest.mark.parametrize(
    "epoch, total, values, seconds, line",
    [
        (3, 10, {"loss": 0.3112, "val_dice": 0.72}, 30.0, "epoch 3/10 · loss 0.311 · val_dice 0.72 · ETA 1m10s"),
        (10, 10, {"loss": 0.1}, 100.0, "epoch 10/10 · loss 0.1 · ETA 0s"),
        (4, None, {"train_loss": 0.5}, 8.0, "epoch 4 · train_loss 0.5"),
        (1, 2000, {}, 5.0, "epoch 1/2000 · ETA 2h46m"),
    ],
)
def test_epoch_line(epoch, total, values, seconds, line):
    from avnbench.cli.display import epoch_line

    assert epoch_line(epoch, total, values, seconds) == line


def test_run_progress_shows_epochs_eta_then_predicting_and_warnings():
    from avnbench.cli.display import RunProgress, console
    from avnbench.runner import RunEvent

    now = [100.0]
    shown = RunProgress(clock=lambda: now[0])
    for event in [
        RunEvent(kind="run_started", method="m", total=1),
        RunEvent(kind="fold_started", method="m", fold=0, total=4),
        RunEvent(kind="fitting", method="m", fold=0, total=4),
    ]:
        shown.on_event(event)
    now[0] += 20.0
    with console.capture() as captured:
        shown.on_event(RunEvent(kind="epoch", method="m", fold=0, done=2, total=10, values={"loss": 0.31}))
        shown.on_event(RunEvent(kind="epoch", method="m", fold=0, done=2, values={"val_dice": 0.72}))
        shown.on_event(RunEvent(kind="warning", method="m", message="fold 0 [recomputed]: inputs changed"))
    assert shown.description(0) == "  fold 0: epoch 2/10 · loss 0.31 · val_dice 0.72 · ETA 1m20s"
    task = shown.progress.tasks[shown.tasks[0]]
    assert (task.completed, task.total) == (2, 10)
    assert "m fold 0: epoch 2/10 · loss 0.31 · ETA 1m20s" in captured.get()  # no terminal: printed
    assert "warning: fold 0 [recomputed]: inputs changed" in captured.get()
    shown.on_event(RunEvent(kind="fitted", method="m", fold=0, message="25.0s"))
    shown.on_event(RunEvent(kind="case_predicted", method="m", fold=0, done=1, total=4))
    task = shown.progress.tasks[shown.tasks[0]]
    assert shown.description(0).startswith("  fold 0: predicting") and (task.completed, task.total) == (1, 4)


def test_a_skipped_fold_counts_once():
    from avnbench.cli.display import RunProgress
    from avnbench.runner import RunEvent

    shown = RunProgress()
    for event in [
        RunEvent(kind="run_started", method="m", total=2),
        RunEvent(kind="fold_skipped", method="m", fold=0, total=4),
        RunEvent(kind="fold_finished", method="m", fold=0),
    ]:
        shown.on_event(event)
    assert shown.progress.tasks[shown.tasks["folds"]].completed == 1


def test_every_hook_documents_each_of_its_arguments():
    import inspect

    from avnbench import hookspecs

    hooks = [f for name, f in vars(hookspecs).items() if name.startswith("avnbench_")]
    assert len(hooks) >= 7
    for hook in hooks:
        doc = inspect.getdoc(hook) or ""
        for param in inspect.signature(hook).parameters:
            assert f":param {param}:" in doc, f"{hook.__name__} does not document {param}"


def test_parent_run_says_what_it_ran_on_and_shows_its_worst_and_best_case(tiny_dataset, tmp_path):
    import json

    from avnbench.jobs import avnbench_commit

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_benchmark("threshold-baseline", tiny_dataset.root, tmp_path / "work", preset="smoke", folds=[0, 1],
                           tracking_uri=uri, n_bootstrap=10)
    client = MlflowClient(uri)
    parent = client.get_run(result.parent_run_id)
    (dataset_input,) = parent.inputs.dataset_inputs
    assert dataset_input.dataset.name == tiny_dataset.name
    assert dataset_input.dataset.digest == tiny_dataset.fingerprint[:36]
    assert json.loads(dataset_input.dataset.source) == {"uri": str(tiny_dataset.root.resolve())}
    assert json.loads(dataset_input.dataset.profile)["fingerprint_sha256"] == tiny_dataset.fingerprint
    tags = parent.data.tags
    assert tags.get("mlflow.source.git.commit") == avnbench_commit() and "git.commit" not in tags
    assert tags["mlflow.source.name"] == "avnbench run" and tags["avnbench.source"] == "avnbench"
    description = tags["mlflow.note.content"]
    for fact in ("threshold-baseline", "`smoke`", tiny_dataset.name, "Folds 0, 1", "SYNTHETIC PHANTOM"):
        assert fact in description
    exp = client.get_experiment(parent.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"

    children = client.search_runs([exp.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    assert len(children) == 2
    for child in children:
        assert child.data.tags["synthetic"] == "true" and child.data.tags["avnbench.dataset"] == tiny_dataset.name
        assert [i.dataset.digest for i in child.inputs.dataset_inputs] == [tiny_dataset.fingerprint[:36]]

    plots = {a.path.split("/")[-1] for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"relative_volume_manual_vs_auto.png", "bland_altman_relative_volume.png"} <= plots
    rows = [r for r in result.rows if r["necrosis_cm3_ref"] > 0]
    worst = min(rows, key=lambda r: r["dice_necrosis"])["case_id"]
    best = max(rows, key=lambda r: r["dice_necrosis"])["case_id"]
    assert f"overlay_worst_{worst}.png" in plots and f"overlay_best_{best}.png" in plots


def test_ui_shares_a_runs_view_with_the_headline_metrics_as_columns(tmp_path):
    import json

    from avnbench.cli.ui import VIEW_TAG, runs_url, share_headline_view
    from avnbench.reporting.tracking import ensure_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = client_for(uri)
    old = client.create_experiment("made-before-kinds")  # an experiment from an older avnbench
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags
    run = client.create_run(old)
    for name, value in (("dice_necrosis", 0.5), ("dice_vital", 0.9), ("n_cases", 8)):
        client.log_metric(run.info.run_id, name, value)

    key = share_headline_view(client, client.get_experiment(old))
    tags = client.get_experiment(old).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(tags[VIEW_TAG])
    assert view["selectedColumns"][-2:] == ["metrics.`dice_necrosis`", "metrics.`dice_vital`"]
    assert "params.`method`" in view["selectedColumns"] and view["orderByKey"] == "attributes.start_time"
    assert runs_url("http://h:1", old, key) == (
        f"http://h:1/#/experiments/{old}/runs?workflowType=machine_learning&viewStateShareKey={key}"
    )
    assert client.get_experiment(ensure_experiment(client, "new", uri)).tags["mlflow.experimentKind"] == (
        "custom_model_development"
    )
