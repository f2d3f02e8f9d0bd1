"""The dataset on disk: an nnU-Net v2 raw dataset plus avnbench's ``cases.json``.

Layout (DESIGN.md "Data")::

    DATASET/dataset.json              nnU-Net v2 dataset.json (+ "name", "synthetic")
    DATASET/imagesTr/{case}_0000.nii.gz
    DATASET/labelsTr/{case}.nii.gz
    DATASET/cases.json                per case: patient, side, reference grades, landmarks, geometry

Arrays are always in SimpleITK's array order (z, y, x) and spacings handed to numpy code are in
that same array order; points and vectors are in the image's physical LPS frame (mm).
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from avnbench.errors import DataError

LABELS = {"background": 0, "vital": 1, "necrosis": 2}
STEINBERG_GRADES = ("A", "B", "C")
JIC_TYPES = ("A", "B", "C1", "C2")
ARCO_STAGES = ("I", "II", "IIIA", "IIIB", "IV")
FILE_ENDING = ".nii.gz"
CASES_FILE = "cases.json"
SPLITS_FILE = "splits_final.json"
SPLITS_META_FILE = "splits.meta.json"
#: A case id becomes a file name: letters, digits, '.', '_', '-', starting with a letter or digit.
CASE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
CASE_ID_MAX_LENGTH = 100

Vector3 = tuple[float, float, float]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Geometry(_Strict):
    """Image grid: size and spacing in SimpleITK (x, y, z) order, origin and direction in LPS mm."""

    size_xyz: tuple[int, int, int]
    spacing_xyz: Vector3
    origin: Vector3
    direction: tuple[float, float, float, float, float, float, float, float, float]

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """Array shape (z, y, x) of an image on this grid."""
        return tuple(reversed(self.size_xyz))  # type: ignore[return-value]

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Voxel spacing in mm in array-axis order (z, y, x)."""
        return tuple(reversed(self.spacing_xyz))  # type: ignore[return-value]

    def index_to_physical(self, index_zyx: np.ndarray) -> np.ndarray:
        """Map array indices (..., 3) in (z, y, x) order to physical LPS points in mm."""
        ijk = np.asarray(index_zyx, dtype=float)[..., ::-1]
        d = np.asarray(self.direction, dtype=float).reshape(3, 3)
        return np.asarray(self.origin) + (ijk * np.asarray(self.spacing_xyz)) @ d.T

    def physical_to_index(self, points: np.ndarray) -> np.ndarray:
        """Map physical LPS points (..., 3) in mm to continuous array indices in (z, y, x) order."""
        d = np.asarray(self.direction, dtype=float).reshape(3, 3)
        ijk = ((np.asarray(points, dtype=float) - np.asarray(self.origin)) @ d) / np.asarray(
            self.spacing_xyz
        )
        return ijk[..., ::-1]

    @classmethod
    def of(cls, image) -> "Geometry":
        """The geometry of a SimpleITK image."""
        return cls(
            size_xyz=tuple(int(s) for s in image.GetSize()),
            spacing_xyz=tuple(float(s) for s in image.GetSpacing()),
            origin=tuple(float(o) for o in image.GetOrigin()),
            direction=tuple(float(d) for d in image.GetDirection()),
        )

    def apply_to(self, image) -> None:
        """Give a SimpleITK image this grid's spacing, origin and direction (sizes must agree)."""
        if tuple(image.GetSize()) != tuple(self.size_xyz):
            raise ValueError(f"image size {image.GetSize()} != geometry size {self.size_xyz}")
        image.SetSpacing(self.spacing_xyz)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)


class PatientAxes(_Strict):
    """Unit vectors of the patient's anatomical axes for this hip, in the physical LPS frame."""

    lateral: Vector3
    anterior: Vector3
    superior: Vector3


class Landmarks(_Strict):
    """What the grading needs (clinical.md §8.1), all in the image's physical LPS frame (mm)."""

    head_center_mm: Vector3
    head_radius_mm: float = Field(gt=0)
    acetabular_lateral_edge_mm: Vector3
    wb_medial_point_mm: Vector3
    patient_axes: PatientAxes
    estimated: bool = Field(
        default=False, description="True when estimated from the labels (sphere fit), not given"
    )


