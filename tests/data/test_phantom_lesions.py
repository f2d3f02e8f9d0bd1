"""Phantom lesions: where they lie, that the JIC type follows from geometry, how they are
painted (band, rim, oedema), and the difficulty measures (threshold oracle, centroid tilt)."""

import dataclasses

import numpy as np
import pytest

from avnbench.data.dataset import CaseMeta, Geometry, Landmarks, PatientAxes
from avnbench.data.phantom import generate_case, plan_case
from avnbench.data.phantom.anatomy import HipTissues, draw_anatomy, place_case
from avnbench.data.phantom.difficulty import (
    lesion_tilt_deg,
    measure_case,
    oracle_by_group,
    oracle_dice,
    tilt_in_window,
)
from avnbench.data.phantom.grid import ramp
from avnbench.data.phantom.lesion import (
    ANTERIOR_TILT_DEG,
    draw_lesion_shape,
    draw_roughening,
    label_map,
    lesion_t,
    make_lesion,
    place_lesion,
)
from avnbench.data.phantom.lesion_signal import mean_semi_mm, paint_lesion_signal
from avnbench.data.phantom.plan import CasePlan, case_streams, draw_side
from avnbench.data.phantom.synth import case_meta
from avnbench.evaluation import grading

HALF = (40, 80, 80)


def placed(index, seed=0, shape=HALF):
    """(plan, frame, noise, placement) of case ``index`` exactly as generate_case draws them."""
    plan = plan_case(index)
    rng, patient_rng = case_streams(plan, seed)
    anatomy = draw_anatomy(rng, patient_rng, draw_side(plan, patient_rng))
    frame = place_case(anatomy, shape, rng)
    noise = draw_roughening(rng, frame.head_grid)
    placement = place_lesion(plan, frame, noise, rng, lambda: case_meta(plan, frame))
    return plan, frame, noise, placement, rng


def test_drawn_directions_stay_in_the_clinical_ranges():
    rng = np.random.default_rng(0)
    for index in range(40):
        plan = plan_case(index)
        if plan.steinberg is None:
            continue
        for _ in range(5):
            shape = draw_lesion_shape(rng, plan, 10.0)
            assert -15.0 <= shape.beta_lateral <= 30.0
            assert ANTERIOR_TILT_DEG[0] <= shape.beta_anterior <= ANTERIOR_TILT_DEG[1] == 35.0


def test_measured_centroids_of_placed_lesions_lie_anterosuperior():
    tilts = []
    for index in range(12):
        plan, frame, _, placement, _ = placed(index)
        tilt = lesion_tilt_deg(placement.labels, case_meta(plan, frame))
        assert (tilt is None) == (plan.steinberg is None)
        if tilt is not None:
            tilts.append(tilt)
            assert tilt_in_window(tilt), (index, tilt)
    # lesions are not all pushed to one side: both medial and lateral tilts occur
    assert min(t[1] for t in tilts) < 0.0 < max(t[1] for t in tilts)


def test_the_plan_sets_no_jic_type():
    assert "jic" not in {f.name for f in dataclasses.fields(CasePlan)}


def test_jic_type_follows_the_lesion_position_and_the_acetabular_edge():
    plan, frame, noise, _placement, rng = placed(0)
    meta = case_meta(plan, frame)
    shape = dataclasses.replace(draw_lesion_shape(rng, plan, 6.0), beta_anterior=10.0, depth=0.95,
                                semi=np.array([0.65, 0.3, 1.1]), collapse_mm=0.0)
    types = {}
    for beta_lateral in (-15.0, 30.0):
        lesion = make_lesion(frame.anatomy.radius, dataclasses.replace(shape, beta_lateral=beta_lateral))
        labels = label_map(frame, lesion, noise, 6.0)
        types[beta_lateral] = grading.grade_labels(labels, meta)
    medial, lateral = types[-15.0], types[30.0]
    assert medial["jic_x_lat_mm"] < lateral["jic_x_lat_mm"] - 5.0
    assert grading.JIC_CODES[medial["jic"]] < grading.JIC_CODES[lateral["jic"]]
    # the same lesion in a hip whose acetabulum covers less of the head reaches past the edge
    lm = meta.landmarks
    center, lat = np.asarray(lm.head_center_mm), np.asarray(lm.patient_axes.lateral)
    x_lat = lateral["jic_x_lat_mm"]
    x_edge = (np.asarray(lm.acetabular_lateral_edge_mm) - center) @ lat
    shallow = meta.model_copy(update={"landmarks": lm.model_copy(update={
        "acetabular_lateral_edge_mm": tuple(np.asarray(lm.acetabular_lateral_edge_mm) - (x_edge - x_lat + 2.0) * lat)
    })})
    assert grading.jic_type(labels, shallow).type == "C2"


def _paint(lesion, frame, noise, seed=1):
    """Paint ``lesion`` into uniform fatty marrow (1.0) and return the signal."""
    full = frame.full_grid()
    tissue = HipTissues(full.p, full.r, frame.anatomy, lesion)
    head_fraction = ramp(tissue.head_marrow(), frame.width)
    inside_bone = ramp(tissue.bone_interior(), frame.width)
    signal = np.ones(frame.shape, np.float32)
    paint_lesion_signal(signal, frame, lesion, noise, "II", full.p, tissue, head_fraction, inside_bone,
                        np.random.default_rng(seed), lambda v: v)
    return signal, full


@pytest.fixture(scope="module")
def lesion_case():
    _plan, frame, noise, placement, _ = placed(2, shape=(80, 160, 160))  # Steinberg C: a large lesion
    return frame, noise, placement


