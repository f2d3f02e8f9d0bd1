"""The phantom's anatomy (pelvis, femur, head shape, muscles, vessels), patient-level variation,
and the acquisition domains (contrast, naming, refusal of an unknown one)."""

import itertools
import json

import numpy as np
import pytest

from avnbench.cli import main
from avnbench.data.phantom import generate_case, plan_case, synthesize
from avnbench.data.phantom.anatomy import HipTissues, draw_anatomy, place_case
from avnbench.data.phantom.domains import DOMAINS, get_domain
from avnbench.data.phantom.grid import oriented_field, unit
from avnbench.data.phantom.plan import case_streams, draw_side
from avnbench.data.phantom.soft_tissue import (
    MUSCLE_GROUPS,
    muscle_partition,
    vessel_sdfs,
)
from avnbench.errors import ConfigError

FULL = (80, 160, 160)
HALF = (40, 80, 80)


def anatomy_of(index, seed=0):
    plan = plan_case(index)
    rng, patient_rng = case_streams(plan, seed)
    side = draw_side(plan, patient_rng)
    return draw_anatomy(rng, patient_rng, side), rng


def ray(anatomy, direction, r_from, r_to, step=0.25):
    """Points (patient mm) along a ray from the head centre, as the tuple HipTissues takes."""
    d = unit(direction)
    t = np.arange(r_from, r_to, step, dtype=np.float32)
    p = tuple((t * np.float32(c)).astype(np.float32) for c in d)
    return p, t


@pytest.mark.parametrize("index", [0, 2, 5, 9])
@pytest.mark.parametrize("where, direction", [
    ("superior (ilium)", (0.0, 0.0, 1.0)),
    ("posteroinferior (posterior column, ischium)", (-0.2, -0.6, -0.75)),
    ("anteroinferior (anterior column, pubis)", (-0.55, 0.6, -0.3)),
])
def test_pelvic_bone_with_cortex_and_marrow_around_the_acetabulum(index, where, direction):
    anatomy, _ = anatomy_of(index)
    p, t = ray(anatomy, direction, anatomy.radius, anatomy.radius + 45.0)
    tissue = HipTissues(p, t, anatomy, None)
    bone, marrow = tissue.pelvis_bone() < 0, tissue.pelvis_marrow() < 0
    assert marrow.sum() * 0.25 >= 4.0, f"{where}: less than 4 mm of pelvic marrow along the ray"
    # marrow lies inside bone, behind the socket's subchondral plate (bone first, then marrow)
    assert np.all(bone[marrow])
    first_bone = np.flatnonzero(bone)[0]
    assert not marrow[first_bone] and np.flatnonzero(marrow)[0] > first_bone


def test_pelvis_is_no_uniform_shell_and_the_joint_opening_is_free():
    anatomy, _ = anatomy_of(3)
    m = anatomy.acetabular_axis
    thickness = {}
    for name, direction in (("medial wall", -m), ("roof", (0.0, 0.0, 1.0))):
        p, t = ray(anatomy, direction, anatomy.radius, anatomy.radius + 60.0)
        thickness[name] = (HipTissues(p, t, anatomy, None).pelvis_bone() < 0).sum() * 0.25
    assert thickness["roof"] > thickness["medial wall"] + 8.0, thickness
    # along the opening (lateral, inferior, anterior of the rim) there is no pelvic bone
    p, t = ray(anatomy, -m, anatomy.radius, anatomy.radius + 40.0)
    assert not (HipTissues(p, t, anatomy, None).pelvis_bone() < 0).any()


def test_greater_trochanter_reaches_the_full_size_field_of_view_in_some_cases():
    counts = []
    for index in range(8):
        anatomy, rng = anatomy_of(index)
        frame = place_case(anatomy, FULL, rng)
        grid = frame.full_grid()
        tissue = HipTissues(grid.p, grid.r, anatomy, None)
        trochanter = tissue.trochanter() < 0
        counts.append(int(trochanter.sum()))
        # the trochanter is femoral bone with marrow, superior to the neck axis
        assert np.all(tissue.femur_bone()[trochanter] < 0)
        c, n = anatomy.trochanter_center, anatomy.neck_axis
        assert (c - (c @ n) * n)[2] > 0
    assert sum(c > 500 for c in counts) >= 3, counts


