"""The invocation plan and the executors: the same results on Ray as in-process, a failing job
reported with its method and fold while the other folds are kept, builds_on honoured across
workers, a killed driver resumed, a dataset a worker cannot see named with its node."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from avnbench.driver import run_invocation
from avnbench.errors import ConfigError
from avnbench.hookspecs import hookimpl
from avnbench.executors import LocalExecutor, RayExecutor, StepReport, make_executor
from avnbench.planning import plan_invocation
from avnbench.runner import RESULT_FILE, job_dir_for, run_benchmark
from avnbench.testing import registry_of

ray = pytest.importorskip("ray")

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import ray_methods  # noqa: E402  (importable by the Ray workers through PYTHONPATH)
from ray_methods import TIMES_FILE, FailsOnFold1, OneCore, TimedEnsemble, TimedMember, TwoCores  # noqa: E402

WORKER_ENV = {"env_vars": {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}}


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray with 2 CPUs for the whole module; yields its address for other drivers."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=WORKER_ENV)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _rows(result):
    return json.dumps(result.rows, sort_keys=True, default=str)


# --- planning (no Ray) -----------------------------------------------------------------------


def test_the_plan_puts_an_ensembles_fold_after_its_members_same_fold(tiny_dataset, tmp_path):
    registry = registry_of(TimedMember, TimedEnsemble)
    plan = plan_invocation(["timed-ensemble", "timed-member"], tiny_dataset.root, tmp_path / "w", "smoke",
                           [0, 2], "cpu", 0, registry)
    assert plan.methods == ["timed-member", "timed-ensemble"]
    keys = [s.key for s in plan.steps]
    assert keys == ["timed-member/fold_0", "timed-member/fold_2", "timed-ensemble/fold_0", "timed-ensemble/fold_2"]
    assert plan.step("timed-ensemble/fold_2").after == ("timed-member/fold_2",)
    assert plan.step("timed-member/fold_0").after == ()
    assert plan.step("timed-member/fold_0").resources.num_gpus == 0


def test_nnunet_methods_share_one_prepare_step_before_their_folds(tiny_dataset, tmp_path):
    from avnbench.plugins import load_registry

    registry = load_registry()
    if "nnunet-ensemble" not in registry.names():
        pytest.skip("the nnU-Net plugin is not installed")
    plan = plan_invocation(["nnunet-ensemble", "nnunet-2d", "nnunet-3d"], tiny_dataset.root, tmp_path / "w",
                           "smoke", [1], "cpu", 0, registry)
    prepares = [s for s in plan.steps if s.prepare is not None]
    assert [s.key for s in prepares] == ["nnunet-2d/prepare"] and plan.steps[0] is prepares[0]
    assert plan.step("nnunet-ensemble/fold_1").after == ("nnunet-2d/prepare", "nnunet-2d/fold_1", "nnunet-3d/fold_1")
    assert plan.step("nnunet-3d/fold_1").after == ("nnunet-2d/prepare",)
    mixed = plan_invocation(["threshold-baseline", "nnunet-2d"], tiny_dataset.root, tmp_path / "w", "smoke", [1],
                            "cpu", 0, registry)
    assert [s.key for s in mixed.steps] == ["nnunet-2d/prepare", "threshold-baseline/fold_1", "nnunet-2d/fold_1"], \
        "a prepare step goes first: every fold of its methods waits on it"

    on_gpus = plan_invocation(["nnunet-2d"], tiny_dataset.root, tmp_path / "w", "smoke", [1], "cuda", 0, registry,
                              gpus_elsewhere=True)
    assert on_gpus.step("nnunet-2d/fold_1").resources.num_gpus == 1, "one GPU per training job"
    assert on_gpus.step("nnunet-2d/prepare").resources.num_gpus == 0, "preprocessing needs no GPU"


@pytest.mark.parametrize("name, address, message", [
    ("local", "auto", "--ray-address needs --executor ray"),
    ("dask", None, "unknown executor 'dask'. Available: local, ray"),
])
def test_bad_executor_options_are_one_line(name, address, message):
    with pytest.raises(ConfigError, match=message):
        make_executor(name, address)


# --- on Ray ----------------------------------------------------------------------------------


def test_threshold_baseline_on_ray_gives_the_local_results(ray_cluster, tiny_dataset, tmp_path):
    from mlflow import MlflowClient

    local = run_benchmark("threshold-baseline", tiny_dataset.root, tmp_path / "local", preset="smoke",
                          device="cpu", n_bootstrap=50)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcome = run_invocation(["threshold-baseline"], tiny_dataset.root, tmp_path / "ray", "smoke", device="cpu",
                             tracking_uri=uri, n_bootstrap=50, executor=RayExecutor())
    assert outcome.failures == []
    on_ray = outcome.results["threshold-baseline"]
    assert _rows(on_ray) == _rows(local)
    assert on_ray.metrics["dice_vital"] == local.metrics["dice_vital"]
    assert on_ray.run_key == local.run_key
    client = MlflowClient(uri)  # the driver logged everything: one parent, a finished child per fold
    runs = client.search_runs([client.get_experiment_by_name(tiny_dataset.name).experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert sorted(int(c.data.tags["avnbench.fold"]) for c in children if c.info.status == "FINISHED") == [0, 1, 2, 3]


def test_a_failing_job_is_reported_with_method_and_fold_and_the_others_are_kept(ray_cluster, tiny_dataset, tmp_path):
    registry = registry_of(FailsOnFold1)
    events = []
    outcome = run_invocation(["fails-on-fold-1"], tiny_dataset.root, tmp_path / "w", "smoke", device="cpu",
                             registry=registry, n_bootstrap=10, executor=RayExecutor(), progress=events.append)
    assert [(f.method, f.fold) for f in outcome.failures] == [("fails-on-fold-1", 1)]
    assert outcome.failures[0].message == "fails-on-fold-1 fold 1: RuntimeError: boom on purpose"
    assert outcome.results == {}, "a method with a failed fold has no result"
    finished = [k for k in range(4)
                if (job_dir_for(tmp_path / "w", tiny_dataset.name, "fails-on-fold-1", "smoke", k) / RESULT_FILE).exists()]
    assert finished == [0, 2, 3]
    assert [e.fold for e in events if e.kind == "fold_failed"] == [1]


def test_a_method_runs_after_what_it_builds_on_across_workers(ray_cluster, tiny_dataset, tmp_path):
    registry = registry_of(TimedMember, TimedEnsemble)
    overrides = {"timed-member": {"sleep_seconds": 1.0}}
    outcome = run_invocation(["timed-ensemble", "timed-member"], tiny_dataset.root, tmp_path / "w", "smoke",
                             device="cpu", registry=registry, n_bootstrap=10, overrides=overrides,
                             executor=RayExecutor())
    assert outcome.failures == [] and set(outcome.results) == {"timed-member", "timed-ensemble"}

    def times(method, fold):
        job_dir = job_dir_for(tmp_path / "w", tiny_dataset.name, method, "smoke", fold)
        return json.loads((job_dir / TIMES_FILE).read_text())

    for fold in range(4):
        assert times("timed-ensemble", fold)["start"] >= times("timed-member", fold)["end"], fold
    member_spans = [times("timed-member", k) for k in range(4)]
    overlapping = any(a["start"] < b["end"] and b["start"] < a["end"]
                      for i, a in enumerate(member_spans) for b in member_spans[i + 1:])
    assert overlapping, "with 2 CPUs, two 1-CPU folds run side by side"


def test_ray_starts_steps_in_the_plans_order_when_one_asks_for_more_cores(ray_cluster, tiny_dataset, tmp_path):
    # Handed to Ray all at once, the 1-core step would take the core the running one leaves and
    # the 2-core step (think nnU-Net's preprocessing) would wait behind every smaller step.
    registry = registry_of(TimedMember, TwoCores, OneCore)
    overrides = {"timed-member": {"sleep_seconds": 1.0}, "two-cores": {"sleep_seconds": 0.3}}
    folds = [0, 1, 2]
    outcome = run_invocation(["timed-member", "two-cores", "one-core"], tiny_dataset.root, tmp_path / "w", "smoke",
                             folds=folds, device="cpu", registry=registry, n_bootstrap=10, overrides=overrides,
                             executor=RayExecutor())
    assert outcome.failures == []

    def spans(method):
        dirs = [job_dir_for(tmp_path / "w", tiny_dataset.name, method, "smoke", k) for k in folds]
        return [json.loads((d / TIMES_FILE).read_text()) for d in dirs]

    wide = spans("two-cores")
    assert min(s["start"] for s in wide) >= max(s["end"] for s in spans("timed-member"))
    assert min(s["start"] for s in spans("one-core")) >= max(s["end"] for s in wide), \
        "a 1-core step overtook a 2-core step planned before it"


def test_a_step_whose_dataset_a_worker_cannot_see_names_the_node(ray_cluster, tiny_dataset, tmp_path):
    registry = registry_of(TimedMember)
    plan = plan_invocation(["timed-member"], tiny_dataset.root, tmp_path / "w", "smoke", [0], "cpu", 0, registry)
    step = plan.steps[0]
    (tmp_path / "w" / tiny_dataset.name).mkdir(parents=True)
    moved = step.job.model_copy(update={"dataset_dir": tmp_path / "elsewhere" / "phantom"})
    step = dataclasses.replace(step, job=moved)
    reports = []
    with RayExecutor() as executor:
        executor.submit(step, registry.get("timed-member"))
        while executor.running():
            executor.wait(reports.append)
    (failed,) = [r for r in reports if r.kind == "failed"]
    assert "not visible on node " + ray.util.get_node_ip_address() in str(failed.payload)
    assert str(tmp_path / "elsewhere" / "phantom") in str(failed.payload) and "\n" not in str(failed.payload)
    assert not any(r.kind == "started" for r in reports)


DRIVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from ray_methods import TimedMember
    from avnbench.driver import run_invocation
    from avnbench.executors import RayExecutor
    from avnbench.testing import registry_of
    from pathlib import Path
    run_invocation(["timed-member"], Path({data!r}), Path({work!r}), "smoke", device="cpu",
                   registry=registry_of(TimedMember), n_bootstrap=10, overrides={{"timed-member": {{"sleep_seconds": 2.0}}}},
                   executor=RayExecutor({address!r}, runtime_env={env!r}))
""")