@pytest.mark.parametrize("mitchell", ["A", "B", "C", "D"])
def test_every_mitchell_class_has_a_reactive_band(lesion_case, mitchell):
    frame, noise, placement = lesion_case
    lesion = dataclasses.replace(placement.lesion, mitchell=mitchell, double_band=False, sclerosis=False,
                                 edema=False, collapse_mm=0.0, band_mm=2.5)
    signal, full = _paint(lesion, frame, noise)
    box = frame.head_grid.slices
    phi = (lesion_t(tuple(c[box] for c in full.p), lesion, noise) - lesion.scale) * mean_semi_mm(lesion)
    head = placement.labels[box] > 0
    sig = signal[box]
    rim = sig[head & (phi > -2.2) & (phi < -0.3)].mean()
    centre = sig[head & (phi < -5.0)].mean()
    vital = sig[head & (phi > 3.0)].mean()
    assert abs(rim - centre) > 0.1, (mitchell, rim, centre)
    assert rim < vital - 0.2  # the interface is lower than the vital marrow in every class
    if mitchell in ("A", "B"):
        assert rim < centre


def test_oedema_darkens_vital_bone_of_collapsed_hips_only(lesion_case):
    frame, noise, placement = lesion_case
    base = dataclasses.replace(placement.lesion, mitchell="D", sclerosis=False, double_band=False)
    with_edema, _ = _paint(dataclasses.replace(base, edema=True), frame, noise)
    without, _ = _paint(dataclasses.replace(base, edema=False), frame, noise)
    vital = placement.labels == 1
    assert without[vital].mean() > 0.95
    assert with_edema[vital].mean() < without[vital].mean() - 0.05
    # drawn: in a share of ARCO III hips, never before collapse
    rng = np.random.default_rng(0)
    draws = {stage: [draw_lesion_shape(rng, CasePlan(0, "x", "p", 0, False, "B", stage), 20.0).edema
                     for _ in range(200)] for stage in ("I", "II", "IIIA", "IIIB")}
    assert not any(draws["I"]) and not any(draws["II"])
    for stage in ("IIIA", "IIIB"):
        assert 0.5 < np.mean(draws[stage]) < 0.95


def test_oracle_on_small_generated_cases_returns_dice_in_unit_interval():
    cases = [generate_case(plan_case(i), HALF, seed=0) for i in (1, 2, 6)]
    measured = [measure_case(c.image, c.labels, c.meta) for c in cases]
    lesion_free = [m for m in measured if m.steinberg is None]
    assert len(lesion_free) == 1 and lesion_free[0].oracle is None and lesion_free[0].tilt is None
    for m in measured:
        if m.oracle is not None:
            assert 0.0 <= m.oracle.dice <= 1.0
    groups = oracle_by_group(measured)
    assert groups["collapsed"]["n"] + groups["pre-collapse"]["n"] == 2


def _geometry(shape=(20, 20, 20)):
    return Geometry(size_xyz=shape[::-1], spacing_xyz=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                    direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def test_oracle_known_values():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:18, 2:18, 2:18] = 1
    labels[2:18, 2:18, 2:6] = 2
    image = np.where(labels == 2, 100.0, 1000.0).astype(np.float32)
    dark = oracle_dice(image, labels, (1.0, 1.0, 1.0), sigma_mm=0.01)
    assert dark.dice == pytest.approx(1.0) and dark.necrosis_darker
    bright = oracle_dice(2000.0 - image, labels, (1.0, 1.0, 1.0), sigma_mm=0.01)
    assert bright.dice == pytest.approx(1.0) and not bright.necrosis_darker
    # a necrosis indistinguishable from vital bone: the best a threshold does is take everything
    flat = oracle_dice(np.full(labels.shape, 500.0, np.float32), labels, (1.0, 1.0, 1.0))
    assert flat.dice == pytest.approx(2 * 0.25 / 1.25, abs=0.02)
    assert oracle_dice(image, (labels > 0).astype(np.uint8), (1.0, 1.0, 1.0)) is None


@pytest.mark.parametrize("offset_zyx, expected", [
    ((5, 0, 0), (0.0, 0.0)),     # straight superior
    ((5, 0, 5), (0.0, 45.0)),    # +x is lateral for a left hip in LPS
    ((5, 0, -5), (0.0, -45.0)),  # medial
    ((5, -5, 0), (45.0, 0.0)),   # -y is anterior in LPS
])
def test_lesion_tilt_known_values(offset_zyx, expected):
    # identity direction: index (z, y, x) is LPS (z, y, x) in mm
    geom = _geometry()
    center = np.array([10, 10, 10])
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[tuple(center + np.asarray(offset_zyx))] = 2
    meta = CaseMeta(case_id="c", patient_id="p", side="L", geometry=geom, landmarks=Landmarks(
        head_center_mm=(10.0, 10.0, 10.0), head_radius_mm=8.0,
        acetabular_lateral_edge_mm=(15.0, 10.0, 15.0), wb_medial_point_mm=(5.0, 10.0, 15.0),
        patient_axes=PatientAxes(lateral=(1.0, 0.0, 0.0), anterior=(0.0, -1.0, 0.0), superior=(0.0, 0.0, 1.0)),
    ))
    assert lesion_tilt_deg(labels, meta) == pytest.approx(expected, abs=1e-6)
    assert lesion_tilt_deg((labels > 0).astype(np.uint8) * 1, meta) is None
