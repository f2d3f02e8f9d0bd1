"""The runner end to end with the threshold baseline, a real SQLite MLflow store and the CLI."""

import math
import os
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from avnbench.runner import RESULT_FILE, job_dir_for, run_benchmark

DESIGN_METRICS = [
    "dice_vital", "dice_necrosis", "dice_head", "assd_vital_mm", "assd_necrosis_mm", "hd95_vital_mm",
    "hd95_necrosis_mm", "nsd1mm_vital", "nsd1mm_necrosis", "necrosis_cm3_mae", "steinberg_accuracy",
    "steinberg_kappa_linear", "steinberg_kappa_quadratic", "fit_seconds", "predict_seconds_per_case",
]


@pytest.fixture(scope="module")
def baseline_run(tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    result = run_benchmark(
        "threshold-baseline", tiny_dataset.root, root / "work", preset="smoke",
        tracking_uri=uri, n_bootstrap=50,
    )
    return result, uri, root


def test_run_logs_the_design_layout_to_mlflow(baseline_run, tiny_dataset):
    result, uri, _ = baseline_run
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(tiny_dataset.name)
    assert exp is not None, "one experiment per dataset, named after it"
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    parent = parents[0]
    for name in DESIGN_METRICS:
        assert name in parent.data.metrics and math.isfinite(parent.data.metrics[name]), name
    assert "dice_vital_ci_low" in parent.data.metrics and "dice_vital_sd" in parent.data.metrics
    params = parent.data.params
    for key in ("method", "preset", "dataset", "dataset_fingerprint", "split_sha256", "seed"):
        assert key in params
    assert params["dataset"] == tiny_dataset.name and "phantom" in params["dataset"]
    assert any(k.startswith("config.") for k in params)
    for tag in ("avnbench.version", "avnbench.plugin.version", "device", "torch.version"):
        assert tag in parent.data.tags
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"cases.csv", "config.json", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert any("relative_volume" in p for p in plots) and any("bland_altman" in p for p in plots)
    for child in children:
        assert "dice_vital" in child.data.metrics
        assert "learned.head_threshold" in child.data.params
        assert "cases.csv" in {a.path for a in client.list_artifacts(child.info.run_id)}


def test_every_validation_case_is_scored_once(baseline_run, tiny_dataset):
    result, _, _ = baseline_run
    assert sorted(r["case_id"] for r in result.rows) == sorted(c.case_id for c in tiny_dataset.cases)


def test_interrupted_run_resumes_and_gives_the_same_numbers(baseline_run, tiny_dataset, tmp_path):
    reference, _, _ = baseline_run
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    work = tmp_path / "work"

    def stop_after_first_fold(event):
        if event.kind == "fold_finished" and event.fold == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_benchmark("threshold-baseline", tiny_dataset.root, work, preset="smoke",
                      tracking_uri=uri, progress=stop_after_first_fold, n_bootstrap=50)
    client = MlflowClient(uri)
    (parent,) = [r for r in client.search_runs([client.get_experiment_by_name(tiny_dataset.name).experiment_id])
                 if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "KILLED"
    assert (job_dir_for(work, tiny_dataset.name, "threshold-baseline", "smoke", 0) / RESULT_FILE).exists()
    assert not (job_dir_for(work, tiny_dataset.name, "threshold-baseline", "smoke", 3) / RESULT_FILE).exists()

    resumed = run_benchmark("threshold-baseline", tiny_dataset.root, work, preset="smoke",
                            tracking_uri=uri, n_bootstrap=50)
    assert resumed.skipped_folds == [0, 1]
    assert resumed.parent_run_id == parent.info.run_id
    for name in ("dice_vital", "dice_necrosis", "assd_vital_mm", "steinberg_accuracy", "dice_vital_ci_low"):
        assert resumed.metrics[name] == pytest.approx(reference.metrics[name], rel=1e-9), name
    children = [r for r in client.search_runs([parent.info.experiment_id])
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id and r.info.status == "FINISHED"]
    assert sorted(int(c.data.tags["avnbench.fold"]) for c in children) == [0, 1, 2, 3]


def _avnbench(*args, cwd=None):
    env = os.environ | {"MLFLOW_TRACKING_URI": "", "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "avnbench", *args], capture_output=True, encoding="utf-8", cwd=cwd, env=env)


def test_cli_run_and_leaderboard(baseline_run, tiny_dataset, tmp_path):
    _, uri, root = baseline_run
    out = _avnbench("run", "--method", "threshold-baseline", "--data", str(tiny_dataset.root), "--preset", "quick",
                    "--folds", "0,1", "--tracking-uri", uri, "--workdir", str(root / "work"), "--bootstrap", "50")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Dice vital" in out.stdout
    lb = _avnbench("leaderboard", "--tracking-uri", uri, "--out", str(tmp_path / "lb"))
    assert lb.returncode == 0, lb.stderr[-2000:]
    folder = tmp_path / "lb" / tiny_dataset.name
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert "threshold-baseline" in readme and "SYNTHETIC PHANTOM" in readme
    assert "smoke" in readme and "quick" in readme
    assert (folder / "leaderboard.csv").exists() and "<table" in (folder / "index.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--method", "no-such-method"], "Available: "),
        (["run", "--method", "threshold-baseline", "--data", "/nonexistent/dataset"], "dataset folder not found"),
        (["run", "--method", "threshold-baseline", "--folds", "9"], "do not exist"),
    ],
)
def test_cli_errors_are_one_line(args, message, tiny_dataset, tmp_path):
    if "--data" not in args and args[2] != "no-such-method":
        args = args + ["--data", str(tiny_dataset.root)]
    out = _avnbench(*args, "--workdir", str(tmp_path / "w"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
