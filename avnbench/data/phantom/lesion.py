"""The necrotic lesion: where it lies, its shape, the necrosis label, and the re-draws that keep
its grades clear of every threshold.

A lesion is a roughened ellipsoid under the weight-bearing dome, along a direction tilted 5–35°
anteriorly and −15…30° medio-laterally from superior (clinical.md §7.3); larger lesions lean
laterally, as clinics see them. Its size is set exactly (a quantile of its normalised radius over
the head voxels gives the drawn % of the head). Nothing aims it at a JIC type: the type follows
from how far laterally it reaches against the acetabular edge, which the hip's coverage (LCEA)
places. :func:`place_lesion` grades the label map with :mod:`avnbench.evaluation.grading` and
re-draws the whole lesion while a grade is within a §7.8 buffer of its threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from avnbench.data.dataset import CaseMeta
from avnbench.data.phantom.anatomy import CaseFrame, head_mask
from avnbench.data.phantom.difficulty import lesion_tilt_deg, tilt_in_window
from avnbench.data.phantom.grid import Grid, smooth_field, unit
from avnbench.data.phantom.plan import STEINBERG_PERCENT_RANGE, CasePlan
from avnbench.evaluation import grading

#: Ambiguity buffers of clinical.md §7.8 (and ±0.3 mm around the 2 mm IIIA/IIIB depression).
PERCENT_BUFFER, POSITION_BUFFER_MM, ANGLE_BUFFER_DEG, DEPRESSION_BUFFER_MM = 1.5, 1.0, 8.0, 0.3
MAX_ATTEMPTS = 12

#: Anterior tilt of the lesion axis from superior (degrees), clinical.md §7.3.
ANTERIOR_TILT_DEG = (5.0, 35.0)
#: Medio-lateral tilt (degrees, lateral positive) by Steinberg size class, all inside the
#: clinical −15…30° of §7.3: small lesions sit anywhere on the dome, large ones lean laterally
#: into the uncovered head (Kuroda 2019: large lesions are mostly JIC C2).
LATERAL_TILT_DEG = {"A": (-15.0, 2.0), "B": (-15.0, 18.0), "C": (-10.0, 30.0)}
#: Medio-lateral semi-axis (fraction of the head radius) of the most medial and the most
#: lateral lesions: medial lesions are narrow wedges under the medial dome, lateral ones spread
#: over the uncovered head.
MEDIOLATERAL_SEMI = ((0.25, 0.45), (0.6, 0.95))
#: Mitchell class of the necrotic centre (A, B, C, D) before and after collapse (§7.3).
MITCHELL_P = {"pre-collapse": (0.7, 0.1, 0.1, 0.1), "collapsed": (0.2, 0.0, 0.3, 0.5)}
#: Share of collapsed (ARCO III) hips with bone-marrow oedema in the vital head and neck (§5.1).
EDEMA_SHARE_COLLAPSED = 0.75
#: Stage-independent shares: double-line band (§7.3) and patchy sclerosis inside the lesion.
DOUBLE_BAND_SHARE, SCLEROSIS_SHARE = 0.2, 0.3


@dataclass(frozen=True)
class LesionShape:
    """A lesion's drawn shape and signal features: medio-lateral and anterior tilt (degrees),
    centre depth and ellipsoid semi-axes (fractions of the head radius; along the lesion axis,
    medio-lateral, antero-posterior), surface roughness (fraction), reactive band width (mm),
    double-line band, patchy sclerosis, bone-marrow oedema, Mitchell class, collapse depth (mm)
    and collapse footprint (radians)."""

    beta_lateral: float
    beta_anterior: float
    depth: float
    semi: np.ndarray
    roughness: float
    band_mm: float
    double_band: bool
    sclerosis: bool
    edema: bool
    mitchell: str
    collapse_mm: float
    footprint_rad: float


def draw_lesion_shape(rng: np.random.Generator, plan: CasePlan, target_percent: float) -> LesionShape:
    """Draw where a lesion of ``target_percent`` % of the head lies, its shape and its signal
    features; only the Mitchell class, oedema and collapse depend on the planned stage."""
    collapsed = plan.stage in ("IIIA", "IIIB")
    if plan.stage == "IIIA":
        collapse = rng.uniform(0.5, 1.1)
    elif plan.stage == "IIIB":
        collapse = rng.uniform(3.0, 4.5)
    else:
        collapse = 0.0
    f = target_percent / 100.0
    # angular half-size of a spherical cap of that volume fraction, for the collapse footprint
    cap = brentq(lambda a: (1 - np.cos(a)) ** 2 * (2 + np.cos(a)) / 4 - f, 1e-3, np.pi)
    mitchell_p = MITCHELL_P["collapsed" if collapsed else "pre-collapse"]
    beta_lateral = rng.uniform(*LATERAL_TILT_DEG[plan.steinberg])
    lo_l, hi_l = LATERAL_TILT_DEG["A"][0], LATERAL_TILT_DEG["C"][1]
    laterality = (beta_lateral - lo_l) / (hi_l - lo_l)  # 0 most medial … 1 most lateral
    (m0, m1), (l0, l1) = MEDIOLATERAL_SEMI
    semi_ml = rng.uniform(m0 + laterality * (l0 - m0), m1 + laterality * (l1 - m1))
    return LesionShape(
        beta_lateral=beta_lateral,
        beta_anterior=rng.uniform(*ANTERIOR_TILT_DEG),
        # centre near the surface so that even small lesions are subchondral (k of §7.3)
        depth=rng.uniform(0.85, 1.0) if plan.steinberg == "A" else rng.uniform(0.72, 0.95),
        # (along the lesion axis, medio-lateral, antero-posterior)
        semi=np.array([rng.uniform(0.5, 0.8), semi_ml, rng.uniform(0.8, 1.15)]),
        roughness=rng.uniform(0.04, 0.12),
        band_mm=rng.uniform(1.0, 3.0),
        double_band=bool(rng.random() < DOUBLE_BAND_SHARE),
        sclerosis=bool(rng.random() < SCLEROSIS_SHARE),
        edema=bool(rng.random() < EDEMA_SHARE_COLLAPSED) and collapsed,
        mitchell=str(rng.choice(["A", "B", "C", "D"], p=mitchell_p)),
        collapse_mm=collapse,
        footprint_rad=float(np.clip(0.8 * cap, 0.35, 1.2)),
    )


@dataclass
class Lesion:
    """Necrotic lesion: ellipsoid around ``center`` (patient mm) in the frame ``axes`` (rows) with
    semi-axes ``semi`` (mm at scale 1), roughened by ``roughness``·noise; label 2 where the head
    has t <= ``scale`` (see :func:`lesion_t`). Band and collapse depths in mm, footprint radians;
    the remaining fields choose how :mod:`.lesion_signal` paints it."""

    direction: np.ndarray
    center: np.ndarray
    axes: np.ndarray
    semi: np.ndarray
    roughness: float
    footprint_rad: float
    scale: float = 1.0
    band_mm: float = 2.0
    double_band: bool = False
    sclerosis: bool = False
    edema: bool = False
    mitchell: str = "A"
    collapse_mm: float = 0.0


def lesion_direction(beta_lateral_deg: float, beta_anterior_deg: float) -> np.ndarray:
    """Unit vector from the head centre tilted laterally and anteriorly from superior (degrees)."""
    bl, ba = np.deg2rad(beta_lateral_deg), np.deg2rad(beta_anterior_deg)
    return unit([np.sin(bl) * np.cos(ba), np.sin(ba), np.cos(bl) * np.cos(ba)])


def make_lesion(radius: float, shape: LesionShape) -> Lesion:
    """The lesion of ``shape`` in a head of ``radius`` mm (scale 1; patient frame, head centre at
    the origin)."""
    u = lesion_direction(shape.beta_lateral, shape.beta_anterior)
    helper = np.array([0.0, 1.0, 0.0]) if abs(u[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = unit(np.cross(u, helper))
    e2 = np.cross(u, e1)
    return Lesion(
        direction=u,
        center=shape.depth * radius * u,
        axes=np.stack([u, e1, e2]),
        semi=radius * np.asarray(shape.semi),
        roughness=shape.roughness,
        footprint_rad=shape.footprint_rad,
        band_mm=shape.band_mm,
        double_band=shape.double_band,
        sclerosis=shape.sclerosis,
        edema=shape.edema,
        mitchell=shape.mitchell,
        collapse_mm=shape.collapse_mm,
    )


def lesion_t(p: tuple[np.ndarray, ...], lesion: Lesion, noise: np.ndarray) -> np.ndarray:
    """Normalised ellipsoidal radius of points p (x, y, z arrays, mm), divided by the roughening
    term so that {t <= scale} is the roughened ellipsoid scaled by ``scale``."""
    q2 = None
    cx, cy, cz = (float(v) for v in lesion.center)
    for row, semi in zip(lesion.axes, lesion.semi):
        rx, ry, rz = (float(v / semi) for v in row)
        c = p[0] * rx + p[1] * ry + p[2] * rz - float(cx * rx + cy * ry + cz * rz)
        q2 = c * c if q2 is None else q2 + c * c
    denom = np.maximum(1.0 - float(lesion.roughness) * noise, np.float32(0.3))
    return np.sqrt(q2) / denom


def draw_roughening(rng: np.random.Generator, head_grid: Grid) -> np.ndarray:
    """The case's lesion-roughening noise over the head box (unit variance, correlation 3–5 mm)."""
    return smooth_field(rng, tuple(head_grid.axes_mm), sigma_mm=float(rng.uniform(3.0, 5.0)))


