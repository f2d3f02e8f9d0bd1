"""Import of real-data sources: manifest (NIfTI, NRRD, MHA, DICOM series) and nnU-Net raw folders."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from avnbench.data.dataset import load_dataset
from avnbench.errors import ConfigError, DataError
from avnbench.data.importing import import_dataset
from avnbench.data.resampling import target_grid
from avnbench.data.sources import read_manifest

SPACING = (1.0, 0.6, 0.6)
SHAPE = (20, 36, 36)
OBLIQUE = tuple(
    np.array(
        [[1, 0, 0], [0, np.cos(0.3), -np.sin(0.3)], [0, np.sin(0.3), np.cos(0.3)]]
    ).ravel().tolist()
)


def make_hip(shape_zyx=(24, 40, 40), spacing_zyx=(1.2, 0.8, 0.8), side="L", radius=9.0, seed=0,
             direction=None, origin=(-20.0, -15.0, 30.0), cap=0.55):
    """A phantom-like hip: a neck-cut sphere (label 1) with a superolateral cap (label 2) in a
    noisy image, on the given grid (LPS). Returns (image, label, head centre mm)."""
    rng = np.random.default_rng(seed)
    ref = sitk.Image([int(s) for s in shape_zyx[::-1]], sitk.sitkUInt8)
    ref.SetSpacing([float(s) for s in spacing_zyx[::-1]])
    ref.SetOrigin(origin)
    if direction is not None:
        ref.SetDirection(direction)
    idx_xyz = np.indices(shape_zyx).reshape(3, -1).T[:, ::-1]
    d = np.asarray(ref.GetDirection()).reshape(3, 3)
    points = (np.asarray(origin) + (idx_xyz * np.asarray(spacing_zyx[::-1])) @ d.T).reshape(tuple(shape_zyx) + (3,))
    centre = np.asarray(ref.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 + 0.3 for s in shape_zyx[::-1]]))
    lateral = np.array([1.0, 0, 0]) if side == "L" else np.array([-1.0, 0, 0])
    superior = np.array([0, 0, 1.0])
    neck = np.cos(np.deg2rad(35)) * lateral - np.sin(np.deg2rad(35)) * superior
    q = points - centre
    head = (np.linalg.norm(q, axis=-1) <= radius) & (q @ neck <= 0.6 * radius)
    lesion_axis = (lateral + superior) / np.sqrt(2)
    labels = np.zeros(shape_zyx, np.uint8)
    labels[head] = 1
    labels[head & (q @ lesion_axis > cap * radius)] = 2
    intensities = 100 + 250 * (labels == 1) + 120 * (labels == 2) + rng.normal(0, 10, shape_zyx)
    image = sitk.GetImageFromArray(intensities.astype(np.float32))
    image.CopyInformation(ref)
    label = sitk.GetImageFromArray(labels)
    label.CopyInformation(ref)
    return image, label, centre


def write_dicom_series(image, folder: Path, series: int = 1, prefix: str = "slice") -> None:
    """Write a 3-D image as an MR DICOM series, one file per slice (SimpleITK's
    DicomSeriesFromArray recipe), with the position, orientation and spacing tags."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(sitk.RescaleIntensity(image, 0, 2000), sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = image.GetDirection()
    stamp = time.strftime("%Y%m%d")
    uid = f"1.2.826.0.1.3680043.2.1125.{int(time.time() * 1000) % 10**9}.{series}"
    common = {
        "0008|0060": "MR",
        "0008|0020": stamp,
        "0008|0008": "DERIVED\\SECONDARY",
        "0020|000d": uid + ".1",
        "0020|000e": uid + ".2",
        "0010|0020": "P1",
        "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
        "0018|0050": f"{image.GetSpacing()[2]:.4f}",
        "0028|0030": f"{image.GetSpacing()[1]:.4f}\\{image.GetSpacing()[0]:.4f}",
    }
    for k in range(image.GetDepth()):
        sl = image[:, :, k]
        for tag, value in common.items():
            sl.SetMetaData(tag, value)
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        sl.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in position))
        sl.SetMetaData("0020|0013", str(k + 1))
        sl.SetMetaData("0008|0018", f"{uid}.3.{k + 1}")
        writer.SetFileName(str(folder / f"{prefix}{k:03d}.dcm"))
        writer.Execute(sl)