def case_id_problem(case_id: str) -> str | None:
    """Why ``case_id`` cannot be a case id (it becomes a file name), or None. The one rule, used
    by ``cases.json`` and by import."""
    if not CASE_ID_PATTERN.match(case_id) or len(case_id) > CASE_ID_MAX_LENGTH:
        shown = repr(case_id) if len(case_id) <= 40 else f"{case_id[:37]!r}... ({len(case_id)} characters)"
        return (
            f"case_id {shown} must be 1-{CASE_ID_MAX_LENGTH} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (it becomes a file name)"
        )
    return None


class CaseMeta(_Strict):
    """One case's entry in ``cases.json``."""

    case_id: str
    patient_id: str
    side: Literal["L", "R"]
    steinberg: Literal["A", "B", "C"] | None = None
    jic: Literal["A", "B", "C1", "C2"] | None = None
    arco: Literal["I", "II", "IIIA", "IIIB", "IV"] | None = None
    landmarks: Landmarks | None = None
    geometry: Geometry
    measurements: dict[str, float | str | None] = Field(
        default_factory=dict,
        description="Quantities measured on the reference label map (necrosis %, Kerboul, ...)",
    )
    grade_sources: dict[str, Literal["given", "computed"]] = Field(default_factory=dict)

    @field_validator("case_id")
    @classmethod
    def _case_id_is_a_file_name(cls, value: str) -> str:
        problem = case_id_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class CasesFile(_Strict):
    """The whole ``cases.json``."""

    name: str
    synthetic: bool
    description: str = ""
    cases: list[CaseMeta]


class DatasetJson(BaseModel):
    """nnU-Net v2 ``dataset.json``; extra keys are kept, as nnU-Net allows them."""

    model_config = ConfigDict(extra="allow")

    channel_names: dict[str, str]
    labels: dict[str, int | list[int]]
    numTraining: int = Field(ge=0)
    file_ending: str
    name: str | None = None


class Case(_Strict):
    """A case of a dataset: where its files are and its metadata. Loading is lazy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    case_id: str
    image_path: Path
    label_path: Path | None
    meta: CaseMeta

    @property
    def patient_id(self) -> str:
        return self.meta.patient_id

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing in mm, array order (z, y, x)."""
        return self.meta.geometry.spacing_zyx

    def read_image(self):
        """The image as a checked SimpleITK image (:func:`avnbench.data.imageio.read_image`)."""
        from avnbench.data.imageio import read_image

        return read_image(self.image_path, kind="image")

    def read_label(self):
        """The reference label map as a checked SimpleITK image, values in {0, 1, 2}."""
        from avnbench.data.imageio import read_image

        if self.label_path is None:
            raise DataError(f"case {self.case_id} has no reference label map")
        return read_image(self.label_path, kind="label")

    def image_array(self) -> np.ndarray:
        """Image intensities, float32, array order (z, y, x)."""
        import SimpleITK as sitk

        return sitk.GetArrayFromImage(self.read_image()).astype(np.float32, copy=False)

    def label_array(self) -> np.ndarray:
        """Reference labels, uint8 in {0, 1, 2}, array order (z, y, x)."""
        import SimpleITK as sitk

        return sitk.GetArrayFromImage(self.read_label()).astype(np.uint8, copy=False)


