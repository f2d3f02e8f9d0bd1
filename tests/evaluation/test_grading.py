"""Grades of hand-made label maps whose answers are known."""

import numpy as np
import pytest

from avnbench.data.dataset import CaseMeta, Geometry, Landmarks, PatientAxes
from avnbench.evaluation.grading import (
    JIC_CODES,
    STEINBERG_CODES,
    ambiguity_reasons,
    arco2021_type,
    grade_labels,
    head_depression_mm,
    jic_type,
    kerboul,
    kerboul_ha_grade,
    steinberg_extent,
)

SPACING_T5 = (1.0, 0.44, 0.44)


@pytest.mark.parametrize(
    "n_necrosis, grade", [(0, None), (560, "A"), (600, "B"), (1200, "B"), (1201, "C")]
)
def test_steinberg_t5_thresholds_and_volumes(n_necrosis, grade):
    labels = np.zeros((20, 40, 40), np.uint8)
    labels[5:15, 10:30, 10:30] = 1  # 4000-voxel head
    head = np.flatnonzero(labels.ravel())
    labels.ravel()[head[:n_necrosis]] = 2
    r = steinberg_extent(labels, SPACING_T5)
    assert r.grade == grade
    assert steinberg_extent(labels.astype(np.int64), SPACING_T5) == r
    assert r.head_cm3 == pytest.approx(0.7744)
    assert r.percent == pytest.approx(100 * n_necrosis / 4000)
    if n_necrosis == 560:
        assert r.necrosis_cm3 == pytest.approx(0.108416)
        assert r.head_cm3 - r.necrosis_cm3 == pytest.approx(0.665984)


def test_codes_are_ordinal():
    assert list(STEINBERG_CODES.values()) == [0, 1, 2]
    assert list(JIC_CODES) == ["A", "B", "C1", "C2"]
    assert [kerboul_ha_grade(a) for a in (0, 199.9, 200, 249, 250, 299.5, 300, 360)] == [1, 1, 2, 2, 3, 3, 4, 4]


R = 10.0


def sphere_case(spacing=(0.5, 0.5, 0.5), size=60, radius=R):
    """A sphere head at the array centre; identity direction; left hip (lateral = +x LPS)."""
    shape = (size, size, size)
    origin = -(size - 1) / 2 * np.asarray(spacing[::-1])
    geometry = Geometry(
        size_xyz=shape, spacing_xyz=tuple(float(s) for s in spacing[::-1]),
        origin=tuple(float(o) for o in origin), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
    )
    meta = CaseMeta(
        case_id="s", patient_id="p", side="L", geometry=geometry,
        landmarks=Landmarks(
            head_center_mm=(0.0, 0.0, 0.0), head_radius_mm=radius,
            acetabular_lateral_edge_mm=(9.0, 0.0, 9.0), wb_medial_point_mm=(-9.0, 0.0, 4.0),
            patient_axes=PatientAxes(lateral=(1.0, 0, 0), anterior=(0, -1.0, 0), superior=(0, 0, 1.0)),
        ),
    )
    idx = np.indices(shape).astype(float)
    zyx = np.moveaxis(geometry.index_to_physical(np.moveaxis(idx, 0, -1)), -1, 0)[::-1]
    x, y, z = zyx[2], zyx[1], zyx[0]  # LPS coordinates
    return meta, x, y, z


@pytest.mark.parametrize("x_lat, expected, arco", [(-5.0, "A", 1), (1.5, "B", 2), (5.0, "C1", 2), (12.0, "C2", 3)])
def test_jic_and_arco2021_on_constructed_head(x_lat, expected, arco):
    meta, x, y, z = sphere_case()
    r = np.sqrt(x**2 + y**2 + z**2)
    labels = (r <= R).astype(np.uint8)
    labels[(r <= R) & (x <= x_lat) & (z >= 2.0)] = 2
    res = jic_type(labels, meta)
    # x_edge 9, x_med -9: trisection lines at -3 and +3
    assert (res.x_med_mm, res.x1_mm, res.x2_mm, res.x_edge_mm) == pytest.approx((-9, -3, 3, 9))
    assert res.type == expected
    assert res.x_lat_mm == pytest.approx(min(x_lat, np.sqrt(R**2 - 4)), abs=0.6)
    assert arco2021_type(labels, meta) == arco


