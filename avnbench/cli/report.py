"""``avnbench report``: the seed studies regenerated from MLflow runs, beside their published figures."""

from __future__ import annotations

from pathlib import Path

import click

from avnbench.cli import cli


@cli.command()
@click.option("--tracking-uri", default=None, help="MLflow store. Default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db.")
@click.option("--dataset", default=None, help="Only this dataset (MLflow experiment). Default: every dataset of the store.")
@click.option("--workdir", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="The runs' work folder, read for the probability maps of runs made before the voxel ROC "
                   "was recorded with them (seed 003).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("reports"), show_default=True)
def report(tracking_uri: str | None, dataset: str | None, workdir: Path | None, out_dir: Path) -> None:
    """Write reports/<dataset>/ (README.md, index.html, report.json, figures/): each seed study's
    results regenerated from the latest comparable runs, beside the published figures."""
    from rich.table import Table

    from avnbench.cli.display import console
    from avnbench.errors import AvnbenchError
    from avnbench.reporting.report import build_reports, write_report
    from avnbench.reporting.tracking import default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    reports = build_reports(uri, dataset, workdir)
    if not reports:
        raise AvnbenchError(f"no finished avnbench runs in {uri}; run 'avnbench run --method ...' first")
    for rep in reports:
        files = write_report(rep, out_dir)
        t = Table(title=f"{rep.dataset}" + (" (SYNTHETIC PHANTOM, not clinical results)" if rep.synthetic else ""))
        for col in ("seed", "study", "runs"):
            t.add_column(col)
        for study in rep.studies:
            runs = ", ".join(m.method if m.row is not None else f"{m.method} (not run)" for m in study.methods)
            t.add_row(study.key, study.title, runs)
        console.print(t)
        console.print("written: " + ", ".join(str(f) for f in files[:3]) + f" and {len(files) - 3} figure(s)")
