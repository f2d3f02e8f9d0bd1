"""The runner end to end with the threshold baseline, a real SQLite MLflow store and the CLI; the
provenance of fold results, the sealed predict boundary, ordering by builds_on and the work-folder lock."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from avnbench import jobs
from avnbench.errors import ConfigError
from avnbench.jobs import CodeVersions, FoldResult, run_key_for
from avnbench.methods import Method, MethodCard, PredictCase, SegmentationPrediction
from avnbench.runner import RESULT_FILE, job_dir_for, order_methods, run_benchmark
from avnbench.testing import registry_of

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


# --- results prove where they came from -------------------------------------------------------


def _baseline(dataset, work, events=None, tracking_uri=None, folds=(0,)):
    return run_benchmark("threshold-baseline", dataset.root, work, preset="smoke", folds=list(folds),
                         tracking_uri=tracking_uri, progress=(events.append if events is not None else None), n_bootstrap=20)


def _result_path(dataset, work, fold=0):
    return job_dir_for(work, dataset.name, "threshold-baseline", "smoke", fold) / RESULT_FILE


def _forge_dice(path):
    data = json.loads(path.read_text())
    for row in data["rows"]:
        row["dice_necrosis"] = 0.999
    path.write_text(json.dumps(data))


def _reseal(edit):
    def change(path):
        result = FoldResult.model_validate_json(path.read_text())
        path.write_text(result.model_copy(update=edit(result)).sealed().model_dump_json())
    return change


@pytest.mark.parametrize(
    "tamper, reason",
    [
        (_forge_dice, "digest does not match"),
        (lambda p: p.write_text(p.read_text().replace('"digest"', '"digestx"')), "not a result this avnbench wrote"),
        (lambda p: p.write_text("{not json"), "not a result this avnbench wrote"),
        (_reseal(lambda r: {"val_ids": r.val_ids[::-1]}), "val_ids"),
        (_reseal(lambda r: {"plugin_version": "0.0.1"}), "plugin_version"),
        (_reseal(lambda r: {"avnbench_commit": "0" * 40}), "avnbench_commit"),
    ],
    ids=["forged-dice", "no-digest", "not-json", "other-fold-ids", "other-plugin-version", "other-commit"],
)
def test_a_tampered_or_foreign_result_is_recomputed_with_a_warning(tamper, reason, tiny_dataset, tmp_path):
    work = tmp_path / "work"
    first = _baseline(tiny_dataset, work)
    path = _result_path(tiny_dataset, work)
    tamper(path)
    events = []
    again = _baseline(tiny_dataset, work, events)
    warnings = [e.message for e in events if e.kind == "warning"]
    assert len(warnings) == 1 and str(path) in warnings[0] and reason in warnings[0], warnings
    assert again.skipped_folds == [], "the fold was recomputed"
    assert again.metrics["dice_necrosis"] == pytest.approx(first.metrics["dice_necrosis"], rel=1e-9)
    assert FoldResult.model_validate_json(path.read_text()).digest, "and sealed again"
    quiet = []
    assert _baseline(tiny_dataset, work, quiet).skipped_folds == [0]
    assert not [e for e in quiet if e.kind == "warning"]


def test_a_forged_result_never_reaches_mlflow(tiny_dataset, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    work = tmp_path / "work"
    first = _baseline(tiny_dataset, work, tracking_uri=uri)
    _forge_dice(_result_path(tiny_dataset, work))
    again = _baseline(tiny_dataset, work, tracking_uri=uri)
    client = MlflowClient(uri)
    for run in client.search_runs([client.get_experiment_by_name(tiny_dataset.name).experiment_id]):
        assert run.data.metrics.get("dice_necrosis") != pytest.approx(0.999)
    assert client.get_run(again.parent_run_id).data.metrics["dice_necrosis"] == pytest.approx(
        first.metrics["dice_necrosis"], rel=1e-9
    )


def test_the_result_records_its_inputs(tiny_dataset, tmp_path):
    import avnbench

    _baseline(tiny_dataset, tmp_path / "work", folds=(1,))
    result = FoldResult.model_validate_json(_result_path(tiny_dataset, tmp_path / "work", 1).read_text())
    assert result.fold == 1 and result.method == "threshold-baseline" and result.preset == "smoke"
    assert result.dataset_fingerprint == tiny_dataset.fingerprint
    assert sorted(result.train_ids + result.val_ids) == sorted(c.case_id for c in tiny_dataset.cases)
    assert result.avnbench_version == avnbench.__version__
    assert result.plugin_distribution == "avnbench-threshold-baseline" and result.plugin_version
    assert result.digest == result.content_digest()


def test_a_rerun_that_recomputes_nothing_writes_nothing(tiny_dataset, tmp_path):
    work = tmp_path / "work"
    _baseline(tiny_dataset, work, folds=(0, 1))
    before = {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.name != ".lock"}
    assert _baseline(tiny_dataset, work, folds=(0, 1)).skipped_folds == [0, 1]
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.name != ".lock"} == before


CODE = CodeVersions(avnbench_version="1.0", avnbench_commit="a" * 40, plugin_distribution="p", plugin_version="1")


@pytest.mark.parametrize(
    "change",
    [{"avnbench_version": "1.1"}, {"avnbench_commit": "b" * 40}, {"avnbench_commit": None},
     {"plugin_distribution": "q"}, {"plugin_version": "2"}],
)
def test_run_key_changes_with_the_code(change):
    key = run_key_for("m", "quick", {"seed": 0}, "f" * 64, "s" * 64, CODE)
    assert run_key_for("m", "quick", {"seed": 0}, "f" * 64, "s" * 64, CODE.model_copy(update=change)) != key
    assert run_key_for("m", "quick", {"seed": 0}, "f" * 64, "s" * 64, CODE.model_copy()) == key


def test_a_new_avnbench_version_recomputes_the_fold(tiny_dataset, tmp_path, monkeypatch):
    import avnbench

    work = tmp_path / "work"
    first = _baseline(tiny_dataset, work)
    monkeypatch.setattr(avnbench, "__version__", avnbench.__version__ + ".post1")
    events = []
    again = _baseline(tiny_dataset, work, events)
    assert again.run_key != first.run_key and again.skipped_folds == []
    assert any("avnbench_version" in e.message for e in events if e.kind == "warning")


def test_avnbench_commit_is_read_from_the_checkout():
    commit = jobs.avnbench_commit()
    assert commit is None or (len(commit) == 40 and all(c in "0123456789abcdef" for c in commit))
    assert jobs.avnbench_commit() is commit, "read once"


# --- the sealed predict boundary ----------------------------------------------------------------


class _Spy(Method):
    """Records what fit and predict see; predicts the background everywhere."""

    card = MethodCard(name="spy", task="segmentation", description="spy", citation="none")
    seen: list = []

    def fit(self, train_cases, val_cases, workdir, device):
        _Spy.seen.append(("fit", self, self.context, list(train_cases) + list(val_cases)))

    def predict(self, cases, workdir, device):
        for case in cases:
            _Spy.seen.append(("predict", self, self.context, case, case.image_array()))
            yield SegmentationPrediction(case_id=case.case_id, labels=np.zeros(case.geometry.shape_zyx, np.uint8))


class _LandmarkSpy(_Spy):
    card = MethodCard(name="landmark-spy", task="segmentation", description="spy", citation="none",
                      uses_landmarks=True)


@pytest.mark.parametrize("method_cls", [_Spy, _LandmarkSpy])
def test_predict_gets_sealed_cases_on_a_fresh_instance(method_cls, tiny_dataset, tmp_path):
    _Spy.seen.clear()
    registry = registry_of(method_cls)
    run_benchmark(method_cls.card.name, tiny_dataset.root, tmp_path / "w", preset="smoke", folds=[0],
                  device="cpu", registry=registry, n_bootstrap=10)
    (_, trainer, fit_context, fit_cases), *predicted = _Spy.seen
    assert fit_context is not None and fit_context.fold == 0
    assert all(c.label_path is not None for c in fit_cases), "fit gets full cases"
    job_dir = job_dir_for(tmp_path / "w", tiny_dataset.name, method_cls.card.name, "smoke", 0).resolve()
    dataset_root = tiny_dataset.root.resolve()
    assert len(predicted) == 2
    for _, predictor, context, case, image in predicted:
        assert predictor is not trainer and context is None
        assert type(case) is PredictCase
        assert not hasattr(case, "label_path") and not hasattr(case, "meta")
        original = tiny_dataset[case.case_id]
        assert (case.landmarks is not None) == method_cls.card.uses_landmarks
        if case.landmarks is not None:
            assert case.landmarks == original.meta.landmarks and not case.landmarks.estimated
        assert case.image_path.parent == job_dir / "inputs"
        assert dataset_root not in case.image_path.resolve().parents
        np.testing.assert_array_equal(image, original.image_array())
    assert not (job_dir / "inputs").exists()


def test_estimated_landmarks_never_reach_predict(tiny_dataset):
    case = tiny_dataset.cases[0]
    estimated = case.model_copy(update={"meta": case.meta.model_copy(
        update={"landmarks": case.meta.landmarks.model_copy(update={"estimated": True})})})
    assert PredictCase.of(estimated, with_landmarks=True).landmarks is None
    assert PredictCase.of(case, with_landmarks=True).landmarks is not None


# --- ordering by declaration --------------------------------------------------------------------


def _declared(name, builds_on=()):
    class Declared(_Spy):
        card = MethodCard(name=name, task="segmentation", description="d", citation="none", builds_on=builds_on)

    return Declared


@pytest.mark.parametrize(
    "cards, names, expected",
    [
        ({"ens": ("a", "b"), "a": (), "b": ()}, ["ens", "b", "a"], ["b", "a", "ens"]),
        ({"ens": ("a", "b"), "a": (), "b": ()}, ["ens", "a"], ["a", "ens"]),  # b trained by ens itself
        ({"top": ("mid",), "mid": ("a",), "a": ()}, ["top", "a"], ["a", "top"]),
        ({"x": (), "y": ()}, ["y", "x"], ["y", "x"]),
        ({"ens": ("a", "ghost"), "a": ()}, ["ens"], "builds on 'ghost', which is not registered"),
        ({"a": ("b",), "b": ("a",)}, ["a"], r"cycle \(a -> b -> a\)"),
        ({"a": ("a",)}, ["a"], r"cycle \(a -> a\)"),
    ],
)
def test_order_methods_follows_builds_on(cards, names, expected):
    registry = registry_of(*[_declared(n, tuple(b)) for n, b in cards.items()])
    if isinstance(expected, list):
        assert order_methods(names, registry) == expected
    else:
        with pytest.raises(ConfigError, match=expected) as raised:
            order_methods(names, registry)
        assert len(str(raised.value).splitlines()) == 1


# --- the work-folder lock -----------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys
    from avnbench.runner import work_folder_lock
    with work_folder_lock(sys.argv[1], sys.argv[2]):
        print("held", flush=True)
        sys.stdin.read()
    """
)


