"""Dataset checks: the ones ``avnbench data check`` runs and ``avnbench data import`` relies on.

The per-array checks (:func:`intensity_problem`, :func:`label_value_problem`,
:func:`grid_mismatch`) return a short description of the problem or None, so that import can
raise it as a one-line error and ``check_dataset`` can collect it in a report.
``check_dataset`` never raises for a problem of a single case; it returns a
:class:`DatasetReport` whose ``errors`` make ``data check`` exit non-zero.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from avnbench.dataset import FILE_ENDING, LABELS, SPLITS_FILE, CaseMeta, Dataset, Geometry, load_dataset
from avnbench.errors import DataError

ALLOWED_LABELS = (0, 1, 2)
SPACING_RTOL = 1e-4
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4


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


# ----------------------------------------------------------------------------- array checks


def intensity_problem(image_array: np.ndarray) -> str | None:
    """'N NaN and M infinite intensities' when the image is not finite everywhere, else None."""
    arr = np.asarray(image_array)
    if not np.issubdtype(arr.dtype, np.floating):
        return None
    finite = np.isfinite(arr)
    if finite.all():
        return None
    n_nan = int(np.isnan(arr).sum())
    n_inf = int((~finite).sum()) - n_nan
    parts = [f"{n} {what}" for n, what in ((n_nan, "NaN"), (n_inf, "infinite")) if n]
    return f"{' and '.join(parts)} intensities; fix or mask them before importing"


def label_value_problem(label_array: np.ndarray) -> str | None:
    """A description of label values outside {0, 1, 2} (or not integers), else None."""
    values = np.unique(np.asarray(label_array))
    bad = [v for v in values.tolist() if v not in ALLOWED_LABELS]
    if not bad:
        return None
    shown = ", ".join(f"{v:g}" for v in bad[:6]) + (", ..." if len(bad) > 6 else "")
    return (
        f"label values {shown} outside {{0, 1, 2}} (0 background, 1 vital, 2 necrosis); "
        "relabel the map"
    )


def grid_mismatch(image, label) -> str | None:
    """How the label map's grid differs from the image's (size, spacing, origin, direction), or
    None when they agree within tolerance. Both are SimpleITK images; values shown x, y, z."""
    if image.GetDimension() != label.GetDimension():
        return f"dimension {label.GetDimension()} vs {image.GetDimension()}"
    a, b = Geometry.of(image), Geometry.of(label)
    return geometry_mismatch(a, b)


def geometry_mismatch(expected: Geometry, actual: Geometry) -> str | None:
    """How ``actual`` differs from ``expected`` (size, spacing, origin, direction), or None."""

    def fmt(values) -> str:
        return " x ".join(f"{v:g}" for v in values)

    if tuple(actual.size_xyz) != tuple(expected.size_xyz):
        return f"size {fmt(actual.size_xyz)} vs {fmt(expected.size_xyz)} voxels (x, y, z)"
    if not np.allclose(actual.spacing_xyz, expected.spacing_xyz, rtol=SPACING_RTOL, atol=1e-9):
        return f"spacing {fmt(actual.spacing_xyz)} vs {fmt(expected.spacing_xyz)} mm (x, y, z)"
    if not np.allclose(actual.origin, expected.origin, rtol=0, atol=ORIGIN_ATOL_MM):
        return f"origin {fmt(np.round(actual.origin, 3))} vs {fmt(np.round(expected.origin, 3))} mm"
    if not np.allclose(actual.direction, expected.direction, rtol=0, atol=DIRECTION_ATOL):
        return f"direction {fmt(np.round(actual.direction, 4))} vs {fmt(np.round(expected.direction, 4))}"
    return None


# ----------------------------------------------------------------------------- dataset check


def check_dataset(root: Path | str, grade: bool = True) -> DatasetReport:
    """Check every case of the dataset at ``root``: files readable, geometry consistent with
    ``cases.json`` and between image and label, label values, finite intensities, duplicate
    images, reference grades against those computed from the labels (``grade``), and the split.

    Raises DataError only when ``dataset.json``/``cases.json`` cannot be read at all.
    """
    dataset = load_dataset(root)
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
    try:
        image = case.read_image()
        label = case.read_label()
    except DataError as e:
        add("error", str(e))
        return summary, issues, None
    summary.readable = True
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        add("error", f"{case.image_path}: not a single-channel 3-D image")
        return summary, issues, None
    mismatch = geometry_mismatch(meta.geometry, Geometry.of(image))
    if mismatch:
        add("error", f"{case.image_path}: image grid differs from cases.json: {mismatch}")
    mismatch = grid_mismatch(image, label)
    if mismatch:
        add("error", f"{case.label_path}: label map is not on the image's grid: {mismatch}")
    image_array = sitk.GetArrayViewFromImage(image)
    problem = intensity_problem(image_array)
    if problem:
        add("error", f"{case.image_path}: {problem}")
    label_array = sitk.GetArrayFromImage(label)
    problem = label_value_problem(label_array)
    if problem:
        add("error", f"{case.label_path}: {problem}")
    elif not (label_array > 0).any():
        add("warning", f"{case.label_path}: no femoral head (no voxel labelled 1 or 2)")
    elif grade and not mismatch:
        _compare_grades(case, meta, label_array.astype(np.uint8), summary, add)
    if meta.landmarks is None:
        add("warning", "no landmarks; the JIC type cannot be graded (re-import to estimate them)")
    digest = hashlib.sha256(np.ascontiguousarray(image_array).tobytes()).hexdigest()
    return summary, issues, digest


def _compare_grades(case, meta: CaseMeta, labels: np.ndarray, summary: CaseSummary, add) -> None:
    from avnbench import grading

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
    from avnbench.splits import read_splits

    if not (dataset.root / SPLITS_FILE).exists():
        return None, [Issue(severity="warning", message=f"no split yet; make one with 'avnbench data split {dataset.root}'")]
    try:
        folds, meta = read_splits(dataset)
    except DataError as e:
        return None, [Issue(severity="error", message=str(e))]
    issues = []
    val_count = Counter(c for f in folds for c in f.val)
    missing = sorted(set(c.case_id for c in dataset.cases) - set(val_count))
    twice = sorted(c for c, n in val_count.items() if n > 1)
    path = dataset.root / SPLITS_FILE
    if missing:
        issues.append(Issue(severity="error", message=f"{path}: case(s) in no validation fold: {', '.join(missing[:5])}; regenerate it with 'avnbench data split --force'"))
    if twice:
        issues.append(Issue(severity="error", message=f"{path}: case(s) in several validation folds: {', '.join(twice[:5])}"))
    for k, f in enumerate(folds):
        overlap = sorted(set(f.train) & set(f.val))
        if overlap:
            issues.append(Issue(severity="error", message=f"{path}: fold {k} has case(s) in both train and val: {', '.join(overlap[:5])}"))
    return SplitSummary(folds=len(folds), seed=meta.seed, sha256=meta.sha256), issues