def test_a_killed_driver_resumes_with_its_finished_folds(ray_cluster, tiny_dataset, tmp_path):
    work = tmp_path / "w"
    script = DRIVER.format(tests=str(TESTS), data=str(tiny_dataset.root), work=str(work), address=ray_cluster,
                           env=WORKER_ENV)
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    results = [job_dir_for(work, tiny_dataset.name, "timed-member", "smoke", k) / RESULT_FILE for k in range(4)]
    deadline = time.monotonic() + 120
    while not any(p.exists() for p in results) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert driver.returncode == -signal.SIGKILL, driver.stderr.read().decode()[-2000:]
    finished = {k for k, p in enumerate(results) if p.exists()}
    assert finished and finished != {0, 1, 2, 3}
    fitted_before = {k: (results[k].parent / TIMES_FILE).read_text() for k in finished}

    outcome = run_invocation(["timed-member"], tiny_dataset.root, work, "smoke", device="cpu",
                             registry=registry_of(TimedMember), n_bootstrap=10,
                             overrides={"timed-member": {"sleep_seconds": 2.0}}, executor=RayExecutor())
    result = outcome.results["timed-member"]
    assert set(result.skipped_folds) >= finished and len(result.rows) == len(tiny_dataset.cases)
    for k, before in fitted_before.items():
        assert (results[k].parent / TIMES_FILE).read_text() == before, f"fold {k} was fit again"


