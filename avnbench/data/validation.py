"""``avnbench data check``: every check of a dataset folder, collected into one report.

``check_dataset`` never raises for a problem of a single case (a missing, empty or truncated
file, a label map off the grid, bad label values, NaN intensities): it records it as an
:class:`Issue` and goes on, so one bad file does not hide the rest of the report; ``errors``
make ``data check`` exit non-zero. Images are read through the project's one reader,
:func:`avnbench.data.imageio.read_image`; the split through :func:`avnbench.data.splits.read_splits`
(which runs :func:`avnbench.data.splits.validate_split`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from avnbench.data.dataset import FILE_ENDING, LABELS, SPLITS_FILE, CaseMeta, Dataset, Geometry, load_dataset
from avnbench.data.image_checks import geometry_mismatch, grid_mismatch
from avnbench.data.imageio import read_image
from avnbench.errors import DataError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Issue(_Strict):
    """One problem found: an error (the dataset cannot be used as it is) or a warning."""

    severity: Literal["error", "warning"]
    case_id: str | None = None
    message: str


class CaseSummary(_Strict):
    """One case as checked: where it stands and what its labels give."""

    case_id: str
    patient_id: str
    side: str
    shape_zyx: tuple[int, int, int]
    spacing_zyx: tuple[float, float, float]
    steinberg: str | None
    jic: str | None
    arco: str | None
    computed_steinberg: str | None = None
    computed_jic: str | None = None
    necrosis_percent: float | None = Field(default=None, description="necrosis in % of the head volume")
    landmarks: Literal["given", "estimated", "missing"]
    readable: bool


class SplitSummary(_Strict):
    folds: int
    seed: int
    sha256: str


class DatasetReport(_Strict):
    """What ``check_dataset`` found."""

    root: Path
    name: str
    synthetic: bool
    cases: list[CaseSummary]
    issues: list[Issue]
    split: SplitSummary | None = None

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def n_patients(self) -> int:
        return len({c.patient_id for c in self.cases})

    def distribution(self, field: str) -> dict[str, int]:
        """Counts of a grade field (steinberg, jic, arco, side) over cases; '-' for none."""
        return dict(sorted(Counter(getattr(c, field) or "-" for c in self.cases).items()))

    @property
    def estimated_landmark_cases(self) -> list[str]:
        return [c.case_id for c in self.cases if c.landmarks == "estimated"]


# ----------------------------------------------------------------------------- dataset check


def check_dataset(root: Path | str, grade: bool = True) -> DatasetReport:
    """Check every case of the dataset at ``root``: files readable, geometry consistent with
    ``cases.json`` and between image and label, label values, finite intensities, duplicate
    images, reference grades against those computed from the labels (``grade``), and the split.

    Raises DataError only when ``dataset.json``/``cases.json`` cannot be read at all.
    """
    dataset = load_dataset(root, require_files=False)  # missing files are reported per case
    issues: list[Issue] = []
    issues += _dataset_json_issues(dataset)
    summaries: list[CaseSummary] = []
    image_hashes: dict[str, str] = {}
    for case in dataset.cases:
        summary, case_issues, digest = _check_case(case, grade)
        summaries.append(summary)
        issues += case_issues
        if digest is not None:
            if digest in image_hashes:
                issues.append(
                    Issue(
                        severity="warning",
                        case_id=case.case_id,
                        message=f"{case.image_path}: same image as case {image_hashes[digest]} "
                        "(a duplicate can leak between folds)",
                    )
                )
            else:
                image_hashes[digest] = case.case_id
    issues += _stray_file_issues(dataset)
    split, split_issues = _split_check(dataset)
    issues += split_issues
    return DatasetReport(
        root=dataset.root,
        name=dataset.name,
        synthetic=dataset.synthetic,
        cases=summaries,
        issues=issues,
        split=split,
    )


def _dataset_json_issues(dataset: Dataset) -> list[Issue]:
    path = dataset.root / "dataset.json"
    ds = dataset.dataset_json
    issues = []
    if ds.numTraining != len(dataset):
        issues.append(
            Issue(severity="error", message=f"{path}: numTraining {ds.numTraining} but cases.json has {len(dataset)} cases")
        )
    if ds.file_ending != FILE_ENDING:
        issues.append(Issue(severity="error", message=f"{path}: file_ending {ds.file_ending!r}, expected {FILE_ENDING!r}"))
    if {k: v for k, v in ds.labels.items()} != LABELS:
        issues.append(Issue(severity="error", message=f"{path}: labels {ds.labels}, expected {LABELS}"))
    if len(ds.channel_names) != 1:
        issues.append(Issue(severity="warning", message=f"{path}: {len(ds.channel_names)} channels; methods read channel 0000 only"))
    return issues


def _check_case(case, grade: bool) -> tuple[CaseSummary, list[Issue], str | None]:
    import SimpleITK as sitk

    meta: CaseMeta = case.meta
    issues: list[Issue] = []

    def add(severity: str, message: str) -> None:
        issues.append(Issue(severity=severity, case_id=case.case_id, message=message))

    landmarks = "missing" if meta.landmarks is None else ("estimated" if meta.landmarks.estimated else "given")
    summary = CaseSummary(
        case_id=case.case_id,
        patient_id=meta.patient_id,
        side=meta.side,
        shape_zyx=meta.geometry.shape_zyx,
        spacing_zyx=meta.geometry.spacing_zyx,
        steinberg=meta.steinberg,
        jic=meta.jic,
        arco=meta.arco,
        landmarks=landmarks,
        readable=False,
    )
    image = label = None
    try:
        image = read_image(case.image_path, kind="image")
    except DataError as e:
        add("error", str(e))
    try:
        label = read_image(case.label_path, kind="label")
    except DataError as e:
        add("error", str(e))
    if image is None or label is None:
        return summary, issues, None
    summary.readable = True
    mismatch = geometry_mismatch(meta.geometry, Geometry.of(image))
    if mismatch:
        add("error", f"{case.image_path}: image grid differs from cases.json: {mismatch}")
    mismatch = grid_mismatch(image, label)
    if mismatch:
        add("error", f"{case.label_path}: label map is not on the image's grid: {mismatch}")
    image_array = sitk.GetArrayViewFromImage(image)
    label_array = sitk.GetArrayFromImage(label)
    if not (label_array > 0).any():
        add("warning", f"{case.label_path}: no femoral head (no voxel labelled 1 or 2)")
    elif grade and not mismatch:
        try:
            _compare_grades(case, meta, label_array.astype(np.uint8), summary, add)
        except DataError as e:
            add("error", f"{case.label_path}: cannot grade ({e})")
    if meta.landmarks is None:
        add("warning", "no landmarks; the JIC type cannot be graded (re-import to estimate them)")
    digest = hashlib.sha256(np.ascontiguousarray(image_array).tobytes()).hexdigest()
    return summary, issues, digest


def _compare_grades(case, meta: CaseMeta, labels: np.ndarray, summary: CaseSummary, add) -> None:
    from avnbench.evaluation import grading

    extent = grading.steinberg_extent(labels, meta.geometry.spacing_zyx)
    summary.computed_steinberg = extent.grade
    summary.necrosis_percent = float(extent.percent)
    if meta.landmarks is not None:
        summary.computed_jic = grading.jic_type(labels, meta).type
    for key, computed in (("steinberg", summary.computed_steinberg), ("jic", summary.computed_jic)):
        recorded = getattr(meta, key)
        if key == "jic" and meta.landmarks is None:
            continue
        if recorded is not None and recorded != computed:
            source = meta.grade_sources.get(key, "given")
            what = "reference" if source == "given" else "recorded (computed)"
            hint = "kept as the reference" if source == "given" else "re-import or regenerate the dataset"
            add(
                "warning",
                f"{key} {what} grade {recorded} differs from {computed or 'none'} computed from "
                f"the label map; {hint}",
            )


def _stray_file_issues(dataset: Dataset) -> list[Issue]:
    known = {p.name for c in dataset.cases for p in (c.image_path, c.label_path) if p is not None}
    issues = []
    for sub in ("imagesTr", "labelsTr"):
        folder = dataset.root / sub
        if not folder.is_dir():
            continue
        stray = sorted(p.name for p in folder.iterdir() if p.name not in known)
        if stray:
            issues.append(
                Issue(
                    severity="warning",
                    message=f"{folder}: {len(stray)} file(s) not in cases.json, ignored: {', '.join(stray[:5])}",
                )
            )
    return issues


def _split_check(dataset: Dataset) -> tuple[SplitSummary | None, list[Issue]]:
    from avnbench.data.splits import read_splits

    if not (dataset.root / SPLITS_FILE).exists():
        return None, [Issue(severity="warning", message=f"no split yet; make one with 'avnbench data split {dataset.root}'")]
    try:
        folds, meta = read_splits(dataset)
    except DataError as e:
        return None, [Issue(severity="error", message=str(e))]
    return SplitSummary(folds=len(folds), seed=meta.seed, sha256=meta.sha256), []
