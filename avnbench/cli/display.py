"""Rich rendering for the CLI: tables and progress. The only module of the core that uses rich."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def splits_table(dataset, folds, meta) -> Table:
    """Per fold: train/val case and patient counts and the Steinberg grades of val."""
    pid = {c.case_id: c.patient_id for c in dataset.cases}
    grade = {c.case_id: c.meta.steinberg or "-" for c in dataset.cases}
    t = Table(title=f"{dataset.name}: {meta.folds}-fold split, seed {meta.seed}, sha256 {meta.sha256[:12]}")
    for col in ("fold", "train cases", "train patients", "val cases", "val patients", "val Steinberg"):
        t.add_column(col, justify="right")
    for k, f in enumerate(folds):
        g = Counter(grade[c] for c in f.val)
        t.add_row(
            str(k), str(len(f.train)), str(len({pid[c] for c in f.train})), str(len(f.val)),
            str(len({pid[c] for c in f.val})), " ".join(f"{k}:{v}" for k, v in sorted(g.items())),
        )
    return t