def test_the_cli_runs_on_a_ray_cluster_it_joins(ray_cluster, tiny_dataset, tmp_path):
    env = os.environ | {"MLFLOW_TRACKING_URI": "", "PYTHONIOENCODING": "utf-8"}
    args = [sys.executable, "-m", "avnbench", "run", "--method", "threshold-baseline", "--data", str(tiny_dataset.root),
            "--preset", "smoke", "--folds", "0,1", "--device", "cpu", "--workdir", str(tmp_path / "w"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--bootstrap", "10",
            "--executor", "ray", "--ray-address", ray_cluster]
    out = subprocess.run(args, capture_output=True, encoding="utf-8", env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "executor: ray" in out.stdout and "threshold-baseline fold 1: done" in out.stdout
    assert "Dice vital" in out.stdout
    again = subprocess.run(args, capture_output=True, encoding="utf-8", env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "threshold-baseline fold 0: already finished, reused" in again.stdout
    assert "nothing new computed" in again.stdout


def test_the_local_executor_runs_steps_in_submission_order(tiny_dataset, tmp_path):
    registry = registry_of(TimedMember)
    plan = plan_invocation(["timed-member"], tiny_dataset.root, tmp_path / "w", "smoke", [0, 1], "cpu", 0, registry)
    reports: list[StepReport] = []
    with LocalExecutor() as executor:
        for step in plan.steps:
            executor.submit(step, registry.get("timed-member"))
        while executor.running():
            executor.wait(reports.append)
    ends = [(r.key, r.kind) for r in reports if r.kind in ("started", "finished")]
    assert ends == [("timed-member/fold_0", "started"), ("timed-member/fold_0", "finished"),
                    ("timed-member/fold_1", "started"), ("timed-member/fold_1", "finished")]


def test_ctrl_c_cancels_running_jobs_and_keeps_finished_folds(ray_cluster, tiny_dataset, tmp_path):
    from mlflow import MlflowClient

    registry = registry_of(TimedMember)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    work = tmp_path / "w"
    kwargs = dict(device="cpu", registry=registry, n_bootstrap=10, tracking_uri=uri,
                  overrides={"timed-member": {"sleep_seconds": 1.5}})

    interrupted_at: list[float] = []

    def interrupt_at_first_fold(event):
        if event.kind == "fold_finished":
            interrupted_at.append(time.time())
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_invocation(["timed-member"], tiny_dataset.root, work, "smoke", executor=RayExecutor(),
                       progress=interrupt_at_first_fold, **kwargs)
    results = [job_dir_for(work, tiny_dataset.name, "timed-member", "smoke", k) / RESULT_FILE for k in range(4)]
    finished = {k for k, p in enumerate(results) if p.exists()}
    assert finished and finished != {0, 1, 2, 3}
    time.sleep(3)  # a job left running (or waiting) would have fit by now
    fits = {k: json.loads((p.parent / TIMES_FILE).read_text()) for k, p in enumerate(results)
            if (p.parent / TIMES_FILE).exists()}
    # a job that ran beside the first one may have finished its fit just before the interrupt
    # (both fit for the same 1.5 s); none fits after it: waiting jobs never start, running ones stop
    late = {k: t for k, t in fits.items() if t["end"] > interrupted_at[0] + 0.5}
    assert set(fits) >= finished and not late, f"cancelled jobs stop (running) or never start (waiting): {late}"
    client = MlflowClient(uri)
    (parent,) = [r for r in client.search_runs([client.get_experiment_by_name(tiny_dataset.name).experiment_id])
                 if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "KILLED"

    resumed = run_invocation(["timed-member"], tiny_dataset.root, work, "smoke", executor=RayExecutor(), **kwargs)
    result = resumed.results["timed-member"]
    assert set(result.skipped_folds) >= finished and result.parent_run_id == parent.info.run_id
    children = [r for r in client.search_runs([parent.info.experiment_id])
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id and r.info.status == "FINISHED"]
    assert sorted(int(c.data.tags["avnbench.fold"]) for c in children) == [0, 1, 2, 3]
    for child in children:  # the curves the workers reported, logged by the driver
        history = client.get_metric_history(child.info.run_id, "train/loss")
        assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.25)], child.data.tags["avnbench.fold"]


def test_cuda_jobs_on_a_cluster_without_gpus_are_refused_before_anything_runs(ray_cluster, tiny_dataset, tmp_path):
    if ray.cluster_resources().get("GPU", 0):
        pytest.skip("this cluster has GPUs")
    with pytest.raises(ConfigError, match=r"timed-member/fold_0 asks for 1 GPU\(s\) of GPU but no node of "
                                          r"the Ray cluster has more than 0 \(use --device cpu, or add GPU nodes\)"):
        run_invocation(["timed-member"], tiny_dataset.root, tmp_path / "w", "smoke", device="cuda",
                       registry=registry_of(TimedMember), n_bootstrap=10, executor=RayExecutor())
    assert not list((tmp_path / "w").rglob(RESULT_FILE))


class _HookOrder:
    """Records which lifecycle hook was called for which method and fold."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def avnbench_run_started(self, run):
        self.calls.append(("run_started", run.method, None))

    @hookimpl
    def avnbench_fold_started(self, run, job):
        self.calls.append(("fold_started", run.method, job.fold))

    @hookimpl
    def avnbench_training_event(self, run, job, event):
        self.calls.append(("training_event", run.method, job.fold))

    @hookimpl
    def avnbench_fold_finished(self, run, job, result, metrics, reused):
        self.calls.append(("fold_finished", run.method, job.fold))

    @hookimpl
    def avnbench_run_finished(self, run, rows, summary, metrics):
        self.calls.append(("run_finished", run.method, None))


def _sequential(method, folds):
    calls = [("run_started", method, None)]
    for k in folds:
        calls += [("fold_started", method, k), ("training_event", method, k), ("training_event", method, k),
                  ("fold_finished", method, k)]
    return calls + [("run_finished", method, None)]


def test_the_local_executor_calls_the_hooks_as_one_run_after_another(tiny_dataset, tmp_path):
    registry = registry_of(TimedMember, TimedEnsemble)
    recorder = _HookOrder()
    registry.pm.register(recorder, name="hook-order")
    outcome = run_invocation(["timed-ensemble", "timed-member"], tiny_dataset.root, tmp_path / "w", "smoke",
                             [0, 1], device="cpu", registry=registry, n_bootstrap=10, executor=LocalExecutor())
    assert list(outcome.results) == ["timed-member", "timed-ensemble"] and outcome.failures == []
    assert recorder.calls == _sequential("timed-member", [0, 1]) + _sequential("timed-ensemble", [0, 1])


def test_locally_a_failing_fold_stops_its_method_as_before(tiny_dataset, tmp_path):
    with pytest.raises(RuntimeError, match="boom on purpose"):
        run_benchmark("fails-on-fold-1", tiny_dataset.root, tmp_path / "w", preset="smoke", device="cpu",
                      registry=registry_of(FailsOnFold1), n_bootstrap=10)
    finished = [k for k in range(4)
                if (job_dir_for(tmp_path / "w", tiny_dataset.name, "fails-on-fold-1", "smoke", k) / RESULT_FILE).exists()]
    assert finished == [0], "fold 0 is kept; the folds after the failure are not started"


def test_a_job_whose_worker_dies_is_retried(ray_cluster, tiny_dataset, tmp_path):
    from ray_methods import DiesOnce

    events = []
    outcome = run_invocation(["dies-once"], tiny_dataset.root, tmp_path / "w", "smoke", [0], device="cpu",
                             registry=registry_of(DiesOnce), n_bootstrap=10, executor=RayExecutor(),
                             progress=events.append)
    assert outcome.failures == [] and len(outcome.results["dies-once"].rows) == 2
    job_dir = job_dir_for(tmp_path / "w", tiny_dataset.name, "dies-once", "smoke", 0)
    assert (job_dir / "died_once").exists() and (job_dir / TIMES_FILE).exists()
    assert [e.kind for e in events].count("fold_started") == 1, "a retried job is one fold to the hooks"