def _scale_at_percent(t: np.ndarray, target_percent: float) -> float:
    """The quantile of ``t`` below which ``target_percent`` % of the values lie (at least one)."""
    k = min(max(round(target_percent / 100.0 * t.size), 1), t.size - 1)
    return float(np.partition(t, k - 1)[k - 1])


def label_map(frame: CaseFrame, lesion: Lesion | None, noise: np.ndarray,
              target_percent: float | None) -> np.ndarray:
    """The label map (uint8: 0 background, 1 vital head, 2 necrosis); sets ``lesion.scale`` so
    that necrosis is ``target_percent`` % of the head exactly (a quantile of the lesion's t over
    head voxels)."""
    head = head_mask(frame, lesion)
    out = np.zeros(frame.shape, np.uint8)
    box = out[frame.head_grid.slices]
    box[head] = 1
    if lesion is not None:
        t = lesion_t(tuple(c[head] for c in frame.head_grid.p), lesion, noise[head])
        lesion.scale = _scale_at_percent(t, target_percent)
        nec = np.zeros_like(head)
        nec[head] = t <= lesion.scale
        box[nec] = 2
    return out


# ------------------------------------------------------------------------ drawing and re-drawing


def depression_ok(stage: str | None, depression: float | None) -> bool:
    """Whether a measured head depression (mm) is clear of the 2 mm IIIA/IIIB threshold on the
    planned stage's side (by ``DEPRESSION_BUFFER_MM``); True when nothing was measured."""
    if depression is None:
        return True
    limit = grading.DEPRESSION_IIIB_MM
    if stage == "IIIB":
        return depression >= limit + DEPRESSION_BUFFER_MM
    return depression <= limit - DEPRESSION_BUFFER_MM


