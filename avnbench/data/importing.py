"""Bring real data in: an nnU-Net v2 raw folder or a CSV manifest → an avnbench dataset.

Every case is read through SimpleITK (NIfTI, NRRD, MHA or a DICOM series folder), checked
(readable, 3-D, finite intensities, labels in {0, 1, 2}, label on the image's grid), resampled to
the target spacing keeping the image's direction (linear for images, nearest for labels) and
cropped or padded to the target shape around the femoral head centre, all in one resampling onto
the target grid. The target grid is the source grid re-sampled at the target spacing (same origin
and direction), so a source that already has the target spacing is only cropped, not
interpolated. Grades given by the source are kept; missing ones are computed from the label map
with the core's grading; missing landmarks are estimated (:mod:`avnbench.data.landmarks`).

Nothing is written until every case has been read and checked: the dataset is built in a hidden
folder beside ``out`` and moved into place at the end, so a failure leaves ``out`` as it was.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import uuid
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from avnbench.data.dataset import (
    ARCO_STAGES,
    CASES_FILE,
    FILE_ENDING,
    JIC_TYPES,
    STEINBERG_GRADES,
    CaseMeta,
    CasesFile,
    Geometry,
    Landmarks,
    write_cases_file,
    write_dataset_json,
)
from avnbench.errors import ConfigError, DataError
from avnbench.data.validation import (
    grid_mismatch,
    image_file_problem,
    label_value_problem,
    read_image_checked,
)

DEFAULT_TARGET_SPACING_ZYX = (1.0, 0.44, 0.44)
DEFAULT_TARGET_SHAPE_ZYX = (80, 160, 160)
MANIFEST_REQUIRED = ("case_id", "patient_id", "side", "image", "label")
MANIFEST_OPTIONAL = ("steinberg", "jic", "arco")
CASE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
DATASET_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SIDES = {"l": "L", "left": "L", "r": "R", "right": "R"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceCase(_Strict):
    """One case as the source names it, before reading its images."""

    case_id: str
    patient_id: str
    side: Literal["L", "R"] | None = Field(description="None: infer it from the neck-cut face")
    image: Path = Field(description="an image file or a DICOM series folder")
    label: Path
    steinberg: str | None = None
    jic: str | None = None
    arco: str | None = None
    landmarks: Landmarks | None = None
    where: str = Field(description="where the case is named, for error messages (file:line)")


class Source(_Strict):
    """A source as read: its cases, default dataset name and what to warn about."""

    kind: Literal["manifest", "nnunet"]
    cases: list[SourceCase]
    name: str
    synthetic: bool = Field(default=False, description="True when re-importing a synthetic phantom")
    warnings: list[str] = Field(default_factory=list)


class ImportedCase(_Strict):
    """What import did with one case."""

    case_id: str
    source_image: str
    source_shape_zyx: tuple[int, int, int]
    source_spacing_zyx: tuple[float, float, float]
    steinberg: str | None
    jic: str | None
    grade_sources: dict[str, str]
    landmarks_estimated: bool
    side_inferred: bool


class ImportReport(_Strict):
    """What ``import_dataset`` wrote: the dataset folder, its cases and anything worth a look."""

    out: Path
    name: str
    source_kind: Literal["manifest", "nnunet"]
    synthetic: bool
    target_spacing_zyx: tuple[float, float, float]
    target_shape_zyx: tuple[int, int, int]
    cases: list[ImportedCase]
    warnings: list[str] = Field(default_factory=list)


# ----------------------------------------------------------------------------- reading sources


def read_manifest(manifest: Path, allow_absolute_paths: bool = False) -> list[SourceCase]:
    """Parse and check a CSV manifest (columns ``case_id, patient_id, side, image, label`` and
    optionally ``steinberg, jic, arco``); image and label paths are relative to its folder."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise DataError(f"{manifest}: manifest not found")
    base = manifest.resolve().parent
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{manifest}: not a UTF-8 text file; save the manifest as UTF-8 CSV") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in (reader.fieldnames or []) if c is not None]
    if not columns:
        raise DataError(f"{manifest}: empty manifest; it needs a header row {', '.join(MANIFEST_REQUIRED)}")
    missing = [c for c in MANIFEST_REQUIRED if c not in columns]
    if missing:
        raise DataError(
            f"{manifest}: missing column(s) {', '.join(missing)}; the header must name "
            f"{', '.join(MANIFEST_REQUIRED)} (optional: {', '.join(MANIFEST_OPTIONAL)})"
        )
    unknown = [c for c in columns if c not in MANIFEST_REQUIRED + MANIFEST_OPTIONAL]
    if unknown:
        raise DataError(
            f"{manifest}: unknown column(s) {', '.join(unknown)}; allowed: "
            f"{', '.join(MANIFEST_REQUIRED + MANIFEST_OPTIONAL)}"
        )
    cases: list[SourceCase] = []
    for raw in reader:
        row_number = reader.line_num
        if raw.get(None):
            raise DataError(f"{manifest}:{row_number}: more values than columns")
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        if not any(row.values()):
            continue
        where = f"{manifest}:{row_number}"
        for column in MANIFEST_REQUIRED:
            if not row.get(column):
                raise DataError(f"{where}: empty {column}")
        cases.append(
            SourceCase(
                case_id=_check_case_id(row["case_id"], where),
                patient_id=row["patient_id"],
                side=_parse_side(row["side"], where),
                image=_resolve_manifest_path(row["image"], base, where, allow_absolute_paths),
                label=_resolve_manifest_path(row["label"], base, where, allow_absolute_paths),
                steinberg=_parse_grade(row.get("steinberg"), "steinberg", STEINBERG_GRADES, where),
                jic=_parse_grade(row.get("jic"), "jic", JIC_TYPES, where),
                arco=_parse_grade(row.get("arco"), "arco", ARCO_STAGES, where),
                where=where,
            )
        )
    if not cases:
        raise DataError(f"{manifest}: empty manifest; it has a header but no cases")
    _refuse_duplicates(cases, str(manifest))
    return cases


