"""``avnbench report``: each seed study regenerated from the runs of one dataset.

For every study (:data:`avnbench.reporting.report_studies.STUDIES`) the latest comparable run of
each of its methods is taken from the leaderboard's rows (:func:`collect_boards`: the main
comparison of the dataset, preferring the ``paper`` preset, then ``quick``, then ``smoke``; a
method only outside it is taken from there and says why); a method without a run is "not run"
with the command that makes it comparable. Written into ``<out>/<dataset>/``: ``README.md``
(markdown, figures as ``figures/*.svg``), ``index.html`` (self-contained, figures inline) and
``report.json`` (every measured number).
"""

from __future__ import annotations

import datetime as _dt
import json
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from avnbench.errors import ConfigError
from avnbench.reporting.leaderboard_rows import Board, BoardRow, collect_boards
from avnbench.evaluation.voxel_roc import ROC_FILE
from avnbench.reporting.report_studies import STUDIES, MethodRun, Study
from avnbench.reporting.tracking import FOLD_TAG, PARENT_TAG, client_for

PRESET_PREFERENCE = ("paper", "quick", "smoke")
SYNTHETIC_LINE = ("Dataset {dataset} is a SYNTHETIC PHANTOM (avnbench data synth): every measured figure below "
                  "is from simulated images and is not a clinical result. The published figures are the "
                  "studies' own, on patients; they are shown beside the measured ones for orientation, not "
                  "as a claim that the phantom reproduces them.")
REAL_LINE = ("Dataset {dataset} is not marked synthetic. The published figures are the studies' own, on their "
             "own patients and protocols.")


@dataclass
class Report:
    dataset: str
    synthetic: bool
    tracking_uri: str
    studies: list[Study]
    created: str
    commits: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)

    @property
    def banner(self) -> str:
        return (SYNTHETIC_LINE if self.synthetic else REAL_LINE).format(dataset=self.dataset)


def _pick(board: Board, method: str) -> tuple[BoardRow | None, str]:
    def order(r: BoardRow):
        rank = PRESET_PREFERENCE.index(r.preset) if r.preset in PRESET_PREFERENCE else len(PRESET_PREFERENCE)
        return (rank, -r.start_time_ms)

    compared = sorted((r for r in board.compared if r.method == method), key=order)
    if compared:
        return compared[0], ""
    apart = sorted((r for r in board.apart if r.method == method), key=lambda r: -r.start_time_ms)
    if apart:
        return apart[0], f"not in the dataset's main comparison: {apart[0].not_compared}"
    return None, ""


def _dataset_source(client, board: Board) -> str | None:
    for row in board.rows:
        try:
            inputs = client.get_run(row.run_id).inputs.dataset_inputs
        except Exception:  # noqa: BLE001, S112  (an older store without inputs: no path to suggest)
            continue
        for item in inputs:
            try:
                uri = json.loads(item.dataset.source).get("uri")
            except (TypeError, ValueError):
                continue
            if uri:
                return str(uri).removeprefix("file://")
    return None


def run_command(method: str, board: Board, data: str | None) -> str:
    """The ``avnbench run`` that makes a row of ``method`` comparable with the board's main rows."""
    ref = board.compared[0] if board.compared else None
    parts = ["avnbench", "run", "--method", method, "--preset", ref.preset if ref else "quick"]
    if ref is not None and ref.folds:
        parts += ["--folds", ref.folds]
    if data:
        parts += ["--data", data]
    if ref is not None and ref.device not in ("", "?"):
        parts += ["--device", ref.device]
    parts += ["--tracking-uri", board.tracking_uri]
    return shlex.join(parts)