def test_jic_ignores_necrosis_below_the_centre_and_none_without_necrosis():
    meta, x, y, z = sphere_case()
    r = np.sqrt(x**2 + y**2 + z**2)
    labels = (r <= R).astype(np.uint8)
    assert jic_type(labels, meta).type is None
    labels[(r <= R) & (z < -1)] = 2
    assert jic_type(labels, meta).type is None
    labels[(r <= R) & (x < -6) & (z > 1)] = 2
    assert jic_type(labels, meta).type == "A"


def test_kerboul_on_axis_cone_gives_four_alpha():
    meta, x, y, z = sphere_case()
    r = np.sqrt(x**2 + y**2 + z**2)
    labels = (r <= R).astype(np.uint8)
    alpha = 45.0
    labels[(r <= R) & (z >= r * np.cos(np.deg2rad(alpha)))] = 2
    kb = kerboul(labels, meta)
    assert kb.coronal_deg == pytest.approx(2 * alpha, abs=3)
    assert kb.sagittal_deg == pytest.approx(2 * alpha, abs=3)
    assert kb.combined_deg == pytest.approx(4 * alpha, abs=6)
    assert kb.ha_grade == 1
    assert kb.necrotic_index == pytest.approx(25.0, abs=2)


def test_head_depression_measures_a_known_dent():
    meta, x, y, z = sphere_case()
    r = np.sqrt(x**2 + y**2 + z**2)
    depth, half_angle = 3.0, np.deg2rad(35)
    psi = np.arccos(np.clip(z / np.maximum(r, 1e-6), -1, 1))
    dent = np.where(psi < half_angle, depth * 0.5 * (1 + np.cos(np.pi * psi / half_angle)), 0)
    head = r <= R - dent
    labels = head.astype(np.uint8)
    labels[head & (psi < np.deg2rad(40))] = 2
    assert head_depression_mm(labels, meta) == pytest.approx(depth, abs=0.35)
    intact = (r <= R).astype(np.uint8)
    intact[(r <= R) & (psi < np.deg2rad(40))] = 2
    assert head_depression_mm(intact, meta) < 0.3


def test_grade_labels_is_flat_and_consistent():
    meta, x, y, z = sphere_case()
    r = np.sqrt(x**2 + y**2 + z**2)
    labels = (r <= R).astype(np.uint8)
    labels[(r <= R) & (x <= 5.0) & (z >= 2.0)] = 2
    m = grade_labels(labels, meta)
    assert all(v is None or isinstance(v, (float, str)) for v in m.values())
    assert m["jic"] == "C1" and m["arco2021"] == 2.0
    assert m["steinberg"] == steinberg_extent(labels, meta.geometry.spacing_zyx).grade
    assert m["necrosis_percent"] == pytest.approx(100 * (labels == 2).sum() / (labels > 0).sum())
    assert isinstance(ambiguity_reasons(m), list)
    no_landmarks = meta.model_copy(update={"landmarks": None})
    m2 = grade_labels(labels, no_landmarks)
    assert m2["jic"] is None and m2["kerboul_combined_deg"] is None
    assert m2["steinberg"] == m["steinberg"]


def test_ambiguity_flags_near_thresholds():
    base = {"steinberg": "B", "necrosis_percent": 15.9, "jic_x_lat_mm": 3.5, "jic_x1_mm": -3.0,
            "jic_x2_mm": 3.0, "jic_x_edge_mm": 9.0, "arco2021_x_apex_mm": 0.0,
            "kerboul_combined_deg": 246.0}
    reasons = ambiguity_reasons(base)
    assert len(reasons) == 3
    clear = dict(base, necrosis_percent=22.0, jic_x_lat_mm=6.0, kerboul_combined_deg=225.0)
    assert ambiguity_reasons(clear) == []
