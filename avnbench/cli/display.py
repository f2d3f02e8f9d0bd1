"""Rich rendering for the CLI: tables and progress. The only module of the core that uses rich."""

from __future__ import annotations

import sys
from collections import Counter

from rich.console import Console
from rich.table import Table

# Wide enough for the tables when output goes to a file or CI log rather than a terminal.
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(width=_WIDTH)
err_console = Console(stderr=True, width=_WIDTH)


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


class RunProgress:
    """Rich progress bars fed by the runner's :class:`avnbench.runner.RunEvent` callbacks."""

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console, transient=False,
        )
        self.tasks: dict = {}

    def __enter__(self) -> "RunProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def add_task(self, *args, **kwargs):
        return self.progress.add_task(*args, **kwargs)

    def update(self, *args, **kwargs):
        return self.progress.update(*args, **kwargs)

    def on_event(self, event) -> None:
        p = self.progress
        if event.kind == "run_started":
            self.tasks["folds"] = p.add_task(f"{event.method}: folds", total=event.total)
        elif event.kind == "fold_skipped":
            p.console.print(f"{event.method} fold {event.fold}: already finished, skipped")
            p.advance(self.tasks["folds"])
        elif event.kind == "fold_started":
            self.tasks[event.fold] = p.add_task(f"  fold {event.fold}: fitting", total=event.total)
        elif event.kind == "fitted":
            p.update(self.tasks[event.fold], description=f"  fold {event.fold}: predicting (fit {event.message})")
        elif event.kind == "case_predicted":
            p.update(self.tasks[event.fold], completed=event.done)
        elif event.kind == "fold_finished":
            if event.fold in self.tasks:
                p.update(self.tasks[event.fold], description=f"  fold {event.fold}: done")
                p.stop_task(self.tasks[event.fold])
            p.advance(self.tasks["folds"])
        elif event.kind == "scoring":
            self.tasks["scoring"] = p.add_task(f"{event.method}: statistics and MLflow", total=None)
        elif event.kind == "run_finished" and "scoring" in self.tasks:
            p.update(self.tasks["scoring"], total=1, completed=1)


def run_progress() -> RunProgress:
    return RunProgress()


HEADLINE = [
    ("dice_vital", "Dice vital"), ("dice_necrosis", "Dice necrosis"), ("dice_head", "Dice head"),
    ("assd_vital_mm", "ASSD vital mm"), ("assd_necrosis_mm", "ASSD nec. mm"),
    ("hd95_necrosis_mm", "HD95 nec. mm"), ("necrosis_cm3_mae", "nec. MAE cm³"),
    ("steinberg_accuracy", "Steinberg acc."), ("steinberg_kappa_linear", "Steinberg κ"),
    ("jic_accuracy", "JIC acc."), ("jic_kappa_linear", "JIC κ"), ("jic_macro_auc", "JIC AUC"),
    ("fit_seconds", "fit s/fold"), ("predict_seconds_per_case", "predict s/case"),
]


def result_table(result) -> Table:
    """Final summary of one ``avnbench run``: headline metrics with their 95 % CIs."""
    tag = " (SYNTHETIC PHANTOM)" if result.synthetic else ""
    t = Table(title=f"{result.method} [{result.preset}] on {result.dataset}{tag}: folds {result.folds}")
    t.add_column("metric")
    t.add_column("mean ± SD", justify="right")
    t.add_column("95 % CI", justify="right")
    m = result.metrics
    for key, title in HEADLINE:
        if key not in m:
            continue
        sd = f" ± {m[key + '_sd']:.3f}" if key + "_sd" in m else ""
        ci = f"[{m[key + '_ci_low']:.3f}, {m[key + '_ci_high']:.3f}]" if key + "_ci_low" in m else ""
        t.add_row(title, f"{m[key]:.3f}{sd}", ci)
    if result.skipped_folds:
        t.caption = f"folds {result.skipped_folds} were finished before and reused"
    return t
