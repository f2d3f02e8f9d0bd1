"""``avnbench ui``: MLflow's own UI on the same store, bound to 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys

import click

from avnbench.cli import cli


@cli.command()
@click.option("--tracking-uri", default=None, help="MLflow store. Default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind; change only on purpose.")
@click.option("--port", default=5000, show_default=True)
def ui(tracking_uri: str | None, host: str, port: int) -> None:
    """Open MLflow's UI on the avnbench tracking store."""
    from avnbench.cli.display import console
    from avnbench.reporting.tracking import artifact_root_for, default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    root = artifact_root_for(uri)
    if root:
        cmd += ["--default-artifact-root", root]
    console.print(f"MLflow UI on http://{host}:{port} (store {uri}); Ctrl-C stops it")
    raise SystemExit(subprocess.call(cmd, env=os.environ.copy()))