def _roc_files(client, row: BoardRow) -> list[dict]:
    """Each fold's voxel-ROC histograms from the run's finished fold runs (latest per fold)."""
    children = client.search_runs(
        [row.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{row.run_id}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1000)
    files, seen = [], set()
    with tempfile.TemporaryDirectory() as tmp:
        for child in children:
            fold = child.data.tags.get(FOLD_TAG)
            if fold in seen:
                continue
            seen.add(fold)
            try:
                path = client.download_artifacts(child.info.run_id, ROC_FILE, tmp)
            except Exception:  # noqa: BLE001, S112  (a fold run made before the histograms were recorded)
                continue
            files.append(json.loads(Path(path).read_text(encoding="utf-8")))
    return files


def _roc_from_workdir(workdir: Path, board: Board, row: BoardRow, data: str | None) -> list[dict] | None:
    """The voxel-ROC fold files rebuilt from the run's saved probability maps in ``workdir``."""
    from avnbench.data.dataset import load_dataset
    from avnbench.evaluation.voxel_roc import counts_from_job_folders

    if not data or not Path(data).exists() or not row.folds:
        return None
    dataset = load_dataset(Path(data))
    cases = {c.case_id: c for c in dataset.cases}
    folds = [int(f) for f in row.folds.split(",")]
    job_dirs = [Path(workdir) / board.dataset / row.method / row.preset / f"fold_{k}" for k in folds]
    return counts_from_job_folders(job_dirs, row.cases, lambda case_id: cases[case_id].label_array())


def build_report(board: Board, workdir: Path | None = None) -> Report:
    """The studies of one board (one dataset), regenerated from its rows. ``workdir``: the runs'
    work folder, read (never written) for the probability maps of runs made before the voxel ROC
    was recorded with them."""
    client = client_for(board.tracking_uri)
    data = _dataset_source(client, board)
    studies = []
    for methods, make in STUDIES.values():
        runs = {}
        for method in methods:
            row, note = _pick(board, method)
            run = MethodRun(method, row, run_command(method, board, data), note)
            if row is not None and method == "patch25d-cnn":
                run.roc_files = _roc_files(client, row)
                if not run.roc_files and workdir is not None:
                    run.roc_files = _roc_from_workdir(workdir, board, row, data) or []
                    if run.roc_files:
                        run.roc_source = (f"rebuilt from the run's saved probability maps in {workdir} (its scores "
                                          "checked against the run's per-case table)")
            runs[method] = run
        studies.append(make(runs))
    used = [r.row for s in studies for r in s.methods if r.row is not None]
    return Report(dataset=board.dataset, synthetic=board.synthetic, tracking_uri=board.tracking_uri, studies=studies,
                  created=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                  commits=sorted({r.git_commit[:12] for r in used if r.git_commit}),
                  versions=sorted({r.avnbench_version for r in used if r.avnbench_version}))


def build_reports(tracking_uri: str, dataset: str | None = None, workdir: Path | None = None) -> list[Report]:
    """One report per dataset (MLflow experiment) of the store; ``dataset`` picks one."""
    boards = collect_boards(tracking_uri)
    if dataset is not None:
        names = [b.dataset for b in boards]
        boards = [b for b in boards if b.dataset == dataset]
        if not boards:
            raise ConfigError(f"no runs of dataset {dataset!r} in {tracking_uri}; datasets there: "
                              f"{', '.join(names) or 'none'} (pass one of them to --dataset)")
    return [build_report(b, workdir) for b in boards]


def write_report(report: Report, out_dir: Path) -> list[Path]:
    """Write ``<out_dir>/<dataset>/``: README.md, index.html, report.json and figures/*.svg."""
    from avnbench.reporting.report_html import report_html, report_markdown

    folder = Path(out_dir) / report.dataset
    figures = folder / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for old in figures.glob("*.svg"):
        old.unlink()
    written = []
    for study in report.studies:
        for fig in study.figures:
            path = figures / f"{study.key}_{fig.name}.svg"
            path.write_text(fig.svg, encoding="utf-8")
            written.append(path)
    (folder / "README.md").write_text(report_markdown(report), encoding="utf-8")
    (folder / "index.html").write_text(report_html(report), encoding="utf-8")
    numbers = {"dataset": report.dataset, "synthetic": report.synthetic, "created": report.created,
               "studies": {s.key: {"title": s.title, "measured": s.measured,
                                   "runs": {m.method: (m.row.run_id if m.row else None) for m in s.methods},
                                   "not_run": {m.method: m.command for m in s.methods if m.row is None}}
                           for s in report.studies}}
    (folder / "report.json").write_text(json.dumps(numbers, indent=2, sort_keys=True), encoding="utf-8")
    return [folder / "README.md", folder / "index.html", folder / "report.json", *written]