def test_calcar_cortex_is_thicker_than_the_superior_neck_cortex():
    anatomy, _ = anatomy_of(1)
    n = anatomy.neck_axis
    up = unit(np.array([0.0, 0.0, 1.0]) - n[2] * n)
    s = 1.2 * anatomy.radius
    points = np.stack([s * n + 10.0 * up, s * n - 10.0 * up]).astype(np.float32)
    p = tuple(points[:, i] for i in range(3))
    r = np.linalg.norm(points, axis=1).astype(np.float32)
    superior, inferior = HipTissues(p, r, anatomy, None).cortex
    assert inferior > 1.6 * superior


def shape_vector(anatomy):
    return np.concatenate([anatomy.semi_axes / anatomy.radius - 1.0,
                           [anatomy.radius / 25.0, anatomy.neck_radius / anatomy.radius,
                            anatomy.lcea_deg / 100.0, anatomy.neck_axis[2], anatomy.pelvis.wall_roof / 30.0]])


def test_head_shape_varies_between_patients_and_both_hips_of_a_patient_are_alike_not_equal():
    bilateral = [(3 * b, 3 * b + 1) for b in range(6)]  # cases 3b and 3b+1: one patient's hips
    within, between, semi = [], [], []
    for right, left in bilateral:
        a, b = anatomy_of(right)[0], anatomy_of(left)[0]
        semi.append(a.semi_axes / a.radius)
        within.append(np.linalg.norm(shape_vector(a) - shape_vector(b)))
        assert not np.allclose(a.semi_axes, b.semi_axes)  # alike, not identical
    for (r1, _), (r2, _) in itertools.pairwise(bilateral):
        between.append(np.linalg.norm(shape_vector(anatomy_of(r1)[0]) - shape_vector(anatomy_of(r2)[0])))
    assert np.median(within) < 0.5 * np.median(between), (within, between)
    # aspherical: semi-axes differ from R by up to ~2 % and differ between patients
    semi = np.array(semi)
    assert np.abs(semi - 1.0).max() <= 0.025
    assert np.ptp(semi, axis=0).max() > 0.01


@pytest.mark.parametrize("group, point", [
    ("iliopsoas", lambda R: (0.0, R + 11.0, 0.0)),
    ("gluteus minimus", lambda R: (R * 0.75, 5.0, R + 14.0)),
    ("obturator internus", lambda R: (-(R + 14.0), -2.0, -5.0)),
    ("quadratus femoris", lambda R: (12.0, -(R + 4.0), -(R + 14.0))),
])
def test_muscle_groups_lie_where_they_belong(group, point):
    names = [name for name, _, _ in MUSCLE_GROUPS]
    for index in (0, 4, 8):
        anatomy, _ = anatomy_of(index)
        xyz = np.array([point(anatomy.radius)], np.float32)
        p = tuple(xyz[:, i] for i in range(3))
        which, sdf = muscle_partition(p, anatomy.soft, np.zeros(1, np.float32))
        assert names[int(which[0])] == group and sdf[0] < 0, (index, names[int(which[0])], sdf[0])


def test_fat_sheets_separate_the_muscle_groups_and_the_vessels_run_anteromedially():
    anatomy, rng = anatomy_of(2)
    frame = place_case(anatomy, FULL, rng)
    grid = frame.full_grid()
    which, sdf = muscle_partition(grid.p, anatomy.soft, np.zeros_like(grid.r))
    muscle = sdf < 0
    assert 0.3 < muscle.mean() < 0.95
    # in-plane neighbours (0.44 mm) of two different groups never touch: a fat sheet (at
    # least 2 × its 0.45–1.2 mm half-thickness wide) lies between them
    for axis in (1, 2):
        a = np.moveaxis(which, axis, 0)
        m = np.moveaxis(muscle, axis, 0)
        touching = m[1:] & m[:-1] & (a[1:] != a[:-1])
        assert not touching.any()
    artery, vein = vessel_sdfs(grid.p, anatomy.soft)
    assert (artery < 0).any() and (vein < 0).any()
    for point in (anatomy.soft.artery_point, anatomy.soft.vein_point):
        assert point[0] < 0 and point[1] > anatomy.radius  # medial and anterior of the head