class Dataset:
    """A dataset folder: ``dataset.json``, ``cases.json``, images and labels."""

    def __init__(self, root: Path, dataset_json: DatasetJson, cases_file: CasesFile):
        self.root = Path(root)
        self.dataset_json = dataset_json
        self.cases_file = cases_file
        cases_path = self.root / CASES_FILE
        self.cases: list[Case] = [
            Case(
                case_id=m.case_id,
                image_path=path_inside(self.root / "imagesTr", f"{m.case_id}_0000{FILE_ENDING}", cases_path),
                label_path=path_inside(self.root / "labelsTr", f"{m.case_id}{FILE_ENDING}", cases_path),
                meta=m,
            )
            for m in cases_file.cases
        ]
        self._by_id = {c.case_id: c for c in self.cases}

    def missing_files(self) -> list[tuple[Case, Path]]:
        """(case, path) of every image or label file that ``cases.json`` names but is not there."""
        return [
            (c, p) for c in self.cases for p in (c.image_path, c.label_path) if p is not None and not p.is_file()
        ]

    @property
    def name(self) -> str:
        return self.cases_file.name

    @property
    def synthetic(self) -> bool:
        return self.cases_file.synthetic

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, case_id: str) -> Case:
        try:
            return self._by_id[case_id]
        except KeyError:
            raise DataError(f"{self.root}: no case {case_id!r} in {CASES_FILE}") from None

    def subset(self, case_ids: list[str]) -> list[Case]:
        """The cases with these ids, in the given order."""
        return [self[c] for c in case_ids]

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over cases.json, dataset.json and every image and label file (hex)."""
        h = hashlib.sha256()
        for p in [self.root / "dataset.json", self.root / CASES_FILE]:
            h.update(p.read_bytes())
        for c in self.cases:
            for p in (c.image_path, c.label_path):
                if p is not None:
                    h.update(p.name.encode())
                    h.update(_file_sha256(p).encode())
        return h.hexdigest()

    @property
    def splits_path(self) -> Path:
        return self.root / SPLITS_FILE


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def path_inside(folder: Path, name: str, named_in: Path) -> Path:
    """``folder / name``, refused (one-line DataError naming ``named_in``) unless it resolves,
    symbolic links and all, to a place inside ``folder``: a dataset never reads or writes
    outside its folders because of what a file names."""
    path = Path(folder) / name
    resolved, base = path.resolve(), Path(folder).resolve()
    if not resolved.is_relative_to(base):
        raise DataError(
            f"{named_in}: {name} resolves to {resolved}, outside {folder}; "
            "a dataset's files must live in its own folders"
        )
    return path


def load_dataset(root: Path | str, *, require_files: bool = True) -> Dataset:
    """Open a dataset folder, validating ``dataset.json`` and ``cases.json`` (ids, duplicates,
    paths inside the dataset) and, with ``require_files``, that every named image and label file
    exists. The images themselves are read later, through :mod:`avnbench.data.imageio`."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}: dataset folder not found (make one with 'avnbench data synth --out {root}' "
            "or 'avnbench data import')"
        )
    ds_path, cases_path = root / "dataset.json", root / CASES_FILE
    for p in (ds_path, cases_path):
        if not p.is_file():
            raise DataError(f"{p}: missing; {root} is not an avnbench dataset")
    dataset_json = read_json_model(ds_path, DatasetJson)
    cases_file = read_json_model(cases_path, CasesFile)
    ids = [c.case_id for c in cases_file.cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise DataError(f"{cases_path}: duplicate case ids {', '.join(dupes)}")
    dataset = Dataset(root, dataset_json, cases_file)
    if require_files:
        missing = dataset.missing_files()
        if missing:
            case, path = missing[0]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(
                f"{cases_path}: case {case.case_id}: {path} not found{more}; restore the file or "
                f"run 'avnbench data check {root}'"
            )
    return dataset


def read_json_model(path: Path, model: type[BaseModel], hint: str | None = None):
    """Parse a JSON file into a pydantic model; unreadable, invalid JSON or a schema violation is
    a one-line DataError naming the file, the first problem and ``hint`` (what to do)."""
    what = path.name
    hint = hint or "fix the file or re-create the dataset ('avnbench data import' or 'data synth')"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: invalid {what} (not UTF-8 text); {hint}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    try:
        return model.model_validate_json(text)
    except ValidationError as e:
        raise DataError(f"{path}: invalid {what} ({_first_error(e)}); {hint}") from None


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    msg = " ".join(str(err["msg"]).split()).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def write_dataset_json(root: Path, name: str, num_training: int, synthetic: bool) -> None:
    """Write nnU-Net v2's ``dataset.json`` for a single-channel T1 dataset with our labels."""
    content = {
        "channel_names": {"0": "T1"},
        "labels": dict(LABELS),
        "numTraining": num_training,
        "file_ending": FILE_ENDING,
        "name": name,
        "description": "avnbench dataset" + (" (synthetic phantom)" if synthetic else ""),
        "synthetic": synthetic,
    }
    from avnbench.data.files import write_text_atomic

    write_text_atomic(Path(root) / "dataset.json", json.dumps(content, indent=2) + "\n")


def write_cases_file(root: Path, cases_file: CasesFile) -> None:
    """Write ``cases.json`` (stable key order, so equal content gives equal bytes)."""
    from avnbench.data.files import write_text_atomic

    write_text_atomic(Path(root) / CASES_FILE, cases_file.model_dump_json(indent=2) + "\n")
