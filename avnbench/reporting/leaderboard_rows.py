"""Leaderboard rows read from MLflow, and which of them can be compared.

A row is one finished parent run, identified by method, preset, plugin version, dataset
fingerprint, split hash, fold set and test dataset (``--test-data``; none for validation folds; the
latest finished run of each identity is kept). Rows are comparable only on the same dataset
fingerprint, split hash, fold set and test dataset (test runs have experiments, hence boards, of
their own, ``<train>--test-<test>``, so they meet validation rows only if put there by hand): the board's main
comparison is the comparable group with the most methods (then the most hips, then the most
recent run); every other row is listed apart, with the reason it is not compared.
"""

from __future__ import annotations

import tempfile
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from avnbench.reporting.tracking import PARENT_TAG, client_for

#: What ``avnbench ui`` serves for a local (e.g. SQLite) store.
DEFAULT_UI_URL = "http://127.0.0.1:5000"


class BoardRow(BaseModel):
    """One finished parent run: a method and preset on one dataset, split and fold set."""

    model_config = ConfigDict(extra="forbid")

    method: str
    preset: str
    task: str
    run_id: str
    experiment_id: str = ""
    device: str
    folds: str = ""
    plugin_version: str = ""
    dataset_fingerprint: str = ""
    split_sha256: str = ""
    test_dataset_fingerprint: str = Field(default="", description="a test run's (--test-data); '' for validation folds")
    start_time_ms: int = 0
    avnbench_version: str = ""
    git_commit: str = ""
    metrics: dict[str, float]
    params: dict[str, str] = Field(default_factory=dict, repr=False)
    significance: str = ""
    # what the method's card says (None: the method is not installed here, so no card to read)
    predicts: str | None = None
    uses_landmarks: bool | None = None
    trains_on_masks: bool | None = None
    trains_on: list[str] = Field(default_factory=list, description="what its fit read from the reference")
    builds_on: list[str] = Field(default_factory=list)
    not_compared: str = Field(default="", description="why the row is outside the main comparison")
    cases: list[dict[str, Any]] = Field(default_factory=list, repr=False)

    @property
    def identity(self) -> tuple[str, ...]:
        return (self.method, self.preset, self.plugin_version, self.dataset_fingerprint, self.split_sha256, self.folds,
                self.test_dataset_fingerprint)

    @property
    def comparison_key(self) -> tuple[str, ...]:
        """Rows with equal keys ran on the same data, split and folds (and were tested on the same data)."""
        return (self.dataset_fingerprint, self.split_sha256, self.folds, self.test_dataset_fingerprint)

    @property
    def label(self) -> str:
        """``method (preset)``, with the plugin version when given."""
        version = f" v{self.plugin_version}" if self.plugin_version else ""
        return f"{self.method} ({self.preset}{version})"

    @property
    def case_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.cases)

    @property
    def n_hips(self) -> int:
        if not self.cases:
            return int(self.metrics.get("n_cases", 0))
        return len({str(c.get("hip_id", c.get("case_id"))) for c in self.cases})

    @property
    def n_patients(self) -> int | None:
        ids = {str(c["patient_id"]) for c in self.cases if c.get("patient_id") is not None}
        return len(ids) if ids else None

    def grade_source(self) -> str:
        """What the grades of this row come from, as its method's card (and config) say."""
        if self.task == "segmentation":
            text = "derived from the predicted segmentation"
        else:
            text = f"{self.predicts.upper() if self.predicts else 'grade'} classifier"
            if self.trains_on_masks:
                text += ", trained on necrosis masks too"
        if self.uses_landmarks:
            text += ", uses landmarks"
        if self.predicts is None and self.uses_landmarks is None and self.task != "segmentation":
            text += " (no method card installed)"
        return text


class Board(BaseModel):
    """Every row of one dataset; ``compared`` is the main comparison, the rest say why not."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    synthetic: bool
    rows: list[BoardRow]
    tracking_uri: str = ""
    ui_url: str = DEFAULT_UI_URL
    _metrics: Any = PrivateAttr(default=None)

    @property
    def metrics(self):
        """The metric registry the board is computed over: built-in metrics plus those of the
        plugins installed when it was collected."""
        from avnbench.evaluation.metrics import default_metrics

        return self._metrics if self._metrics is not None else default_metrics()

    @property
    def compared(self) -> list[BoardRow]:
        return [r for r in self.rows if not r.not_compared]

    @property
    def apart(self) -> list[BoardRow]:
        return [r for r in self.rows if r.not_compared]

    def run_url(self, row: BoardRow) -> str:
        """The row's parent run in MLflow's UI."""
        return f"{self.ui_url}/#/experiments/{row.experiment_id}/runs/{row.run_id}"


def ui_url_for(tracking_uri: str) -> str:
    """A tracking server's own address, else what ``avnbench ui`` serves for the local store."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return DEFAULT_UI_URL


def _card_facts(method: str, params: dict[str, str], registry) -> dict[str, Any]:
    if registry is None or method not in registry.methods:
        return {}
    card = registry.methods[method].card
    # what the run recorded its config trained on; runs logged before that field: the card's
    trains_on = params.get("trains_on")
    inputs = trains_on.split(",") if trains_on else list(card.trains_on)
    masks = "masks" in inputs
    return {
        "predicts": card.predicts,
        "uses_landmarks": card.uses_landmarks,
        "trains_on_masks": masks,
        "trains_on": inputs,
        "builds_on": list(card.builds_on),
    }