def test_trabecular_field_is_stretched_along_its_long_axis():
    rng = np.random.default_rng(0)
    field = oriented_field(rng, (40, 60, 60), (1.0, 0.5, 0.5), (0.8, 0.8, 5.0))
    lag = 5  # 2.5 mm: correlation exp(-lag²/4σ²) ≈ 0.94 along, 0.09 across
    along = np.corrcoef(field[:, :, :-lag].ravel(), field[:, :, lag:].ravel())[0, 1]
    across = np.corrcoef(field[:, :-lag].ravel(), field[:, lag:].ravel())[0, 1]
    assert abs(field.std() - 1.0) < 1e-3 and along > 0.8 and across < 0.2


def test_domains_map_t1_signal_and_differ_in_contrast():
    t1, fs, low = get_domain("t1"), get_domain("t1fs"), get_domain("t1-1p5t")
    for v in (0.1, 0.5, 1.0, 1.1):
        assert t1.from_t1(v) == pytest.approx(v)
    # fat-suppressed: lesion/marrow contrast compressed, a dark band still darker than marrow
    t1_contrast = (t1.from_t1(1.0) - t1.from_t1(0.3)) / t1.from_t1(1.0)
    fs_contrast = (fs.from_t1(1.0) - fs.from_t1(0.3)) / fs.from_t1(1.0)
    assert fs_contrast < 0.5 * t1_contrast and fs.from_t1(0.2) < fs.from_t1(1.0)
    assert fs.tissues.fat[1] < fs.marrow < fs.tissues.muscle[0]
    assert low.native_mm[0] > t1.native_mm[1] and low.snr[1] < t1.snr[1]
    assert set(DOMAINS) == {"t1", "t1fs", "t1-1p5t"}


def test_the_same_case_in_two_domains_has_the_same_labels_and_the_intended_contrast():
    images = {}
    for name in ("t1", "t1fs"):
        case = generate_case(plan_case(6), HALF, 0, name)  # a lesion-free hip
        images[name] = (case.image.astype(float), case.labels)
    np.testing.assert_array_equal(images["t1"][1], images["t1fs"][1])
    ratio = {name: np.median(img[lab == 1]) / np.median(img) for name, (img, lab) in images.items()}
    assert ratio["t1"] > 1.4 and ratio["t1fs"] < 1.0, ratio  # marrow bright vs dark-ish


def test_dataset_name_and_description_carry_the_domain(tmp_path):
    ds = synthesize(tmp_path / "fs", n_cases=1, seed=0, shape=(32, 40, 40), domain="t1fs")
    assert ds.name == "avn-phantom-v2-t1fs-n1-s0-32x40x40"
    cases = json.loads((tmp_path / "fs" / "cases.json").read_text())
    assert "t1fs" in cases["description"]


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.mark.parametrize("name", ["t2", "T1", "", "t1 "])
def test_unknown_domain_is_refused_in_one_line_and_writes_nothing(tmp_path, capsys, name):
    out = tmp_path / "new"
    code, stdout, stderr = run_cli(["data", "synth", "--out", str(out), "--domain", name], capsys)
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "unknown domain" in stderr and all(d in stderr for d in DOMAINS)
    assert "Traceback" not in stderr + stdout and not out.exists()
    with pytest.raises(ConfigError, match="unknown domain"):
        synthesize(out, n_cases=1, domain=name)
    assert not out.exists()


def test_cli_help_names_every_domain(capsys):
    code, stdout, _ = run_cli(["data", "synth", "--help"], capsys)
    assert code == 0 and all(d in stdout for d in DOMAINS)
