"""The necrotic lesion: its shape, the necrosis label, and the search that hits grade targets.

A lesion is a roughened ellipsoid under the weight-bearing dome. Its size is set exactly (a
quantile of its normalised radius over the head voxels gives the target % of the head), its
medio-lateral tilt by bisection so that its lateral margin on the mid-coronal slice lands in the
target JIC interval; :func:`place_lesion` then grades the label map with
:mod:`avnbench.evaluation.grading` and re-draws until the grades are clear of every threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import brentq

from avnbench.data.dataset import CaseMeta
from avnbench.data.phantom.anatomy import Anatomy, CaseFrame, head_mask, head_sdf, neck_frame
from avnbench.data.phantom.grid import Grid, smooth_field, unit
from avnbench.data.phantom.plan import STEINBERG_PERCENT_RANGE, CasePlan
from avnbench.evaluation import grading

#: Ambiguity buffers of clinical.md §7.8 (and ±0.3 mm around the 2 mm IIIA/IIIB depression).
PERCENT_BUFFER, POSITION_BUFFER_MM, ANGLE_BUFFER_DEG, DEPRESSION_BUFFER_MM = 1.5, 1.0, 8.0, 0.3
MAX_ATTEMPTS = 12


@dataclass(frozen=True)
class LesionShape:
    """A lesion's drawn shape before its tilt and size are searched: anterior tilt (degrees),
    centre depth and ellipsoid semi-axes (fractions of the head radius; along the lesion axis,
    medio-lateral, antero-posterior), surface roughness (fraction), reactive band width (mm),
    double-line sign, Mitchell class, collapse depth (mm) and collapse footprint (radians)."""

    beta_anterior: float
    depth: float
    semi: np.ndarray
    roughness: float
    band_mm: float
    double_band: bool
    mitchell: str
    collapse_mm: float
    footprint_rad: float


def draw_lesion_shape(rng: np.random.Generator, plan: CasePlan, target_percent: float) -> LesionShape:
    """Draw the shape of a lesion of ``target_percent`` % of the head for the plan's targets."""
    collapsed = plan.stage in ("IIIA", "IIIB")
    if plan.stage == "IIIA":
        collapse = rng.uniform(0.5, 1.1)
    elif plan.stage == "IIIB":
        collapse = rng.uniform(3.0, 4.5)
    else:
        collapse = 0.0
    mitchell_p = [0.2, 0.0, 0.3, 0.5] if collapsed else [0.7, 0.1, 0.1, 0.1]
    f = target_percent / 100.0
    # angular half-size of a spherical cap of that volume fraction, for the collapse footprint
    cap = brentq(lambda a: (1 - np.cos(a)) ** 2 * (2 + np.cos(a)) / 4 - f, 1e-3, np.pi)
    return LesionShape(
        beta_anterior=rng.uniform(5.0, 35.0),
        # centre near the surface so that even small lesions are subchondral
        depth=rng.uniform(0.85, 1.0) if plan.steinberg == "A" else rng.uniform(0.72, 0.95),
        # (along the lesion axis, medio-lateral, antero-posterior): medial JIC types need lesions
        # narrow medio-laterally and long antero-posteriorly to stay anterosuperior
        semi=(rng.uniform([0.5, 0.35, 0.8], [0.8, 0.6, 1.15]) if plan.jic in ("A", "B")
              else rng.uniform([0.5, 0.55, 0.6], [0.8, 0.95, 1.05])),
        roughness=rng.uniform(0.04, 0.12),
        band_mm=rng.uniform(1.0, 3.0),
        double_band=bool(rng.random() < 0.2),
        mitchell=str(rng.choice(["A", "B", "C", "D"], p=mitchell_p)),
        collapse_mm=collapse,
        footprint_rad=float(np.clip(0.8 * cap, 0.35, 1.2)),
    )


@dataclass
class Lesion:
    """Necrotic lesion: ellipsoid around ``center`` (patient mm) in the frame ``axes`` (rows) with
    semi-axes ``semi`` (mm at scale 1), roughened by ``roughness``·noise; label 2 where the head
    has t <= ``scale`` (see :func:`lesion_t`). Band and collapse depths in mm, footprint radians."""

    direction: np.ndarray
    center: np.ndarray
    axes: np.ndarray
    semi: np.ndarray
    roughness: float
    footprint_rad: float
    scale: float = 1.0
    band_mm: float = 2.0
    double_band: bool = False
    mitchell: str = "A"
    collapse_mm: float = 0.0


def lesion_direction(beta_lateral_deg: float, beta_anterior_deg: float) -> np.ndarray:
    """Unit vector from the head centre tilted laterally and anteriorly from superior (degrees)."""
    bl, ba = np.deg2rad(beta_lateral_deg), np.deg2rad(beta_anterior_deg)
    return unit([np.sin(bl) * np.cos(ba), np.sin(ba), np.cos(bl) * np.cos(ba)])


