"""The phantom: layout, geometry, determinism, grade mix, and nnU-Net's own integrity check."""

import hashlib
import json
from collections import Counter

import numpy as np
import pytest
import SimpleITK as sitk

from avnbench.data.dataset import load_dataset
from avnbench.data.phantom import generate_case, plan_case, spacing_for, synthesize
from avnbench.errors import ConfigError
from avnbench.evaluation import grading

HALF = (40, 80, 80)
N_MIX = 12


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom") / "mix"
    calls = []
    ds = synthesize(out, n_cases=N_MIX, seed=3, shape=HALF, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (N_MIX, N_MIX) and len(calls) == N_MIX
    return ds


def test_layout_names_and_nnunet_dataset_json(mix):
    root = mix.root
    assert mix.name == "avn-phantom-v2-t1-n12-s3-40x80x80" and mix.synthetic
    dj = json.loads((root / "dataset.json").read_text())
    assert dj["numTraining"] == N_MIX and dj["file_ending"] == ".nii.gz"
    assert dj["labels"] == {"background": 0, "vital": 1, "necrosis": 2}
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == [f"avn_{i:03d}_0000.nii.gz" for i in range(N_MIX)]
    assert sorted(p.name for p in (root / "labelsTr").iterdir()) == [f"avn_{i:03d}.nii.gz" for i in range(N_MIX)]


def test_images_labels_geometry_and_landmarks(mix):
    for case in mix.cases[:4]:
        img, lab = case.read_image(), case.read_label()
        assert img.GetSize() == (80, 80, 40)
        np.testing.assert_allclose(img.GetSpacing(), (0.88, 0.88, 2.0))
        assert img.GetPixelID() == sitk.sitkInt16 and lab.GetPixelID() == sitk.sitkUInt8
        assert lab.GetOrigin() == img.GetOrigin() and lab.GetDirection() == img.GetDirection()
        d = np.asarray(img.GetDirection()).reshape(3, 3)
        assert np.linalg.det(d) == pytest.approx(1.0)
        assert abs(d[2, 0]) > 0.2 or abs(d[2, 1]) > 0.2 or abs(d[2, 2]) < 0.99  # oblique
        labels = sitk.GetArrayFromImage(lab)
        assert set(np.unique(labels)) <= {0, 1, 2}
        a = sitk.GetArrayFromImage(img)
        assert a.min() >= 0 and a.max() <= 4095
        meta = case.meta
        assert meta.geometry.spacing_zyx == pytest.approx((2.0, 0.88, 0.88))
        lm = meta.landmarks
        # the head centre is near the array centre, and the labelled head is around it
        ci = meta.geometry.physical_to_index(np.asarray(lm.head_center_mm))
        assert np.all(np.abs(ci - (np.array(HALF) - 1) / 2) * meta.geometry.spacing_zyx <= 4.01)
        head_idx = np.argwhere(labels > 0).mean(0)
        assert np.linalg.norm((head_idx - ci) * meta.geometry.spacing_zyx) < 6
        # a right hip's lateral axis is -x in LPS, a left hip's +x; anatomy follows (acetabular
        # edge lateral of the centre, the medial WB point medial)
        assert lm.patient_axes.lateral[0] == (-1.0 if meta.side == "R" else 1.0)
        lateral = np.asarray(lm.patient_axes.lateral)
        assert (np.asarray(lm.acetabular_lateral_edge_mm) - lm.head_center_mm) @ lateral > 5
        assert (np.asarray(lm.wb_medial_point_mm) - lm.head_center_mm) @ lateral < -5
        # the neck leaves the head laterally and inferiorly: head voxels beyond the cut are label 0,
        # the bright neck marrow is there in the image
        assert 25 < meta.measurements["head_cm3"] < 90


def test_grades_are_measured_on_the_written_labels(mix):
    for case in mix.cases:
        measured = grading.grade_labels(case.label_array(), case.meta)
        stored = case.meta.measurements
        assert case.meta.steinberg == measured["steinberg"]
        assert case.meta.jic == measured["jic"]
        assert stored["necrosis_percent"] == pytest.approx(measured["necrosis_percent"])
        assert case.meta.grade_sources["steinberg"] == "computed"
        if stored["ambiguity"] is None:
            assert grading.ambiguity_reasons(measured) == []


def test_grade_mix_over_twelve_half_resolution_cases(mix):
    metas = [c.meta for c in mix.cases]
    steinberg = Counter(m.steinberg for m in metas)
    assert all(steinberg[g] >= 3 for g in "ABC") and steinberg[None] >= 1
    # JIC types follow from where the lesion lies (not cycled); type A needs lesions more medial
    # than clinical.md §7.3 allows (docs/phantom.md, "Lesion"), the others occur in 12 cases
    jic = Counter(m.jic for m in metas)
    assert all(jic[t] >= 1 for t in ("B", "C1", "C2"))
    arco = Counter(m.arco for m in metas)
    assert all(arco[s] >= 1 for s in ("I", "II", "IIIA", "IIIB"))
    assert sum(m.measurements["ambiguity"] is not None for m in metas) <= 2
    patients = Counter(m.patient_id for m in metas)
    assert 2 in patients.values() and 1 in patients.values()
    for pid, n in patients.items():
        if n == 2:
            assert {m.side for m in metas if m.patient_id == pid} == {"L", "R"}


def test_same_seed_same_bytes_and_case_independent_of_count(mix, tmp_path):
    small = synthesize(tmp_path / "again", n_cases=2, seed=3, shape=HALF)
    for a, b in zip(small.cases, mix.cases[:2]):
        assert sha256(a.image_path) == sha256(b.image_path)
        assert sha256(a.label_path) == sha256(b.label_path)
        assert a.meta == b.meta
    other = synthesize(tmp_path / "other", n_cases=1, seed=4, shape=HALF)
    assert sha256(other.cases[0].image_path) != sha256(mix.cases[0].image_path)


def test_default_size_case_geometry():
    assert spacing_for((80, 160, 160)) == pytest.approx((1.0, 0.44, 0.44))
    case = generate_case(plan_case(2), (80, 160, 160), seed=0)  # ARCO II: no oedema
    assert case.image.shape == case.labels.shape == (80, 160, 160)
    assert case.meta.geometry.spacing_xyz == pytest.approx((0.44, 0.44, 1.0))
    assert case.meta.steinberg is not None and case.labels.dtype == np.uint8
    # bright fatty marrow in the vital head, darker cartilage and joint space around it (v2: the
    # background as a whole holds fat and pelvic marrow too, so it is no longer dark on average)
    from scipy import ndimage

    head = case.labels > 0
    around = ndimage.binary_dilation(head, iterations=4) & ~head
    vital = np.median(case.image[case.labels == 1])
    assert vital > 1.5 * np.median(case.image[around])


def test_refusals_touch_nothing(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        synthesize(busy, n_cases=1, shape=HALF)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    with pytest.raises(ConfigError, match="at least 1"):
        synthesize(tmp_path / "zero", n_cases=0)
    with pytest.raises(ConfigError, match="too small"):
        synthesize(tmp_path / "tiny", n_cases=1, shape=(15, 80, 80))
    with pytest.raises(ConfigError, match="too small"):
        synthesize(tmp_path / "coarse", n_cases=1, shape=(40, 20, 80))
    assert not (tmp_path / "zero").exists() and not (tmp_path / "tiny").exists()


def test_force_overwrites_and_drops_stale_cases_and_split(tmp_path):
    out = tmp_path / "ds"
    synthesize(out, n_cases=3, seed=1, shape=(32, 29, 29))
    (out / "splits_final.json").write_text("[]")
    (out / "notes.txt").write_text("mine")
    ds = synthesize(out, n_cases=2, seed=1, shape=(32, 29, 29), force=True)
    assert len(ds) == 2 and ds.name.endswith("-n2-s1-32x29x29")
    assert not (out / "imagesTr" / "avn_002_0000.nii.gz").exists()
    assert not (out / "splits_final.json").exists() and (out / "notes.txt").exists()
    assert len(load_dataset(out)) == 2


def test_nnunet_verify_dataset_integrity(mix):
    verify = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity")
    verify.verify_dataset_integrity(str(mix.root), num_processes=1)
