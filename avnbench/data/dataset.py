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
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from avnbench.errors import DataError

LABELS = {"background": 0, "vital": 1, "necrosis": 2}
STEINBERG_GRADES = ("A", "B", "C")
JIC_TYPES = ("A", "B", "C1", "C2")
ARCO_STAGES = ("I", "II", "IIIA", "IIIB", "IV")
FILE_ENDING = ".nii.gz"
CASES_FILE = "cases.json"
SPLITS_FILE = "splits_final.json"
SPLITS_META_FILE = "splits.meta.json"

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
    numTraining: int
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
        """The image as a SimpleITK image."""
        return read_sitk(self.image_path)

    def read_label(self):
        """The reference label map as a SimpleITK image."""
        if self.label_path is None:
            raise DataError(f"case {self.case_id} has no reference label map")
        return read_sitk(self.label_path)

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
        self.cases: list[Case] = [
            Case(
                case_id=m.case_id,
                image_path=self.root / "imagesTr" / f"{m.case_id}_0000{FILE_ENDING}",
                label_path=self.root / "labelsTr" / f"{m.case_id}{FILE_ENDING}",
                meta=m,
            )
            for m in cases_file.cases
        ]
        self._by_id = {c.case_id: c for c in self.cases}

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


def read_sitk(path: Path):
    """Read an image with SimpleITK; a missing or unreadable file is a one-line DataError."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else "unreadable"
        raise DataError(f"{path}: cannot read image ({first})") from None


def load_dataset(root: Path | str) -> Dataset:
    """Open a dataset folder, validating ``dataset.json`` and ``cases.json`` (not the images)."""
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
    try:
        dataset_json = DatasetJson.model_validate_json(ds_path.read_text(encoding="utf-8"))
    except ValidationError as e:
        raise DataError(f"{ds_path}: invalid dataset.json ({_first_error(e)})") from None
    try:
        cases_file = CasesFile.model_validate_json(cases_path.read_text(encoding="utf-8"))
    except ValidationError as e:
        raise DataError(f"{cases_path}: invalid cases.json ({_first_error(e)})") from None
    ids = [c.case_id for c in cases_file.cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise DataError(f"{cases_path}: duplicate case ids {', '.join(dupes)}")
    return Dataset(root, dataset_json, cases_file)


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{loc}: {err['msg']}" if loc else err["msg"]


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
    (Path(root) / "dataset.json").write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def write_cases_file(root: Path, cases_file: CasesFile) -> None:
    """Write ``cases.json`` (stable key order, so equal content gives equal bytes)."""
    (Path(root) / CASES_FILE).write_text(cases_file.model_dump_json(indent=2) + "\n", encoding="utf-8")
