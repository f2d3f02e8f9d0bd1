"""Planning: the one way (method, fold) jobs are made, and the order methods run in.

:func:`plan_fold_jobs` turns a method, a dataset and a preset into :class:`FoldJob` objects (used by
the runner, the conformance kit and the benchmarks alike); :func:`fold_cases` carves each job's
training cases; :func:`method_for_fit` and :func:`method_for_predict` make the two instances a
job uses; :func:`order_methods` orders methods by what their cards say they build on;
:func:`plan_invocation` plans a whole ``avnbench run`` (several methods) as one graph of steps;
with a test dataset (``--test-data``) it adds, after each fold job, a test job that predicts every
case of the test dataset with that fold's model (:func:`check_test_dataset`, :func:`plan_test_jobs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from avnbench.data.dataset import Case, Dataset, Geometry, load_dataset
from avnbench.data.splits import SplitsMeta, carve_validation, ensure_splits
from avnbench.errors import ConfigError, DataError, PluginError
from avnbench.jobs import FoldJob, code_versions, run_key_for
from avnbench.overrides import resolve_config
from avnbench.methods import JobContext, JobResources, Method, PrepareContext, TrainingListener, TrainingLog
from avnbench.plugins import Registry, load_registry
from avnbench.workfolder import job_dir_for, job_dir_for_test, shared_dir_for

VALIDATION_FRACTION = 0.2


def resolve_device(device: str, gpus_elsewhere: bool = False) -> Literal["cpu", "cuda"]:
    """``auto`` becomes ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without one is an
    error, unless ``gpus_elsewhere`` (the jobs run on a cluster, whose executor checks its GPUs)."""
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r}. Available: auto, cpu, cuda")
    if device == "cpu":
        return "cpu"
    if device == "cuda" and gpus_elsewhere:
        return "cuda"
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if device == "cuda" and not has_cuda:
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return "cuda" if has_cuda else "cpu"


# --- planning: the one way a fold job is made -------------------------------------------------


@dataclass(frozen=True)
class RunPlan:
    """The jobs of one method on one dataset, and what they were planned from."""

    entry: Any  # the registry's RegisteredMethod
    dataset: Dataset
    split_meta: SplitsMeta
    config: dict[str, Any]
    device: Literal["cpu", "cuda"]
    run_key: str
    folds: list[int]
    jobs: list[FoldJob]
    test_dataset: Dataset | None = None  # a test run's: the dataset every fold's model predicts


def plan_fold_jobs(
    method: str,
    dataset_dir: Path,
    workdir: Path,
    preset: str = "quick",
    folds: Sequence[int] | None = None,
    device: str = "auto",
    seed: int = 0,
    registry: Registry | None = None,
    config_overrides: dict[str, Any] | None = None,
    gpus_elsewhere: bool = False,
) -> RunPlan:
    """The :class:`FoldJob` of each selected fold (all when ``folds`` is None).

    A dataset without a split gets one with 5 folds. ``config_overrides`` (field → value) are
    applied on top of the preset and validated against the method's ``Config`` (an unknown field
    or a bad value is a one-line ConfigError); they are part of the resolved config, hence of the
    run key and the run's params. ``seed`` seeds the method and the internal validation carve.
    ``gpus_elsewhere``: see :func:`resolve_device`.
    """
    registry = registry or load_registry()
    entry = registry.get(method)
    dataset = load_dataset(dataset_dir)
    fold_list, split_meta = ensure_splits(dataset, seed=0)
    selected = list(range(len(fold_list))) if folds is None else sorted(set(folds))
    bad = [k for k in selected if not 0 <= k < len(fold_list)]
    if bad:
        raise ConfigError(f"fold(s) {bad} do not exist; the split has folds 0..{len(fold_list) - 1}")
    config = resolve_config(method, entry.cls.Config, preset, seed, config_overrides or {})
    config_dict = config.model_dump(mode="json")
    dev = resolve_device(device, gpus_elsewhere)
    code = code_versions(entry)
    key = run_key_for(method, preset, config_dict, dataset.fingerprint, split_meta.sha256, code)
    jobs = [
        FoldJob(
            method=method,
            preset=preset,
            config=config_dict,
            dataset_dir=dataset.root.resolve(),
            dataset_fingerprint=dataset.fingerprint,
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
            **code.model_dump(),
        )
        for k in selected
    ]
    return RunPlan(entry, dataset, split_meta, config_dict, dev, key, selected, jobs)


def check_test_dataset(train: Dataset, test_dir: Path) -> Dataset:
    """The dataset at ``test_dir``, checked to be a test set for models trained on ``train``.

    It must be an avnbench dataset with a reference label map for every case (no split needed),
    other than ``train``, with the same labels and number of channels in ``dataset.json``, and
    every image and label map readable, on the grid ``cases.json`` gives, labels in {0, 1, 2}.
    Each problem is a one-line DataError (ConfigError for the same dataset twice) naming the file.
    """
    from avnbench.data.image_checks import geometry_mismatch, grid_mismatch
    from avnbench.data.imageio import read_image

    test = load_dataset(test_dir)
    if test.fingerprint == train.fingerprint:
        raise ConfigError(f"--test-data {test_dir} is the dataset of --data itself ({train.name}); drop --test-data "
                          "to score its folds, or pass another dataset")
    a, b = train.dataset_json, test.dataset_json
    where = test.root / "dataset.json"
    if dict(b.labels) != dict(a.labels):
        raise DataError(f"{where}: labels {dict(b.labels)} differ from {dict(a.labels)} of {train.name}; a model "
                        "can only be tested on the labels it was trained for")
    if len(b.channel_names) != len(a.channel_names):
        raise DataError(f"{where}: {len(b.channel_names)} channel(s) where {train.name} has {len(a.channel_names)}")
    if not test.cases:
        raise DataError(f"{test.root / 'cases.json'}: no cases to test on")
    for case in test.cases:
        image = read_image(case.image_path, kind="image")
        label = read_image(case.label_path, kind="label")
        problem = geometry_mismatch(case.meta.geometry, Geometry.of(image))
        if problem:
            raise DataError(f"{case.image_path}: image grid differs from cases.json: {problem}")
        problem = grid_mismatch(image, label)
        if problem:
            raise DataError(f"{case.label_path}: label map is not on the image's grid: {problem}")
    return test


def plan_test_jobs(plan: RunPlan, test: Dataset, workdir: Path) -> RunPlan:
    """The test run of ``plan``: per fold job, a test job that predicts every case of ``test``
    with the model that fold job fits (in its folder, ``fit_dir``), in its own folder
    (:func:`~avnbench.workfolder.job_dir_for_test`), under a run key that names ``test``."""
    if not plan.jobs:
        return RunPlan(plan.entry, plan.dataset, plan.split_meta, plan.config, plan.device, plan.run_key, [], [],
                       test_dataset=test)
    first = plan.jobs[0]
    key = run_key_for(first.method, first.preset, plan.config, plan.dataset.fingerprint, plan.split_meta.sha256,
                      code_versions(plan.entry), test_fingerprint=test.fingerprint)
    jobs = [
        job.model_copy(update={
            "job_dir": job_dir_for_test(workdir, plan.dataset.name, job.method, job.preset, job.fold,
                                        test.name).resolve(),
            "run_key": key,
            "test_dataset_dir": test.root.resolve(),
            "test_dataset_name": test.name,
            "test_dataset_fingerprint": test.fingerprint,
            "test_ids": [c.case_id for c in test.cases],
            "fit_dir": job.job_dir,
            "fit_run_key": job.run_key,
        })
        for job in plan.jobs
    ]
    return RunPlan(plan.entry, plan.dataset, plan.split_meta, plan.config, plan.device, key, plan.folds, jobs,
                   test_dataset=test)


def fold_cases(job: FoldJob, dataset: Dataset) -> tuple[list[Case], list[Case], list[Case]]:
    """The job's ``(fit_train, fit_val, val_cases)``: ``fit`` gets the first two, carved by
    patient out of the fold's training cases (seed ``seed + fold``); ``predict`` the third."""
    fit_train, fit_val = carve_validation(
        dataset.subset(job.train_ids), VALIDATION_FRACTION, seed=job.seed + job.fold
    )
    val_cases = dataset.subset(job.val_ids)
    if {c.case_id for c in fit_train + fit_val} & set(job.val_ids):
        raise PluginError("internal error: a validation case reached training")  # defensive
    return fit_train, fit_val, val_cases


