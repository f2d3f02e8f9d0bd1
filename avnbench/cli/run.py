"""``avnbench run``: run methods over the folds of a dataset into MLflow."""

from __future__ import annotations

import os
from pathlib import Path

import click

from avnbench.cli import cli

CPU_PHANTOM = (24, (40, 80, 80))
GPU_PHANTOM = (40, (80, 160, 160))


def default_cache_dir() -> Path:
    """Where the built-in phantom is generated once: ``$AVNBENCH_CACHE`` or ``~/.cache/avnbench``."""
    base = os.environ.get("AVNBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "avnbench"
    )
    return Path(base)


def builtin_phantom(device: str, cases: int | None, shape: tuple[int, int, int] | None, progress=None) -> Path:
    """The built-in phantom dataset, generated into the cache folder on first use.

    On a GPU the full default (40 cases, 80×160×160); on a CPU a half-resolution one (24 cases,
    40×80×80) so that the whole benchmark fits in half an hour. The dataset's name says which.
    """
    from avnbench.data.dataset import load_dataset
    from avnbench.data.phantom.plan import dataset_name

    n_default, shape_default = GPU_PHANTOM if device == "cuda" else CPU_PHANTOM
    n, shp = cases or n_default, tuple(shape or shape_default)
    # named as the dataset is (generator version included), so a new phantom version is generated
    # anew instead of an older one being reused from the cache
    folder = default_cache_dir() / "datasets" / dataset_name(n, 0, shp)
    if not (folder / "cases.json").exists():
        _generate_once(folder, n, shp, progress)
    return load_dataset(folder).root