def _check_case_id(case_id: str, where: str) -> str:
    if not CASE_ID_PATTERN.match(case_id):
        raise DataError(
            f"{where}: case_id {case_id!r} must be letters, digits, '.', '_' or '-' (it becomes a file name)"
        )
    return case_id


def _parse_side(value: str, where: str) -> Literal["L", "R"]:
    side = _SIDES.get(value.strip().lower())
    if side is None:
        raise DataError(f"{where}: side {value!r} is not L or R (left/right also accepted)")
    return side  # type: ignore[return-value]


def _parse_grade(value: str | None, column: str, allowed: tuple[str, ...], where: str) -> str | None:
    if value is None or not value.strip():
        return None
    grade = value.strip().upper()
    if grade not in allowed:
        raise DataError(f"{where}: {column} {value!r} is not one of {', '.join(allowed)} (or empty)")
    return grade


def _resolve_manifest_path(value: str, base: Path, where: str, allow_absolute_paths: bool) -> Path:
    path = Path(value).expanduser()
    resolved = (path if path.is_absolute() else base / path).resolve()
    if not allow_absolute_paths and not resolved.is_relative_to(base):
        raise DataError(
            f"{where}: {value} resolves to {resolved}, outside the manifest's folder {base}; "
            "move the file under that folder or pass --allow-absolute-paths"
        )
    return resolved


def _refuse_duplicates(cases: list[SourceCase], source: str) -> None:
    seen: dict[str, str] = {}
    for case in cases:
        if case.case_id in seen:
            raise DataError(
                f"{case.where}: duplicate case_id {case.case_id!r} (also at {seen[case.case_id]})"
            )
        seen[case.case_id] = case.where