@pytest.fixture(scope="module")
def manifest_source(tmp_path_factory) -> Path:
    """A manifest with one case per format: NIfTI, NRRD, MHA and a DICOM series (oblique)."""
    root = tmp_path_factory.mktemp("manifest")
    (root / "scans").mkdir()
    rows = ["case_id,patient_id,side,image,label,steinberg,jic,arco"]
    formats = [("nii", ".nii.gz", "L", None), ("nrrd", ".nrrd", "R", None), ("mha", ".mha", "L", None),
               ("dicom", None, "R", OBLIQUE)]
    for k, (tag, ext, side, direction) in enumerate(formats):
        image, label, _ = make_hip(side=side, seed=k, direction=direction)
        label_file = f"scans/{tag}_seg{ext or '.nii.gz'}"
        if ext is None:
            write_dicom_series(image, root / "scans" / "dicom_series")
            dicom = sitk.ImageSeriesReader()
            dicom.SetFileNames(dicom.GetGDCMSeriesFileNames(str(root / "scans" / "dicom_series")))
            label.CopyInformation(dicom.Execute())  # the label is drawn on the DICOM grid as read
            image_file = "scans/dicom_series"
        else:
            image_file = f"scans/{tag}{ext}"
            sitk.WriteImage(image, str(root / image_file))
        sitk.WriteImage(label, str(root / label_file))
        steinberg = "C" if tag == "nii" else ""
        arco = "II" if tag == "nrrd" else ""
        rows.append(f"{tag},patient{k // 2},{side},{image_file},{label_file},{steinberg},,{arco}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def imported(manifest_source, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "ds"
    report = import_dataset(manifest_source, out, target_spacing_zyx=SPACING, target_shape_zyx=SHAPE)
    return report, load_dataset(out)


def test_manifest_import_writes_the_layout_on_the_target_grid(imported, manifest_source):
    report, ds = imported
    assert ds.name == "manifest" and not ds.synthetic
    assert [c.case_id for c in ds.cases] == ["nii", "nrrd", "mha", "dicom"]
    ds_json = json.loads((ds.root / "dataset.json").read_text())
    assert ds_json["numTraining"] == 4 and ds_json["file_ending"] == ".nii.gz"
    sources = {"nii": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha", "dicom": None}
    for case in ds.cases:
        image, label = case.read_image(), case.read_label()
        assert image.GetSize() == SHAPE[::-1] and label.GetSize() == SHAPE[::-1]
        assert np.allclose(image.GetSpacing(), SPACING[::-1], atol=1e-5)
        assert np.allclose(label.GetOrigin(), image.GetOrigin(), atol=1e-4)
        assert np.allclose(label.GetDirection(), image.GetDirection(), atol=1e-6)
        assert case.meta.geometry.shape_zyx == SHAPE
        assert set(np.unique(case.label_array())) == {0, 1, 2}
        src = manifest_source.parent / "scans" / (case.case_id + sources[case.case_id] if sources[case.case_id] else "dicom_series")
        if sources[case.case_id] is None:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(src)))
            src_image = reader.Execute()
        else:
            src_image = sitk.ReadImage(str(src))
        # the image's direction is kept (DICOM oblique included)
        assert np.allclose(image.GetDirection(), src_image.GetDirection(), atol=1e-4)
    assert np.allclose(ds["dicom"].read_image().GetDirection(), OBLIQUE, atol=1e-4)