def _generate_once(folder: Path, n: int, shape: tuple[int, int, int], progress) -> None:
    """Generate into a folder of this process's own, then move it into place; two commands
    started at once (two terminals, two CI jobs) each generate, and the second keeps the first's."""
    import shutil

    from avnbench.data.files import temporary_sibling
    from avnbench.data.phantom import synthesize

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(folder)
    try:
        synthesize(tmp, n_cases=n, seed=0, shape=shape, force=True, progress=progress)
        try:
            tmp.replace(folder)
        except OSError:
            if not (folder / "cases.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def parse_folds(text: str | None) -> list[int] | None:
    """``"0,2"`` → [0, 2]; None or ``all`` → None (every fold)."""
    from avnbench.errors import ConfigError

    if text is None or text.strip().lower() == "all":
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--folds takes fold numbers like 0 or 0,2 or all, not {text!r}") from None


def collect_overrides(registry, names, set_items, config_file, cpu_threads, num_workers):
    """The invocation's overrides (file, then ``--set``, then the shortcuts), checked against the
    configs of the methods it runs before any work starts."""
    from avnbench.overrides import Overrides, load_config_file, parse_set

    overrides = Overrides()
    if config_file is not None:
        from_file = load_config_file(config_file, registry.names())
        # a file may hold sections for several methods; those not run now are left for later
        from_file.scoped = {m: v for m, v in from_file.scoped.items() if m in names or m not in registry.names()}
        overrides = overrides.merged(from_file)
    overrides = overrides.merged(parse_set(set_items))
    shortcuts = {k: v for k, v in (("cpu_threads", cpu_threads), ("num_workers", num_workers)) if v is not None}
    overrides = overrides.merged(Overrides(shared=shortcuts))
    configs = {name: registry.get(name).cls.Config for name in names}
    overrides.check_against(configs)
    from avnbench.overrides import resolve_config

    for name in names:  # a bad value fails now, not after other methods have trained
        resolve_config(name, configs[name], "smoke", 0, overrides.for_method(name, configs[name]))
    return overrides


@cli.command()
@click.option("--method", "method_names", multiple=True, required=True,
              help="Method name (repeatable), or 'all' for every registered method.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=None,
              help="Dataset folder. Default: the built-in phantom, generated once into the cache.")
@click.option("--test-data", "test_data_dir", type=click.Path(path_type=Path), default=None,
              help="Another dataset (same labels; no split needed): each fold's model, trained on --data, also "
              "predicts all of its cases, scored and logged as a run of its own (experiment <data>--test-<test>). "
              "See docs/domains.md.")
@click.option("--preset", type=click.Choice(["smoke", "quick", "paper"]), default="quick", show_default=True)
@click.option("--folds", default=None, help="Folds to run, e.g. 0 or 0,2. Default: all.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("avnbench-work"), show_default=True,
              help="Folder for models, predictions and logs of every job.")
@click.option("--tracking-uri", default=None, help="MLflow store. Default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db.")
@click.option("--seed", default=0, show_default=True, help="Seed of the methods and internal validation splits.")
@click.option("--phantom-cases", type=int, default=None, help="Built-in phantom only: number of cases.")
@click.option("--phantom-shape", type=int, nargs=3, default=None, help="Built-in phantom only: Z Y X voxels.")
@click.option("--bootstrap", default=1000, show_default=True, help="Bootstrap resamples for CIs.")
@click.option("--set", "set_items", multiple=True, metavar="[METHOD.]FIELD=VALUE",
              help="Override a config field on top of the preset (repeatable): FIELD=VALUE for every "
              "method that has the field, METHOD.FIELD=VALUE for one. Values are YAML (3, 0.5, true, [1, 2]).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
              help="YAML or JSON file of overrides: fields, and/or method names mapping to fields.")
@click.option("--cpu-threads", type=click.IntRange(min=1), default=None,
              help="Torch CPU threads of every method that has the setting (same as --set cpu_threads=N).")
@click.option("--num-workers", type=click.IntRange(min=0), default=None,
              help="Data-loading workers of every method that has the setting (same as --set num_workers=N).")
@click.option("--executor", "executor_name", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where the (method, fold) jobs run: in this process one after another, or as Ray tasks "
              "side by side (pip install 'avnbench[ray]'; see docs/cluster.md).")
@click.option("--ray-address", default=None, metavar="auto|HOST:PORT",
              help="--executor ray: join this Ray cluster ('auto': the one 'ray start' made on this machine). "
              "Default: start a local Ray sized to this machine.")
def run(method_names, data_dir, test_data_dir, preset, folds, device, workdir, tracking_uri, seed, phantom_cases,
        phantom_shape, bootstrap, set_items, config_file, cpu_threads, num_workers, executor_name, ray_address):
    """Fit and predict METHOD on every fold of a dataset, score it and log it to MLflow.

    With --test-data, each fold's model is also scored on every case of that dataset (train on
    one dataset, test on another). Re-running the same command resumes: folds already finished
    are skipped.
    """
    from avnbench.cli.display import console, err_console, run_progress
    from avnbench.cli.methods import print_plugin_problems
    from avnbench.data.dataset import load_dataset
    from avnbench.data.splits import ensure_splits
    from avnbench.errors import AvnbenchError
    from avnbench.planning import check_test_dataset
    from avnbench.plugins import load_registry
    from avnbench.runner import order_methods, resolve_device, run_benchmark
    from avnbench.workfolder import check_work_folder
    from avnbench.reporting.tracking import client_for, default_tracking_uri

    from avnbench.executors import make_executor

    executor = make_executor(executor_name, ray_address)  # a bad combination fails before any work
    registry = load_registry()
    names = registry.names() if "all" in method_names else list(dict.fromkeys(method_names))
    print_plugin_problems(registry, running=names)
    for name in names:
        registry.get(name)  # unknown names fail before any work starts
    names = order_methods(names, registry)  # members before the methods that build on them
    overrides = collect_overrides(registry, names, set_items, config_file, cpu_threads, num_workers)
    fold_list = parse_folds(folds)
    dev = resolve_device(device, gpus_elsewhere=executor.gpus_elsewhere)
    if data_dir is None:
        with run_progress() as progress:
            task = progress.add_task("generating the built-in phantom", total=None)
            data_dir = builtin_phantom(dev, phantom_cases, phantom_shape,
                                       progress=lambda done, total: progress.update(task, completed=done, total=total))
    # A bad dataset, split or work folder fails here, before anything is written anywhere.
    train_dataset = load_dataset(data_dir)
    ensure_splits(train_dataset)
    if test_data_dir is not None:
        test_dataset = check_test_dataset(train_dataset, test_data_dir)
        console.print(f"testing every fold's model on all {len(test_dataset)} cases of {test_dataset.name}")
    check_work_folder(workdir)
    uri = tracking_uri or default_tracking_uri()
    client_for(uri)  # a store that cannot be opened fails here, in one line, before any training
    console.print(f"MLflow store: {uri}")
    if executor_name != "local":
        overrides_by_method = {name: overrides.for_method(name, registry.get(name).cls.Config) for name in names}
        return _run_on(executor, names, data_dir, workdir, preset, fold_list, dev, seed, uri, registry, bootstrap,
                       overrides_by_method, test_data_dir)
    failures = []
    for name in names:
        results = []  # the folds' run, then (with --test-data) the test run
        try:
            with run_progress() as progress:
                run_benchmark(
                    name, data_dir, workdir, preset=preset, folds=fold_list, device=dev, seed=seed,
                    tracking_uri=uri, registry=registry, progress=labelled(progress.on_event), n_bootstrap=bootstrap,
                    config_overrides=overrides.for_method(name, registry.get(name).cls.Config),
                    test_dataset_dir=test_data_dir, on_result=results.append,
                )
        except AvnbenchError as e:
            for result in results:  # a run that finished before the error still shows
                show_result(result)
            if len(names) == 1:
                raise
            failures.append(name)
            err_console.print(f"[red]error:[/red] {name}: {e}")
            continue
        for result in results:
            show_result(result)
    if failures:
        raise click.ClickException(f"{len(failures)} method(s) failed: {', '.join(failures)}")


def show_result(result) -> None:
    """A run's table of headline metrics (a test run's title names both datasets)."""
    from avnbench.cli.display import console, result_table
    from avnbench.reporting.tracking import REUSED_REF

    table = result_table(result)
    if result.test_dataset is not None:
        tag = " (SYNTHETIC PHANTOM)" if result.synthetic else ""
        table.title = escape(f"{result.method} [{result.preset}] trained on {result.dataset}, tested on all cases "
                             f"of {result.test_dataset}{tag}: models of folds {result.folds}")
    console.print(table)
    if result.tracking.get(REUSED_REF) == "true":
        console.print(f"nothing new computed: MLflow run {result.parent_run_id} already holds these results")


def labelled(on_event):
    """``on_event`` with a test run's reports under ``<method> → <test dataset>``, so that its
    lines and bars are not taken for the validation folds'."""
    def forward(event) -> None:
        if event.test_dataset is not None:
            event = event.model_copy(update={"method": f"{event.method} → {event.test_dataset}"})
        on_event(event)

    return forward


def _run_on(executor, names, data_dir, workdir, preset, fold_list, dev, seed, uri, registry, bootstrap, overrides,
            test_data_dir=None):
    """Every method as one plan on ``executor``: tables as methods finish, each failed job in one line."""
    from avnbench.cli.display import console, err_console
    from avnbench.driver import run_invocation

    console.print(f"executor: {executor.name}; {len(names)} method(s): {', '.join(names)}")
    outcome = run_invocation(
        names, data_dir, workdir, preset, fold_list, dev, seed, uri, registry, labelled(EventLines(console)), bootstrap,
        overrides, executor=executor, on_result=show_result, test_dataset_dir=test_data_dir,
    )
    for failure in outcome.failures:
        err_console.print(f"[red]error:[/red] {escape(failure.message)}")
    if outcome.failures:
        raise click.ClickException(
            f"{len(outcome.failures)} job(s) failed; the finished folds are kept: run the same command again to "
            "resume after fixing the cause"
        )


class EventLines:
    """Progress of jobs that run side by side, one line per event (no live bars: many folds of
    several methods move at once); epoch lines at most every ``every`` seconds per fold."""

    def __init__(self, console, every: float = 30.0):
        import time

        self.console, self.every, self.clock = console, every, time.monotonic
        self.last: dict[tuple[str, int | None], float] = {}
        self.started: dict[tuple[str, int | None], float] = {}

    def __call__(self, event) -> None:
        where = f"{event.method} fold {event.fold}" if event.fold is not None else event.method
        text = {
            "run_started": f"{event.method}: {event.total} fold(s)",
            "preparing": f"{event.method}: preparing the dataset (once, before its folds)",
            "prepared": f"{event.method}: prepared",
            "fold_started": f"{where}: started",
            "fold_skipped": f"{where}: already finished, reused",
            "fitted": f"{where}: fitted in {event.message}, predicting",
            "fold_finished": f"{where}: done",
            "warning": f"[yellow]warning:[/yellow] {escape(event.message)}",
            "fold_failed": f"[red]failed:[/red] {escape(event.message)}",
        }.get(event.kind)
        now, key = self.clock(), (event.method, event.fold)
        if event.kind == "fitting":
            self.started[key] = now
        if event.kind == "epoch":
            from avnbench.cli.display import epoch_line

            if now - self.last.get(key, -1e9) >= self.every or (event.total and event.done >= event.total):
                self.last[key] = now
                text = f"{where}: {epoch_line(event.done, event.total, event.values, now - self.started.get(key, now))}"
        if text:
            self.console.print(text, highlight=False)


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)