def read_nnunet_raw(folder: Path) -> Source:
    """The cases of an nnU-Net v2 raw dataset folder.

    Patient, side, grades and landmarks come from an avnbench ``cases.json`` when the folder has
    one; without it every case is its own patient and the side is inferred from the label map.
    A synthetic phantom stays marked synthetic.
    """
    folder = Path(folder)
    ds_path = folder / "dataset.json"
    try:
        dataset_json = json.loads(ds_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{ds_path}: missing; {folder} is not an nnU-Net raw dataset") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{ds_path}: not valid JSON ({e})") from None
    if not isinstance(dataset_json, dict) or "file_ending" not in dataset_json:
        raise DataError(f"{ds_path}: no 'file_ending'; not an nnU-Net v2 dataset.json")
    ending = str(dataset_json["file_ending"])
    warnings: list[str] = []
    label_values = _label_values(dataset_json.get("labels", {}), ds_path)
    if not label_values <= {0, 1, 2}:
        raise DataError(
            f"{ds_path}: labels {sorted(label_values)} go beyond avnbench's 0 background, "
            "1 vital, 2 necrosis; relabel the dataset first"
        )
    channels = dataset_json.get("channel_names", {"0": "?"})
    if len(channels) > 1:
        warnings.append(f"{ds_path}: {len(channels)} channels; only channel 0000 is imported")
    images_dir, labels_dir = folder / "imagesTr", folder / "labelsTr"
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: missing; {folder} is not an nnU-Net raw dataset")
    suffix = f"_0000{ending}"
    image_files = sorted(p for p in images_dir.iterdir() if p.name.endswith(suffix))
    if not image_files:
        raise DataError(f"{images_dir}: no '*{suffix}' images; the dataset is empty")
    meta, synthetic = _read_our_cases_json(folder / CASES_FILE)
    synthetic = synthetic or dataset_json.get("synthetic") is True
    cases: list[SourceCase] = []
    for image in image_files:
        case_id = image.name[: -len(suffix)]
        where = str(image)
        _check_case_id(case_id, where)
        label = labels_dir / f"{case_id}{ending}"
        if not label.exists():
            raise DataError(f"{label}: file not found (the label map of {image.name})")
        known = meta.get(case_id)
        if meta and known is None:
            raise DataError(f"{folder / CASES_FILE}: no entry for case {case_id!r} of imagesTr")
        cases.append(
            SourceCase(
                case_id=case_id,
                patient_id=known["patient_id"] if known else case_id,
                side=known["side"] if known else None,
                image=image,
                label=label,
                steinberg=known.get("steinberg") if known else None,
                jic=known.get("jic") if known else None,
                arco=known.get("arco") if known else None,
                landmarks=known.get("landmarks") if known else None,
                where=where,
            )
        )
    if meta:
        extra = sorted(set(meta) - {c.case_id for c in cases})
        if extra:
            warnings.append(
                f"{folder / CASES_FILE}: {len(extra)} case(s) without images are skipped: "
                + ", ".join(extra[:5])
            )
    else:
        warnings.append(
            f"{folder}: no {CASES_FILE}; each case is taken as its own patient (both hips of a "
            "patient may then fall in different folds) and its side is inferred from the label map"
        )
    name = str(dataset_json.get("name") or folder.resolve().name)
    return Source(kind="nnunet", cases=cases, name=_safe_name(name), synthetic=synthetic, warnings=warnings)