@pytest.mark.parametrize("release", ["exit", "kill"])
def test_a_second_run_on_a_work_folder_in_use_is_refused(release, tiny_dataset, tmp_path):
    work = tmp_path / "work"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(work), tiny_dataset.name],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"in use by pid {holder.pid} on .*-c") as raised:
            _baseline(tiny_dataset, work)
        assert len(str(raised.value).splitlines()) == 1
        assert not _result_path(tiny_dataset, work).exists()
    finally:
        if release == "kill":
            holder.send_signal(signal.SIGKILL)
        else:
            holder.stdin.close()
        holder.wait(timeout=30)
    assert _baseline(tiny_dataset, work).skipped_folds == [], "the lock is gone with its holder"


def test_a_workdir_that_is_a_file_is_one_line(tiny_dataset, tmp_path):
    not_a_folder = tmp_path / "work.txt"
    not_a_folder.write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        _baseline(tiny_dataset, not_a_folder)
    out = _avnbench("run", "--method", "threshold-baseline", "--data", str(tiny_dataset.root), "--preset", "smoke",
                    "--workdir", str(not_a_folder), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "is a file" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_a_workdir_that_cannot_be_written_is_one_line(tiny_dataset):
    # procfs refuses new folders even to root, so this holds whoever runs the tests
    with pytest.raises(ConfigError, match="cannot write to work folder /proc/self/avnbench-work") as raised:
        _baseline(tiny_dataset, Path("/proc/self/avnbench-work"))
    assert len(str(raised.value).splitlines()) == 1
