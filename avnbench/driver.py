"""The driver loop: one :class:`~avnbench.planning.InvocationPlan`, any executor, one hook caller.

:func:`run_invocation` plans a whole ``avnbench run`` (every method's fold jobs and prepare steps),
then hands each step to the executor (:mod:`avnbench.executors`) as soon as the steps it comes
after have finished, and turns what the executor reports into the lifecycle hooks of
:mod:`avnbench.hookspecs` and :class:`~avnbench.runner.RunEvent` progress. Only this loop calls the
hooks, so the built-in MLflow plugin writes from the driver process alone, whatever runs the jobs.

A method's run starts (``avnbench_run_started``) when its first fold is handed out or reused and
ends when its last fold has settled: ``avnbench_run_finished`` if every fold has a result,
``avnbench_run_aborted`` naming the failed fold otherwise. Finished folds keep their
``result.json`` either way, so the same command resumes.

With a test dataset (``--test-data``) each method has a second run, its *test run*: the test jobs
that predict every case of that dataset with each fold's model, reported through the same hooks
with a :class:`~avnbench.runs.RunInfo` that names the test dataset. A test job's saved result is
reused only if its fold job's result (the fit it predicted with) is reused too, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avnbench.errors import AvnbenchError, PluginError
from avnbench.executors import LocalExecutor, RayExecutor, StepReport
from avnbench.jobs import RESULT_FILE, FoldJob, FoldResult, load_finished
from avnbench.methods import TrainingEvent
from avnbench.planning import InvocationPlan, PlannedStep, RunPlan, plan_invocation
from avnbench.plugins import Registry, load_registry
from avnbench.runs import RunInfo
from avnbench.workfolder import work_folder_lock


class StepNotRun(AvnbenchError):
    """A step was not run because a step it comes after failed."""


@dataclass(frozen=True)
class JobFailure:
    """A step that failed (``fold`` None for a prepare step): ``message`` is one line naming the
    method and fold; ``exception`` is what was raised (on the worker, for Ray)."""

    method: str
    fold: int | None
    message: str
    exception: BaseException


@dataclass
class InvocationResult:
    """The outcome of :func:`run_invocation`: a :class:`~avnbench.runner.RunResult` per method
    that finished (in plan order), one per method's test run in ``test_results`` (with a test
    dataset), and every failed or skipped step."""

    results: dict[str, Any] = field(default_factory=dict)
    test_results: dict[str, Any] = field(default_factory=dict)
    failures: list[JobFailure] = field(default_factory=list)


def run_invocation(
    method_names: Sequence[str],
    dataset_dir: Path,
    workdir: Path,
    preset: str = "quick",
    folds: Sequence[int] | None = None,
    device: str = "auto",
    seed: int = 0,
    tracking_uri: str | None = None,
    registry: Registry | None = None,
    progress: Callable[[Any], None] | None = None,
    n_bootstrap: int = 1000,
    overrides: dict[str, dict[str, Any]] | None = None,
    executor: LocalExecutor | RayExecutor | None = None,
    on_result: Callable[[Any], None] | None = None,
    test_dataset_dir: Path | None = None,
) -> InvocationResult:
    """Run several methods on one dataset as one plan, on ``executor`` (default: local).

    Arguments are those of :func:`avnbench.runner.run_benchmark`, plus ``overrides`` (method name
    → config overrides), ``executor`` (:class:`~avnbench.executors.LocalExecutor` or
    :class:`~avnbench.executors.RayExecutor`; entered and left here) and ``on_result``, called
    with each method's :class:`~avnbench.runner.RunResult` as soon as its last fold is in, and
    ``test_dataset_dir`` (each fold's model also tested on every case of that dataset: a test run).
    A method's failure does not stop the others; it is in :attr:`InvocationResult.failures`.
    An interrupt or a hook's exception cancels every running step and aborts every open run.
    """
    registry = registry or load_registry()
    executor = executor if executor is not None else LocalExecutor()
    plan = plan_invocation(method_names, dataset_dir, workdir, preset, folds, device, seed, registry, overrides,
                           gpus_elsewhere=executor.gpus_elsewhere, test_dataset_dir=test_dataset_dir)
    dataset = next(iter(plan.runs.values())).dataset
    with work_folder_lock(workdir, dataset.name), executor:
        driver = _Driver(plan, executor, registry, progress, tracking_uri, n_bootstrap, seed, preset, on_result)
        return driver.run()


@dataclass
class _MethodRun:
    plan: RunPlan
    run: RunInfo
    reusable: dict[int, FoldResult | None]
    open_folds: set[int]
    results: dict[int, FoldResult] = field(default_factory=dict)
    tracking: dict[str, str] = field(default_factory=dict)
    started_folds: set[int] = field(default_factory=set)
    skipped: list[int] = field(default_factory=list)
    failures: list[JobFailure] = field(default_factory=list)
    started: bool = False
    settled: bool = False


class _Driver:
    def __init__(self, plan: InvocationPlan, executor, registry: Registry, progress, tracking_uri, n_bootstrap,
                 seed, preset, on_result):
        from avnbench.runner import RunEvent

        self.RunEvent = RunEvent
        self.plan, self.executor, self.registry = plan, executor, registry
        self.hook = registry.pm.hook
        from avnbench.evaluation.metrics import collect_metrics

        self.metric_defs = collect_metrics(registry.pm)  # built-in + avnbench_register_metrics
        self.emit = progress or (lambda e: None)
        self.tracking_uri, self.n_bootstrap, self.seed, self.preset = tracking_uri, n_bootstrap, seed, preset
        self.on_result = on_result or (lambda r: None)
        self.steps = {s.key: s for s in plan.steps}
        self.done: set[str] = set()
        self.failed: dict[str, str] = {}
        self.outcome = InvocationResult()

    # --- the loop ---------------------------------------------------------------------------
    def _state(self, step: PlannedStep) -> "_MethodRun":
        """The run a step belongs to: its method's, or its method's test run."""
        return self.methods[_run_name(step.method, step.is_test)]

    def _event(self, state: "_MethodRun", kind: str, **fields: Any):
        return self.RunEvent(kind=kind, method=state.run.method, test_dataset=state.run.test_dataset_name, **fields)

    def run(self) -> InvocationResult:
        self.methods = {name: self._method_run(name) for name in self.plan.methods}
        for name in (self.plan.test_runs or {}):  # after the fold runs: a test run reads their reusable folds
            self.methods[_run_name(name, True)] = self._method_run(name, test=True)
        computed = [s for s in self.plan.steps if s.job is not None and self._state(s).reusable[s.fold] is None]
        self.needed_prepares = {k for s in computed for k in s.after if self.steps[k].prepare is not None}
        self.executor.check(computed + [self.steps[k] for k in sorted(self.needed_prepares)])
        queue = list(self.plan.steps)
        try:
            while queue or self.executor.running():
                self._dispatch(queue)
                if self.executor.running():
                    self.executor.wait(self._on_report)
                elif queue:  # defensive: the plan is ordered, so something is always ready
                    raise PluginError(f"internal error: steps {[s.key for s in queue]} wait on steps that never run")
        except BaseException as e:
            self.executor.cancel_all()
            for state in self.methods.values():
                if state.started and not state.settled:
                    state.settled = True
                    _report_abort(self.registry, state.run, f"{type(e).__name__}: {e}")
            raise
        return self.outcome

    def _dispatch(self, queue: list[PlannedStep]) -> None:
        """Hand out, in plan order, every step whose predecessors are done, until the executor
        has no room for the next one; settle at once the reused folds, unneeded prepares and
        blocked steps."""
        i = 0
        while i < len(queue):
            step = queue[i]
            state = self._state(step)
            blocked = [k for k in step.after if k in self.failed]
            if blocked:
                queue.pop(i)
                self._fail(step, StepNotRun(f"{step.key} was not run: {blocked[0]} failed"))
                continue
            if any(k not in self.done for k in step.after):
                i += 1
                continue
            if step.prepare is not None and step.key not in self.needed_prepares:
                queue.pop(i)
                self.done.add(step.key)
                continue
            if step.job is not None and state.reusable[step.fold] is not None:
                queue.pop(i)
                self._start(state)
                self._reuse(state, step)
                continue
            if step.job is not None and state.failures and not self.executor.keeps_going:
                queue.pop(i)
                self._fail(step, StepNotRun(f"{step.key} was not run: {state.failures[0].message}"), quiet=True)
                continue
            if not self.executor.has_room(step):
                return  # later steps wait too: the plan's order is kept (see RayExecutor.has_room)
            queue.pop(i)
            if step.job is not None:
                self._start(state)
            else:
                self.emit(self.RunEvent(kind="preparing", method=step.method))
            self.executor.submit(step, state.plan.entry)

    def _on_report(self, report: StepReport) -> None:
        step = self.steps[report.key]
        state = self._state(step)
        if report.kind == "failed":
            self._fail(step, report.payload)
        elif step.job is None:
            if report.kind == "finished":
                self.done.add(step.key)
                self.emit(self.RunEvent(kind="prepared", method=step.method))
        elif report.kind == "started" and step.fold not in state.started_folds:
            state.started_folds.add(step.fold)  # a retried task starts again: one fold_started
            self.emit(self._event(state, "fold_started", fold=step.fold,
                                  total=len(step.job.test_ids if step.is_test else step.job.val_ids)))
            self.hook.avnbench_fold_started(run=state.run, job=step.job)
        elif report.kind == "progress":
            self.emit(report.payload)
        elif report.kind == "training":
            self._training(state, step.job, report.payload)
        elif report.kind == "finished":
            self.done.add(step.key)
            self._fold_result(state, step.job, report.payload, reused=False)

    # --- one method's run ----------------------------------------------------------------
    def _method_run(self, name: str, test: bool = False) -> _MethodRun:
        from avnbench.runner import _warner

        plan = self.plan.test_runs[name] if test else self.plan.runs[name]
        entry, dataset, split_meta = plan.entry, plan.dataset, plan.split_meta
        tested_on = plan.test_dataset.name if plan.test_dataset is not None else None

        def warner(fold: int):
            warn = _warner(self.emit, name, fold)
            return warn if tested_on is None else (lambda message: warn(f"{message} (its test on {tested_on})"))

        reusable = {job.fold: load_finished(job, warn=warner(job.fold)) for job in plan.jobs}
        if test:  # a test result stands only on the very fit result it was predicted with
            fits = self.methods[name].reusable
            for job in plan.jobs:
                result, fit = reusable[job.fold], fits.get(job.fold)
                if result is not None and (fit is None or result.fit_digest != fit.digest):
                    reusable[job.fold] = None
                    why = "is fitted again now" if fit is None else "was fitted again since"
                    message = (f"{job.job_dir / RESULT_FILE} was predicted by an earlier model of fold {job.fold}, "
                               f"which {why}; recomputing its test")
                    self.emit(self.RunEvent(kind="warning", method=name, fold=job.fold, test_dataset=tested_on,
                                            message=message))
        test_facts = {} if plan.test_dataset is None else {
            "test_dataset_name": plan.test_dataset.name, "test_dataset_fingerprint": plan.test_dataset.fingerprint,
            "test_dataset_synthetic": plan.test_dataset.synthetic,
            "test_dataset_root": plan.test_dataset.root.resolve(), "test_cases": len(plan.test_dataset.cases),
        }
        run = RunInfo(
            method=name, task=entry.card.task, classes=list(entry.card.classes) if entry.card.classes else None,
            plugin=entry.plugin, plugin_distribution=entry.distribution, plugin_version=entry.version,
            preset=self.preset, config=plan.config,
            trains_on=list(entry.cls.Config.model_validate(plan.config).trains_on(entry.card)),
            dataset_name=dataset.name, dataset_fingerprint=dataset.fingerprint, dataset_synthetic=dataset.synthetic,
            dataset_root=dataset.root.resolve(), split_sha256=split_meta.sha256, split_folds=split_meta.folds,
            split_seed=split_meta.seed, folds=plan.folds, reused_folds=[k for k, r in reusable.items() if r is not None],
            seed=self.seed, device=plan.device, run_key=plan.run_key, tracking_uri=self.tracking_uri, **test_facts,
        )
        return _MethodRun(plan=plan, run=run, reusable=reusable, open_folds=set(plan.folds))

    def _start(self, state: _MethodRun) -> None:
        if state.started:
            return
        state.started = True
        for refs in self.hook.avnbench_run_started(run=state.run):
            state.tracking.update(refs or {})
        self.emit(self._event(state, "run_started", total=len(state.plan.jobs)))

    def _reuse(self, state: _MethodRun, step: PlannedStep) -> None:
        job = step.job
        state.skipped.append(job.fold)
        self.done.add(step.key)
        self.emit(self._event(state, "fold_skipped", fold=job.fold, total=len(job.test_ids or job.val_ids)))
        self._fold_result(state, job, state.reusable[job.fold], reused=True)

    def _training(self, state: _MethodRun, job: FoldJob, event: TrainingEvent) -> None:
        """A fold's training report: the hook (live tracking), then the CLI's epoch line."""
        self.hook.avnbench_training_event(run=state.run, job=job, event=event)
        if event.kind != "epoch":  # a lone curve point (e.g. a number chosen after fit) is no epoch
            return
        self.emit(self.RunEvent(kind="epoch", method=job.method, fold=job.fold, done=event.epoch, total=event.total,
                                values=event.values))

    def _fold_result(self, state: _MethodRun, job: FoldJob, result: FoldResult, reused: bool) -> None:
        from avnbench.runner import cost_metrics, summarize

        card = state.plan.entry.card
        state.results[job.fold] = result
        fold_summary = summarize(result.rows, card.task, card.classes, 0, self.seed, self.metric_defs)
        self.hook.avnbench_fold_finished(
            run=state.run, job=job, result=result, metrics=fold_summary.metrics | cost_metrics([result]),
            reused=reused,
        )
        self.emit(self._event(state, "fold_finished", fold=job.fold))
        state.open_folds.discard(job.fold)
        self._settle(state)

    def _fail(self, step: PlannedStep, error: BaseException, quiet: bool = False) -> None:
        """Record a failed (or not run) step; the method's run ends once its other folds settle."""
        state = self._state(step)
        where = f"{step.method} fold {step.fold}" if step.job is not None else f"{step.method} (prepare)"
        if step.is_test:
            where += f" tested on {step.job.test_dataset_name}"
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        message = text if isinstance(error, StepNotRun) else f"{where}: {type(error).__name__}: {text}"
        self.failed[step.key] = message
        failure = JobFailure(method=step.method, fold=step.fold, message=message, exception=error)
        if not quiet:
            state.failures.append(failure)
            self.outcome.failures.append(failure)
            self.emit(self._event(state, "fold_failed", fold=step.fold, message=message))
        if step.job is not None:
            state.open_folds.discard(step.fold)
        self._settle(state)

    def _settle(self, state: _MethodRun) -> None:
        """End the method's run once none of its folds is open."""
        if state.open_folds or state.settled:
            return
        if state.failures:
            state.settled = True
            if state.started:
                _report_abort(self.registry, state.run, state.failures[0].message)
            return
        from avnbench.runner import RunResult, cost_metrics, summarize

        method, card = state.run.method, state.plan.entry.card
        self.emit(self._event(state, "scoring"))
        results = [state.results[k] for k in sorted(state.results)]
        rows = [row for r in results for row in r.rows]
        summary = summarize(rows, card.task, card.classes, self.n_bootstrap, self.seed, self.metric_defs)
        metrics = summary.metrics | cost_metrics(results)
        self.hook.avnbench_run_finished(run=state.run, rows=rows, summary=summary, metrics=metrics)
        state.settled = True
        self.emit(self._event(state, "run_finished"))
        dataset = state.plan.dataset
        result = RunResult(
            method=method, preset=self.preset, dataset=dataset.name,
            synthetic=dataset.synthetic or bool(state.run.test_dataset_synthetic),
            test_dataset=state.run.test_dataset_name, run_key=state.plan.run_key, folds=state.plan.folds,
            skipped_folds=state.skipped, metrics=metrics,
            rows=rows, parent_run_id=state.tracking.get("mlflow.parent_run_id"), tracking=state.tracking,
            notes=list(getattr(summary, "notes", []) or []),
        )
        (self.outcome.test_results if state.run.is_test else self.outcome.results)[method] = result
        self.on_result(result)


def _run_name(method: str, test: bool) -> str:
    return f"{method}/test" if test else method


def _report_abort(registry: Registry, run: RunInfo, reason: str) -> None:
    # The hook must not raise; if a plugin does anyway, the run's own error is what the user needs.
    try:
        registry.pm.hook.avnbench_run_aborted(run=run, reason=reason.strip().splitlines()[0] if reason.strip() else "")
    except Exception:
        pass