def test_import_centres_the_head_and_keeps_physical_positions(imported, manifest_source):
    _, ds = imported
    source_label = sitk.ReadImage(str(manifest_source.parent / "scans" / "nii_seg.nii.gz"))
    src = sitk.GetArrayFromImage(source_label)
    case = ds["nii"]
    labels = case.label_array()
    geom = case.meta.geometry
    centroid_src = source_label.TransformContinuousIndexToPhysicalPoint(np.argwhere(src > 0).mean(0)[::-1].tolist())
    centroid_new = geom.index_to_physical(np.argwhere(labels > 0).mean(0))
    # nearest-neighbour resampling from 1.2x0.8x0.8 to 1.0x0.6x0.6 mm moves the centroid by < a voxel
    assert np.linalg.norm(np.asarray(centroid_src) - centroid_new) < 0.4
    centre_index = geom.physical_to_index(centroid_new)
    assert np.all(np.abs(centre_index - (np.array(SHAPE) - 1) / 2) <= 1.0)
    # necrosis volume survives resampling (cm³ within 10 %)
    v_src = (src == 2).sum() * np.prod(source_label.GetSpacing())
    v_new = (labels == 2).sum() * np.prod(SPACING)
    assert abs(v_new - v_src) / v_src < 0.10


def test_grades_given_are_kept_and_missing_ones_computed(imported):
    _, ds = imported
    nii, nrrd = ds["nii"].meta, ds["nrrd"].meta
    assert nii.steinberg == "C" and nii.grade_sources["steinberg"] == "given"
    assert nii.measurements["steinberg"] != "C"  # what the labels say is recorded beside it
    assert nrrd.grade_sources["steinberg"] == "computed" and nrrd.steinberg == nrrd.measurements["steinberg"]
    assert nrrd.arco == "II" and nrrd.grade_sources["arco"] == "given"
    assert nrrd.jic is not None and nrrd.grade_sources["jic"] == "computed"
    for case in ds.cases:
        lm = case.meta.landmarks
        assert lm is not None and lm.estimated
        assert 8.0 < lm.head_radius_mm < 10.0


def test_same_spacing_is_a_pure_crop(tmp_path):
    image, label, _ = make_hip(shape_zyx=(30, 50, 50), spacing_zyx=(1.0, 0.6, 0.6))
    (tmp_path / "src").mkdir()
    sitk.WriteImage(image, str(tmp_path / "src" / "a.nii.gz"))
    sitk.WriteImage(label, str(tmp_path / "src" / "a_seg.nii.gz"))
    (tmp_path / "src" / "m.csv").write_text("case_id,patient_id,side,image,label\na,p,L,a.nii.gz,a_seg.nii.gz\n")
    import_dataset(tmp_path / "src" / "m.csv", tmp_path / "out", target_spacing_zyx=SPACING, target_shape_zyx=SHAPE)
    case = load_dataset(tmp_path / "out")["a"]
    offset_continuous = np.asarray(image.TransformPhysicalPointToContinuousIndex(case.meta.geometry.origin))[::-1]
    offset = np.rint(offset_continuous).astype(int)
    assert np.allclose(offset_continuous, offset, atol=1e-4)  # the crop sits on the source lattice
    src = sitk.GetArrayFromImage(image)[offset[0]:offset[0] + SHAPE[0], offset[1]:offset[1] + SHAPE[1], offset[2]:offset[2] + SHAPE[2]]
    np.testing.assert_allclose(case.image_array(), src, rtol=0, atol=1e-3)


def test_target_grid_pads_beyond_the_source(tmp_path):
    image, label, centre = make_hip(shape_zyx=(10, 20, 20), spacing_zyx=(2.0, 1.5, 1.5), radius=6.0)
    grid = target_grid(image, centre, (1.0, 1.0, 1.0), (40, 50, 50))
    assert grid.size_xyz == (50, 50, 40)
    assert np.linalg.norm(grid.index_to_physical(np.array([19.5, 24.5, 24.5])) - centre) < 1.0


