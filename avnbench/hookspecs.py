"""The plugin contract: every hook avnbench calls, ``avnbench_``-prefixed, typed and documented.

A plugin is a module (registered through the ``avnbench`` entry-point group, or built in: see
:data:`avnbench.plugins.DEFAULT_PLUGINS`) that implements some of these hooks with
:data:`hookimpl`::

    from avnbench import hookimpl

    @hookimpl
    def avnbench_register_methods(register):
        register(MyMethod)

    @hookimpl
    def avnbench_fold_finished(run, job, result, metrics, reused):
        print(f"{run.method} fold {job.fold}: dice_vital {metrics.get('dice_vital')}")

Built-in features are plugins registered the same way: MLflow tracking is
:mod:`avnbench.reporting.tracking`. Every lifecycle hook is called by the driver process through
``pm.hook``, in the order run_started, (fold_started, training_event*, fold_finished)* per fold,
then run_finished or run_aborted. Under ``--executor ray`` the folds of a run (and the runs of
one invocation) run side by side, so these sequences interleave; each keeps its own order, and
the hooks are still called from the driver process only (:mod:`avnbench.driver`). Hooks are called with keyword arguments; an implementation may
accept any subset of them. An exception raised by a lifecycle hook aborts the run (and is reported
to the others through :func:`avnbench_run_aborted`), so a plugin that only observes should catch
its own failures. No hook may change the objects it is given: they are shared by every plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from avnbench.evaluation.metrics import MetricDef
    from avnbench.methods import Method, TrainingEvent
    from avnbench.runner import FoldJob, FoldResult
    from avnbench.runs import RunInfo

PROJECT = "avnbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -------------------------------------------------------------------------
# registration hooks
# -------------------------------------------------------------------------


@hookspec
def avnbench_register_methods(register: Callable[[type["Method"]], None]) -> None:
    """Register the plugin's methods: call ``register(MethodClass)`` once per method.

    ``MethodClass`` subclasses :class:`avnbench.methods.Method` and has a unique ``card.name``.
    Registering the same name twice is an error that names both plugins.

    Called once per plugin while the registry is loaded, before any run.

    :param register: call it with each method class the plugin offers.
    """


@hookspec
def avnbench_register_metrics(register: Callable[["MetricDef"], None]) -> None:
    """Register the plugin's metrics: call ``register(MetricDef(...))`` once per metric.

    A plugin metric is a case metric (``aggregation="mean"`` or ``"rate"``) whose value per
    case comes from ``compute(row) -> float``: ``row`` is the case's scored row as a dict (every
    column :func:`avnbench.evaluation.scoring.score_case` writes: ``case_id``, ``patient_id``,
    Dice/distances, ``empty_<set>``, volumes, grades; NaN where a value is missing). Return NaN
    or None to leave a case out. The run summary then reports its mean, ``_sd``, ``_median``,
    ``_q1``, ``_q3``, ``_n`` and, with ``interval=True``, the patient-bootstrap ``_ci_low`` /
    ``_ci_high``; MLflow and the leaderboard csv get the same names::

        @hookimpl
        def avnbench_register_metrics(register):
            register(MetricDef(name="necrosis_cm3_bias", aggregation="mean", unit="cm³",
                               compute=lambda row: row["necrosis_cm3_pred"] - row["necrosis_cm3_ref"],
                               doc="signed necrosis volume error", interval=True))

    A name that is already registered (built in or by another plugin) is refused with a
    :class:`avnbench.errors.PluginError` naming both. Called once per plugin by
    :func:`avnbench.evaluation.metrics.collect_metrics`, which the runner calls once per run
    before its first hook; the run's and every fold's statistics then include the metrics.

    :param register: call it with each :class:`avnbench.evaluation.metrics.MetricDef`.
    """


# -------------------------------------------------------------------------
# run lifecycle hooks (called by the driver, in this order)
# -------------------------------------------------------------------------


@hookspec
def avnbench_run_started(run: "RunInfo") -> Mapping[str, str] | None:
    """A run (one method on one dataset over ``run.folds``) starts.

    Called once, before any fold is computed or reused, after the split and the resolved config
    are known.

    :param run: what the run is; ``run.reused_folds`` are the folds whose finished results will be
        reused, ``run.tracking_uri`` the MLflow store the user chose (None: tracking off).
    :return: references to where the plugin records this run, or None. The runner merges every
        plugin's mapping into ``RunResult.tracking``; the MLflow plugin returns
        ``{"mlflow.parent_run_id": ...}``. Use keys prefixed with the plugin's name.

    May not start training or write into the job folders.
    """


@hookspec
def avnbench_fold_started(run: "RunInfo", job: "FoldJob") -> None:
    """A fold's computation (fit, then predict) is about to start.

    Not called for a fold whose finished result is reused (see :func:`avnbench_fold_finished`).

    :param run: the run the fold belongs to.
    :param job: the fold's job: its fold index, training/validation case ids, work folder.

    May not read or write ``job.job_dir``: the method owns it until the fold finishes.
    """


@hookspec
def avnbench_training_event(run: "RunInfo", job: "FoldJob", event: "TrainingEvent") -> None:
    """A training method reported an epoch (or a point of a curve) while it fits.

    Called synchronously, from inside the method's ``fit``, each time it calls
    ``TrainingLog.epoch`` or ``TrainingLog.metric``: the time it takes is training time, so an
    implementation must be quick (one write to a store, one line of output).

    :param run: the run the fold belongs to.
    :param job: the fold being trained.
    :param event: ``event.epoch`` (1-based), ``event.total`` (planned epochs, or None),
        ``event.values`` (losses and validation scores by name; tracked as ``train/<name>``)
        and ``event.seconds`` since the fit's first report.

    May not touch the method or its work folder. An exception stops the fit and aborts the run,
    like any lifecycle hook's, so only raise for a failure the run cannot go on without.
    """


@hookspec
def avnbench_fold_finished(
    run: "RunInfo", job: "FoldJob", result: "FoldResult", metrics: Mapping[str, float], reused: bool
) -> None:
    """A fold has its result: computed now, or reused from an earlier run.

    :param run: the run the fold belongs to.
    :param job: the fold's job; ``job.job_dir`` holds its predictions, ``training_log.jsonl``,
        ``training_params.json`` and ``artifacts/``, which the hook may read.
    :param result: the fold's per-case rows, fit and predict seconds.
    :param metrics: the fold's aggregate metrics (means over its cases, no bootstrap) plus
        ``fit_seconds`` and ``predict_seconds_per_case``.
    :param reused: True when the result was computed by an earlier run and only re-reported
        (then :func:`avnbench_fold_started` was not called for it).

    May not change ``result`` or the files of ``job.job_dir``.
    """


@hookspec
def avnbench_run_finished(
    run: "RunInfo", rows: Sequence[Mapping[str, Any]], summary: Any, metrics: Mapping[str, float]
) -> None:
    """Every fold of the run has its result and the run's statistics are computed.

    :param run: the run.
    :param rows: per-case rows of every fold (case_id, patient_id, fold, the case metrics).
    :param summary: the run statistics (:mod:`avnbench.evaluation.statistics`), with ``metrics``,
        ``tables`` and ``notes``.
    :param metrics: the headline metrics with ``_sd``, ``_ci_low``, ``_ci_high`` and the cost
        metrics, as in DESIGN.md.

    Last hook of a successful run. May not change ``rows``, ``summary`` or ``metrics``.
    """


@hookspec
def avnbench_run_aborted(run: "RunInfo", reason: str) -> None:
    """The run stops before :func:`avnbench_run_finished`: an error or an interrupt (Ctrl-C).

    Finished folds keep their results on disk, so the same command resumes the run.

    :param run: the run.
    :param reason: one line: the exception's type and message.

    Must not raise: the original error is what the user has to see. Called at most once.
    """
