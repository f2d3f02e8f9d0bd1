"""Executors: where the steps of an :class:`~avnbench.planning.InvocationPlan` run.

The runner's driver loop (:func:`avnbench.runner.run_invocation`) decides what runs when (a step
starts once the steps it comes ``after`` have finished) and is the only caller of the lifecycle
hooks, hence the only MLflow writer. An executor only runs steps and reports back, through the
driver's callback, a :class:`StepReport` per thing that happens: ``started``, ``progress`` (a
:class:`~avnbench.runner.RunEvent`), ``training`` (a :class:`~avnbench.methods.TrainingEvent`),
then ``finished`` (the fold's :class:`~avnbench.jobs.FoldResult`; None for a prepare step) or
``failed`` (the exception).

- :class:`LocalExecutor`: in this process, one step at a time, in plan order (as avnbench always
  ran); reports are delivered while the step runs.
- :class:`RayExecutor`: every step is a Ray task asking for the step's CPUs, GPUs and memory;
  workers stream their reports to a small Ray actor that the driver empties while it waits.
"""

from __future__ import annotations

import os
import pickle
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from avnbench.errors import AvnbenchError, ConfigError, DataError
from avnbench.planning import PlannedStep

RAY_MAX_RETRIES = 2  # re-runs of a step whose worker or node died (never of a method's own error)
POLL_SECONDS = 0.5
TOTALS_REFRESH_SECONDS = 30.0  # how often has_room asks Ray for the cluster's cores and GPUs
ReportKind = Literal["started", "progress", "training", "finished", "failed"]


class JobLostError(AvnbenchError):
    """A step's worker or node died more often than it is retried."""


@dataclass(frozen=True)
class StepReport:
    """One thing that happened to a step: see the module docstring for the kinds."""

    key: str
    kind: ReportKind
    payload: Any = None


Report = Callable[[StepReport], None]


class _OneMethod:
    """The part of a :class:`~avnbench.plugins.Registry` a worker needs: one method's entry."""

    def __init__(self, entry: Any):
        self.entry = entry

    def get(self, name: str) -> Any:
        return self.entry


def run_step(step: PlannedStep, entry: Any, report: Report) -> Any:
    """Run one step here: a fold job through :func:`~avnbench.runner.run_fold_job`, or the
    method's ``prepare``; reports ``started``, ``progress`` and ``training``, returns the result."""
    from avnbench.runner import run_fold_job

    report(StepReport(step.key, "started"))
    if step.job is None:
        config = entry.cls.Config.model_validate(step.config)
        entry.cls.prepare(step.prepare, config, step.device)
        return None
    return run_fold_job(
        step.job, _OneMethod(entry),
        progress=lambda event: report(StepReport(step.key, "progress", event)),
        training_listener=lambda event: report(StepReport(step.key, "training", event)),
    )


# --- local ------------------------------------------------------------------------------------


class LocalExecutor:
    """Steps run in this process, one at a time, in the order they were submitted.

    Room for one step at a time, so the driver hands out one step at a time and the order (and
    every hook call) is the plan's: a method's folds in order, each method after the previous
    one. A method's exception (``Exception``) is reported as ``failed``; an interrupt propagates.
    """

    name = "local"
    keeps_going = False  # after a fold fails, the method's remaining folds are not started
    gpus_elsewhere = False  # --device cuda needs a GPU here

    def __init__(self) -> None:
        self._queue: list[tuple[PlannedStep, Any]] = []

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        self._queue.clear()

    def running(self) -> int:
        return len(self._queue)

    def has_room(self, step: PlannedStep) -> bool:
        """Whether ``step`` may be submitted now: only when nothing else is."""
        return not self._queue

    def check(self, steps: list[PlannedStep]) -> None:
        """Nothing to check: this machine runs whatever the plan holds."""

    def submit(self, step: PlannedStep, entry: Any) -> None:
        self._queue.append((step, entry))

    def wait(self, report: Report) -> None:
        """Run the first submitted step to its end."""
        step, entry = self._queue.pop(0)
        try:
            result = run_step(step, entry, report)
        except Exception as e:
            report(StepReport(step.key, "failed", e))
            return
        report(StepReport(step.key, "finished", result))

    def cancel_all(self) -> None:
        self._queue.clear()


# --- Ray ------------------------------------------------------------------------------------------