def _nnunet_folder(root: Path, with_cases_json: bool) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for k, side in enumerate(["L", "R"]):
        image, label, _ = make_hip(side=side, seed=10 + k)
        sitk.WriteImage(image, str(root / "imagesTr" / f"hip_{k:03d}_0000.nii.gz"))
        sitk.WriteImage(label, str(root / "labelsTr" / f"hip_{k:03d}.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1"}, "labels": {"background": 0, "vital": 1, "necrosis": 2},
        "numTraining": 2, "file_ending": ".nii.gz", "name": "Dataset501_Hips",
    }))
    return root


def test_nnunet_raw_without_cases_json_infers_side_and_patients(tmp_path):
    src = _nnunet_folder(tmp_path / "raw", with_cases_json=False)
    report = import_dataset(src, tmp_path / "out", target_spacing_zyx=SPACING, target_shape_zyx=SHAPE)
    ds = load_dataset(tmp_path / "out")
    assert ds.name == "Dataset501_Hips" and report.source_kind == "nnunet"
    assert [(c.case_id, c.meta.side, c.patient_id) for c in ds.cases] == [
        ("hip_000", "L", "hip_000"), ("hip_001", "R", "hip_001")]
    assert all(c.side_inferred for c in report.cases)
    assert any("own patient" in w for w in report.warnings)


def test_nnunet_raw_with_our_cases_json_keeps_given_landmarks(tmp_path):
    first = import_dataset(_nnunet_folder(tmp_path / "raw", True), tmp_path / "a",
                           target_spacing_zyx=SPACING, target_shape_zyx=SHAPE, name="a")
    ds_a = load_dataset(tmp_path / "a")
    # Mark the landmarks as given (a dataset that came with them) and re-import at another grid.
    cases = json.loads((tmp_path / "a" / "cases.json").read_text())
    for c in cases["cases"]:
        c["landmarks"]["estimated"] = False
        c["patient_id"] = "same-patient"
    (tmp_path / "a" / "cases.json").write_text(json.dumps(cases))
    import_dataset(tmp_path / "a", tmp_path / "b", target_spacing_zyx=(1.2, 0.8, 0.8), target_shape_zyx=(16, 24, 24))
    ds_b = load_dataset(tmp_path / "b")
    assert ds_b.name == "a" and first.name == "a"
    for ca, cb in zip(ds_a.cases, ds_b.cases):
        assert cb.patient_id == "same-patient" and cb.meta.side == ca.meta.side
        assert cb.meta.landmarks.head_center_mm == ca.meta.landmarks.head_center_mm
        assert not cb.meta.landmarks.estimated
        assert cb.meta.geometry.shape_zyx == (16, 24, 24)
        # grades computed on the old grid are recomputed, not carried over as "given"
        assert cb.meta.grade_sources.get("steinberg") == "computed"