def _safe_name(name: str) -> str:
    """A default dataset name made of the characters a dataset name may hold."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._") or "imported"


def _label_values(labels: object, ds_path: Path) -> set[int]:
    values: set[int] = set()
    if not isinstance(labels, dict):
        raise DataError(f"{ds_path}: 'labels' must map names to values")
    for value in labels.values():
        for v in value if isinstance(value, list) else [value]:
            if not isinstance(v, int):
                raise DataError(f"{ds_path}: label value {v!r} is not an integer")
            values.add(v)
    return values


def _read_our_cases_json(path: Path) -> tuple[dict[str, dict], bool]:
    """(per case id: patient, side, grades given (not computed) and landmarks; synthetic?)."""
    if not path.exists():
        return {}, False
    try:
        cases_file = CasesFile.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as e:
        err = e.errors()[0]
        raise DataError(f"{path}: invalid cases.json ({'.'.join(map(str, err['loc']))}: {err['msg']})") from None
    out: dict[str, dict] = {}
    for m in cases_file.cases:
        if m.case_id in out:
            raise DataError(f"{path}: duplicate case id {m.case_id!r}")
        given = {
            g: getattr(m, g)
            for g in ("steinberg", "jic", "arco")
            if m.grade_sources.get(g, "given") == "given"
        }
        # Estimated landmarks are re-estimated on the new grid; given ones are physical points
        # and stay valid through resampling.
        landmarks = m.landmarks if m.landmarks is not None and not m.landmarks.estimated else None
        out[m.case_id] = dict(patient_id=m.patient_id, side=m.side, landmarks=landmarks, **given)
    return out, cases_file.synthetic


def read_source(source: Path, allow_absolute_paths: bool = False) -> Source:
    """Read a manifest CSV or an nnU-Net raw folder (cases named, not yet read)."""
    source = Path(source)
    if source.is_dir():
        return read_nnunet_raw(source)
    if source.is_file():
        cases = read_manifest(source, allow_absolute_paths)
        return Source(kind="manifest", cases=cases, name=_safe_name(source.stem))
    raise DataError(f"{source}: not found; give a CSV manifest or an nnU-Net raw dataset folder")


# ----------------------------------------------------------------------------- resampling


def target_grid(image, centre_mm: np.ndarray, spacing_zyx, shape_zyx) -> Geometry:
    """The target grid: the image's direction, ``spacing_zyx`` (mm), ``shape_zyx`` voxels, on the
    image's lattice re-sampled at that spacing, with ``centre_mm`` (LPS) at the middle voxel."""
    spacing_xyz = np.asarray(spacing_zyx, dtype=float)[::-1]
    size_xyz = np.asarray(shape_zyx, dtype=int)[::-1]
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    origin = np.asarray(image.GetOrigin(), dtype=float)
    centre_index = (direction.T @ (np.asarray(centre_mm) - origin)) / spacing_xyz
    start = np.round(centre_index - (size_xyz - 1) / 2.0)
    new_origin = origin + direction @ (start * spacing_xyz)
    return Geometry(
        size_xyz=tuple(int(s) for s in size_xyz),
        spacing_xyz=tuple(float(s) for s in spacing_xyz),
        origin=tuple(float(o) for o in new_origin),
        direction=tuple(float(d) for d in direction.ravel()),
    )


def resample_onto(image, grid: Geometry, is_label: bool):
    """Resample a SimpleITK image onto ``grid``: nearest neighbour for labels (uint8), linear for
    images (float32); outside the source is 0."""
    import SimpleITK as sitk

    if is_label:
        image = sitk.Cast(image, sitk.sitkUInt8)
        interpolator, pixel = sitk.sitkNearestNeighbor, sitk.sitkUInt8
    else:
        image = sitk.Cast(image, sitk.sitkFloat32)
        interpolator, pixel = sitk.sitkLinear, sitk.sitkFloat32
    return sitk.Resample(
        image,
        list(grid.size_xyz),
        sitk.Transform(),
        interpolator,
        list(grid.origin),
        list(grid.spacing_xyz),
        list(grid.direction),
        0,
        pixel,
    )


def head_centre_mm(label_image, label_array: np.ndarray) -> np.ndarray:
    """Centroid of labels > 0 in physical LPS mm."""
    idx = np.argwhere(label_array > 0)
    centroid_xyz = idx.mean(axis=0)[::-1]
    return np.asarray(label_image.TransformContinuousIndexToPhysicalPoint(centroid_xyz.tolist()))


# ----------------------------------------------------------------------------- the import


