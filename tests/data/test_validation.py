"""Dataset checks (``avnbench data check``) and the per-array checks import relies on."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from avnbench.data.dataset import Geometry, load_dataset
from avnbench.errors import DataError
from avnbench.data.importing import import_dataset
from avnbench.data.splits import write_splits
from avnbench.data.image_checks import geometry_mismatch, grid_mismatch, intensity_problem, label_value_problem
from avnbench.data.validation import check_dataset


def _hip(side: str, seed: int, cap: float):
    """A neck-cut ball (label 1) with a superolateral cap (label 2) in a noisy image, LPS."""
    shape = (20, 36, 36)
    rng = np.random.default_rng(seed)
    zyx = np.indices(shape).transpose(1, 2, 3, 0) * np.array([1.0, 0.6, 0.6])
    q = zyx[..., ::-1] - np.array([10.5, 10.5, 10.0])  # (x, y, z) mm from the centre
    lateral = np.array([1.0 if side == "L" else -1.0, 0, 0])
    neck = np.cos(0.6) * lateral - np.sin(0.6) * np.array([0, 0, 1.0])
    head = (np.linalg.norm(q, axis=-1) <= 8.0) & (q @ neck <= 5.0)
    labels = head.astype(np.uint8)
    labels[head & (q @ ((lateral + [0, 0, 1]) / np.sqrt(2)) > cap * 8.0)] = 2
    image = sitk.GetImageFromArray((100 + 200 * head + rng.normal(0, 5, shape)).astype(np.float32))
    label = sitk.GetImageFromArray(labels)
    for im in (image, label):
        im.SetSpacing((0.6, 0.6, 1.0))
    return image, label


@pytest.fixture(scope="module")
def clean_dataset(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    rows = ["case_id,patient_id,side,image,label"]
    for k, (side, cap) in enumerate([("L", 0.3), ("R", 0.6), ("L", 0.5), ("R", 0.4)]):
        image, label = _hip(side, k, cap)
        sitk.WriteImage(image, str(src / f"c{k}.nii.gz"))
        sitk.WriteImage(label, str(src / f"c{k}_seg.nii.gz"))
        rows.append(f"c{k},p{k // 2},{side},c{k}.nii.gz,c{k}_seg.nii.gz")
    (src / "m.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path_factory.mktemp("ds") / "clean"
    import_dataset(src / "m.csv", out, target_spacing_zyx=(1.0, 0.6, 0.6), target_shape_zyx=(20, 36, 36), name="clean")
    write_splits(load_dataset(out), n_folds=2, seed=0)
    return out


@pytest.fixture
def dataset(clean_dataset, tmp_path) -> Path:
    """A fresh copy to break."""
    return Path(shutil.copytree(clean_dataset, tmp_path / "ds"))


def _messages(report, severity):
    return [i.message for i in report.issues if i.severity == severity]


def test_a_clean_import_passes(clean_dataset):
    report = check_dataset(clean_dataset)
    assert report.ok, report.errors
    assert len(report.cases) == 4 and report.n_patients == 2
    assert report.split is not None and report.split.folds == 2
    assert report.estimated_landmark_cases == ["c0", "c1", "c2", "c3"]
    assert not report.synthetic and report.name == "clean"
    assert sum(report.distribution("steinberg").values()) == 4
    for case in report.cases:
        assert case.readable and case.shape_zyx == (20, 36, 36)
        assert case.computed_steinberg == case.steinberg  # computed at import, recomputed here
        assert 0 < case.necrosis_percent < 100
    assert report.warnings == []


def _rewrite(path: Path, edit) -> None:
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    new = sitk.GetImageFromArray(edit(array))
    new.CopyInformation(image)
    sitk.WriteImage(new, str(path))


def test_label_values_outside_0_1_2_are_errors(dataset):
    def put_seven(a):
        a[0, 0, 0] = 7
        return a

    _rewrite(dataset / "labelsTr" / "c1.nii.gz", put_seven)
    report = check_dataset(dataset)
    assert not report.ok
    assert any("c1.nii.gz: label values 7 outside {0, 1, 2}" in m for m in _messages(report, "error"))


def test_nan_intensities_are_errors(dataset):
    def put_nan(a):
        a[3, 4, 5] = np.nan
        a[3, 4, 6] = np.inf
        return a

    _rewrite(dataset / "imagesTr" / "c2_0000.nii.gz", put_nan)
    errors = _messages(check_dataset(dataset), "error")
    assert any("c2_0000.nii.gz: 1 NaN and 1 infinite intensities" in m for m in errors)


def test_label_off_the_image_grid_is_an_error(dataset):
    path = dataset / "labelsTr" / "c0.nii.gz"
    label = sitk.ReadImage(str(path))
    label.SetOrigin(tuple(o + 0.5 for o in label.GetOrigin()))
    sitk.WriteImage(label, str(path))
    errors = _messages(check_dataset(dataset), "error")
    assert any("c0.nii.gz: label map is not on the image's grid: origin" in m for m in errors)


def test_image_grid_differing_from_cases_json_is_an_error(dataset):
    cases = json.loads((dataset / "cases.json").read_text())
    cases["cases"][3]["geometry"]["spacing_xyz"] = [0.5, 0.5, 1.0]
    (dataset / "cases.json").write_text(json.dumps(cases))
    errors = _messages(check_dataset(dataset), "error")
    assert any("c3_0000.nii.gz: image grid differs from cases.json: spacing" in m for m in errors)


def test_missing_and_corrupt_files_are_errors(dataset):
    (dataset / "imagesTr" / "c0_0000.nii.gz").unlink()
    (dataset / "labelsTr" / "c1.nii.gz").write_bytes(b"not a nifti at all")
    report = check_dataset(dataset)
    errors = _messages(report, "error")
    assert any("c0_0000.nii.gz: file not found" in m for m in errors)
    assert any("c1.nii.gz: not gzip-compressed" in m for m in errors)
    assert [c.readable for c in report.cases] == [False, False, True, True]


def test_truncated_nifti_is_an_error_not_zeros(dataset):
    # ITK would read the truncated file as a volume padded with zeros
    path = dataset / "imagesTr" / "c2_0000.nii.gz"
    path.write_bytes(path.read_bytes()[:3000])
    errors = _messages(check_dataset(dataset), "error")
    assert any("c2_0000.nii.gz: truncated" in m for m in errors)


def test_given_grade_that_disagrees_is_a_warning_not_replaced(dataset):
    cases = json.loads((dataset / "cases.json").read_text())
    meta = cases["cases"][0]
    computed = meta["steinberg"]
    meta["steinberg"] = "C" if computed != "C" else "A"
    meta["grade_sources"]["steinberg"] = "given"
    (dataset / "cases.json").write_text(json.dumps(cases))
    report = check_dataset(dataset)
    assert report.ok
    warnings = _messages(report, "warning")
    assert any(f"steinberg reference grade {meta['steinberg']} differs from {computed}" in m for m in warnings)
    assert report.cases[0].steinberg == meta["steinberg"]


def test_a_split_that_leaks_a_patient_is_an_error(dataset):
    (dataset / "splits_final.json").write_text(json.dumps([
        {"train": ["c0", "c2"], "val": ["c1", "c3"]},
        {"train": ["c1", "c3"], "val": ["c0", "c2"]},
    ]))
    errors = _messages(check_dataset(dataset), "error")
    assert any("leaks patient(s) p0" in m for m in errors)


def test_a_split_missing_a_case_is_an_error(dataset):
    (dataset / "splits_final.json").write_text(json.dumps([
        {"train": ["c2", "c3"], "val": ["c0", "c1"]},
        {"train": ["c0", "c1"], "val": ["c2"]},
    ]))
    errors = _messages(check_dataset(dataset), "error")
    assert any("in no validation fold: c3" in m for m in errors)


def test_duplicate_images_and_stray_files_are_warnings(dataset):
    shutil.copy(dataset / "imagesTr" / "c0_0000.nii.gz", dataset / "imagesTr" / "c3_0000.nii.gz")
    shutil.copy(dataset / "labelsTr" / "c0.nii.gz", dataset / "labelsTr" / "c3.nii.gz")
    (dataset / "imagesTr" / "extra_0000.nii.gz").write_bytes(b"")
    report = check_dataset(dataset)
    warnings = _messages(report, "warning")
    assert any("c3_0000.nii.gz: same image as case c0" in m for m in warnings)
    assert any("not in cases.json, ignored: extra_0000.nii.gz" in m for m in warnings)


def test_dataset_json_inconsistency_is_an_error(dataset):
    ds = json.loads((dataset / "dataset.json").read_text())
    ds["numTraining"] = 9
    (dataset / "dataset.json").write_text(json.dumps(ds))
    assert any("numTraining 9" in m for m in _messages(check_dataset(dataset), "error"))


def test_unreadable_cases_json_raises(dataset):
    (dataset / "cases.json").write_text("{")
    with pytest.raises(DataError, match="invalid cases.json"):
        check_dataset(dataset)


def test_array_checks():
    assert intensity_problem(np.zeros((2, 2), np.float32)) is None
    assert intensity_problem(np.array([np.nan, np.nan, 1.0])) == "2 NaN intensities; fix or mask them before importing"
    assert intensity_problem(np.arange(4)) is None  # integers are always finite
    assert label_value_problem(np.array([0, 1, 2, 2], np.uint8)) is None
    assert label_value_problem(np.array([0.0, 1.0, 2.0])) is None
    assert "1.5" in label_value_problem(np.array([0.0, 1.5]))
    assert "-1" in label_value_problem(np.array([0, -1]))


def test_grid_mismatch_names_the_first_difference():
    a = sitk.Image(4, 5, 6, sitk.sitkUInt8)
    b = sitk.Image(4, 5, 6, sitk.sitkUInt8)
    assert grid_mismatch(a, b) is None
    b.SetSpacing((1.0, 1.0, 2.0))
    assert grid_mismatch(a, b).startswith("spacing 1 x 1 x 2 vs 1 x 1 x 1 mm")
    c = sitk.Image(4, 5, 7, sitk.sitkUInt8)
    assert grid_mismatch(a, c).startswith("size 4 x 5 x 7 vs 4 x 5 x 6")
    d = sitk.Image(4, 5, 6, sitk.sitkUInt8)
    d.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, 1))
    assert grid_mismatch(a, d).startswith("direction")
    tiny = Geometry.of(a).model_copy(update={"origin": (1e-5, 0.0, 0.0)})
    assert geometry_mismatch(Geometry.of(a), tiny) is None  # float noise of NIfTI round trips


def test_grades_can_be_skipped(clean_dataset):
    report = check_dataset(clean_dataset, grade=False)
    assert report.ok and all(c.computed_steinberg is None for c in report.cases)


# ----------------------------------------------------------------------------- the one reader and writer


def _oblique_int16():
    image = sitk.GetImageFromArray(np.random.default_rng(0).integers(-100, 3000, (7, 9, 11)).astype(np.int16))
    image.SetDirection((1, 0, 0, 0, 0.955336, -0.29552, 0, 0.29552, 0.955336))
    image.SetSpacing((0.5, 0.7, 1.3))
    image.SetOrigin((1.0, -2.0, 3.0))
    return image


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".nrrd"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
def test_read_image_gives_what_sitk_reads(tmp_path, suffix, dtype):
    from avnbench.data.imageio import read_image, write_image

    source = _oblique_int16()
    image = sitk.GetImageFromArray((sitk.GetArrayFromImage(source) % 3).astype(dtype))
    image.CopyInformation(source)
    path = write_image(image, tmp_path / f"x{suffix}")
    ours, theirs = read_image(path, kind="label"), sitk.ReadImage(str(path))
    assert ours.GetPixelID() == theirs.GetPixelID()
    assert (ours.GetSize(), ours.GetSpacing(), ours.GetOrigin(), ours.GetDirection()) == (
        theirs.GetSize(), theirs.GetSpacing(), theirs.GetOrigin(), theirs.GetDirection())
    assert np.array_equal(sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(theirs))
    assert [p.name for p in tmp_path.iterdir()] == [f"x{suffix}"]  # no temporary file left


@pytest.mark.parametrize(
    ("content", "kind", "expected"),
    [
        (lambda a: a.astype(np.float32) + 0.5, "label", "label values"),
        (lambda a: np.where(a == 0, np.nan, a).astype(np.float32), "image", "NaN intensities"),
        (lambda a: a.astype(np.float32) * 1e3, "image", None),
    ],
)
def test_read_image_checks_values_by_kind(tmp_path, content, kind, expected):
    from avnbench.data.imageio import read_image

    source = _oblique_int16()
    image = sitk.GetImageFromArray(content(sitk.GetArrayFromImage(source) % 3))
    image.CopyInformation(source)
    sitk.WriteImage(image, str(tmp_path / "x.nii.gz"))
    if expected is None:
        assert read_image(tmp_path / "x.nii.gz", kind=kind).GetSize() == source.GetSize()
    else:
        with pytest.raises(DataError, match=expected):
            read_image(tmp_path / "x.nii.gz", kind=kind)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    from avnbench.data import imageio

    path = imageio.write_image(_oblique_int16(), tmp_path / "x.nii.gz")
    before = path.read_bytes()
    monkeypatch.setattr(imageio, "_itk_write", lambda image, p, level: Path(p).write_bytes(before[:100]))
    with pytest.raises(DataError, match="x.nii.gz: writing failed .*the disk may be full"):
        imageio.write_image(_oblique_int16(), path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["x.nii.gz"]


def test_the_lock_refuses_a_second_holder_and_is_released(tmp_path):
    import os

    from avnbench.data.files import exclusive_lock

    with exclusive_lock(tmp_path / "out") as lock:
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(DataError, match=rf"another avnbench process \(pid {os.getpid()}\)"):
            with exclusive_lock(tmp_path / "out"):
                pass
    assert not lock.exists()
    with exclusive_lock(tmp_path / "out"):
        pass


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["cases"][0].update(case_id="../x"), "case_id '../x' must be"),
        (lambda d: d["cases"][0].update(case_id="x" * 101), "(101 characters)"),
        (lambda d: d["cases"][0].update(side="left"), "cases.0.side"),
        (lambda d: d.update(cases=d["cases"] + d["cases"][:1]), "duplicate case ids c0"),
    ],
)
def test_cases_json_contract(dataset, edit, expected):
    cases = json.loads((dataset / "cases.json").read_text())
    edit(cases)
    (dataset / "cases.json").write_text(json.dumps(cases))
    with pytest.raises(DataError, match=re.escape(expected)) as info:
        load_dataset(dataset)
    assert "cases.json" in str(info.value) and "\n" not in str(info.value)


def test_files_outside_the_dataset_and_missing_files(dataset, tmp_path):
    image = dataset / "imagesTr" / "c0_0000.nii.gz"
    shutil.move(image, tmp_path / "elsewhere.nii.gz")
    with pytest.raises(DataError, match="c0_0000.nii.gz not found"):
        load_dataset(dataset)
    assert load_dataset(dataset, require_files=False).missing_files()[0][1] == image
    image.symlink_to(tmp_path / "elsewhere.nii.gz")
    with pytest.raises(DataError, match="outside"):
        load_dataset(dataset)
