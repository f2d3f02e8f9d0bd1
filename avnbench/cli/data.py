"""``avnbench data ...``: make, split and inspect datasets."""

from __future__ import annotations

from pathlib import Path

import click

from avnbench.cli import cli


@cli.group()
def data() -> None:
    """Make, import, split and check datasets."""


@data.command("split")
@click.argument("dataset_dir", type=click.Path(path_type=Path))
@click.option("--folds", default=5, show_default=True, help="Number of folds.")
@click.option("--seed", default=0, show_default=True, help="Random seed of the split.")
@click.option("--force", is_flag=True, help="Replace an existing split.")
def split_cmd(dataset_dir: Path, folds: int, seed: int, force: bool) -> None:
    """Write the shared patient-grouped, grade-stratified k-fold split of a dataset."""
    from avnbench.cli.display import console, splits_table
    from avnbench.data.dataset import load_dataset
    from avnbench.data.splits import read_splits, write_splits

    dataset = load_dataset(dataset_dir)
    write_splits(dataset, folds, seed, force=force)
    fold_list, meta = read_splits(dataset)
    console.print(splits_table(dataset, fold_list, meta))


@data.command("synth")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Folder to write the dataset to (must be missing or empty unless --force).")
@click.option("--cases", default=40, show_default=True, help="Number of hips (cases).")
@click.option("--seed", default=0, show_default=True, help="Random seed; same seed, same bytes.")
@click.option("--shape", nargs=3, type=int, default=(80, 160, 160), show_default=True,
              metavar="Z Y X", help="Array shape; the field of view stays 80×70.4×70.4 mm.")
@click.option("--force", is_flag=True,
              help="Write into a non-empty folder, overwriting its dataset files (and removing "
                   "an earlier phantom's extra cases and its split).")
@click.option("--domain", default="t1", show_default=True, metavar="NAME",
              help="Acquisition domain: t1 (3-D T1 VIBE, 3 T), t1fs (fat-suppressed T1) or "
                   "t1-1p5t (T1 at 1.5 T: coarser, noisier); named in the dataset's name.")
def synth_cmd(out: Path, cases: int, seed: int, shape: tuple[int, int, int], force: bool,
              domain: str) -> None:
    """Generate the synthetic AVN hip MRI phantom (nnU-Net raw layout + cases.json)."""
    from collections import Counter

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.table import Table

    from avnbench.cli.display import console
    from avnbench.data.phantom import check_shape, synthesize
    from avnbench.data.phantom.domains import get_domain

    check_shape(shape)  # refuse a bad shape or domain before drawing a progress bar
    get_domain(domain)
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("synthesizing phantom", total=max(cases, 0))
        dataset = synthesize(out, n_cases=cases, seed=seed, shape=tuple(shape), force=force,
                             progress=lambda done, total: bar.update(task, completed=done),
                             domain=domain)

    metas = [c.meta for c in dataset.cases]
    table = Table(title=f"{dataset.name} (synthetic phantom) in {dataset.root}")
    table.add_column("quantity")
    table.add_column("distribution")
    table.add_row("cases", str(len(metas)))
    table.add_row("patients", f"{len({m.patient_id for m in metas})} "
                  f"({sum(1 for v in Counter(m.patient_id for m in metas).values() if v == 2)} bilateral)")
    table.add_row("side", _counts(m.side for m in metas))
    table.add_row("Steinberg", _counts(m.steinberg for m in metas))
    table.add_row("JIC", _counts(m.jic for m in metas))
    table.add_row("ARCO", _counts(m.arco for m in metas))
    percents = [m.measurements["necrosis_percent"] for m in metas if m.steinberg is not None]
    if percents:
        table.add_row("necrosis % of head", f"{min(percents):.1f}–{max(percents):.1f} "
                      f"(mean {sum(percents) / len(percents):.1f})")
    flagged = sum(1 for m in metas if m.measurements.get("ambiguity"))
    table.add_row("near a grade threshold", str(flagged))
    console.print(table)


def _counts(values) -> str:
    from collections import Counter

    counts = Counter("none" if v is None else v for v in values)
    return "  ".join(f"{k}: {counts[k]}" for k in sorted(counts, key=lambda k: (k == "none", k)))