def method_for_fit(
    cls: type[Method], job: FoldJob, dataset: Dataset, training_listener: TrainingListener | None = None
) -> Method:
    """An instance of ``cls`` with the job's config, :class:`JobContext` and training log."""
    method = cls(cls.Config.model_validate(job.config))
    method.context = JobContext(
        dataset_dir=dataset.root,
        dataset_name=dataset.name,
        dataset_fingerprint=job.dataset_fingerprint,
        splits_file=job.splits_file,
        split_hash=job.split_hash,
        fold=job.fold,
        preset=job.preset,
        seed=job.seed,
        shared_dir=job.shared_dir,
        code={
            "avnbench": job.avnbench_version,
            "avnbench.commit": job.avnbench_commit or "",
            # the providing distribution, never the method's name: methods of one plugin share it
            "plugin": f"{job.plugin_distribution or ''}=={job.plugin_version or ''}",
        },
    )
    method.log = TrainingLog(job.job_dir, listener=training_listener)
    return method


def method_for_predict(cls: type[Method], job: FoldJob) -> Method:
    """A fresh instance for ``predict``: the job's config and log, no context (so no dataset
    folder, split or shared folder); it must rely on what ``fit`` left in the job folder."""
    method = cls(cls.Config.model_validate(job.config))
    method.log = TrainingLog(job.job_dir)
    return method


