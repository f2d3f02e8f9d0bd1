"""What the lifecycle hooks of :mod:`avnbench.hookspecs` are told about a run.

:class:`RunInfo` is built once per ``run_benchmark`` call (one method on one dataset over a fold
selection) and handed, unchanged, to every lifecycle hook. It is plain data, so a plugin can
record it anywhere (MLflow, a database, a chat message) without importing the runner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class RunInfo(BaseModel):
    """One method on one dataset over a selection of folds, as the hooks see it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str
    task: Literal["segmentation", "classification"]
    classes: list[str] | None = None
    plugin: str = Field(description="name under which the method's plugin is registered")
    plugin_distribution: str | None = None
    plugin_version: str | None = None
    preset: str
    config: dict[str, Any] = Field(description="the resolved method config (preset plus overrides)")
    trains_on: list[str] = Field(
        default_factory=list,
        description="what the fit reads from the reference besides the images (masks, grades, "
        "landmarks), as the method's config says; empty for outside predictions",
    )
    dataset_name: str
    dataset_fingerprint: str
    dataset_synthetic: bool
    dataset_root: Path
    split_sha256: str
    split_folds: int = Field(description="number of folds of the dataset's split")
    split_seed: int = Field(description="seed the split was made with; -1 for a user-provided split")
    folds: list[int] = Field(description="the folds this run covers")
    reused_folds: list[int] = Field(
        default_factory=list, description="folds whose finished results are reused, not recomputed"
    )
    seed: int
    device: Literal["cpu", "cuda"]
    run_key: str = Field(description="hash of (method, preset, config, dataset fingerprint, split, and a test "
                         "run's test dataset fingerprint)")
    tracking_uri: str | None = Field(default=None, description="MLflow store; None: no MLflow tracking")
    source: Literal["avnbench", "external"] = Field(
        default="avnbench",
        description="avnbench: fitted and predicted by avnbench; external: label maps made elsewhere, "
        "scored by ``avnbench score --name``",
    )
    test_dataset_name: str | None = Field(
        default=None, description="a test run (--test-data): the dataset every fold's model predicted, all of "
        "its cases; the dataset_* fields name the one the models were trained on. None: validation folds",
    )
    test_dataset_fingerprint: str | None = None
    test_dataset_synthetic: bool | None = None
    test_dataset_root: Path | None = None
    test_cases: int | None = Field(default=None, description="a test run: the number of test dataset cases")
    predictions_dir: Path | None = Field(
        default=None, description="external runs: the folder of their label maps; None: each fold's "
        "``job_dir/predictions``",
    )

    def predictions_of(self, job_dir: Path) -> Path:
        """The folder holding a fold's ``{case}.nii.gz`` label maps."""
        return self.predictions_dir if self.predictions_dir is not None else job_dir / "predictions"

    @property
    def is_test(self) -> bool:
        """True for a test run: trained on the dataset's folds, scored on another dataset."""
        return self.test_dataset_name is not None

    @property
    def scored_root(self) -> Path:
        """The dataset whose reference labels the predictions were scored against."""
        return self.test_dataset_root if self.test_dataset_root is not None else self.dataset_root

    @property
    def selection_key(self) -> str:
        """The run key plus the fold selection: one parent run in a tracking store per value."""
        return f"{self.run_key}-folds{'_'.join(map(str, self.folds))}"

    @property
    def computes_nothing(self) -> bool:
        """True when every fold's result is reused: the run only re-reports finished work."""
        return set(self.folds) <= set(self.reused_folds)
