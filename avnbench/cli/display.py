"""Rich rendering for the CLI: tables and progress. The only module of the core that uses rich."""

from __future__ import annotations

import sys
import time
from collections import Counter

from rich.console import Console
from rich.markup import escape
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


LOG_EVERY = 15.0  # s between epoch lines when the output is not a terminal


def format_duration(seconds: float) -> str:
    """``45s``, ``1m20s``, ``2h05m``."""
    s = max(int(round(seconds)), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def epoch_line(epoch: int, total: int | None, values: dict[str, float], seconds_so_far: float) -> str:
    """``epoch 3/50 · loss 0.31 · val_dice 0.72 · ETA 1m20s``; the ETA is the mean epoch time so
    far (``seconds_so_far`` since the fit started, s) times the epochs left."""
    parts = [f"epoch {epoch}/{total}" if total else f"epoch {epoch}"]
    parts += [f"{name} {value:.3g}" for name, value in values.items()]
    if total and epoch > 0:
        parts.append(f"ETA {format_duration(seconds_so_far / epoch * max(total - epoch, 0))}")
    return " · ".join(parts)


class RunProgress:
    """Rich progress bars fed by the runner's :class:`avnbench.runner.RunEvent` callbacks.

    Per fold one line: ``fold k: epoch i/N · loss … · ETA …`` while it trains (the bar counts
    epochs), then ``fold k: predicting`` (the bar counts cases).
    """

    def __init__(self, clock=time.monotonic):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console, transient=False,
        )
        self.clock = clock
        self.tasks: dict = {}
        self.n_cases: dict[int, int | None] = {}
        self.fit_started: dict[int, float] = {}
        self.epoch_values: dict[int, tuple[int, dict[str, float]]] = {}
        self.last_logged: dict[int, float] = {}
        self.epoch_totals: dict[int, int | None] = {}

    def __enter__(self) -> "RunProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def add_task(self, *args, **kwargs):
        return self.progress.add_task(*args, **kwargs)

    def update(self, *args, **kwargs):
        return self.progress.update(*args, **kwargs)

    def description(self, fold: int) -> str:
        return self.progress.tasks[self.tasks[fold]].description

    def _on_epoch(self, event) -> None:
        # A method may report one epoch in several calls (one curve point each): merge them.
        epoch, values = self.epoch_values.get(event.fold, (None, {}))
        values = (values if epoch == event.done else {}) | event.values
        self.epoch_values[event.fold] = (event.done, values)
        total = event.total or self.epoch_totals.get(event.fold)
        self.epoch_totals[event.fold] = total
        elapsed = self.clock() - self.fit_started.get(event.fold, self.clock())
        line = epoch_line(event.done, total, values, elapsed)
        if total:
            self.progress.update(self.tasks[event.fold], description=f"  fold {event.fold}: {line}",
                                 total=total, completed=event.done)
        else:
            self.progress.update(self.tasks[event.fold], description=f"  fold {event.fold}: {line}")
        # Without a terminal (a CI log, a pipe) the bars are not redrawn: print the line itself,
        # at most every LOG_EVERY seconds and on the last epoch.
        now = self.clock()
        last = total is not None and event.done >= total
        if not self.progress.console.is_terminal and (last or now - self.last_logged.get(event.fold, -1e9) >= LOG_EVERY):
            self.last_logged[event.fold] = now
            self.progress.console.print(f"{event.method} fold {event.fold}: {line}")

    def on_event(self, event) -> None:
        p = self.progress
        if event.kind == "run_started":
            self.tasks["folds"] = p.add_task(f"{event.method}: folds", total=event.total)
        elif event.kind == "warning":
            p.console.print(f"[yellow]warning:[/yellow] {escape(event.message)}")
        elif event.kind == "fold_skipped":
            # fold_finished follows and advances the folds bar
            p.console.print(f"{event.method} fold {event.fold}: already finished, skipped")
        elif event.kind == "fold_started":
            self.n_cases[event.fold] = event.total
            self.tasks[event.fold] = p.add_task(f"  fold {event.fold}: starting", total=None)
        elif event.kind == "fitting":
            self.fit_started[event.fold] = self.clock()
            p.update(self.tasks[event.fold], description=f"  fold {event.fold}: fitting")
        elif event.kind == "epoch" and event.fold in self.tasks:
            self._on_epoch(event)
        elif event.kind == "fitted":
            p.update(self.tasks[event.fold], description=f"  fold {event.fold}: predicting (fit {event.message})",
                     total=self.n_cases.get(event.fold), completed=0)
        elif event.kind == "case_predicted":
            p.update(self.tasks[event.fold], completed=event.done, total=event.total)
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


def headline_columns(task: str | None = None) -> list[tuple[str, str]]:
    """(metric, title) of the headline metrics, read from the metric registry."""
    from avnbench.evaluation.metrics import default_metrics

    return [(d.name, d.title) for d in default_metrics().headline(task)]


def result_table(result) -> Table:
    """Final summary of one ``avnbench run``: headline metrics with their 95 % CIs."""
    tag = " (SYNTHETIC PHANTOM)" if result.synthetic else ""
    t = Table(title=f"{result.method} [{result.preset}] on {result.dataset}{tag}: folds {result.folds}")
    t.add_column("metric")
    t.add_column("mean ± SD", justify="right")
    t.add_column("median [IQR]", justify="right")
    t.add_column("95 % CI", justify="right")
    t.add_column("n", justify="right")
    m = result.metrics
    for key, title in headline_columns():
        if key not in m:
            continue
        sd = f" ± {m[key + '_sd']:.3f}" if key + "_sd" in m else ""
        iqr = (f"{m[key + '_median']:.3f} [{m[key + '_q1']:.3f}, {m[key + '_q3']:.3f}]"
               if key + "_q1" in m else "")
        ci = f"[{m[key + '_ci_low']:.3f}, {m[key + '_ci_high']:.3f}]" if key + "_ci_low" in m else ""
        n = str(int(m[key + "_n"])) if key + "_n" in m else ""
        t.add_row(title, f"{m[key]:.3f}{sd}", iqr, ci, n)
    if result.skipped_folds:
        t.caption = f"folds {result.skipped_folds} were finished before and reused"
    return t
