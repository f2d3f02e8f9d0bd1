"""Clinical grades measured on a label map (0 background, 1 vital head bone, 2 necrosis).

One implementation, used both to give the phantom its reference grades and to grade predicted
label maps, so that reference and prediction are always measured the same way. Definitions
(clinical.md §3.3, §4, §8; details and assumptions in docs/grading.md):

- Steinberg extent: 100·N(2)/N(1 ∪ 2) over the 3-D map; A < 15 %, B 15–30 % (both inclusive),
  C > 30 %; no necrosis → grade None.
- JIC 2001 type on the mid-coronal slice (upper half of the head), from the lateral-most necrotic
  point x_lat against the trisection lines of the weight-bearing portion [x_med, x_edge].
- ARCO 2021 type 1/2/3 from x_lat against the head apex and the acetabular edge.
- Modified Kerboul (Ha 2006): necrotic arcs on the mid-coronal and mid-sagittal planes.
- Head depression (ARCO IIIA vs IIIB): deepest dip of the articular dome over the lesion below
  the radius of the intact dome.

Geometry always comes from the case's landmarks, never from the label map being graded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from avnbench.data.dataset import CaseMeta
from avnbench.evaluation.slices import mid_coronal_slice, mid_sagittal_slice

STEINBERG_CODES = {"A": 0, "B": 1, "C": 2}
JIC_CODES = {"A": 0, "B": 1, "C1": 2, "C2": 3}
ARCO2021_CODES = {1: 0, 2: 1, 3: 2}
ARCO_CODES = {"I": 0, "II": 1, "IIIA": 2, "IIIB": 3, "IV": 4}
KERBOUL_HA_CODES = {1: 0, 2: 1, 3: 2, 4: 3}

STEINBERG_THRESHOLDS_PERCENT = (15.0, 30.0)
KERBOUL_HA_THRESHOLDS_DEG = (200.0, 250.0, 300.0)
#: ARCO 2019 IIIA (≤ 2 mm) vs IIIB (> 2 mm) head depression.
DEPRESSION_IIIB_MM = 2.0

#: Pixel size of the reformatted planes the 2-D grades are read on (mm).
GRADING_PIXEL_MM = 0.25
#: A Kerboul ray counts as necrotic when the label this far inside the head surface is 2 (mm).
ARC_DEPTH_MM = 1.0
#: Rays leaving the head closer than this fraction of the radius exit through the neck cut.
ARC_MIN_RADIUS_FRACTION = 0.85
ARC_STEP_DEG = 0.5
#: The articular dome used for the depression: directions within this angle of superior.
DOME_HALF_ANGLE_DEG = 55.0


@dataclass(frozen=True)
class SteinbergResult:
    """Necrosis extent over the whole head: percent of head volume, grade, volumes in cm³."""

    percent: float
    grade: Literal["A", "B", "C"] | None
    necrosis_cm3: float
    head_cm3: float


@dataclass(frozen=True)
class JicResult:
    """JIC type and the mid-coronal coordinates it was read from (mm along patient lateral,
    origin at the head centre). ``type`` and ``x_lat_mm`` are None without necrosis on the upper
    half of the slice; everything is None when the case has no landmarks."""

    type: Literal["A", "B", "C1", "C2"] | None
    x_lat_mm: float | None
    x_med_mm: float | None
    x_edge_mm: float | None
    x1_mm: float | None
    x2_mm: float | None


@dataclass(frozen=True)
class KerboulResult:
    """Modified Kerboul (Ha 2006): necrotic arcs (degrees), Ha grade 1–4 and Koo–Kim index."""

    coronal_deg: float
    sagittal_deg: float
    combined_deg: float
    ha_grade: int | None
    necrotic_index: float


def steinberg_grade(percent: float) -> Literal["A", "B", "C"]:
    """Steinberg letter of a necrosis percentage: A < 15, B 15–30 (inclusive), C > 30."""
    low, high = STEINBERG_THRESHOLDS_PERCENT
    return "A" if percent < low else ("B" if percent <= high else "C")


def steinberg_extent(labels: np.ndarray, spacing_zyx) -> SteinbergResult:
    """Steinberg extent of a label map; ``spacing_zyx`` in mm, array-axis order."""
    labels = np.asarray(labels)
    n_vital, n_necrosis = int(np.count_nonzero(labels == 1)), int(np.count_nonzero(labels == 2))
    voxel_cm3 = float(np.prod(np.asarray(spacing_zyx, dtype=float))) / 1000.0
    head_cm3 = (n_vital + n_necrosis) * voxel_cm3
    if n_necrosis == 0:
        return SteinbergResult(percent=0.0, grade=None, necrosis_cm3=0.0, head_cm3=head_cm3)
    percent = 100.0 * n_necrosis / (n_vital + n_necrosis)
    return SteinbergResult(
        percent=percent,
        grade=steinberg_grade(percent),
        necrosis_cm3=n_necrosis * voxel_cm3,
        head_cm3=head_cm3,
    )


def jic_boundaries_mm(meta: CaseMeta) -> tuple[float, float, float, float] | None:
    """(x_med, x1, x2, x_edge): weight-bearing portion and its trisection lines, in mm along the
    patient lateral axis from the head centre; None without landmarks."""
    if meta.landmarks is None:
        return None
    lm = meta.landmarks
    center = np.asarray(lm.head_center_mm)
    lateral = np.asarray(lm.patient_axes.lateral)
    x_edge = float((np.asarray(lm.acetabular_lateral_edge_mm) - center) @ lateral)
    x_med = float((np.asarray(lm.wb_medial_point_mm) - center) @ lateral)
    width = x_edge - x_med
    return x_med, x_med + width / 3.0, x_med + 2.0 * width / 3.0, x_edge


def _coronal_measures(labels: np.ndarray, meta: CaseMeta) -> tuple[float | None, float | None]:
    """(x_lat, x_apex) on the mid-coronal slice: lateral-most necrosis in the upper half and the
    lateral coordinate of the most superior head pixel (mean over ties)."""
    cor = mid_coronal_slice(labels, meta, pixel_mm=GRADING_PIXEL_MM, order=0)
    hh, vv = cor.grid_mm()
    necrosis = (cor.array == 2) & (vv >= 0)
    x_lat = float(hh[necrosis].max()) if necrosis.any() else None
    head = cor.array > 0
    x_apex = None
    if head.any():
        top = vv[head].max()
        x_apex = float(hh[head & (vv == top)].mean())
    return x_lat, x_apex


def jic_type_of(x_lat: float | None, boundaries) -> Literal["A", "B", "C1", "C2"] | None:
    """JIC type from x_lat and (x_med, x1, x2, x_edge); ties go to the lower type."""
    if x_lat is None or boundaries is None:
        return None
    _, x1, x2, x_edge = boundaries
    if x_lat > x_edge:
        return "C2"
    if x_lat > x2:
        return "C1"
    if x_lat > x1:
        return "B"
    return "A"


def jic_type(labels: np.ndarray, meta: CaseMeta) -> JicResult:
    """JIC 2001 type on the mid-coronal slice (upper half of the head), with its coordinates."""
    boundaries = jic_boundaries_mm(meta)
    if boundaries is None:
        return JicResult(None, None, None, None, None, None)
    x_med, x1, x2, x_edge = boundaries
    x_lat, _ = _coronal_measures(labels, meta)
    return JicResult(jic_type_of(x_lat, boundaries), x_lat, x_med, x_edge, x1, x2)


def arco2021_type_of(x_lat: float | None, x_apex: float | None, x_edge: float | None) -> int | None:
    """ARCO 2021 type: 1 if x_lat < x_apex, 2 if x_apex ≤ x_lat ≤ x_edge, 3 beyond the edge."""
    if x_lat is None or x_apex is None or x_edge is None:
        return None
    return 1 if x_lat < x_apex else (2 if x_lat <= x_edge else 3)


def arco2021_type(labels: np.ndarray, meta: CaseMeta) -> int | None:
    """ARCO 2021 size/location type (1, 2, 3) on the mid-coronal slice; None without necrosis on
    the upper half of the slice or without landmarks."""
    boundaries = jic_boundaries_mm(meta)
    if boundaries is None:
        return None
    x_lat, x_apex = _coronal_measures(labels, meta)
    return arco2021_type_of(x_lat, x_apex, boundaries[3])


def necrotic_arc_deg(
    labels: np.ndarray, meta: CaseMeta, h_axis, v_axis, radius_mm: float
) -> float:
    """Arc of the articular surface over necrosis (degrees) in the plane through the head centre
    spanned by ``h_axis`` and ``v_axis``: rays every 0.5° from the centre; a ray counts when it
    leaves the head through the articular sphere (not the neck cut) and the label 1 mm inside
    its exit point is necrosis."""
    center = np.asarray(meta.landmarks.head_center_mm, dtype=float)
    theta = np.deg2rad(np.arange(0.0, 360.0, ARC_STEP_DEG))
    step = 0.1
    radii = np.arange(0.0, 1.3 * radius_mm, step)
    directions = np.cos(theta)[:, None] * np.asarray(h_axis) + np.sin(theta)[:, None] * np.asarray(
        v_axis
    )
    points = center + radii[None, :, None] * directions[:, None, :]
    index = meta.geometry.physical_to_index(points)
    values = ndimage.map_coordinates(
        labels, np.moveaxis(index, -1, 0), order=0, mode="constant", cval=0, prefilter=False
    )
    inside = values > 0
    has_exit = inside.any(axis=1)
    last = inside.shape[1] - 1 - np.argmax(inside[:, ::-1], axis=1)
    exit_radius = radii[last]
    probe = np.clip(last - int(round(ARC_DEPTH_MM / step)), 0, None)
    necrotic = (
        has_exit
        & (exit_radius >= ARC_MIN_RADIUS_FRACTION * radius_mm)
        & (values[np.arange(len(theta)), probe] == 2)
    )
    return float(ARC_STEP_DEG * necrotic.sum())


def kerboul_ha_grade(combined_deg: float) -> int:
    """Ha 2006 grade of a combined necrotic angle: 1 < 200°, 2 < 250°, 3 < 300°, 4 ≥ 300°."""
    return 1 + int(np.searchsorted(KERBOUL_HA_THRESHOLDS_DEG, combined_deg, side="right"))


def kerboul(labels: np.ndarray, meta: CaseMeta) -> KerboulResult | None:
    """Modified Kerboul angles on the mid-coronal and mid-sagittal planes; None without
    landmarks. Koo–Kim necrotic index = (coronal/180)·(sagittal/180)·100."""
    if meta.landmarks is None:
        return None
    lm = meta.landmarks
    axes = lm.patient_axes
    coronal = necrotic_arc_deg(labels, meta, axes.lateral, axes.superior, lm.head_radius_mm)
    sagittal = necrotic_arc_deg(labels, meta, axes.anterior, axes.superior, lm.head_radius_mm)
    combined = coronal + sagittal
    has_necrosis = bool((np.asarray(labels) == 2).any())
    return KerboulResult(
        coronal_deg=coronal,
        sagittal_deg=sagittal,
        combined_deg=combined,
        ha_grade=kerboul_ha_grade(combined) if has_necrosis else None,
        necrotic_index=(coronal / 180.0) * (sagittal / 180.0) * 100.0,
    )


def _dome_directions(n_sphere: int = 4000) -> np.ndarray:
    """Unit vectors (patient frame: lateral, anterior, superior) of a Fibonacci sphere, kept
    within DOME_HALF_ANGLE_DEG of superior."""
    k = np.arange(n_sphere) + 0.5
    z = 1.0 - 2.0 * k / n_sphere
    phi = np.pi * (1.0 + 5.0**0.5) * k
    rho = np.sqrt(1.0 - z * z)
    dirs = np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=-1)
    return dirs[z >= np.cos(np.deg2rad(DOME_HALF_ANGLE_DEG))]


def head_depression_mm(labels: np.ndarray, meta: CaseMeta) -> float | None:
    """Depth of head collapse (mm): over dome directions whose surface lies over necrosis, the
    largest shortfall of the surface radius below the median radius of the intact dome
    (sub-voxel surface from linear interpolation). 0.0 without necrosis on the dome; None
    without landmarks."""
    if meta.landmarks is None:
        return None
    lm = meta.landmarks
    axes = lm.patient_axes
    frame = np.stack([axes.lateral, axes.anterior, axes.superior])  # patient -> LPS rows
    directions = _dome_directions() @ frame
    step = 0.1
    radius = lm.head_radius_mm
    radii = np.arange(0.4 * radius, 1.3 * radius, step)
    center = np.asarray(lm.head_center_mm, dtype=float)
    points = center + radii[None, :, None] * directions[:, None, :]
    index = np.moveaxis(meta.geometry.physical_to_index(points), -1, 0)
    head = (np.asarray(labels) > 0).astype(np.uint8)
    occupancy = ndimage.map_coordinates(
        head, index, order=1, mode="constant", cval=0, output=np.float32, prefilter=False
    )
    inside = occupancy >= 0.5
    has_exit = inside.any(axis=1)
    last = inside.shape[1] - 1 - np.argmax(inside[:, ::-1], axis=1)
    nxt = np.clip(last + 1, None, len(radii) - 1)
    rows = np.arange(len(directions))
    v0, v1 = occupancy[rows, last], occupancy[rows, nxt]
    frac = np.where(v0 > v1, (v0 - 0.5) / np.maximum(v0 - v1, 1e-6), 0.0)
    surface = radii[last] + step * np.clip(frac, 0.0, 1.0)
    probe_points = center + (surface - ARC_DEPTH_MM)[:, None] * directions
    probe = ndimage.map_coordinates(
        labels, np.moveaxis(meta.geometry.physical_to_index(probe_points), -1, 0),
        order=0, mode="constant", cval=0, prefilter=False,
    )
    over_lesion = has_exit & (probe == 2)
    if not over_lesion.any():
        return 0.0
    intact = has_exit & ~over_lesion
    reference = float(np.median(surface[intact])) if intact.sum() >= 20 else radius
    return float(max(0.0, (reference - surface[over_lesion]).max()))


def grade_labels(labels: np.ndarray, meta: CaseMeta) -> dict[str, float | str | None]:
    """Every measured quantity of a label map, flat and JSON-friendly (volumes cm³, lengths mm,
    angles degrees); the 2-D/landmark quantities are None when the case has no landmarks."""
    labels = np.asarray(labels)
    st = steinberg_extent(labels, meta.geometry.spacing_zyx)
    out: dict[str, float | str | None] = {
        "necrosis_percent": st.percent,
        "necrosis_cm3": st.necrosis_cm3,
        "head_cm3": st.head_cm3,
        "vital_cm3": st.head_cm3 - st.necrosis_cm3,
        "steinberg": st.grade,
    }
    boundaries = jic_boundaries_mm(meta)
    if boundaries is None:
        x_lat = x_apex = None
    else:
        x_lat, x_apex = _coronal_measures(labels, meta)
    x_med, x1, x2, x_edge = boundaries if boundaries is not None else (None,) * 4
    jic = jic_type_of(x_lat, boundaries)
    arco21 = arco2021_type_of(x_lat, x_apex, x_edge)
    out.update(
        jic=jic,
        jic_x_lat_mm=x_lat,
        jic_x_med_mm=x_med,
        jic_x1_mm=x1,
        jic_x2_mm=x2,
        jic_x_edge_mm=x_edge,
        arco2021=None if arco21 is None else float(arco21),
        arco2021_x_apex_mm=x_apex,
    )
    kb = kerboul(labels, meta)
    out.update(
        kerboul_coronal_deg=None if kb is None else kb.coronal_deg,
        kerboul_sagittal_deg=None if kb is None else kb.sagittal_deg,
        kerboul_combined_deg=None if kb is None else kb.combined_deg,
        kerboul_ha_grade=None if kb is None or kb.ha_grade is None else float(kb.ha_grade),
        necrotic_index=None if kb is None else kb.necrotic_index,
        head_depression_mm=head_depression_mm(labels, meta),
    )
    return out


def ambiguity_reasons(
    measurements: dict[str, float | str | None],
    percent_buffer: float = 1.5,
    position_buffer_mm: float = 1.0,
    angle_buffer_deg: float = 8.0,
) -> list[str]:
    """Which grades of ``grade_labels`` output lie within the clinical.md §7.8 buffers of a
    threshold (empty list: every grade is clear-cut). Lesion-free maps are never ambiguous."""
    reasons: list[str] = []
    if measurements.get("steinberg") is None:
        return reasons
    pct = measurements["necrosis_percent"]
    for t in STEINBERG_THRESHOLDS_PERCENT:
        if abs(pct - t) <= percent_buffer:
            reasons.append(f"steinberg: {pct:.2f} % within {percent_buffer} of {t:g} %")
    x_lat = measurements.get("jic_x_lat_mm")
    if x_lat is not None:
        for key in ("jic_x1_mm", "jic_x2_mm", "jic_x_edge_mm", "arco2021_x_apex_mm"):
            ref = measurements.get(key)
            if ref is not None and abs(x_lat - ref) <= position_buffer_mm:
                reasons.append(f"x_lat {x_lat:.2f} mm within {position_buffer_mm} mm of {key}")
    combined = measurements.get("kerboul_combined_deg")
    if combined is not None:
        for t in KERBOUL_HA_THRESHOLDS_DEG:
            if abs(combined - t) <= angle_buffer_deg:
                reasons.append(f"kerboul: {combined:.1f}° within {angle_buffer_deg}° of {t:g}°")
    return reasons


def as_dict(result) -> dict:
    """A grading result dataclass as a plain dict."""
    return asdict(result)