def import_dataset(
    source: Path,
    out: Path,
    *,
    target_spacing_zyx: tuple[float, float, float] = DEFAULT_TARGET_SPACING_ZYX,
    target_shape_zyx: tuple[int, int, int] = DEFAULT_TARGET_SHAPE_ZYX,
    allow_absolute_paths: bool = False,
    name: str | None = None,
    force: bool = False,
) -> ImportReport:
    """Import a manifest CSV or an nnU-Net raw folder into a new avnbench dataset at ``out``.

    ``target_spacing_zyx`` in mm and ``target_shape_zyx`` in voxels, both in array order.
    ``out`` must be missing or empty unless ``force``; it is replaced only once everything worked.
    """
    source, out = Path(source), Path(out)
    _check_target(target_spacing_zyx, target_shape_zyx)
    src = read_source(source, allow_absolute_paths)
    name = name or src.name
    warnings = list(src.warnings)
    if not DATASET_NAME_PATTERN.match(name):
        raise ConfigError(
            f"dataset name {name!r} must be letters, digits, '.', '_' or '-'; pass --name"
        )
    _check_out(out, force, source, src.cases)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A hidden sibling (same file system, so the final rename is atomic); mkdir honours umask.
    build = out.parent / f".{out.name}.importing-{uuid.uuid4().hex[:12]}"
    build.mkdir()
    try:
        (build / "imagesTr").mkdir()
        (build / "labelsTr").mkdir()
        metas, imported = [], []
        for case in src.cases:
            meta, report = _import_case(case, build, target_spacing_zyx, target_shape_zyx)
            metas.append(meta)
            imported.append(report)
        write_dataset_json(build, name, len(metas), synthetic=src.synthetic)
        description = f"imported from {source.resolve()} by avnbench data import"
        cases_file = CasesFile(name=name, synthetic=src.synthetic, description=description, cases=metas)
        try:
            write_cases_file(build, cases_file)
        except UnicodeEncodeError:
            # cases.json is written in the locale's encoding; an ASCII-only locale cannot hold
            # non-ASCII ids.
            raise DataError(
                f"{source}: non-ASCII case or patient ids cannot be written in this locale; "
                "run with a UTF-8 locale (LANG=C.UTF-8) or use ASCII ids"
            ) from None
        _move_into_place(build, out)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    warnings += [
        f"{c.case_id}: landmarks estimated from the label map (assumed acetabular edge)"
        for c in imported
        if c.landmarks_estimated
    ]
    return ImportReport(
        out=out,
        name=name,
        source_kind=src.kind,
        synthetic=src.synthetic,
        target_spacing_zyx=tuple(float(s) for s in target_spacing_zyx),
        target_shape_zyx=tuple(int(s) for s in target_shape_zyx),
        cases=imported,
        warnings=warnings,
    )


def _check_target(spacing_zyx, shape_zyx) -> None:
    if len(spacing_zyx) != 3 or any(not (s > 0 and np.isfinite(s)) for s in spacing_zyx):
        raise ConfigError(f"--target-spacing needs three positive numbers (mm, z y x), got {spacing_zyx}")
    if len(shape_zyx) != 3 or any(int(s) < 1 for s in shape_zyx):
        raise ConfigError(f"--target-shape needs three positive voxel counts (z y x), got {shape_zyx}")


def _check_out(out: Path, force: bool, source: Path, cases: list[SourceCase]) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(
            f"{out}: folder exists and is not empty; choose another --out or pass --force to replace it"
        )
    resolved = out.resolve()
    inputs = [source.resolve()] + [p for c in cases for p in (c.image, c.label)]
    for p in inputs:
        if p == resolved or p.is_relative_to(resolved):
            raise ConfigError(
                f"{out}: holds the input {p}; importing would replace the source. Choose another --out"
            )


