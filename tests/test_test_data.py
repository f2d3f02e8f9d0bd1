"""``avnbench run --data A --test-data B``: each fold's model, trained on A, scored on every case
of B; its provenance, its MLflow runs, reuse (and what is not reused), the leaderboard's row
identity and the refusal of a B that does not fit, with the threshold baseline on tiny phantoms."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from avnbench.cli import cli, main
from avnbench.data.dataset import load_dataset
from avnbench.errors import AvnbenchError, ConfigError, DataError
from avnbench.jobs import RESULT_FILE, FoldResult, load_finished
from avnbench.planning import check_test_dataset, plan_fold_jobs
from avnbench.reporting.leaderboard_rows import collect_boards, mark_comparable
from avnbench.runner import run_benchmark
from avnbench.testing import make_tiny_dataset
from avnbench.workfolder import job_dir_for_test

METHOD = "threshold-baseline"


@pytest.fixture(scope="module")
def train_set(tmp_path_factory):
    """A: 6 hips, a 2-fold split."""
    return make_tiny_dataset(tmp_path_factory.mktemp("train") / "A", n_cases=6, seed=0, folds=2)


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
    """B: 4 hips of another seed, no split (a test set needs none)."""
    from avnbench.data.phantom import synthesize

    out = tmp_path_factory.mktemp("test") / "B"
    synthesize(out, n_cases=4, seed=1, shape=(40, 80, 80))
    return load_dataset(out)


@pytest.fixture(scope="module")
def cross_run(train_set, test_set, tmp_path_factory):
    root = tmp_path_factory.mktemp("cross")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    results = []
    result = run_benchmark(METHOD, train_set.root, root / "work", preset="smoke", tracking_uri=uri, n_bootstrap=20,
                           test_dataset_dir=test_set.root, on_result=results.append)
    return result, results, uri, root


def _test_result(root: Path, train_set, test_set, fold: int) -> FoldResult:
    path = job_dir_for_test(root / "work", train_set.name, METHOD, "smoke", fold, test_set.name) / RESULT_FILE
    return FoldResult.model_validate_json(path.read_text())


def test_every_case_of_b_is_scored_by_every_fold_model(cross_run, train_set, test_set):
    result, results, _, _ = cross_run
    assert [r.test_dataset for r in results] == [None, test_set.name]  # A's folds, then the test run
    assert result.test_dataset == test_set.name and result.dataset == train_set.name and result.skipped_folds == []
    b_ids = {c.case_id for c in test_set.cases}
    assert {(r["fold"], r["case_id"]) for r in result.rows} == {(k, c) for k in (0, 1) for c in b_ids}
    assert len(result.rows) == 2 * len(b_ids)
    assert all(0.0 <= r["dice_head"] <= 1.0 for r in result.rows)
    assert result.metrics["dice_head"] != results[0].metrics["dice_head"]  # scored against B, not A


def test_result_json_names_both_datasets_and_the_fit_it_used(cross_run, train_set, test_set):
    _, _, _, root = cross_run
    split_hash = json.loads((train_set.root / "splits.meta.json").read_text())["sha256"]
    for fold in (0, 1):
        result = _test_result(root, train_set, test_set, fold)
        fit_job = plan_fold_jobs(METHOD, train_set.root, root / "work", preset="smoke").jobs[fold]
        fit = load_finished(fit_job)
        assert result.test_dataset_name == test_set.name and result.test_dataset_fingerprint == test_set.fingerprint
        assert result.dataset_fingerprint == train_set.fingerprint and result.split_hash == split_hash
        assert result.test_ids == [c.case_id for c in test_set.cases] and result.train_ids == fit_job.train_ids
        assert result.fit_digest == fit.digest and result.run_key != fit.run_key
        assert result.digest == result.content_digest()
        edited = result.model_copy(update={"test_dataset_name": "another"})
        assert edited.content_digest() != result.digest, "the digest covers the test dataset"


def test_mlflow_says_trained_on_a_tested_on_b(cross_run, train_set, test_set):
    result, results, uri, _ = cross_run
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(f"{train_set.name}--test-{test_set.name}")
    assert exp is not None and exp.tags["avnbench.test_dataset"] == test_set.name
    assert exp.tags["avnbench.train_dataset"] == train_set.name
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id]
    assert len(parents) == 1 and parents[0].info.run_id == result.parent_run_id and len(children) == 2
    parent = parents[0]
    assert parent.data.tags["avnbench.test_dataset"] == test_set.name
    assert parent.data.tags["avnbench.dataset"] == train_set.name
    assert parent.data.params["test_dataset_fingerprint"] == test_set.fingerprint
    assert parent.data.tags["mlflow.runName"] == f"{METHOD}-smoke-test-{test_set.name}"
    assert "tested on" in parent.data.tags["mlflow.note.content"]
    assert parent.data.metrics["dice_head"] == pytest.approx(result.metrics["dice_head"])
    contexts = {i.dataset.name: {t.value for t in i.tags if t.key == "mlflow.data.context"}
                for i in parent.inputs.dataset_inputs}
    assert contexts == {train_set.name: {"training"}, test_set.name: {"test"}}
    for child in children:
        assert child.data.tags["avnbench.test_dataset"] == test_set.name and "dice_head" in child.data.metrics
        assert child.data.params["n_test"] == str(len(test_set.cases))
    # A's own validation run is where it always was, and says nothing about B
    own = client.get_experiment_by_name(train_set.name)
    (own_parent,) = [r for r in client.search_runs([own.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    assert own_parent.info.run_id == results[0].parent_run_id and "avnbench.test_dataset" not in own_parent.data.tags


def test_rerun_reuses_everything_and_adds_no_run(cross_run, train_set, test_set):
    _, _, uri, root = cross_run
    client = MlflowClient(uri)
    before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    again = run_benchmark(METHOD, train_set.root, root / "work", preset="smoke", tracking_uri=uri, n_bootstrap=20,
                          test_dataset_dir=test_set.root)
    assert again.skipped_folds == [0, 1] and again.test_dataset == test_set.name
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == before


def test_a_refitted_fold_is_tested_again(train_set, test_set, tmp_path):
    events = []
    run_benchmark(METHOD, train_set.root, tmp_path / "work", preset="smoke", test_dataset_dir=test_set.root,
                  n_bootstrap=0)
    fit_job = plan_fold_jobs(METHOD, train_set.root, tmp_path / "work", preset="smoke").jobs[0]
    (fit_job.job_dir / RESULT_FILE).unlink()  # fold 0 will be fitted again: its old test result must go too
    again = run_benchmark(METHOD, train_set.root, tmp_path / "work", preset="smoke", test_dataset_dir=test_set.root,
                          n_bootstrap=0, progress=events.append)
    assert again.skipped_folds == [1]
    assert _test_result(tmp_path, train_set, test_set, 0).fit_digest == load_finished(fit_job).digest
    assert any(e.kind == "warning" and "earlier model of fold 0" in e.message for e in events)


def test_in_domain_and_test_results_are_never_taken_for_each_other(train_set, test_set, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    own = run_benchmark(METHOD, train_set.root, tmp_path / "work", preset="smoke", tracking_uri=uri, n_bootstrap=0)
    assert own.test_dataset is None
    cross = run_benchmark(METHOD, train_set.root, tmp_path / "work", preset="smoke", tracking_uri=uri,
                          n_bootstrap=0, test_dataset_dir=test_set.root)
    assert cross.skipped_folds == [], "A's validation results are not a test on B"
    assert cross.run_key != own.run_key and cross.parent_run_id != own.parent_run_id
    # a test result copied into the fold's own folder is refused there, naming what differs
    fit_job = plan_fold_jobs(METHOD, train_set.root, tmp_path / "work", preset="smoke").jobs[0]
    test_dir = job_dir_for_test(tmp_path / "work", train_set.name, METHOD, "smoke", 0, test_set.name)
    shutil.copyfile(test_dir / RESULT_FILE, fit_job.job_dir / RESULT_FILE)
    warnings = []
    assert load_finished(fit_job, warn=warnings.append) is None and "test_dataset" in warnings[0]


def test_leaderboard_keeps_test_rows_on_their_own_board(cross_run, train_set, test_set, tmp_path):
    from avnbench.reporting.leaderboard import build_leaderboards

    _, _, uri, _ = cross_run
    boards = {b.dataset: b for b in collect_boards(uri)}
    cross = boards[f"{train_set.name}--test-{test_set.name}"]
    assert [r.test_dataset_fingerprint for r in boards[train_set.name].rows] == [""]
    assert [r.test_dataset_fingerprint for r in cross.rows] == [test_set.fingerprint] and cross.synthetic
    # every hip once per fold's model: paired on (fold, hip), counted as hips
    assert cross.rows[0].n_hips == len(test_set.cases) and len(cross.rows[0].cases) == 2 * len(test_set.cases)
    written = build_leaderboards(uri, tmp_path / "boards")
    assert (tmp_path / "boards" / cross.dataset / "README.md") in written
    readme = (tmp_path / "boards" / cross.dataset / "README.md").read_text(encoding="utf-8")
    assert f"Models trained on {train_set.name}'s folds, tested on every case of {test_set.name}" in " ".join(readme.split())
    # put side by side (as by hand in one experiment), a test row is never compared with A's rows
    own = boards[train_set.name].rows[0]
    rows = [own.model_copy(), own.model_copy(update={"method": "another"}), cross.rows[0].model_copy()]
    mark_comparable(rows)
    apart = {r.method + ("/test" if r.test_dataset_fingerprint else ""): r.not_compared for r in rows}
    assert [k for k, why in apart.items() if why] == [f"{METHOD}/test"], apart
    assert apart[f"{METHOD}/test"].startswith("tested on other data")


def _missing_label(b: Path) -> None:
    next((b / "labelsTr").iterdir()).unlink()


def _other_labels(b: Path) -> None:
    ds = json.loads((b / "dataset.json").read_text())
    ds["labels"] = {"background": 0, "bone": 1}
    (b / "dataset.json").write_text(json.dumps(ds))


def _label_value_3(b: Path) -> None:
    import numpy as np
    import SimpleITK as sitk

    path = sorted((b / "labelsTr").iterdir())[1]
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    array[0, 0, 0] = 3
    out = sitk.GetImageFromArray(array.astype(np.uint8))
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path))


def _unreadable_image(b: Path) -> None:
    sorted((b / "imagesTr").iterdir())[2].write_bytes(b"not a nifti")


@pytest.mark.parametrize("damage, error, words", [
    (_missing_label, DataError, "not found"),
    (_other_labels, DataError, "labels"),
    (_label_value_3, DataError, "3"),
    (_unreadable_image, DataError, "_0000.nii.gz"),
])
def test_a_test_set_that_does_not_fit_is_refused_in_one_line(damage, error, words, train_set, test_set, tmp_path):
    b = tmp_path / "B"
    shutil.copytree(test_set.root, b)
    damage(b)
    with pytest.raises(error) as caught:
        check_test_dataset(train_set, b)
    text = str(caught.value)
    assert "\n" not in text and words in text and str(b) in text
    with pytest.raises(AvnbenchError):  # and before any work: no job folder is made
        run_benchmark(METHOD, train_set.root, tmp_path / "work", preset="smoke", test_dataset_dir=b)
    assert not (tmp_path / "work").exists()


def test_the_training_set_itself_is_no_test_set(train_set):
    with pytest.raises(ConfigError, match="drop --test-data"):
        check_test_dataset(train_set, train_set.root)


def test_cli_runs_and_reports_both_runs(train_set, test_set, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["run", "--method", METHOD, "--data", str(train_set.root), "--test-data", str(test_set.root),
            "--preset", "smoke", "--workdir", str(tmp_path / "work"), "--tracking-uri", uri, "--bootstrap", "0"]
    out = CliRunner().invoke(cli, args, terminal_width=200)
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert f"all 4 cases of {test_set.name}" in text
    assert f"trained on {train_set.name}, tested on all cases of {test_set.name}" in text
    bad = tmp_path / "B"
    shutil.copytree(test_set.root, bad)
    _other_labels(bad)
    with pytest.raises(SystemExit) as exit_:
        main(args[:6] + [str(bad)] + args[7:])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("error:") == 1 and "labels" in err and err.count("\n") == 1, err


def test_on_ray_the_test_run_gives_the_local_results(cross_run, train_set, test_set, tmp_path):
    ray = pytest.importorskip("ray")
    from avnbench.driver import run_invocation
    from avnbench.executors import RayExecutor

    local = cross_run[0]
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        outcome = run_invocation([METHOD], train_set.root, tmp_path / "ray", "smoke", device="cpu", n_bootstrap=20,
                                 executor=RayExecutor(), test_dataset_dir=test_set.root)
    finally:
        ray.shutdown()
    assert outcome.failures == []
    on_ray = outcome.test_results[METHOD]
    key = lambda r: (r["fold"], r["case_id"])  # noqa: E731
    assert sorted(on_ray.rows, key=key) == sorted(local.rows, key=key) and on_ray.run_key == local.run_key


def test_an_in_domain_result_digests_as_before_test_fields_existed(cross_run, train_set):
    _, _, _, root = cross_run
    fit_job = plan_fold_jobs(METHOD, train_set.root, root / "work", preset="smoke").jobs[0]
    written = json.loads((fit_job.job_dir / RESULT_FILE).read_text())
    assert written["test_dataset_name"] is None and written["fit_digest"] is None
    older = {k: v for k, v in written.items() if k not in ("test_dataset_name", "test_dataset_fingerprint", "test_ids",
                                                            "fit_digest")}
    assert FoldResult.model_validate(older).content_digest() == written["digest"]
    # and an in-domain run key is the hash it always was, so finished work and MLflow runs are found again
    import hashlib

    from avnbench.jobs import CodeVersions, run_key_for

    code = CodeVersions(avnbench_version="1", avnbench_commit=None, plugin_distribution="d", plugin_version="2")
    old = hashlib.sha256(json.dumps(["m", "smoke", {"a": 1}, "f", "s", code.model_dump(mode="json")], sort_keys=True,
                                    default=str).encode()).hexdigest()[:16]
    assert run_key_for("m", "smoke", {"a": 1}, "f", "s", code) == old
    assert run_key_for("m", "smoke", {"a": 1}, "f", "s", code, test_fingerprint="b") != old
