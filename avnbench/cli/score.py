"""``avnbench score``: score a folder of predicted label maps against a dataset."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from avnbench.cli import cli


def _segmentation_rows(metrics):
    """Case metrics of the summary table, in registry order (each with its n and median/IQR)."""
    return metrics.case_metrics("segmentation")


def _agreement_rows(metrics):
    """Scores over all cases (correlations, grade agreement) of the summary table."""
    return [d for d in metrics.for_task("segmentation")
            if d.aggregation == "statistic" and d.higher_is_better is not None]


@cli.command()
@click.option("--pred", "pred_dir", required=True, type=click.Path(path_type=Path),
              help="Folder of predicted label maps, one {case}.nii.gz per case (nnU-Net's prediction "
              "folders too; its json files are ignored).")
@click.option("--ref", "dataset_dir", required=True, type=click.Path(path_type=Path),
              help="The avnbench dataset folder with the reference labels.")
@click.option("--name", default=None,
              help="Log the predictions to MLflow as a run of this method name (preset 'external'), so "
              "the leaderboard ranks them beside the built-in methods. Not a registered method's name.")
@click.option("--fold", "fold_texts", multiple=True,
              help="Score this fold's validation cases (repeatable, or 0,2). Default: every case of the "
              "dataset; with --name every fold that has predictions (each complete).")
@click.option("--case", "case_ids", multiple=True,
              help="Score only these cases (repeatable; not with --name or --fold).")
@click.option("--tracking-uri", default=None,
              help="With --name: MLflow store. Default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db.")
@click.option("--out", "out_csv", type=click.Path(path_type=Path), default=None,
              help="Per-case CSV to write. Default: scores/<name>/scores.csv in the working directory "
              "(<name>: --name, else the prediction folder's name); the summary JSON and plots go beside it.")
@click.option("--bootstrap", "n_bootstrap", default=1000, show_default=True,
              help="Bootstrap resamples for the 95 % confidence intervals (0: none).")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--plots/--no-plots", default=True, show_default=True,
              help="Also write the relative-volume and Bland–Altman plots beside the CSV.")
@click.option("--force", is_flag=True, help="Overwrite existing score files.")
def score(pred_dir: Path, dataset_dir: Path, name: str | None, fold_texts: tuple[str, ...], case_ids: tuple[str, ...],
          tracking_uri: str | None, out_csv: Path | None, n_bootstrap: int, seed: int, plots: bool,
          force: bool) -> None:
    """Score predicted label maps against a dataset: per-case CSV, summary JSON and table.

    With --name, the scores are also logged to MLflow as a run of that method, with one child run
    per fold, like 'avnbench run'; 'avnbench leaderboard' then ranks it.
    """
    import pandas as pd

    from avnbench.cli.display import console
    from avnbench.data.dataset import load_dataset
    from avnbench.data.files import make_folder, output_folder, write_text_atomic
    from avnbench.errors import ConfigError, DataError
    from avnbench.evaluation.scoring import score_folder
    from avnbench.evaluation.summaries import summarize_segmentation

    folds = _parse_folds(fold_texts)
    if case_ids and (name or folds is not None):
        raise ConfigError("--case cannot be combined with --name or --fold; a run scores whole folds")
    if tracking_uri and not name:
        raise ConfigError("--tracking-uri logs a run, which needs its method name: pass --name")
    from avnbench.evaluation.metrics import collect_metrics
    from avnbench.plugins import load_registry

    registry = load_registry()
    metrics = collect_metrics(registry.pm)  # plugin metrics are scored here too
    if name:
        from avnbench.external import check_name

        check_name(name, registry)  # before anything is read or written
    out_csv = out_csv or Path.cwd() / "scores" / (name or Path(pred_dir).resolve().name) / "scores.csv"
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
    tracking: dict[str, str] = {}
    if name:
        from avnbench.external import score_external
        from avnbench.reporting.tracking import default_tracking_uri

        uri = tracking_uri or default_tracking_uri()
        scored = score_external(name, pred_dir, dataset.root, folds, uri, registry, n_bootstrap, seed,
                                scratch_dir=out_csv.parent)
        rows, summary, tracking = scored.rows, scored.summary, scored.tracking
        folds = scored.folds
    else:
        if folds is not None:
            from avnbench.external import select_folds

            chosen, _ = select_folds(pred_dir, dataset, folds)
            case_ids = tuple(c for fold in chosen.values() for c in fold.val)
        rows = score_folder(pred_dir, dataset, list(case_ids) or None)
        summary = summarize_segmentation(rows, n_bootstrap=n_bootstrap, seed=seed, metrics=metrics)

    make_folder(out_csv.parent, "--out")
    write_text_atomic(out_csv, pd.DataFrame(rows).to_csv(index=False))
    payload = {
        "dataset": dataset.name,
        "synthetic": dataset.synthetic,
        "predictions": str(pred_dir),
        "name": name,
        "folds": folds,
        "mlflow_run_id": tracking.get("mlflow.parent_run_id"),
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        **summary.model_dump(),
    }
    write_text_atomic(summary_json, json.dumps(payload, indent=2, allow_nan=False) + "\n")
    written = [out_csv, summary_json]
    if plots:
        from avnbench.reporting import plots as plotting

        title = f"{name or Path(pred_dir).name}\non {dataset.name}"
        try:
            written += [plotting.plot_relative_volume(rows, plot_paths[0], title=title),
                        plotting.plot_bland_altman(rows, plot_paths[1], title=title)]
        except OSError as e:
            raise DataError(f"{plot_paths[0].parent}: cannot write the plots ({e.strerror or e}); "
                            "the disk may be full or the folder not writable") from None

    console.print(_summary_table(summary.metrics, dataset.name, dataset.synthetic, len(rows), metrics))
    for note in summary.notes:
        console.print(f"[dim]note: {note}[/dim]")
    console.print("written: " + ", ".join(str(p) for p in written))
    if name and scored.unknown_files:
        shown = ", ".join(scored.unknown_files[:5]) + (" ..." if len(scored.unknown_files) > 5 else "")
        console.print(f"[dim]note: {len(scored.unknown_files)} label map(s) in {pred_dir} name no case of "
                      f"{dataset.name} and were not scored: {shown}[/dim]", soft_wrap=True)
    if tracking:
        reused = tracking.get("mlflow.parent_run_reused") == "true"
        console.print(("already in MLflow (same label maps, dataset and split): run " if reused else
                       f"logged to MLflow as method {name!r}, preset 'external': run ")
                      + f"{tracking.get('mlflow.parent_run_id')}; 'avnbench leaderboard' ranks it", soft_wrap=True)


def _parse_folds(texts: tuple[str, ...]) -> list[int] | None:
    """``("0", "2,3")`` → [0, 2, 3]; nothing → None."""
    from avnbench.errors import ConfigError

    if not texts:
        return None
    try:
        return sorted({int(t) for text in texts for t in text.split(",") if t.strip()})
    except ValueError:
        raise ConfigError(f"--fold takes fold numbers like 0 or 0,2, not {' '.join(texts)!r}") from None


def _summary_table(metrics: dict[str, float], dataset: str, synthetic: bool, n_cases: int, registry):
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

    for metric in _segmentation_rows(registry):
        if metric.name + "_n" in metrics:
            table.add_row(metric.title or metric.name, *fmt(metric.name))
    for metric in _agreement_rows(registry):
        cells = fmt(metric.name)
        if cells[0] != "–":
            table.add_row(metric.title or metric.name, *cells)
    for label in ("vital", "necrosis", "head"):
        both, one = metrics.get(f"n_empty_both_{label}", 0), metrics.get(f"n_empty_one_{label}", 0)
        table.add_row(f"cases {label}: both / one mask empty", "", "", "", f"{int(both)} / {int(one)}")
    return table