@dataclass
class LesionPlacement:
    """The outcome of :func:`place_lesion`: the lesion (None for a lesion-free hip), its label
    map, the grades measured on it, why it is still ambiguous (empty: clear) and the draws made."""

    lesion: Lesion | None
    labels: np.ndarray
    measurements: dict
    reasons: list[str]
    attempts: int


def lesion_reasons(plan: CasePlan, measurements: dict, tilt: tuple[float, float] | None) -> list[str]:
    """Why a drawn lesion cannot be kept (empty: keep it): a measured grade within its §7.8
    buffer, no necrosis on the upper mid-coronal slice (no JIC type), a head depression on the
    wrong side of the IIIA/IIIB threshold for the planned stage, or a necrosis centroid whose
    ``tilt`` (degrees, anterior and lateral, from the label map) left the anterosuperior dome
    where lesions occur (the head's edges can pull a centroid away from the lesion axis)."""
    reasons = grading.ambiguity_reasons(measurements, PERCENT_BUFFER, POSITION_BUFFER_MM, ANGLE_BUFFER_DEG)
    if tilt is not None and not tilt_in_window(tilt):
        reasons.append(f"necrosis centroid tilted {tilt[0]:.1f}° anteriorly, {tilt[1]:.1f}° laterally")
    if measurements["jic"] is None:
        reasons.append("no necrosis on the upper mid-coronal slice")
    if not depression_ok(plan.stage, measurements["head_depression_mm"]):
        reasons.append(f"depression {measurements['head_depression_mm']:.2f} mm vs {plan.stage}")
    return reasons


def place_lesion(plan: CasePlan, frame: CaseFrame, noise: np.ndarray, rng: np.random.Generator,
                 grading_meta: Callable[[], CaseMeta]) -> LesionPlacement:
    """Draw the planned lesion, label it and measure its grades; re-draw it whole (size, place,
    shape; at most MAX_ATTEMPTS) until :func:`lesion_reasons` has nothing against it.
    ``grading_meta()`` gives the case's metadata to grade with (geometry and landmarks)."""
    lesion = None
    attempts = 0
    if plan.steinberg is None:
        labels = label_map(frame, None, noise, None)
        measurements = grading.grade_labels(labels, grading_meta())
        reasons: list[str] = []
    else:
        low, high = STEINBERG_PERCENT_RANGE[plan.steinberg]
        for attempts in range(1, MAX_ATTEMPTS + 1):
            target = rng.uniform(low, high)
            lesion = make_lesion(frame.anatomy.radius, draw_lesion_shape(rng, plan, target))
            labels = label_map(frame, lesion, noise, target)
            meta = grading_meta()
            measurements = grading.grade_labels(labels, meta)
            reasons = lesion_reasons(plan, measurements, lesion_tilt_deg(labels, meta))
            if not reasons:
                break
    return LesionPlacement(lesion=lesion, labels=labels, measurements=measurements,
                           reasons=reasons, attempts=attempts)
