"""``avnbench score``: score a folder of predicted label maps against a dataset."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from avnbench.cli import cli

def _segmentation_rows():
    """Case metrics of the summary table, in registry order (each with its n and median/IQR)."""
    from avnbench.evaluation.metrics import default_metrics

    return [d for d in default_metrics().case_metrics("segmentation")]


def _agreement_rows():
    """Scores over all cases (correlations, grade agreement) of the summary table."""
    from avnbench.evaluation.metrics import default_metrics

    return [d for d in default_metrics().for_task("segmentation")
            if d.aggregation == "statistic" and d.higher_is_better is not None]


@cli.command()
@click.option("--pred", "pred_dir", required=True, type=click.Path(path_type=Path),
              help="Folder of predicted label maps, one {case}.nii.gz per case.")
@click.option("--ref", "dataset_dir", required=True, type=click.Path(path_type=Path),
              help="The avnbench dataset folder with the reference labels.")
@click.option("--out", "out_csv", type=click.Path(path_type=Path), default=None,
              help="Per-case CSV to write. Default: <pred>/scores.csv; the summary JSON goes "
              "beside it as <name>.summary.json.")
@click.option("--case", "case_ids", multiple=True,
              help="Score only these cases (repeatable). Default: every case of the dataset.")
@click.option("--bootstrap", "n_bootstrap", default=1000, show_default=True,
              help="Bootstrap resamples for the 95 % confidence intervals (0: none).")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--plots/--no-plots", default=True, show_default=True,
              help="Also write the relative-volume and Bland–Altman plots beside the CSV.")
@click.option("--force", is_flag=True, help="Overwrite existing score files.")
def score(pred_dir: Path, dataset_dir: Path, out_csv: Path | None, case_ids: tuple[str, ...],
          n_bootstrap: int, seed: int, plots: bool, force: bool) -> None:
    """Score predicted label maps against a dataset: per-case CSV, summary JSON and table."""
    import pandas as pd

    from avnbench.cli.display import console
    from avnbench.data.dataset import load_dataset
    from avnbench.data.files import make_folder, output_folder, write_text_atomic
    from avnbench.errors import ConfigError, DataError
    from avnbench.evaluation.scoring import score_folder
    from avnbench.evaluation.summaries import summarize_segmentation

    out_csv = out_csv or pred_dir / "scores.csv"
    if out_csv.suffix.lower() != ".csv":
        raise ConfigError(f"--out {out_csv}: give a .csv file name")
    summary_json = out_csv.with_name(out_csv.stem + ".summary.json")
    plot_paths = [out_csv.with_name(out_csv.stem + s) for s in ("_relative_volume.png",
                                                               "_bland_altman.png")]
    outputs = [out_csv, summary_json] + (plot_paths if plots else [])
    output_folder(out_csv.parent, "--out")  # refuse a file in the way or a read-only folder now
    existing = [p for p in outputs if p.exists()]
    if existing and not force:
        raise ConfigError(
            f"{existing[0]} exists; pass --force to overwrite or --out to write elsewhere"
        )

    dataset = load_dataset(dataset_dir)
    rows = score_folder(pred_dir, dataset, list(case_ids) or None)
    summary = summarize_segmentation(rows, n_bootstrap=n_bootstrap, seed=seed)

    make_folder(out_csv.parent, "--out")
    write_text_atomic(out_csv, pd.DataFrame(rows).to_csv(index=False))
    payload = {
        "dataset": dataset.name,
        "synthetic": dataset.synthetic,
        "predictions": str(pred_dir),
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        **summary.model_dump(),
    }
    write_text_atomic(summary_json, json.dumps(payload, indent=2, allow_nan=False) + "\n")
    written = [out_csv, summary_json]
    if plots:
        from avnbench.reporting import plots as plotting

        try:
            written += [plotting.plot_relative_volume(rows, plot_paths[0]),
                        plotting.plot_bland_altman(rows, plot_paths[1])]
        except OSError as e:
            raise DataError(f"{plot_paths[0].parent}: cannot write the plots ({e.strerror or e}); "
                            "the disk may be full or the folder not writable") from None

    console.print(_summary_table(summary.metrics, dataset.name, dataset.synthetic, len(rows)))
    for note in summary.notes:
        console.print(f"[dim]note: {note}[/dim]")
    console.print("written: " + ", ".join(str(p) for p in written))


def _summary_table(metrics: dict[str, float], dataset: str, synthetic: bool, n_cases: int):
    from rich.table import Table

    tag = " (SYNTHETIC PHANTOM, not clinical results)" if synthetic else ""
    table = Table(title=f"{n_cases} case(s) of {dataset}{tag}")
    for column in ("metric", "mean ± SD", "median [IQR]", "95 % CI", "n"):
        table.add_column(column, justify="left" if column == "metric" else "right")

    def fmt(name: str) -> tuple[str, str, str, str]:
        value = metrics.get(name)
        if value is None or not math.isfinite(value):
            return "–", "", "", ""
        text = f"{value:.3f}" + (f" ± {metrics[name + '_sd']:.3f}" if name + "_sd" in metrics else "")
        iqr = (f"{metrics[name + '_median']:.3f} [{metrics[name + '_q1']:.3f}, {metrics[name + '_q3']:.3f}]"
               if name + "_q1" in metrics else "")
        ci = (f"[{metrics[name + '_ci_low']:.3f}, {metrics[name + '_ci_high']:.3f}]"
              if name + "_ci_low" in metrics else "")
        n = str(int(metrics[name + "_n"])) if name + "_n" in metrics else ""
        return text, iqr, ci, n

    for metric in _segmentation_rows():
        if metric.name + "_n" in metrics:
            table.add_row(metric.title or metric.name, *fmt(metric.name))
    for metric in _agreement_rows():
        cells = fmt(metric.name)
        if cells[0] != "–":
            table.add_row(metric.title or metric.name, *cells)
    for label in ("vital", "necrosis", "head"):
        both, one = metrics.get(f"n_empty_both_{label}", 0), metrics.get(f"n_empty_one_{label}", 0)
        table.add_row(f"cases {label}: both / one mask empty", "", "", "", f"{int(both)} / {int(one)}")
    return table
