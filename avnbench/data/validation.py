"""Dataset checks: the ones ``avnbench data check`` runs and ``avnbench data import`` relies on.

:func:`read_image_checked` reads an image file or DICOM series and turns every failure into one
line (ITK's own messages on stderr are caught; truncated NIfTI files, which ITK reads as zeros,
are found). The per-array checks (:func:`intensity_problem`, :func:`image_file_problem`,
:func:`label_value_problem`, :func:`grid_mismatch`) return a short description of the problem or
None, so that import can raise it as a one-line error and ``check_dataset`` can collect it.
``check_dataset`` never raises for a problem of a single case; it returns a
:class:`DatasetReport` whose ``errors`` make ``data check`` exit non-zero.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from avnbench.data.dataset import FILE_ENDING, LABELS, SPLITS_FILE, CaseMeta, Dataset, Geometry, load_dataset
from avnbench.errors import DataError

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
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


# ----------------------------------------------------------------------------- reading


@contextmanager
def _native_stderr_captured() -> Iterator[list[str]]:
    """Send what C++ code (ITK, MetaIO, GDCM) prints on file descriptor 2 to a buffer, so the
    user sees our one line instead; the text is in the yielded list afterwards."""
    captured: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable descriptor 2 (embedded interpreters)
        yield captured
        return
    with tempfile.TemporaryFile() as buffer:
        os.dup2(buffer.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buffer.seek(0)
            captured.append(buffer.read().decode(errors="replace"))


def _itk_reason(error: RuntimeError, native: str, path: Path) -> str:
    """The informative part of an ITK read error, without file/line noise or the path."""
    lines = [line.strip() for line in native.splitlines() if line.strip()]
    for line in str(error).splitlines():
        line = line.strip()
        for marker in ("ITK ERROR:", "sitk::ERROR:"):
            if marker in line:
                line = line.split(marker, 1)[1].strip()
                line = line.split("): ", 1)[1] if line.startswith(("MetaImageIO(", "NiftiImageIO(", "NrrdImageIO(", "GDCMImageIO(")) else line
                lines.append(line)
    reason = "; ".join(dict.fromkeys(lines)) or "unreadable"
    return reason.replace(f'"{path}"', "the file").replace(str(path), "the file")


def read_image_checked(path: Path):
    """Read an image file (NIfTI, NRRD, MHA) or a DICOM series folder with SimpleITK: a 3-D,
    single-channel image, or a one-line DataError naming the path and the problem (missing,
    unsupported, unreadable, truncated, wrong dimension)."""
    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    path = Path(path)
    if path.is_dir():
        image = _read_dicom_series(path)
    else:
        if not path.exists():
            raise DataError(f"{path}: file not found")
        if not path.name.lower().endswith(IMAGE_SUFFIXES):
            raise DataError(
                f"{path}: unsupported image format; use NIfTI (.nii, .nii.gz), NRRD, MHA or a "
                "DICOM series folder"
            )
        problem = nifti_integrity_problem(path)
        if problem:
            raise DataError(f"{path}: {problem}")
        with _native_stderr_captured() as native:
            try:
                image = sitk.ReadImage(str(path))
                error = None
            except RuntimeError as e:
                error = e
        if error is not None:
            raise DataError(f"{path}: cannot read image ({_itk_reason(error, ''.join(native), path)})")
    if image.GetDimension() != 3:
        raise DataError(f"{path}: a {image.GetDimension()}-D image; a 3-D volume is needed")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"{path}: {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "a single-channel (grey) image is needed"
        )
    return image


def _read_dicom_series(folder: Path):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    with _native_stderr_captured():
        series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise DataError(f"{folder}: no DICOM series in this folder")
    if len(series) > 1:
        raise DataError(
            f"{folder}: {len(series)} DICOM series in one folder; put each series in its own "
            "folder and name that one in the manifest"
        )
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    if len(files) < 2:
        raise DataError(f"{folder}: the DICOM series has {len(files)} slice; a 3-D volume is needed")
    reader.SetFileNames(files)
    with _native_stderr_captured() as native:
        try:
            image, error = reader.Execute(), None
        except RuntimeError as e:
            image, error = None, e
    if error is not None:
        raise DataError(f"{folder}: cannot read DICOM series ({_itk_reason(error, ''.join(native), folder)})")
    return image


def _nifti_voxels(path: Path) -> tuple[np.ndarray | None, str | None]:
    """(stored voxel block as a flat array, None) of a NIfTI-1/2 file, or (None, problem);
    (None, None) for files that are not NIfTI or whose data type has no numpy equivalent here."""
    import gzip
    import zlib

    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return None, None
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except gzip.BadGzipFile:
        return None, "not gzip-compressed although named .gz; the file is damaged or misnamed"
    except (EOFError, zlib.error):
        return None, "truncated or corrupt gzip stream; the file is damaged or incomplete"
    except OSError as e:
        return None, f"cannot read file ({e.strerror or e})"
    for order in ("<", ">"):
        if len(raw) < 4:
            break
        size = int(np.frombuffer(raw[:4], dtype=f"{order}i4")[0])
        if size == 348 and len(raw) >= 348:  # NIfTI-1
            code = int(np.frombuffer(raw[70:72], dtype=f"{order}i2")[0])
            dims = np.frombuffer(raw[40:56], dtype=f"{order}i2").astype(np.int64)
            offset = int(np.frombuffer(raw[108:112], dtype=f"{order}f4")[0])
            break
        if size == 540 and len(raw) >= 540:  # NIfTI-2
            code = int(np.frombuffer(raw[12:14], dtype=f"{order}i2")[0])
            dims = np.frombuffer(raw[16:80], dtype=f"{order}i8").astype(np.int64)
            offset = int(np.frombuffer(raw[168:176], dtype=f"{order}i8")[0])
            break
    else:
        return None, None  # not a NIfTI header; SimpleITK will say so
    if size not in (348, 540) or not 1 <= dims[0] <= 7:
        return None, None
    dtype = _NIFTI_DTYPES.get(code)
    if dtype is None:
        return None, None
    n_voxels = int(np.prod([max(int(d), 1) for d in dims[1 : 1 + dims[0]]]))
    needed = offset + n_voxels * np.dtype(dtype).itemsize
    if len(raw) < needed:
        return None, f"truncated: {len(raw) - offset} of {needed - offset} bytes of voxel data"
    return np.frombuffer(raw, dtype=np.dtype(order + dtype), count=n_voxels, offset=offset), None


# NIfTI datatype codes → numpy type codes (the scalar types SimpleITK reads).
_NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}


@lru_cache(maxsize=64)
def _nifti_facts(path: str, mtime_ns: int, size: int) -> tuple[str | None, int | None, int | None]:
    """(problem, NaN count, infinite count) of a NIfTI file; cached per file version, so the
    integrity check and the NaN count of one file decompress it once."""
    voxels, problem = _nifti_voxels(Path(path))
    if voxels is None or voxels.dtype.kind != "f":
        return problem, None, None
    return None, int(np.isnan(voxels).sum()), int(np.isinf(voxels).sum())


def _facts(path: Path) -> tuple[str | None, int | None, int | None]:
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return None, None, None
    return _nifti_facts(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def nifti_integrity_problem(path: Path) -> str | None:
    """'truncated ...' when a NIfTI file's gzip stream or voxel block is incomplete, else None.

    ITK's NIfTI reader fills a truncated file with zeros without a word; this catches it.
    """
    return _facts(path)[0]


def nifti_nonfinite_count(path: Path) -> tuple[int, int] | None:
    """(NaN count, infinite count) of a float NIfTI file's stored voxels; None when the file is
    not a readable float NIfTI.

    ITK's NIfTI reader turns NaN into 0, so a NIfTI's NaNs never reach SimpleITK's arrays; this
    reads the stored voxel block itself.
    """
    _, n_nan, n_inf = _facts(path)
    return None if n_nan is None else (n_nan, n_inf)


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
    return nonfinite_problem(n_nan, int((~finite).sum()) - n_nan)


def nonfinite_problem(n_nan: int, n_inf: int) -> str | None:
    """The one-line description of NaN/infinite intensity counts, None when both are 0."""
    parts = [f"{n} {what}" for n, what in ((n_nan, "NaN"), (n_inf, "infinite")) if n]
    if not parts:
        return None
    return f"{' and '.join(parts)} intensities; fix or mask them before importing"


def image_file_problem(path: Path, image_array: np.ndarray) -> str | None:
    """Non-finite intensities of an image read from ``path``, including the NaNs that ITK's
    NIfTI reader silently turns into 0."""
    counts = nifti_nonfinite_count(path)
    if counts is not None and any(counts):
        return nonfinite_problem(*counts)
    return intensity_problem(image_array)


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
        image = read_image_checked(case.image_path)
        label = read_image_checked(case.label_path)
    except DataError as e:
        add("error", str(e))
        return summary, issues, None
    summary.readable = True
    mismatch = geometry_mismatch(meta.geometry, Geometry.of(image))
    if mismatch:
        add("error", f"{case.image_path}: image grid differs from cases.json: {mismatch}")
    mismatch = grid_mismatch(image, label)
    if mismatch:
        add("error", f"{case.label_path}: label map is not on the image's grid: {mismatch}")
    image_array = sitk.GetArrayViewFromImage(image)
    problem = image_file_problem(case.image_path, image_array)
    if problem:
        add("error", f"{case.image_path}: {problem}")
    label_array = sitk.GetArrayFromImage(label)
    problem = label_value_problem(label_array)
    if problem:
        add("error", f"{case.label_path}: {problem}")
    elif not (label_array > 0).any():
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