class _Mailbox:
    """A Ray actor holding the reports workers send until the driver takes them (in the order
    each worker sent them: one caller's calls to an actor run in order)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, Any]] = []

    def put(self, item: tuple[str, str, Any]) -> None:
        self.items.append(item)

    def take(self) -> list[tuple[str, str, Any]]:
        items, self.items = self.items, []
        return items


def _ray_step(step: PlannedStep, entry: Any, mailbox: Any) -> tuple[str, Any]:
    """The body of a step's Ray task: check the dataset is visible here, run the step, and turn
    the method's own exception into a returned ``failed`` (so Ray never retries it).

    Reports are sent without waiting (a task blocked in ``ray.get`` lends its CPU to another
    task, which would oversubscribe the cores); the last one is waited for before the task
    returns, so the driver has every report of a step before its end."""
    import ray

    last: list[Any] = []

    def report(r: StepReport) -> None:
        last[:] = [mailbox.put.remote((r.key, r.kind, r.payload))]

    try:
        _check_visible(step)
        outcome: tuple[str, Any] = ("finished", run_step(step, entry, report))
    except Exception as e:
        outcome = ("failed", _portable(e))
    if last:
        ray.get(last[0])
    return outcome


def _check_visible(step: PlannedStep) -> None:
    """A DataError naming this node unless the step's dataset (and test dataset) and work folder
    are visible here."""
    dataset = step.job.dataset_dir if step.job is not None else step.prepare.dataset_dir
    shared = step.job.shared_dir if step.job is not None else step.prepare.shared_dir
    work = shared.parent  # <workdir>/<dataset>, made by the driver before any step is submitted
    folders = [("dataset folder", dataset), ("work folder", work)]
    if step.is_test:
        folders.append(("test dataset folder", step.job.test_dataset_dir))
    for what, folder in folders:
        if not folder.is_dir():
            import ray

            raise DataError(
                f"{step.key}: {what} {folder} is not visible on node {ray.util.get_node_ip_address()} "
                f"({socket.gethostname()}); put the dataset and --workdir on a filesystem every node "
                "mounts at the same path (docs/cluster.md)"
            )


def _portable(e: Exception) -> Exception:
    """``e`` if it survives pickling (to travel back to the driver), else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")