def test_manifest_parsing_normalises_side_and_grades(tmp_path):
    (tmp_path / "a.nii").write_bytes(b"")
    (tmp_path / "m.csv").write_text(
        "\ufeffcase_id, patient_id ,side,image,label,jic\n"
        "a,p,left,a.nii,a.nii,c1\n\n"
        "b,p,r,./a.nii,a.nii,\n",
        encoding="utf-8",
    )
    rows = read_manifest(tmp_path / "m.csv")
    assert [(r.case_id, r.side, r.jic) for r in rows] == [("a", "L", "C1"), ("b", "R", None)]
    assert rows[1].image == (tmp_path / "a.nii").resolve()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "empty manifest"),
        ("case_id,patient_id,side,image,label\n", "no cases"),
        ("case_id,patient_id,image,label\na,p,a.nii,a.nii\n", "missing column(s) side"),
        ("case_id,patient_id,side,image,label,steinburg\na,p,L,a.nii,a.nii,A\n", "unknown column(s) steinburg"),
        ("case_id,patient_id,side,image,label\na,p,X,a.nii,a.nii\n", "side 'X' is not L or R"),
        ("case_id,patient_id,side,image,label,steinberg\na,p,L,a.nii,a.nii,D\n", "steinberg 'D' is not one of A, B, C"),
        ("case_id,patient_id,side,image,label,arco\na,p,L,a.nii,a.nii,5\n", "arco '5'"),
        ("case_id,patient_id,side,image,label\na,p,L,a.nii,a.nii\na,q,R,a.nii,a.nii\n", "duplicate case_id 'a'"),
        ("case_id,patient_id,side,image,label\na/b,p,L,a.nii,a.nii\n", "case_id 'a/b'"),
        ("case_id,patient_id,side,image,label\na,,L,a.nii,a.nii\n", "empty patient_id"),
        ("case_id,patient_id,side,image,label\na,p,L,../x.nii,a.nii\n", "outside the manifest's folder"),
    ],
)
def test_bad_manifests_are_one_line_data_errors(tmp_path, content, expected):
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(DataError) as info:
        read_manifest(tmp_path / "m.csv")
    message = str(info.value)
    assert expected in message and "\n" not in message and str(tmp_path / "m.csv") in message


def test_absolute_paths_need_the_flag(tmp_path):
    outside = tmp_path / "elsewhere" / "a.nii.gz"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "m.csv").write_text(f"case_id,patient_id,side,image,label\na,p,L,{outside},{outside}\n")
    with pytest.raises(DataError, match="--allow-absolute-paths"):
        read_manifest(tmp_path / "m" / "m.csv")
    assert read_manifest(tmp_path / "m" / "m.csv", allow_absolute_paths=True)[0].image == outside.resolve()