def make_lesion(anatomy: Anatomy, beta_lateral: float, shape: LesionShape) -> Lesion:
    """The lesion of ``shape`` tilted ``beta_lateral`` degrees laterally (scale 1)."""
    u = lesion_direction(beta_lateral, shape.beta_anterior)
    helper = np.array([0.0, 1.0, 0.0]) if abs(u[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = unit(np.cross(u, helper))
    e2 = np.cross(u, e1)
    r = anatomy.radius
    return Lesion(
        direction=u,
        center=shape.depth * r * u,
        axes=np.stack([u, e1, e2]),
        semi=r * np.asarray(shape.semi),
        roughness=shape.roughness,
        footprint_rad=shape.footprint_rad,
        band_mm=shape.band_mm,
        double_band=shape.double_band,
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
    k = min(max(int(round(target_percent / 100.0 * t.size)), 1), t.size - 1)
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


# -------------------------------------------------------------------------------- the search


def _patient_to_head_index(frame: CaseFrame, p) -> np.ndarray:
    """Fractional indices (3, n) into the head box of patient points ``p`` (mm)."""
    rows = []
    for d in range(3):
        ax = frame.index_axes[d]
        coord = p[0] * ax[0] + p[1] * ax[1] + p[2] * ax[2]
        rows.append(coord / frame.spacing[d] + frame.center_index[d] - frame.head_grid.lo[d])
    return np.stack(rows)


def _coronal_x_lat(frame: CaseFrame, noise: np.ndarray, lesion: Lesion, scale: float) -> float | None:
    """Lateral-most lesion point (mm) on the upper half of the mid-coronal plane, evaluated
    analytically (fast stand-in for grading while searching)."""
    an = frame.anatomy
    step = 0.25
    h = np.arange(-(an.radius + 2), an.radius + 2, step, dtype=np.float32)
    v = np.arange(0.0, an.radius + 2, step, dtype=np.float32)
    hh, vv = np.meshgrid(h, v, indexing="xy")
    p = (hh.ravel(), np.zeros(hh.size, np.float32), vv.ravel())
    r = np.sqrt(p[0] ** 2 + p[2] ** 2)
    _, _, cut = neck_frame(p, r, an)
    head = (head_sdf(p, r, an, lesion) <= 0) & (cut <= 0)
    idx = _patient_to_head_index(frame, p)
    sampled = ndimage.map_coordinates(noise, idx, order=1, mode="nearest")
    nec = head & (lesion_t(p, lesion, sampled) <= scale)
    return float(p[0][nec].max()) if nec.any() else None


def search_lesion(frame: CaseFrame, noise: np.ndarray, rng: np.random.Generator,
                  target_percent: float, target_jic: str, shape: LesionShape) -> Lesion:
    """Choose the medio-lateral tilt so that the lesion's lateral margin on the mid-coronal
    slice lands inside the target JIC interval, away from every grading threshold."""
    an = frame.anatomy
    head = head_mask(frame, None)
    # the volume fraction is estimated on a sub-grid of about 1 mm (every voxel when coarse)
    sub = tuple(slice(None, None, max(1, int(round(1.0 / sp)))) for sp in frame.spacing)
    head_sub = head[sub]
    p_sub = tuple(c[sub][head_sub] for c in frame.head_grid.p)
    noise_sub = noise[sub][head_sub]
    x_med = an.wb_medial_point[0]
    x_edge = an.acetabular_edge[0]
    x1, x2 = x_med + (x_edge - x_med) / 3, x_med + 2 * (x_edge - x_med) / 3
    bounds = {"A": (-np.inf, x1), "B": (x1, x2), "C1": (x2, x_edge), "C2": (x_edge, np.inf)}
    lo_b, hi_b = bounds[target_jic]
    # the apex (≈ 0 mm) is an ARCO 2021 threshold too: aim for the larger clear sub-interval
    # aim close to the interval's inner boundary for the open-ended types: lesions far
    # medial (A) or far beyond the edge (C2) need implausible tilts
    lo_t, hi_t = max(lo_b, x1 - 5.0) + 1.5, min(hi_b, x_edge + 6.0) - 1.5
    if lo_t < 0.0 < hi_t:
        lo_t, hi_t = (lo_t, -1.5) if -1.5 - lo_t > hi_t - 1.5 else (1.5, hi_t)
    target = rng.uniform(lo_t, hi_t) if hi_t > lo_t else 0.5 * (lo_b + hi_b)

    def x_lat_at(beta):
        lesion = make_lesion(an, beta, shape)
        scale = _scale_at_percent(lesion_t(p_sub, lesion, noise_sub), target_percent)
        x = _coronal_x_lat(frame, noise, lesion, scale)
        return (-np.inf if x is None else x), lesion

    lo, hi = (-65.0 if target_jic == "A" else -50.0), 45.0
    best = None
    for _ in range(9):
        mid = 0.5 * (lo + hi)
        x, lesion = x_lat_at(mid)
        if best is None or abs(x - target) < abs(best[0] - target):
            best = (x, lesion)
        if x < target:
            lo = mid
        else:
            hi = mid
    return best[1]


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


def place_lesion(plan: CasePlan, frame: CaseFrame, noise: np.ndarray, rng: np.random.Generator,
                 grading_meta: Callable[[], CaseMeta]) -> LesionPlacement:
    """Draw the planned lesion, label it and measure its grades; re-draw (at most MAX_ATTEMPTS)
    until they are clear of every threshold and of the JIC target (kept for half the draws).
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
            shape = draw_lesion_shape(rng, plan, target)
            lesion = search_lesion(frame, noise, rng, target, plan.jic, shape)
            labels = label_map(frame, lesion, noise, target)
            measurements = grading.grade_labels(labels, grading_meta())
            reasons = grading.ambiguity_reasons(
                measurements, PERCENT_BUFFER, POSITION_BUFFER_MM, ANGLE_BUFFER_DEG
            )
            if measurements["jic"] is None:
                reasons.append("no necrosis on the upper mid-coronal slice")
            elif measurements["jic"] != plan.jic and attempts <= MAX_ATTEMPTS // 2:
                # keep the stratification: retry a few times before accepting another type
                reasons.append(f"JIC {measurements['jic']} instead of {plan.jic}")
            if not depression_ok(plan.stage, measurements["head_depression_mm"]):
                reasons.append(f"depression {measurements['head_depression_mm']:.2f} mm vs {plan.stage}")
            if not reasons:
                break
    return LesionPlacement(lesion=lesion, labels=labels, measurements=measurements,
                           reasons=reasons, attempts=attempts)