class RayExecutor:
    """Steps run as Ray tasks on a local Ray instance or an existing cluster.

    ``address`` None starts a local Ray sized to this machine (``num_cpus`` = its cores) and shuts
    it down at the end; ``auto`` or ``host:port`` joins a running cluster (``ray start``). If Ray
    is already initialised in this process, it is used as it is and left running.
    """

    name = "ray"
    keeps_going = True  # a failed fold does not stop the others
    gpus_elsewhere = True  # --device cuda: the cluster's GPUs count (see check), not this machine's

    def __init__(self, address: str | None = None, runtime_env: dict[str, Any] | None = None):
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'avnbench[ray]' (or 'ray>=2.9')") from None
        self._ray = ray
        self._address = address
        self._runtime_env = runtime_env
        self._owns = False
        self._mailbox: Any = None
        self._refs: dict[Any, PlannedStep] = {}
        self._task: Any = None
        self._totals: dict[str, float] = {}
        self._totals_at = float("-inf")

    def __enter__(self) -> "RayExecutor":
        ray = self._ray
        if not ray.is_initialized():
            import logging

            # workers' output stays in Ray's logs (the dashboard shows it); the CLI prints progress
            kwargs: dict[str, Any] = {"log_to_driver": False, "runtime_env": self._runtime_env,
                                      "logging_level": logging.WARNING}
            try:
                if self._address:
                    ray.init(address=self._address, **kwargs)
                else:
                    ray.init(address="local", num_cpus=len(os.sched_getaffinity(0)) or 1, **kwargs)
            except ConnectionError as e:
                raise ConfigError(f"cannot join the Ray cluster at {self._address!r} ({e}); start one with "
                                  "'ray start --head' or drop --ray-address") from None
            self._owns = True
        self._mailbox = ray.remote(num_cpus=0)(_Mailbox).remote()
        self._task = ray.remote(max_retries=RAY_MAX_RETRIES, retry_exceptions=False)(_ray_step)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._refs:
            self.cancel_all()
        if self._mailbox is not None:
            try:
                self._ray.kill(self._mailbox)
            except Exception:  # the cluster may already be gone; nothing left to release
                pass
        if self._owns:
            self._ray.shutdown()

    def running(self) -> int:
        return len(self._refs)

    def has_room(self, step: PlannedStep) -> bool:
        """Whether the cluster's cores and GPUs, less those the submitted steps asked for, hold
        ``step`` (always, when nothing is submitted).

        Ray does not start queued tasks in submission order: given a 1-core and a 2-core task it
        starts the 1-core one whenever a core frees, so a step that asks for more cores (nnU-Net's
        preprocessing, which every nnU-Net fold waits on) can be overtaken until the smaller ones
        run out (4 minutes of the main command once). Submitting only what fits keeps the plan's
        order; a step that fits the cluster's sum but no one node waits inside Ray."""
        if not self._refs:
            return True
        if time.monotonic() - self._totals_at > TOTALS_REFRESH_SECONDS:  # nodes may join or leave
            self._totals = self._ray.cluster_resources()
            self._totals_at = time.monotonic()
        used_cpus = sum(s.resources.num_cpus for s in self._refs.values())
        used_gpus = sum(s.resources.num_gpus for s in self._refs.values())
        return (used_cpus + step.resources.num_cpus <= self._totals.get("CPU", 0) + 1e-9
                and used_gpus + step.resources.num_gpus <= self._totals.get("GPU", 0) + 1e-9)

    def check(self, steps: list[PlannedStep]) -> None:
        """A ConfigError if a step asks for more CPUs, GPUs or memory than any one node of the
        cluster has (Ray would otherwise wait for such a node forever)."""
        nodes = [n.get("Resources", {}) for n in self._ray.nodes() if n.get("Alive")]
        for step in steps:
            r = step.resources
            wanted = {"CPU": r.num_cpus, "GPU": r.num_gpus, "memory": r.memory_mb * 2**20}
            if any(all(node.get(name, 0) >= want for name, want in wanted.items()) for node in nodes):
                continue
            for name, unit, scale in (("GPU", "GPU(s)", 1), ("CPU", "core(s)", 1), ("memory", "MiB", 2**20)):
                largest = max((node.get(name, 0) for node in nodes), default=0)
                if wanted[name] > largest:
                    hint = " (use --device cpu, or add GPU nodes)" if name == "GPU" else ""
                    raise ConfigError(
                        f"{step.key} asks for {wanted[name] / scale:g} {unit} of {name} but no node of the Ray "
                        f"cluster has more than {largest / scale:g}{hint}"
                    )
            raise ConfigError(f"{step.key} asks for {r.num_cpus:g} core(s), {r.num_gpus:g} GPU(s) and "
                              f"{r.memory_mb} MiB, which no node of the Ray cluster has at once")

    def submit(self, step: PlannedStep, entry: Any) -> None:
        r = step.resources
        options = {"num_cpus": r.num_cpus, "num_gpus": r.num_gpus, "name": step.key}
        if r.memory_mb:
            options["memory"] = int(r.memory_mb) * 2**20
        ref = self._task.options(**options).remote(step, entry, self._mailbox)
        self._refs[ref] = step

    def wait(self, report: Report) -> None:
        """Deliver the reports workers sent, then those of the steps that ended, for up to
        :data:`POLL_SECONDS`."""
        ray = self._ray
        done, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=POLL_SECONDS)
        self._drain(report)  # a task waits for its last report to arrive before it returns
        for ref in done:
            step = self._refs.pop(ref)
            try:
                kind, payload = ray.get(ref)
            except ray.exceptions.RayError as e:  # worker or node died more often than retried
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                kind, payload = "failed", JobLostError(
                    f"{step.key}: its Ray worker was lost {RAY_MAX_RETRIES + 1} times ({type(e).__name__}: "
                    f"{first}); finished folds are kept, run the same command again to resume"
                )
            report(StepReport(step.key, kind, payload))

    def _drain(self, report: Report) -> None:
        for key, kind, payload in self._ray.get(self._mailbox.take.remote()):
            report(StepReport(key, kind, payload))

    def cancel_all(self) -> None:
        """Stop every running or waiting task (Ctrl-C): finished folds keep their result.json.

        Not ``force``: a running task gets a KeyboardInterrupt, as a local run would, so that a
        method can stop what it started (nnU-Net kills its training process)."""
        for ref in list(self._refs):
            try:
                self._ray.cancel(ref, force=False)
            except Exception:  # already finished or gone
                pass
        self._refs.clear()


def make_executor(name: str, ray_address: str | None = None) -> LocalExecutor | RayExecutor:
    """The executor called ``name`` (``local`` or ``ray``)."""
    if name == "local":
        if ray_address:
            raise ConfigError("--ray-address needs --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(ray_address)
    raise ConfigError(f"unknown executor {name!r}. Available: local, ray")