def _read_cases(client, run_id: str) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "cases.csv", tmp)
        except Exception:  # noqa: BLE001  (a run without its per-case table: no ranks or tests for it)
            return []
        frame = pd.read_csv(path, dtype={"case_id": str, "patient_id": str})
        records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    if "fold" in frame.columns and frame["case_id"].duplicated().any():
        # a test run (--test-data) scores each hip once per fold's model: methods are paired on
        # (fold model, hip), while n_hips still counts hips
        for r in records:
            r["hip_id"], r["case_id"] = r["case_id"], f"{r['case_id']}@fold{r['fold']}"
    return records


def _identity(run) -> tuple[str, ...]:
    params, tags = run.data.params, run.data.tags
    return (params["method"], params.get("preset", "?"), tags.get("avnbench.plugin.version", ""),
            params.get("dataset_fingerprint", tags.get("avnbench.dataset.fingerprint", "")),
            params.get("split_sha256", ""), params.get("folds", ""), params.get("test_dataset_fingerprint", ""))


def _row(run, client, registry) -> BoardRow:
    params, tags = run.data.params, run.data.tags
    return BoardRow(
        method=params["method"],
        preset=params.get("preset", "?"),
        task=tags.get("avnbench.task", "segmentation"),
        run_id=run.info.run_id,
        experiment_id=str(run.info.experiment_id),
        device=tags.get("device", params.get("device", "?")),
        folds=params.get("folds", ""),
        plugin_version=tags.get("avnbench.plugin.version", ""),
        dataset_fingerprint=params.get("dataset_fingerprint", tags.get("avnbench.dataset.fingerprint", "")),
        split_sha256=params.get("split_sha256", ""),
        test_dataset_fingerprint=params.get("test_dataset_fingerprint", ""),
        start_time_ms=int(run.info.start_time or 0),
        avnbench_version=tags.get("avnbench.version", ""),
        git_commit=tags.get("mlflow.source.git.commit", tags.get("git.commit", "")),
        metrics=dict(run.data.metrics),
        params=dict(params),
        cases=_read_cases(client, run.info.run_id),
        **_card_facts(params["method"], params, registry),
    )


def _why_apart(row: BoardRow, main: tuple[str, ...]) -> str:
    fingerprint, split, folds, tested_on = main
    if row.test_dataset_fingerprint != tested_on:
        tested = row.test_dataset_fingerprint[:12] or "none: its validation folds"
        return f"tested on other data (test dataset {tested})"
    if row.dataset_fingerprint != fingerprint:
        return f"other dataset version (fingerprint {row.dataset_fingerprint[:12]} vs {fingerprint[:12]})"
    if row.split_sha256 != split:
        return f"other split (hash {row.split_sha256[:12]} vs {split[:12]})"
    return f"other fold set ({row.folds or '?'} vs {folds or '?'})"


def mark_comparable(rows: list[BoardRow]) -> None:
    """Pick the main comparable group and set ``not_compared`` on every row outside it."""
    groups: dict[tuple[str, ...], list[BoardRow]] = {}
    for row in rows:
        groups.setdefault(row.comparison_key, []).append(row)
    if not groups:
        return
    main = max(groups, key=lambda k: (len({r.method for r in groups[k]}), max(r.n_hips for r in groups[k]),
                                      max(r.start_time_ms for r in groups[k])))
    for row in rows:
        row.not_compared = "" if row.comparison_key == main else _why_apart(row, main)


def collect_boards(tracking_uri: str, registry=None) -> list[Board]:
    """One board per experiment: the latest finished parent run per row identity.

    ``registry`` (default: the installed plugins) supplies the method cards the row labels quote.
    """
    from avnbench.evaluation.metrics import collect_metrics
    from avnbench.plugins import load_registry

    if registry is None:
        registry = load_registry()
    metrics = collect_metrics(getattr(registry, "pm", None))
    client = client_for(tracking_uri)
    boards = []
    for exp in client.search_experiments():
        runs = client.search_runs(
            [exp.experiment_id], filter_string="attributes.status = 'FINISHED'", max_results=5000,
            order_by=["attributes.start_time DESC"],
        )
        latest: dict[tuple[str, ...], Any] = {}
        for run in runs:  # newest first: the first run of an identity is the one kept
            if PARENT_TAG in run.data.tags or "method" not in run.data.params:
                continue
            latest.setdefault(_identity(run), run)
        if not latest:
            continue
        rows = sorted((_row(run, client, registry) for run in latest.values()), key=lambda r: (r.method, r.preset, r.folds, -r.start_time_ms))
        mark_comparable(rows)
        synthetic = any("True" in (r.params.get("dataset_synthetic"), r.params.get("test_dataset_synthetic"))
                        for r in rows)
        board = Board(dataset=exp.name, synthetic=synthetic, rows=rows, tracking_uri=tracking_uri,
                      ui_url=ui_url_for(tracking_uri))
        board._metrics = metrics
        boards.append(board)
    return boards
