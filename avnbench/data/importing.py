"""Bring real data in: an nnU-Net v2 raw folder or a CSV manifest → an avnbench dataset.

The import is one transaction. The source is read (:mod:`avnbench.data.sources`), every case's
image and label are read through the one checked reader (:func:`avnbench.data.imageio.read_image`:
readable, 3-D, finite intensities, labels in {0, 1, 2}), the label must lie on the image's grid,
and both are resampled onto the target grid (:mod:`avnbench.data.resampling`). Grades given by
the source are kept; missing ones are computed from the label map with the core's grading;
missing landmarks are estimated (:mod:`avnbench.data.landmarks`).

Nothing is written into ``out`` until every case has been read, checked and written: the dataset
is built in a hidden folder beside ``out`` (each image written and verified by
:func:`avnbench.data.imageio.write_image`) and renamed into place at the end, so a failure leaves
``out`` as it was. A lock beside ``out`` (:func:`avnbench.data.files.exclusive_lock`) refuses a
second import into the same ``out`` while one runs.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from avnbench.data.dataset import (
    CASES_FILE,
    FILE_ENDING,
    CaseMeta,
    CasesFile,
    write_cases_file,
    write_dataset_json,
)
from avnbench.data.files import exclusive_lock, make_folder, os_reason, output_folder
from avnbench.data.image_checks import grid_mismatch
from avnbench.data.imageio import read_image, write_image
from avnbench.data.resampling import check_target, head_centre_mm, resample_onto, target_grid
from avnbench.data.sources import SourceCase, read_source
from avnbench.errors import ConfigError, DataError

DEFAULT_TARGET_SPACING_ZYX = (1.0, 0.44, 0.44)
DEFAULT_TARGET_SHAPE_ZYX = (80, 160, 160)
DATASET_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    source = Path(source)
    out = Path(os.path.abspath(out))  # '.' and '..' become real names; symbolic links are kept
    check_target(target_spacing_zyx, target_shape_zyx)
    src = read_source(source, allow_absolute_paths)
    name = name or src.name
    warnings = list(src.warnings)
    if not DATASET_NAME_PATTERN.match(name):
        raise ConfigError(
            f"dataset name {name!r} must be letters, digits, '.', '_' or '-'; pass --name"
        )
    _check_out(out, force, source, src.cases)
    output_folder(out.parent, "--out")
    make_folder(out.parent, "--out")
    with exclusive_lock(out):
        _check_out(out, force, source, src.cases)  # again: an import may have finished meanwhile
        # A hidden sibling (same file system, so the final rename is atomic); mkdir honours umask.
        build = out.parent / f".{out.name}.importing-{uuid.uuid4().hex[:12]}"
        try:
            build.mkdir()
        except OSError as e:
            raise DataError(f"--out {out}: cannot create {build} ({os_reason(e)}); the disk may be full or the folder not writable") from None
        try:
            for sub in ("imagesTr", "labelsTr"):
                make_folder(build / sub, "--out")
            metas, imported = [], []
            for case in src.cases:
                meta, report = _import_case(case, build, target_spacing_zyx, target_shape_zyx)
                metas.append(meta)
                imported.append(report)
            write_dataset_json(build, name, len(metas), synthetic=src.synthetic)
            description = f"imported from {source.resolve()} by avnbench data import"
            cases_file = CasesFile(name=name, synthetic=src.synthetic, description=description, cases=metas)
            write_cases_file(build, cases_file)
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


def _check_out(out: Path, force: bool, source: Path, cases: list[SourceCase]) -> None:
    """Refuse an ``out`` the import must not replace: a file, the current folder or one above
    it, a folder holding (or inside) the source, a non-empty folder without ``force``, and with
    ``force`` a non-empty folder that is not an avnbench dataset."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder; choose another --out")
    resolved, cwd = out.resolve(), Path.cwd().resolve()
    if cwd == resolved or cwd.is_relative_to(resolved):
        raise ConfigError(
            f"--out {out}: is the current folder or holds it; importing would replace it. "
            "Name a new folder, e.g. --out datasets/hips"
        )
    inputs = [source.resolve()] + [p for c in cases for p in (c.image, c.label)]
    for p in inputs:
        if p == resolved or p.is_relative_to(resolved):
            raise ConfigError(
                f"--out {out}: holds the input {p}; importing would replace the source. Choose another --out"
            )
    if source.is_dir() and resolved.is_relative_to(source.resolve()):
        raise ConfigError(f"--out {out}: is inside the source folder {source}; choose an --out outside it")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ConfigError(
                f"--out {out}: folder exists and is not empty; choose another --out or pass --force to replace it"
            )
        if not ((out / "dataset.json").is_file() and (out / CASES_FILE).is_file()):
            raise ConfigError(
                f"--out {out}: not an avnbench dataset (no dataset.json and {CASES_FILE}); --force "
                "replaces only a dataset. Choose another --out"
            )


def _move_into_place(build: Path, out: Path) -> None:
    try:
        _rename_into_place(build, out)
    except OSError as e:
        raise DataError(f"--out {out}: cannot move the new dataset into place ({os_reason(e)}); {out} is unchanged") from None


def _rename_into_place(build: Path, out: Path) -> None:
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

    image = read_image(case.image, kind="image")
    label = read_image(case.label, kind="label")
    mismatch = grid_mismatch(image, label)
    if mismatch:
        raise DataError(f"{case.label}: label map is not on the grid of {case.image.name}: {mismatch}")
    label_array = sitk.GetArrayFromImage(label)
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
    write_image(new_image, build / "imagesTr" / f"{case.case_id}_0000{FILE_ENDING}")
    write_image(new_label, build / "labelsTr" / f"{case.case_id}{FILE_ENDING}")
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