# --- ordering by declaration ---------------------------------------------------------------------


def order_methods(names: Sequence[str], registry: Registry) -> list[str]:
    """``names`` with every method after the methods its card ``builds_on`` (directly or through
    others: an ensemble after its members), otherwise in the given order. Only the given names
    are returned: a member not among them is the method's own business (it may train it itself).
    A dependency cycle or an unregistered dependency is a ConfigError."""
    needs: dict[str, set[str]] = {}  # every method a method builds on, transitively

    def visit(name: str, path: list[str]) -> set[str]:
        if name in path:
            cycle = " -> ".join(path[path.index(name):] + [name])
            raise ConfigError(f"methods build on each other in a cycle ({cycle}); fix their cards' builds_on")
        if name not in needs:
            found: set[str] = set()
            for member in registry.get(name).card.builds_on:
                try:
                    registry.get(member)
                except ConfigError:
                    raise ConfigError(
                        f"method {name!r} builds on {member!r}, which is not registered; install the "
                        "plugin that provides it (avnbench methods lists the registered ones)"
                    ) from None
                found |= {member} | visit(member, path + [name])
            needs[name] = found
        return needs[name]

    for name in names:
        visit(name, [])
    ordered: list[str] = []
    pending = list(dict.fromkeys(names))
    while pending:  # the first method whose invoked dependencies have all been placed
        ready = next(n for n in pending if not (needs[n] & set(pending)))
        ordered.append(ready)
        pending.remove(ready)
    return ordered


# --- one plan for a whole invocation -------------------------------------------------------------


@dataclass(frozen=True)
class PlannedStep:
    """One node of an :class:`InvocationPlan`: a fold job, or a method's once-per-dataset prepare.

    ``key`` is ``<method>/fold_<k>`` or ``<method>/prepare``; ``after`` are the keys of the steps
    that must have finished before this one starts; ``resources`` is what it asks an executor for.
    """

    key: str
    method: str
    resources: JobResources
    after: tuple[str, ...] = ()
    job: FoldJob | None = None
    prepare: PrepareContext | None = None
    config: dict[str, Any] | None = None  # a prepare step's method config (a fold job has its own)
    device: Literal["cpu", "cuda"] = "cpu"

    @property
    def fold(self) -> int | None:
        return self.job.fold if self.job is not None else None

    @property
    def is_test(self) -> bool:
        """A test job: a fold's model predicting every case of the test dataset."""
        return self.job is not None and self.job.is_test


@dataclass(frozen=True)
class InvocationPlan:
    """Every method's :class:`RunPlan` and every step, in an order that respects ``after``
    (every prepare step first, then the methods by :func:`order_methods`, each one's test jobs
    after its folds); ``test_runs``: each method's test run, when a test dataset was given."""

    methods: list[str]
    runs: dict[str, RunPlan]
    steps: list[PlannedStep]
    test_runs: dict[str, RunPlan] | None = None

    def step(self, key: str) -> PlannedStep:
        return next(s for s in self.steps if s.key == key)

    def fold_steps(self, method: str) -> list[PlannedStep]:
        return [s for s in self.steps if s.method == method and s.job is not None and not s.is_test]


