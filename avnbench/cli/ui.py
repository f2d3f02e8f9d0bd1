"""``avnbench ui``: MLflow's own UI on the same store, bound to 127.0.0.1, opened on the runs.

MLflow 3 has no server-side default columns: the runs table shows Source, Models and Dataset until
a user picks more, and remembers the pick in the browser. What it does read is a *shared view*: an
experiment tag ``mlflow.sharedViewState.<key>`` holding the table's state as JSON, applied when the
URL carries ``viewStateShareKey=<key>`` (its "Share" button makes them). ``avnbench ui`` writes one
with the headline metrics as columns, sorted by necrosis Dice, and opens the runs view with it.

MLflow's server runs in a session of its own (it starts uvicorn, which starts workers), so that
Ctrl-C or SIGTERM here stops the whole process group and leaves nothing listening.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import click

from avnbench.cli import cli

# MLflow 3's UI defaults to its GenAI workflow (overview, traces); this search parameter of its
# hash routes selects the classic machine-learning one, whose experiment page is the runs table.
ML_WORKFLOW = "workflowType=machine_learning"
VIEW_KEY = "avnbench-headline"
VIEW_TAG = "mlflow.sharedViewState." + VIEW_KEY
HEADLINE_PARAMS = ("method", "preset", "folds")
# Newest first: the UI nests fold runs under their parent only when sorted by start time.
ORDER_BY = "attributes.start_time"
STOP_GRACE_S = 10.0  # SIGTERM → SIGKILL, seconds
STARTUP_TIMEOUT_S = 120.0


def headline_metrics() -> list[str]:
    """The runs table's metric columns: the leaderboard's ranked metrics (primary first), then
    the registry's other headline metrics (installed plugins' included)."""
    from avnbench.evaluation.metrics import collect_metrics
    from avnbench.plugins import load_registry

    registry = collect_metrics(load_registry().pm)
    return list(dict.fromkeys(d.name for d in registry.ranked() + registry.headline() if "{class}" not in d.name))


def runs_url(base: str, experiment_id: str | None, view_key: str | None = None) -> str:
    """The UI's runs table of one experiment (with the shared view ``view_key``), or its experiment
    list when there is none."""
    if experiment_id is None:
        return f"{base}/#/experiments?{ML_WORKFLOW}"
    view = f"&viewStateShareKey={view_key}" if view_key else ""
    return f"{base}/#/experiments/{experiment_id}/runs?{ML_WORKFLOW}{view}"


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"  # the UI's canonical column key


def headline_view(metric_keys: set[str]) -> dict:
    """The runs table's shared view state: the Source and Dataset columns, the run's method, preset
    and folds, and the headline metrics among ``metric_keys``; newest run first."""
    metrics = [m for m in headline_metrics() if m in metric_keys]
    return {
        "searchFilter": "",
        "orderByKey": ORDER_BY,
        "orderByAsc": False,
        "selectedColumns": [_column("attributes", a) for a in ("Source", "Dataset")]
        + [_column("params", p) for p in HEADLINE_PARAMS] + [_column("metrics", m) for m in metrics],
    }


def share_headline_view(client, experiment) -> str:
    """Tag ``experiment`` with the headline view (and the runs-table experiment kind if it has no
    kind); returns the view's key for :func:`runs_url`."""
    import json

    from avnbench.reporting.mlflow_store import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    runs = client.search_runs([experiment.experiment_id], max_results=200)
    keys = {k for r in runs for k in r.data.metrics}
    client.set_experiment_tag(experiment.experiment_id, VIEW_TAG, json.dumps(headline_view(keys)))
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return VIEW_KEY


def pick_experiment(client, name: str | None):
    """The experiment named ``name``; by default the one of the latest run, else the newest (or None)."""
    from avnbench.errors import ConfigError

    experiments = [e for e in client.search_experiments(order_by=["last_update_time DESC"]) if e.name != "Default"]
    if name is None:
        if not experiments:
            return None
        latest = client.search_runs([e.experiment_id for e in experiments], order_by=["attributes.start_time DESC"],
                                    max_results=1)
        if latest:
            return next(e for e in experiments if e.experiment_id == latest[0].info.experiment_id)
        return experiments[0]
    for e in experiments:
        if e.name == name:
            return e
    known = ", ".join(e.name for e in experiments) or "none yet"
    raise ConfigError(f"no experiment {name!r} in the tracking store. Experiments (one per dataset): {known}")


def _check_port_free(host: str, port: int) -> None:
    from avnbench.errors import ConfigError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror}); pass a free --port") from None


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_server(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """Stop the server's whole process group: SIGTERM, then SIGKILL after ``grace_s`` seconds."""
    pgid = proc.pid  # start_new_session=True: the server leads its own group
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace_s
    try:
        while time.monotonic() < deadline:
            proc.poll()
            if proc.returncode is not None and not _group_alive(pgid):
                return
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass  # a second Ctrl-C: stop waiting
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@cli.command()
@click.option("--tracking-uri", default=None, help="MLflow store. Default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind; change only on purpose.")
@click.option("--port", default=5000, show_default=True)
@click.option("--experiment", default=None, help="Experiment (dataset name) to open. Default: the one updated last.")
@click.option("--browser/--no-browser", default=True, show_default=True, help="Open the runs view in a web browser.")
def ui(tracking_uri: str | None, host: str, port: int, experiment: str | None, browser: bool) -> None:
    """Open MLflow's UI on the avnbench tracking store, on the runs of an experiment."""
    from avnbench.cli.display import console
    from avnbench.reporting.tracking import (
        artifact_root_for,
        client_for,
        default_tracking_uri,
    )

    uri = tracking_uri or default_tracking_uri()
    client = client_for(uri)
    exp = pick_experiment(client, experiment)
    _check_port_free(host, port)
    base = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    url = runs_url(base, exp.experiment_id if exp else None, share_headline_view(client, exp) if exp else None)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
           "--workers", "1"]
    root = artifact_root_for(uri)
    if root:
        cmd += ["--default-artifact-root", root]
    env = os.environ.copy()
    # GenAI job runners (judges, trace roll-ups) are of no use to a benchmark's runs.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if exp is None:
        console.print(f"no experiment in {uri} yet: `avnbench run` creates one per dataset")
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while proc.poll() is None and not _answers(f"{base}/health"):
            if time.monotonic() > deadline:
                raise click.ClickException(f"MLflow's server did not answer on {base} within {STARTUP_TIMEOUT_S:.0f} s")
            time.sleep(0.25)
        if proc.returncode is not None:
            raise click.ClickException(f"MLflow's server exited with status {proc.returncode} (store {uri})")
        target = f"runs of {exp.name!r}" if exp else "experiment list"
        console.print(f"MLflow UI ({target}, store {uri}): {url}", soft_wrap=True)
        console.print("Ctrl-C stops it")
        if browser:
            import webbrowser

            webbrowser.open(url)
        code = proc.wait()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM through the CLI's handler
        stop_server(proc)
        console.print("MLflow UI stopped")
        return
    finally:
        if proc.returncode is None:
            stop_server(proc)
    if code:
        raise click.ClickException(f"MLflow's server exited with status {code} (store {uri})")
