"""Read what an import is given: a CSV manifest or an nnU-Net v2 raw folder → named cases.

Nothing here reads an image: :func:`read_source` turns the source into :class:`SourceCase` rows
(ids checked against the one case-id rule of :mod:`avnbench.data.dataset`, paths resolved, sides
and grades parsed), each naming where it came from (``file:line``) for error messages.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from avnbench.data.dataset import (
    ARCO_STAGES,
    CASES_FILE,
    JIC_TYPES,
    STEINBERG_GRADES,
    CasesFile,
    Landmarks,
    case_id_problem,
    read_json_model,
)
from avnbench.errors import DataError

MANIFEST_REQUIRED = ("case_id", "patient_id", "side", "image", "label")
MANIFEST_OPTIONAL = ("steinberg", "jic", "arco")
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
    repeated = [c for c, n in Counter(columns).items() if n > 1]
    if repeated:
        # csv.DictReader would keep the last of the two values without a word
        raise DataError(f"{manifest}: column {repeated[0]!r} appears twice in the header; keep one of them")
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
    problem = case_id_problem(case_id)
    if problem:
        raise DataError(f"{where}: {problem}")
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
    cases_file = read_json_model(path, CasesFile, hint="fix it, or remove it to import the images alone")
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