def fold_key(method: str, fold: int) -> str:
    """The key of a fold job's step in an :class:`InvocationPlan`: ``<method>/fold_<k>``."""
    return f"{method}/fold_{fold}"


def plan_invocation(
    method_names: Sequence[str],
    dataset_dir: Path,
    workdir: Path,
    preset: str = "quick",
    folds: Sequence[int] | None = None,
    device: str = "auto",
    seed: int = 0,
    registry: Registry | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    gpus_elsewhere: bool = False,
    test_dataset_dir: Path | None = None,
) -> InvocationPlan:
    """The steps of running ``method_names`` on one dataset: each method's fold jobs (as
    :func:`plan_fold_jobs` makes them) and prepare step, with their dependencies.

    A fold-k job of method M runs after the fold-k jobs of every method M builds on (its card's
    ``builds_on``, transitively) that is part of the invocation, and after M's prepare step if M
    has one (:meth:`Method.prepare`); methods inheriting the same ``prepare`` share one step.
    ``overrides`` maps a method name to its config overrides; ``gpus_elsewhere``: see
    :func:`resolve_device`. With ``test_dataset_dir`` (checked by :func:`check_test_dataset`), every
    fold job is followed by its test job (key ``<method>/fold_<k>/test``, after ``<method>/fold_<k>``),
    which predicts every case of that dataset with the fold's model.
    """
    registry = registry or load_registry()
    ordered = order_methods(method_names, registry)
    runs = {
        name: plan_fold_jobs(name, dataset_dir, workdir, preset, folds, device, seed, registry,
                             (overrides or {}).get(name), gpus_elsewhere)
        for name in ordered
    }
    test_runs = None
    if test_dataset_dir is not None and ordered:
        test = check_test_dataset(runs[ordered[0]].dataset, Path(test_dataset_dir))
        test_runs = {name: plan_test_jobs(runs[name], test, workdir) for name in ordered}
    steps: list[PlannedStep] = []
    prepare_of: dict[tuple[Any, Path], str] = {}  # (prepare function, shared folder) -> its step
    for name in ordered:
        plan = runs[name]
        cls = plan.entry.cls
        prepare_key = None
        if cls.has_prepare() and plan.jobs:
            first = plan.jobs[0]
            shared = (cls.prepare.__func__, first.shared_dir)
            if shared not in prepare_of:
                prepare_of[shared] = f"{name}/prepare"
                context = PrepareContext(
                    dataset_dir=first.dataset_dir, dataset_name=plan.dataset.name,
                    dataset_fingerprint=first.dataset_fingerprint, splits_file=first.splits_file,
                    split_hash=first.split_hash, preset=preset, seed=seed, shared_dir=first.shared_dir,
                )
                cpu_only = cls.resources(preset, "cpu", cls.Config.model_validate(plan.config))
                steps.append(PlannedStep(key=prepare_of[shared], method=name, resources=cpu_only,
                                         prepare=context, config=plan.config, device=plan.device))
            prepare_key = prepare_of[shared]
        members = [m for m in _builds_on(name, registry) if m in runs]
        resources = cls.resources(preset, plan.device, cls.Config.model_validate(plan.config))
        for job in plan.jobs:
            after = ([prepare_key] if prepare_key else []) + [
                fold_key(m, job.fold) for m in members if job.fold in runs[m].folds
            ]
            steps.append(PlannedStep(key=fold_key(name, job.fold), method=name, resources=resources,
                                     after=tuple(after), job=job, device=plan.device))
        for job in (test_runs[name].jobs if test_runs else []):
            steps.append(PlannedStep(key=fold_key(name, job.fold) + "/test", method=name, resources=resources,
                                     after=(fold_key(name, job.fold),), job=job, device=plan.device))
    # Prepare steps first: they wait on nothing and hold back every fold of their methods
    # (nnU-Net's preprocessing gates all of nnU-Net's jobs, the longest of the CPU benchmark).
    steps = [s for s in steps if s.prepare is not None] + [s for s in steps if s.prepare is None]
    return InvocationPlan(methods=ordered, runs=runs, steps=steps, test_runs=test_runs)


def _builds_on(name: str, registry: Registry) -> list[str]:
    """Every method ``name`` builds on, directly or through others (cycles were refused by
    :func:`order_methods`)."""
    found: list[str] = []
    for member in registry.get(name).card.builds_on:
        for m in [member, *_builds_on(member, registry)]:
            if m not in found:
                found.append(m)
    return found