def _move_into_place(build: Path, out: Path) -> None:
    if out.exists():
        # Keep the old folder until the new one is in place, then drop it.
        old = out.parent / f".{out.name}.replaced-{uuid.uuid4().hex[:12]}"
        out.rename(old)
        try:
            build.rename(out)
        except BaseException:
            old.rename(out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        build.rename(out)


def _import_case(case: SourceCase, build: Path, spacing_zyx, shape_zyx) -> tuple[CaseMeta, ImportedCase]:
    import SimpleITK as sitk

    from avnbench.data.landmarks import estimate_landmarks, side_from_neck_axis

    image = read_image_checked(case.image)
    label = read_image_checked(case.label)
    image_array = sitk.GetArrayViewFromImage(image)
    problem = image_file_problem(case.image, image_array)
    if problem:
        raise DataError(f"{case.image}: {problem}")
    mismatch = grid_mismatch(image, label)
    if mismatch:
        raise DataError(f"{case.label}: label map is not on the grid of {case.image.name}: {mismatch}")
    label_array = sitk.GetArrayFromImage(label)
    problem = label_value_problem(label_array)
    if problem:
        raise DataError(f"{case.label}: {problem}")
    if not (label_array > 0).any():
        raise DataError(f"{case.label}: no femoral head (no voxel labelled 1 or 2)")

    centre = (
        np.asarray(case.landmarks.head_center_mm)
        if case.landmarks is not None
        else head_centre_mm(label, label_array)
    )
    grid = target_grid(image, centre, spacing_zyx, shape_zyx)
    new_image = resample_onto(image, grid, is_label=False)
    new_label = resample_onto(label, grid, is_label=True)
    labels = sitk.GetArrayFromImage(new_label)
    if not (labels > 0).any():
        raise DataError(
            f"{case.label}: the femoral head vanished on the target grid; "
            "check --target-spacing and --target-shape"
        )
    side, side_inferred = case.side, False
    if side is None:
        side = side_from_neck_axis(labels, grid)
        if side is None:
            raise DataError(
                f"{case.label}: no side given and none can be inferred (no neck-cut face); "
                f"add a {CASES_FILE} or import through a manifest with a side column"
            )
        side_inferred = True
    try:
        landmarks = case.landmarks or estimate_landmarks(labels, grid, side)
    except DataError as e:
        raise DataError(f"{case.label}: {e}") from None
    meta = CaseMeta(
        case_id=case.case_id,
        patient_id=case.patient_id,
        side=side,
        arco=case.arco,
        landmarks=landmarks,
        geometry=grid,
        grade_sources={"arco": "given"} if case.arco else {},
    )
    if side_inferred:
        meta.measurements["side_source"] = "inferred from the neck-cut direction"
    meta = _with_grades(meta, labels, case)
    sitk.WriteImage(new_image, str(build / "imagesTr" / f"{case.case_id}_0000{FILE_ENDING}"), True)
    sitk.WriteImage(new_label, str(build / "labelsTr" / f"{case.case_id}{FILE_ENDING}"), True)
    report = ImportedCase(
        case_id=case.case_id,
        source_image=str(case.image),
        source_shape_zyx=tuple(int(s) for s in reversed(image.GetSize())),
        source_spacing_zyx=tuple(float(s) for s in reversed(image.GetSpacing())),
        steinberg=meta.steinberg,
        jic=meta.jic,
        grade_sources=dict(meta.grade_sources),
        landmarks_estimated=landmarks.estimated,
        side_inferred=side_inferred,
    )
    return meta, report


def _with_grades(meta: CaseMeta, labels: np.ndarray, case: SourceCase) -> CaseMeta:
    """Keep the given grades; compute the missing ones and the measurements from the labels."""
    from avnbench.evaluation import grading

    measurements = dict(meta.measurements)
    measurements.update(grading.grade_labels(labels, meta))
    sources = dict(meta.grade_sources)
    grades: dict[str, str | None] = {}
    for key in ("steinberg", "jic"):
        given, computed = getattr(case, key), measurements.get(key)
        if given is not None:
            grades[key], sources[key] = given, "given"
        elif computed is not None:
            grades[key], sources[key] = str(computed), "computed"
    return meta.model_copy(update={**grades, "measurements": measurements, "grade_sources": sources})