def test_a_failing_case_leaves_out_untouched_and_no_temp_folder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    image, label, _ = make_hip()
    sitk.WriteImage(image, str(src / "good.nii.gz"))
    sitk.WriteImage(label, str(src / "good_seg.nii.gz"))
    bad = sitk.GetArrayFromImage(label)
    bad[0, 0, 0] = 3
    bad_label = sitk.GetImageFromArray(bad)
    bad_label.CopyInformation(label)
    sitk.WriteImage(bad_label, str(src / "bad_seg.nii.gz"))
    (src / "m.csv").write_text(
        "case_id,patient_id,side,image,label\n"
        "good,p1,L,good.nii.gz,good_seg.nii.gz\nbad,p2,L,good.nii.gz,bad_seg.nii.gz\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    for name in ("dataset.json", "cases.json"):  # --force replaces only an earlier dataset
        (out / name).write_text("{}")
    with pytest.raises(DataError, match=r"bad_seg.nii.gz: label values 3 outside \{0, 1, 2\}"):
        import_dataset(src / "m.csv", out, target_spacing_zyx=SPACING, target_shape_zyx=SHAPE, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["cases.json", "dataset.json", "keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]
    # refusing without --force touches nothing either
    with pytest.raises(ConfigError, match="not empty"):
        import_dataset(src / "m.csv", out)
    assert (out / "keep.txt").read_text() == "precious"


def test_out_inside_the_source_is_refused(tmp_path):
    src = _nnunet_folder(tmp_path / "raw", False)
    with pytest.raises(ConfigError, match="would replace the source"):
        import_dataset(src, src, force=True)


def test_nan_in_a_nifti_source_is_found_though_itk_reads_it_as_zero(tmp_path):
    image, label, _ = make_hip()
    array = sitk.GetArrayFromImage(image)
    array[5, 6, 7] = np.nan
    nan_image = sitk.GetImageFromArray(array)
    nan_image.CopyInformation(image)
    sitk.WriteImage(nan_image, str(tmp_path / "a.nii.gz"))
    sitk.WriteImage(label, str(tmp_path / "a_seg.nii.gz"))
    assert not np.isnan(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a.nii.gz")))).any()
    (tmp_path / "m.csv").write_text("case_id,patient_id,side,image,label\na,p,L,a.nii.gz,a_seg.nii.gz\n")
    with pytest.raises(DataError, match=r"a.nii.gz: 1 NaN intensities"):
        import_dataset(tmp_path / "m.csv", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def phantom_folder(tmp_path_factory) -> Path:
    """A one-case synthetic phantom at half resolution (40 x 80 x 80)."""
    from avnbench.data.phantom import synthesize

    root = tmp_path_factory.mktemp("phantom") / "ph"
    synthesize(root, n_cases=1, seed=5, shape=(40, 80, 80))
    return root


def test_phantom_round_trip_through_nnunet_raw_without_cases_json(phantom_folder, tmp_path):
    import shutil

    phantom = load_dataset(phantom_folder)
    shutil.copytree(phantom_folder, tmp_path / "ph")
    (tmp_path / "ph" / "cases.json").unlink()
    spacing = phantom.cases[0].meta.geometry.spacing_zyx
    import_dataset(tmp_path / "ph", tmp_path / "out", target_spacing_zyx=spacing, target_shape_zyx=(40, 80, 80))
    imported = load_dataset(tmp_path / "out")
    for before, after in zip(phantom.cases, imported.cases):
        assert after.meta.side == before.meta.side  # inferred from the neck cut
        assert after.meta.steinberg == before.meta.steinberg  # computed, on the same lattice
        assert after.meta.grade_sources["steinberg"] == "computed"
        assert after.meta.landmarks.estimated
        shift = np.subtract(after.meta.landmarks.head_center_mm, before.meta.landmarks.head_center_mm)
        assert np.linalg.norm(shift) < 0.8
        # the physical content is the same: every head voxel lands on the same physical point
        head_before = before.meta.geometry.index_to_physical(np.argwhere(before.label_array() == 2))
        head_after = after.meta.geometry.index_to_physical(np.argwhere(after.label_array() == 2))
        assert abs(len(head_after) - len(head_before)) <= 0.01 * len(head_before)
        np.testing.assert_allclose(head_after.mean(0), head_before.mean(0), atol=0.3)


def test_reimporting_a_phantom_keeps_it_synthetic(phantom_folder, tmp_path):
    report = import_dataset(phantom_folder, tmp_path / "out", target_spacing_zyx=(2.0, 1.0, 1.0),
                            target_shape_zyx=(30, 60, 60))
    ds = load_dataset(tmp_path / "out")
    assert report.synthetic and ds.synthetic
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["synthetic"] is True
    assert not ds.cases[0].meta.landmarks.estimated  # the phantom's own landmarks are kept
    assert all(not c.side_inferred for c in report.cases)


def test_default_names_are_made_safe(tmp_path):
    src = _nnunet_folder(tmp_path / "raw", False)
    ds_json = json.loads((src / "dataset.json").read_text())
    ds_json["name"] = "Hip AVN (Bern)"
    (src / "dataset.json").write_text(json.dumps(ds_json))
    assert import_dataset(src, tmp_path / "out", target_spacing_zyx=SPACING, target_shape_zyx=SHAPE).name == "Hip-AVN-Bern"


def test_dicom_folder_must_hold_exactly_one_series(tmp_path):
    from avnbench.data.imageio import read_image

    image, _, _ = make_hip(shape_zyx=(6, 12, 12))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no DICOM series in this folder"):
        read_image(tmp_path / "empty")
    write_dicom_series(image, tmp_path / "two", series=1, prefix="a")
    assert read_image(tmp_path / "two").GetSize() == (12, 12, 6)
    write_dicom_series(image, tmp_path / "two", series=2, prefix="b")
    with pytest.raises(DataError, match="two: 2 DICOM series in one folder; put each series in its own folder"):
        read_image(tmp_path / "two")
