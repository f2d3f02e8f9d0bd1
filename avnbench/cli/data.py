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
    from avnbench.dataset import load_dataset
    from avnbench.splits import read_splits, write_splits

    dataset = load_dataset(dataset_dir)
    write_splits(dataset, folds, seed, force=force)
    fold_list, meta = read_splits(dataset)
    console.print(splits_table(dataset, fold_list, meta))
