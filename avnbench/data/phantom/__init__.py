"""The built-in synthetic phantom: cropped axial-oblique 3-D T1 hip MRI with AVN of the femoral head.

Analytic anatomy (clinical.md §7) evaluated directly on the output grid: signed distances in mm
(float32) give both the labels (voxel centre inside) and partial-volume fractions for the image
(a linear ramp one voxel wide), so nothing is supersampled. The image is then degraded like an
acquisition: k-space truncation to the native in-plane resolution, a through-plane slice profile,
a smooth polynomial bias field and Rician noise.

Reference grades are measured on the final label maps with :mod:`avnbench.evaluation.grading`, never copied
from generator parameters; a case whose measured grades fall within the §7.8 ambiguity buffers of
a threshold is re-drawn. Each case has its own random stream (``SeedSequence(seed)`` children
keyed by case index), so case i is the same whatever the number of cases, and the same seed gives
byte-identical files.

Patient frame (mm, origin at the head centre): x lateral, y anterior, z superior. It maps to the
physical LPS frame by side: lateral is -x (LPS) for a right hip and +x for a left hip.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.fft
from scipy import ndimage
from scipy.optimize import brentq

from avnbench.evaluation import grading
from avnbench.data.dataset import (
    CASES_FILE,
    FILE_ENDING,
    SPLITS_FILE,
    SPLITS_META_FILE,
    CaseMeta,
    CasesFile,
    Dataset,
    Geometry,
    Landmarks,
    PatientAxes,
    load_dataset,
    write_cases_file,
    write_dataset_json,
)
from avnbench.errors import ConfigError

PHANTOM_VERSION = "v1"
DEFAULT_SHAPE = (80, 160, 160)
#: Field of view (mm) along the array axes (z, y, x); any shape keeps it and scales the spacing.
FIELD_OF_VIEW_MM = (80.0, 70.4, 70.4)
#: Coarsest spacing that still resolves the head, its cartilage and a 1–3 mm reactive band (mm).
MAX_SPACING_MM = 2.5
MIN_SHAPE = tuple(int(np.ceil(f / MAX_SPACING_MM)) for f in FIELD_OF_VIEW_MM)  # (32, 29, 29)
MAX_VOXELS = 64 * 1024 * 1024
#: Ambiguity buffers of clinical.md §7.8 (and ±0.3 mm around the 2 mm IIIA/IIIB depression).
PERCENT_BUFFER, POSITION_BUFFER_MM, ANGLE_BUFFER_DEG, DEPRESSION_BUFFER_MM = 1.5, 1.0, 8.0, 0.3
MAX_ATTEMPTS = 12

# Stratification by case index, so that small datasets are mixed too.
STEINBERG_CYCLE = ("A", "B", "C")
JIC_CYCLES = {"A": ("A", "C2", "B", "C1"), "B": ("C1", "B", "C2", "C1"), "C": ("C2", "C1", "C2", "C1")}
STAGE_CYCLE = ("I", "IIIA", "II", "IIIB", "II", "I", "IIIB", "IIIA", "I", "II")
STEINBERG_PERCENT_RANGE = {"A": (4.0, 12.5), "B": (17.0, 28.0), "C": (32.0, 48.0)}
LESION_FREE_EVERY, LESION_FREE_OFFSET = 13, 6


def dataset_name(n_cases: int, seed: int, shape: tuple[int, int, int]) -> str:
    """The dataset name, which says it is a synthetic phantom and encodes its parameters."""
    return f"avn-phantom-{PHANTOM_VERSION}-n{n_cases}-s{seed}-{'x'.join(str(s) for s in shape)}"


def spacing_for(shape: tuple[int, int, int]) -> tuple[float, float, float]:
    """Voxel spacing (mm, z y x) that keeps the phantom's field of view for an array shape."""
    return tuple(f / s for f, s in zip(FIELD_OF_VIEW_MM, shape))  # type: ignore[return-value]


def check_shape(shape) -> tuple[int, int, int]:
    """Validate an array shape (z, y, x); ConfigError if the head could not be resolved."""
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ConfigError(f"shape must be three integers Z Y X, got {shape!r}") from None
    if len(shape) != 3:
        raise ConfigError(f"shape must be three integers Z Y X, got {len(shape)} values")
    if any(s < m for s, m in zip(shape, MIN_SHAPE)):
        raise ConfigError(
            f"shape {' '.join(map(str, shape))} is too small: the {FIELD_OF_VIEW_MM[0]:g}×"
            f"{FIELD_OF_VIEW_MM[1]:g}×{FIELD_OF_VIEW_MM[2]:g} mm field of view needs voxels of at "
            f"most {MAX_SPACING_MM} mm to resolve the femoral head and lesion; use at least "
            f"{' '.join(map(str, MIN_SHAPE))} (the default is {' '.join(map(str, DEFAULT_SHAPE))})"
        )
    if int(np.prod(shape)) > MAX_VOXELS:
        raise ConfigError(
            f"shape {' '.join(map(str, shape))} has more than {MAX_VOXELS} voxels; "
            f"use at most e.g. 160 320 320"
        )
    return shape  # type: ignore[return-value]


@dataclass(frozen=True)
class CasePlan:
    """What case ``index`` should be: identity and the grades it is stratified towards."""

    index: int
    case_id: str
    patient_id: str
    patient_index: int
    bilateral: bool
    steinberg: str | None
    jic: str | None
    stage: str | None


def plan_case(index: int) -> CasePlan:
    """Deterministic plan of case ``index``: cases 3b and 3b+1 are the two hips of one patient,
    case 3b+2 a patient with one hip; targets cycle by index (lesion-free every 13th case)."""
    block, pos = divmod(index, 3)
    patient_index = 2 * block + (0 if pos < 2 else 1)
    lesion_free = index % LESION_FREE_EVERY == LESION_FREE_OFFSET
    steinberg = None if lesion_free else STEINBERG_CYCLE[(index + block) % 3]
    jic = None if lesion_free else JIC_CYCLES[steinberg][block % 4]
    stage = None if lesion_free else STAGE_CYCLE[index % len(STAGE_CYCLE)]
    return CasePlan(
        index=index, case_id=f"avn_{index:03d}", patient_id=f"pt_{patient_index:03d}",
        patient_index=patient_index, bilateral=pos < 2, steinberg=steinberg, jic=jic, stage=stage,
    )


@dataclass
class GeneratedCase:
    """One generated case: arrays (z, y, x), geometry, landmarks and measured grades."""

    image: np.ndarray
    labels: np.ndarray
    meta: CaseMeta
    attempts: int = 1
    timings: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- helpers


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _truncnorm(rng: np.random.Generator, mean: float, sd: float, low: float, high: float) -> float:
    return float(np.clip(rng.normal(mean, sd), low, high))


def _ramp(sdf: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume fraction of a region {sdf <= 0} (sdf in mm): 1 inside, 0 outside, linear
    over one voxel width across the boundary."""
    out = np.multiply(sdf, -1.0 / width, dtype=np.float32)
    out += 0.5
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _paint(signal: np.ndarray, value, fraction: np.ndarray) -> None:
    """Composite a tissue of intensity ``value`` over ``signal`` with a partial-volume fraction."""
    signal += (value - signal) * fraction


def _smooth_field(
    rng: np.random.Generator, axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray], sigma_mm: float
) -> np.ndarray:
    """Unit-variance Gaussian random field with correlation length ``sigma_mm``, evaluated on
    the grid whose per-axis coordinates are ``axes_mm``. White noise on nodes sigma/2 apart is
    convolved with a separable Gaussian kernel by three small matrix products (fast, exact)."""
    kernels = []
    for coords in axes_mm:
        step = sigma_mm / 2.0
        nodes = np.arange(coords.min() - 3 * sigma_mm, coords.max() + 3 * sigma_mm + step, step)
        k = np.exp(-0.5 * ((coords[:, None] - nodes[None, :]) / sigma_mm) ** 2).astype(np.float32)
        k /= np.sqrt((k * k).sum(axis=1, keepdims=True))
        kernels.append(k)
    white = rng.standard_normal(tuple(k.shape[1] for k in kernels), dtype=np.float32)
    nz, ny, nx = white.shape
    big_z, big_y, big_x = (len(a) for a in axes_mm)
    # three plain 2-D matrix products (BLAS), contracting x, then y, then z
    f = (white.reshape(-1, nx) @ kernels[2].T).reshape(nz, ny, big_x)
    f = np.ascontiguousarray(f.transpose(0, 2, 1)).reshape(-1, ny) @ kernels[1].T  # (nz*X, Y)
    f = np.ascontiguousarray(f.reshape(nz, big_x, big_y).transpose(0, 2, 1))
    return (kernels[0] @ f.reshape(nz, -1)).reshape(big_z, big_y, big_x)


# ------------------------------------------------------------------------------------- anatomy


@dataclass
class Anatomy:
    """Per-case anatomy in the patient frame (mm, head centre at the origin)."""

    side: str
    radius: float
    semi_axes: np.ndarray
    neck_axis: np.ndarray
    neck_cut: float
    cut_curvature: float
    neck_radius: float
    neck_flare: float
    neck_cortex: float
    plate: float
    cartilage_femoral: float
    joint_space: float
    cartilage_acetabular: float
    acetabular_plate: float
    pelvis_thickness: float
    acetabular_axis: np.ndarray
    rim_offset: float
    fossa_axis: np.ndarray
    fossa_half_angle: float
    fovea_axis: np.ndarray
    fovea_depth: float
    fovea_half_angle: float
    labrum_height: float
    lcea_deg: float
    wb_medial_deg: float
    acetabular_edge: np.ndarray
    wb_medial_point: np.ndarray

    @property
    def bone_inner_radius(self) -> float:
        return self.radius + self.cartilage_femoral + self.joint_space + self.cartilage_acetabular


def draw_anatomy(rng: np.random.Generator, patient_rng: np.random.Generator, side: str) -> Anatomy:
    """Draw a hip's anatomy: patient-level size from ``patient_rng``, hip-level shape from ``rng``."""
    male = patient_rng.random() < 0.6
    diameter = (
        _truncnorm(patient_rng, 48.0, 2.5, 39.0, 54.0) if male
        else _truncnorm(patient_rng, 43.0, 2.2, 39.0, 54.0)
    )
    radius = diameter / 2.0 + rng.uniform(-0.3, 0.3)
    semi_axes = radius * (1.0 + rng.uniform(-0.02, 0.02, 3))
    nsa = _truncnorm(rng, 126.0, 5.0, 115.0, 140.0)
    version = _truncnorm(rng, 14.0, 7.0, 0.0, 30.0)
    d, a = np.deg2rad(nsa - 90.0), np.deg2rad(version)
    neck_axis = _unit([np.cos(d) * np.cos(a), -np.cos(d) * np.sin(a), -np.sin(d)])

    lcea = _truncnorm(rng, 32.0, 5.0, 22.0, 42.0)
    acetabular_version = _truncnorm(rng, 17.0, 6.0, 5.0, 30.0)
    lc, av = np.deg2rad(lcea), np.deg2rad(acetabular_version)
    acetabular_axis = _unit([-np.cos(lc) * np.cos(av), -np.cos(lc) * np.sin(av), np.sin(lc)])
    # fossa: toward the inferior part of the acetabulum, below its pole
    down = np.array([0.0, 0.0, -1.0])
    down = _unit(down - down.dot(acetabular_axis) * acetabular_axis)
    fossa_axis = _unit(np.cos(np.deg2rad(32)) * acetabular_axis + np.sin(np.deg2rad(32)) * down)
    fovea_axis = _unit([-0.8, -0.15, -0.55])

    anatomy = Anatomy(
        side=side, radius=radius, semi_axes=semi_axes, neck_axis=neck_axis,
        neck_cut=rng.uniform(0.55, 0.72) * radius, cut_curvature=rng.uniform(0.04, 0.12),
        neck_radius=rng.uniform(0.62, 0.72) * radius, neck_flare=rng.uniform(0.15, 0.35),
        neck_cortex=rng.uniform(1.5, 2.6), plate=rng.uniform(0.6, 1.0),
        cartilage_femoral=rng.uniform(1.2, 2.2), joint_space=rng.uniform(0.2, 1.0),
        cartilage_acetabular=rng.uniform(1.2, 2.2), acetabular_plate=rng.uniform(1.0, 2.0),
        pelvis_thickness=rng.uniform(11.0, 16.0), acetabular_axis=acetabular_axis,
        rim_offset=-rng.uniform(0.0, 0.12) * radius, fossa_axis=fossa_axis,
        fossa_half_angle=np.deg2rad(rng.uniform(20, 27)), fovea_axis=fovea_axis,
        fovea_depth=rng.uniform(1.0, 2.0), fovea_half_angle=np.deg2rad(rng.uniform(9, 12)),
        labrum_height=rng.uniform(4.0, 6.5), lcea_deg=lcea,
        wb_medial_deg=rng.uniform(30.0, 40.0),
        acetabular_edge=np.zeros(3), wb_medial_point=np.zeros(3),
    )
    # lateral acetabular edge: the bony rim (inner surface) on the mid-coronal plane, lateral side
    rb, m = anatomy.bone_inner_radius, acetabular_axis
    phi = brentq(lambda t: rb * (m[0] * np.sin(t) + m[2] * np.cos(t)) - anatomy.rim_offset,
                 0.0, np.pi / 2)
    anatomy.acetabular_edge = rb * np.array([np.sin(phi), 0.0, np.cos(phi)])
    anatomy.lcea_deg = float(np.rad2deg(phi))
    t = np.deg2rad(anatomy.wb_medial_deg)
    anatomy.wb_medial_point = radius * np.array([-np.sin(t), 0.0, np.cos(t)])
    return anatomy


@dataclass
class Lesion:
    """Necrotic lesion: ellipsoid around ``center`` (patient mm) in the frame ``axes`` (rows) with
    semi-axes ``semi`` (mm at scale 1), roughened by ``roughness``·noise; label 2 where the head
    has t <= ``scale`` (see :func:`_lesion_t`)."""

    direction: np.ndarray
    center: np.ndarray
    axes: np.ndarray
    semi: np.ndarray
    roughness: float
    scale: float = 1.0
    band_mm: float = 2.0
    double_band: bool = False
    mitchell: str = "A"
    collapse_mm: float = 0.0
    footprint_rad: float = 0.8


def _lesion_direction(beta_lateral_deg: float, beta_anterior_deg: float) -> np.ndarray:
    bl, ba = np.deg2rad(beta_lateral_deg), np.deg2rad(beta_anterior_deg)
    return _unit([np.sin(bl) * np.cos(ba), np.sin(ba), np.cos(bl) * np.cos(ba)])


def _make_lesion(anatomy: Anatomy, beta_lateral: float, shape_params: dict) -> Lesion:
    u = _lesion_direction(beta_lateral, shape_params["beta_anterior"])
    helper = np.array([0.0, 1.0, 0.0]) if abs(u[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = _unit(np.cross(u, helper))
    e2 = np.cross(u, e1)
    r = anatomy.radius
    return Lesion(
        direction=u,
        center=shape_params["depth"] * r * u,
        axes=np.stack([u, e1, e2]),
        semi=r * np.asarray(shape_params["semi"]),
        roughness=shape_params["roughness"],
        band_mm=shape_params["band_mm"],
        double_band=shape_params["double_band"],
        mitchell=shape_params["mitchell"],
        collapse_mm=shape_params["collapse_mm"],
    )


def _lesion_t(p: tuple[np.ndarray, ...], lesion: Lesion, noise: np.ndarray) -> np.ndarray:
    """Normalised ellipsoidal radius of points p (x, y, z arrays), divided by the roughening term
    so that {t <= scale} is the roughened ellipsoid scaled by ``scale``."""
    q2 = None
    cx, cy, cz = (float(v) for v in lesion.center)
    for row, semi in zip(lesion.axes, lesion.semi):
        rx, ry, rz = (float(v / semi) for v in row)
        c = p[0] * rx + p[1] * ry + p[2] * rz - float(cx * rx + cy * ry + cz * rz)
        q2 = c * c if q2 is None else q2 + c * c
    denom = np.maximum(1.0 - float(lesion.roughness) * noise, np.float32(0.3))
    return np.sqrt(q2) / denom


def _cos_to(p: tuple[np.ndarray, ...], r: np.ndarray, axis) -> np.ndarray:
    """Cosine of the angle between the points' directions (from the head centre) and ``axis``."""
    ax, ay, az = (float(v) for v in axis)
    return (p[0] * ax + p[1] * ay + p[2] * az) / np.maximum(r, np.float32(1e-3))


def _bump(cos: np.ndarray, half_angle: float) -> np.ndarray:
    """Smooth cap around an axis from the cosine of the angle to it: 1 on the axis, 0 beyond
    ``half_angle`` (radians), smoothstep in between (no arccos: this runs on whole volumes)."""
    c0 = float(np.cos(half_angle))
    x = (cos - c0) * np.float32(1.0 / (1.0 - c0))
    np.clip(x, 0.0, 1.0, out=x)
    return x * x * (3.0 - 2.0 * x)


def _head_sdf(p, r, anatomy: Anatomy, lesion: Lesion | None) -> np.ndarray:
    """Signed distance (mm, approximate) of the femoral head surface: slightly aspherical
    ellipsoid, fovea pit, and the collapse dent over the lesion."""
    a = [float(1.0 / v) for v in anatomy.semi_axes]
    q = np.sqrt((p[0] * a[0]) ** 2 + (p[1] * a[1]) ** 2 + (p[2] * a[2]) ** 2)
    sdf = (q - 1.0) * float(anatomy.radius)
    sdf += anatomy.fovea_depth * _bump(_cos_to(p, r, anatomy.fovea_axis), anatomy.fovea_half_angle)
    if lesion is not None and lesion.collapse_mm > 0:
        sdf += lesion.collapse_mm * _bump(_cos_to(p, r, lesion.direction), lesion.footprint_rad)
    return sdf


def _neck_frame(p, r, anatomy: Anatomy):
    """(s, rho, cut): coordinate along the neck axis, distance from it, and the signed distance
    to the curved head–neck junction (physeal scar), negative on the head side."""
    n = [float(v) for v in anatomy.neck_axis]
    s = p[0] * n[0] + p[1] * n[1] + p[2] * n[2]
    rho = np.sqrt(np.maximum(r * r - s * s, 0.0))
    cut = s - (float(anatomy.neck_cut) + float(anatomy.cut_curvature / anatomy.radius) * rho * rho)
    return s, rho, cut


# --------------------------------------------------------------------------- the case generator


class _Grid:
    """Voxel coordinates of an array region in the patient frame."""

    def __init__(self, shape, spacing, center_index, index_axes, lo=(0, 0, 0), hi=None):
        hi = shape if hi is None else hi
        self.lo, self.hi = tuple(lo), tuple(hi)
        self.axes_mm = [
            (np.arange(lo[d], hi[d], dtype=np.float64) - center_index[d]) * spacing[d]
            for d in range(3)
        ]
        shp = tuple(h - l for l, h in zip(self.lo, self.hi))
        coords = []
        for c in range(3):
            comp = np.zeros(shp, dtype=np.float32)
            for d in range(3):
                view = [1, 1, 1]
                view[d] = shp[d]
                comp += (self.axes_mm[d] * index_axes[d][c]).astype(np.float32).reshape(view)
            coords.append(comp)
        self.p = tuple(coords)
        self.r = np.sqrt(coords[0] ** 2 + coords[1] ** 2 + coords[2] ** 2)

    @property
    def slices(self):
        return tuple(slice(l, h) for l, h in zip(self.lo, self.hi))


def _patient_to_lps(side: str) -> np.ndarray:
    """Columns: LPS vectors of the patient lateral, anterior and superior axes."""
    lateral = [-1.0, 0.0, 0.0] if side == "R" else [1.0, 0.0, 0.0]
    return np.array([lateral, [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]).T


class _CaseBuilder:
    def __init__(self, plan: CasePlan, shape, seed: int):
        self.plan = plan
        self.shape = tuple(shape)
        self.spacing = spacing_for(self.shape)
        self.rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, plan.index)))
        patient_seq = np.random.SeedSequence(seed, spawn_key=(1, plan.patient_index))
        patient_rng = np.random.default_rng(patient_seq)
        side_draw = patient_rng.random()
        if plan.bilateral:
            self.side = "R" if plan.index % 3 == 0 else "L"
        else:
            self.side = "R" if side_draw < 0.5 else "L"
        self.anatomy = draw_anatomy(self.rng, patient_rng, self.side)
        self.width = float(np.exp(np.mean(np.log(self.spacing))))  # partial-volume ramp (mm)
        self._frames()

    # ------------------------------------------------------------------ frames and geometry
    def _frames(self):
        an, rng = self.anatomy, self.rng
        u1 = -an.neck_axis  # array x: along the neck, toward the head
        anterior = np.array([0.0, 1.0, 0.0])
        u2 = _unit(anterior - anterior.dot(u1) * u1)  # array y ~ anterior
        u3 = np.cross(u1, u2)  # array z: slice normal
        to_lps = _patient_to_lps(self.side)
        # a right-handed direction matrix in LPS: the through-plane axis flips for a left hip
        k_axis = u3 if np.linalg.det(to_lps) > 0 else -u3
        self.index_axes = (k_axis, u2, u1)  # patient-frame directions of array axes (z, y, x)
        jitter = rng.uniform(-4.0, 4.0, 3) / np.asarray(self.spacing)
        self.center_index = (np.asarray(self.shape) - 1) / 2.0 + jitter
        self.to_lps = to_lps
        base = np.array([-95.0 if self.side == "R" else 95.0, 10.0, -80.0])
        self.center_lps = base + rng.uniform(-8.0, 8.0, 3)
        direction_lps = np.stack([to_lps @ self.index_axes[2], to_lps @ self.index_axes[1],
                                  to_lps @ self.index_axes[0]], axis=1)  # columns: i, j, k
        origin = self.center_lps - direction_lps @ (self.center_index[::-1] * np.asarray(self.spacing[::-1]))
        self.geometry = Geometry(
            size_xyz=tuple(int(s) for s in self.shape[::-1]),
            spacing_xyz=tuple(float(s) for s in self.spacing[::-1]),
            origin=tuple(float(o) for o in origin),
            direction=tuple(float(d) for d in direction_lps.ravel()),
        )
        lps = lambda v: tuple(float(x) for x in (self.center_lps + to_lps @ v))  # noqa: E731
        self.landmarks = Landmarks(
            head_center_mm=tuple(float(c) for c in self.center_lps),
            head_radius_mm=float(an.radius),
            acetabular_lateral_edge_mm=lps(an.acetabular_edge),
            wb_medial_point_mm=lps(an.wb_medial_point),
            patient_axes=PatientAxes(
                lateral=tuple(float(x) for x in to_lps[:, 0]),
                anterior=tuple(float(x) for x in to_lps[:, 1]),
                superior=tuple(float(x) for x in to_lps[:, 2]),
            ),
        )
        margin = an.radius + an.cartilage_femoral + 3.0
        lo = [max(0, int(np.floor(c - margin / s))) for c, s in zip(self.center_index, self.spacing)]
        hi = [min(n, int(np.ceil(c + margin / s)) + 1)
              for c, n, s in zip(self.center_index, self.shape, self.spacing)]
        self.head_grid = _Grid(self.shape, self.spacing, self.center_index, self.index_axes, lo, hi)
        self.lesion_noise = _smooth_field(
            self.rng, tuple(self.head_grid.axes_mm), sigma_mm=float(self.rng.uniform(3.0, 5.0))
        )

    def meta(self, measurements=None, steinberg=None, jic=None, arco=None) -> CaseMeta:
        sources = {"steinberg": "computed", "jic": "computed"}
        if arco is not None:
            sources["arco"] = "given"
        return CaseMeta(
            case_id=self.plan.case_id, patient_id=self.plan.patient_id, side=self.side,
            steinberg=steinberg, jic=jic, arco=arco, landmarks=self.landmarks,
            geometry=self.geometry, measurements=measurements or {}, grade_sources=sources,
        )

    # ------------------------------------------------------------------------------ labels
    def head_mask(self, lesion: Lesion | None) -> np.ndarray:
        g = self.head_grid
        _, _, cut = _neck_frame(g.p, g.r, self.anatomy)
        return (_head_sdf(g.p, g.r, self.anatomy, lesion) <= 0) & (cut <= 0)

    def labels(self, lesion: Lesion | None, target_percent: float | None) -> np.ndarray:
        """The label map; sets ``lesion.scale`` so that necrosis is ``target_percent`` % of the
        head exactly (a quantile of the lesion's t over head voxels)."""
        head = self.head_mask(lesion)
        out = np.zeros(self.shape, np.uint8)
        box = out[self.head_grid.slices]
        box[head] = 1
        if lesion is not None:
            t = _lesion_t(tuple(c[head] for c in self.head_grid.p), lesion, self.lesion_noise[head])
            k = int(round(target_percent / 100.0 * t.size))
            k = min(max(k, 1), t.size - 1)
            lesion.scale = float(np.partition(t, k - 1)[k - 1])
            nec = np.zeros_like(head)
            nec[head] = t <= lesion.scale
            box[nec] = 2
        return out

    # ------------------------------------------------------------------------ lesion search
    def _coronal_x_lat(self, lesion: Lesion, scale: float) -> float | None:
        """Lateral-most lesion point on the upper half of the mid-coronal plane, evaluated
        analytically (fast stand-in for grading while searching)."""
        an = self.anatomy
        step = 0.25
        h = np.arange(-(an.radius + 2), an.radius + 2, step, dtype=np.float32)
        v = np.arange(0.0, an.radius + 2, step, dtype=np.float32)
        hh, vv = np.meshgrid(h, v, indexing="xy")
        p = (hh.ravel(), np.zeros(hh.size, np.float32), vv.ravel())
        r = np.sqrt(p[0] ** 2 + p[2] ** 2)
        _, _, cut = _neck_frame(p, r, an)
        head = (_head_sdf(p, r, an, lesion) <= 0) & (cut <= 0)
        idx = self._patient_to_head_index(p)
        noise = ndimage.map_coordinates(self.lesion_noise, idx, order=1, mode="nearest")
        nec = head & (_lesion_t(p, lesion, noise) <= scale)
        return float(p[0][nec].max()) if nec.any() else None

    def _patient_to_head_index(self, p):
        rows = []
        for d in range(3):
            ax = self.index_axes[d]
            coord = p[0] * ax[0] + p[1] * ax[1] + p[2] * ax[2]
            rows.append(coord / self.spacing[d] + self.center_index[d] - self.head_grid.lo[d])
        return np.stack(rows)

    def _scale_for(self, lesion: Lesion, head_sub, noise_sub, target_percent) -> float:
        t = _lesion_t(head_sub, lesion, noise_sub)
        k = min(max(int(round(target_percent / 100.0 * t.size)), 1), t.size - 1)
        return float(np.partition(t, k - 1)[k - 1])

    def search_lesion(self, target_percent: float, target_jic: str, shape_params: dict) -> Lesion:
        """Choose the medio-lateral tilt so that the lesion's lateral margin on the mid-coronal
        slice lands inside the target JIC interval, away from every grading threshold."""
        an = self.anatomy
        head = self.head_mask(None)
        # the volume fraction is estimated on a sub-grid of about 1 mm (every voxel when coarse)
        sub = tuple(slice(None, None, max(1, int(round(1.0 / sp)))) for sp in self.spacing)
        head_sub = head[sub]
        p_sub = tuple(c[sub][head_sub] for c in self.head_grid.p)
        noise_sub = self.lesion_noise[sub][head_sub]
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
        target = self.rng.uniform(lo_t, hi_t) if hi_t > lo_t else 0.5 * (lo_b + hi_b)

        def x_lat_at(beta):
            lesion = _make_lesion(an, beta, shape_params)
            lesion.footprint_rad = shape_params["footprint_rad"]
            scale = self._scale_for(lesion, p_sub, noise_sub, target_percent)
            x = self._coronal_x_lat(lesion, scale)
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

    # ------------------------------------------------------------------------------ image
    def image(self, lesion: Lesion | None, labels: np.ndarray) -> np.ndarray:
        an, rng, w = self.anatomy, self.rng, self.width
        full = _Grid(self.shape, self.spacing, self.center_index, self.index_axes)
        p, r = full.p, full.r
        arthrography = rng.random() < 0.25
        marrow = 1.0
        muscle = rng.uniform(0.30, 0.45)
        fat = rng.uniform(1.0, 1.15)
        dark = rng.uniform(0.03, 0.12)
        cartilage = rng.uniform(0.35, 0.55)
        fluid = rng.uniform(0.9, 1.3) if arthrography else rng.uniform(0.10, 0.25)
        capsule = rng.uniform(0.15, 0.30)

        coarse = _smooth_field(rng, tuple(full.axes_mm), sigma_mm=10.0)
        medium = _smooth_field(rng, tuple(full.axes_mm), sigma_mm=4.0)
        signal = (muscle * (1.0 + 0.08 * coarse)).astype(np.float32)
        # intermuscular fat planes (sheets on the zero set of a random field) and fat pockets
        _paint(signal, fat, _ramp((np.abs(medium) - rng.uniform(0.06, 0.12)) * 2.0, w))
        _paint(signal, fat, _ramp((rng.uniform(1.2, 1.8) - coarse) * 4.0, w))

        head_sdf = _head_sdf(p, r, an, lesion)
        s, rho, cut = _neck_frame(p, r, an)
        neck_radius = an.neck_radius * (1.0 + an.neck_flare * np.maximum(s - 1.1 * an.radius, 0.0) / an.radius)
        neck_sdf = np.maximum(rho - neck_radius, -s)
        # joint capsule around head and neck, joint fluid inside it
        envelope = np.minimum(head_sdf - an.cartilage_femoral - an.joint_space - 0.8,
                              np.maximum(neck_sdf - 2.5, s - 1.6 * an.radius))
        _paint(signal, capsule, _ramp(envelope - 1.5, w))
        _paint(signal, fluid, _ramp(envelope, w))

        # pelvis: acetabular shell with subchondral plate, marrow, outer cortex; fossa recess
        m = [float(v) for v in an.acetabular_axis]
        a = p[0] * m[0] + p[1] * m[1] + p[2] * m[2] - float(an.rim_offset)
        fossa = _bump(_cos_to(p, r, an.fossa_axis), an.fossa_half_angle)
        rb_in = an.bone_inner_radius + 3.5 * np.minimum(fossa * 2.0, 1.0)
        rb_out = an.bone_inner_radius + an.pelvis_thickness
        bone = np.maximum(np.maximum(rb_in - r, r - rb_out), -a)
        _paint(signal, dark, _ramp(bone, w))
        pelvis_marrow = rng.uniform(0.85, 1.0)
        _paint(signal, pelvis_marrow, _ramp(np.maximum(np.maximum(rb_in + an.acetabular_plate - r,
                                                                  r - rb_out + 1.2), 1.2 - a), w))
        # acetabular fossa: pulvinar fat between the head and the recessed floor
        fossa_sdf = np.maximum(np.maximum(an.radius + an.cartilage_femoral - r, r - rb_in), -a)
        fossa_sdf = np.maximum(fossa_sdf, (0.5 - fossa) * 6.0)
        _paint(signal, fat * 0.95, _ramp(fossa_sdf, w))
        # acetabular (lunate) cartilage
        inner = an.radius + an.cartilage_femoral + an.joint_space
        acet_cart = np.maximum(np.maximum(inner - r, r - an.bone_inner_radius), -a)
        acet_cart = np.maximum(acet_cart, (fossa - 0.35) * 6.0)
        _paint(signal, cartilage, _ramp(acet_cart, w))
        # labrum: dark triangle on the rim
        base = an.bone_inner_radius + 4.0 - inner
        labrum = np.maximum(np.maximum(a, -a - an.labrum_height),
                            np.maximum(inner - 0.3 - r, r - inner - base * (1.0 + a / an.labrum_height)))
        _paint(signal, dark * 1.3, _ramp(labrum, w))

        # femur: articular cartilage, cortex/subchondral plate, neck and head marrow
        articular = np.maximum(head_sdf - an.cartilage_femoral, s - 0.9 * an.neck_cut)
        fovea = _bump(_cos_to(p, r, an.fovea_axis), an.fovea_half_angle)
        articular = np.maximum(articular, (fovea - 0.3) * 6.0)
        _paint(signal, cartilage, _ramp(articular, w))
        bone_sdf = np.minimum(head_sdf, neck_sdf)
        _paint(signal, dark, _ramp(bone_sdf, w))
        radial_sup = (p[2] - s * float(an.neck_axis[2])) / np.maximum(rho, np.float32(1e-3))
        cortex = an.neck_cortex * (1.0 + 0.7 * np.maximum(-radial_sup, 0.0))
        neck_marrow = rng.uniform(0.80, 0.95)
        _paint(signal, neck_marrow * (1.0 + np.float32(0.04) * coarse), _ramp(np.maximum(neck_sdf + cortex, -s - 2.0), w))
        head_marrow_sdf = np.maximum(head_sdf + an.plate, cut)
        head_fraction = _ramp(head_marrow_sdf, w)
        # slight red/yellow marrow heterogeneity
        marrow_texture = 1.0 + np.float32(rng.uniform(0.02, 0.05)) * medium
        _paint(signal, marrow * marrow_texture, head_fraction)
        # physeal scar: a thin dark line along the head–neck label boundary, inside the bone
        inside_bone = _ramp(np.minimum(neck_sdf + cortex, head_sdf + an.plate), w)
        _paint(signal, dark * 2.0, _ramp(np.abs(cut) - rng.uniform(0.25, 0.45), w) * inside_bone)

        if lesion is not None and lesion.collapse_mm > 0:
            # bone-marrow edema with collapse: smooth low-T1 signal in the head and neck marrow,
            # fading with distance from the lesion (vital bone: label 1 in the head)
            cx, cy, cz = (float(v) for v in lesion.center)
            reach = float(lesion.scale * np.exp(np.mean(np.log(lesion.semi))))
            dist = np.sqrt((p[0] - cx) ** 2 + (p[1] - cy) ** 2 + (p[2] - cz) ** 2) - reach
            np.maximum(dist, 0.0, out=dist)
            edema = np.exp(dist * np.float32(-1.0 / rng.uniform(8.0, 15.0)))
            edema *= inside_bone * np.float32(rng.uniform(0.3, 0.55))
            signal *= 1.0 - edema
        if lesion is not None:
            self._paint_lesion(signal, lesion, p, r, head_sdf, head_fraction, inside_bone, w)

        # texture, then acquisition: k-space truncation, slice profile, bias field, Rician noise
        signal *= 1.0 + rng.uniform(0.03, 0.08) * rng.standard_normal(self.shape, dtype=np.float32)
        signal = self._acquire(signal)
        return signal

    def _paint_lesion(self, signal, lesion, p, r, head_sdf, head_fraction, inside_bone, w):
        rng = self.rng
        g = self.head_grid
        box = g.slices
        t = _lesion_t(tuple(c[box] for c in p), lesion, self.lesion_noise)
        # t is a normalised radius: convert to an approximate distance in mm
        phi = (t - lesion.scale) * float(np.exp(np.mean(np.log(lesion.semi))))
        inside = _ramp(phi, w) * head_fraction[box]
        sig = signal[box]
        centre = {"A": rng.uniform(0.85, 1.05), "B": rng.uniform(0.9, 1.1),
                  "C": rng.uniform(0.25, 0.45), "D": rng.uniform(0.10, 0.25)}[lesion.mitchell]
        _paint(sig, centre, inside)
        band_value = rng.uniform(0.10, 0.35)
        if lesion.double_band:
            outer = _ramp(np.abs(phi + 0.35) - 0.35, w)
            inner_line = _ramp(np.abs(phi + lesion.band_mm - 0.35) - 0.35, w)
            _paint(sig, band_value, np.maximum(outer, inner_line) * head_fraction[box])
        else:
            half = lesion.band_mm / 2.0
            _paint(sig, band_value, _ramp(np.abs(phi + half) - half, w) * head_fraction[box])
        if rng.random() < (0.6 if self.plan.stage == "II" else 0.3):
            # patchy sclerosis: small dark blobs inside the lesion
            pts = np.stack([c[box] for c in p], -1)
            lesion_pts = pts[(phi < -1.5) & (head_fraction[box] > 0.5)]
            if len(lesion_pts):
                for _ in range(int(rng.integers(2, 6))):
                    b = lesion_pts[rng.integers(len(lesion_pts))]
                    blob = np.sqrt(((pts - b) ** 2).sum(-1)) - rng.uniform(0.5, 2.0)
                    _paint(sig, rng.uniform(0.1, 0.3), _ramp(blob, w) * inside)
        if lesion.collapse_mm > 0:
            depth = rng.uniform(1.5, 3.0)
            line = _ramp(np.abs(head_sdf[box] + depth) - rng.uniform(0.3, 0.5), w)
            _paint(sig, rng.uniform(0.10, 0.30), line * inside)
        signal[box] = sig

    def _acquire(self, signal: np.ndarray) -> np.ndarray:
        rng = self.rng
        sz, sy, sx = self.spacing
        native = rng.uniform(0.78, 0.9)  # acquired in-plane resolution (mm)
        if native > min(sy, sx) * 1.05:
            spec = scipy.fft.rfft2(signal, workers=1)
            ky = np.fft.fftfreq(self.shape[1], d=sy)[:, None]
            kx = np.fft.rfftfreq(self.shape[2], d=sx)[None, :]
            cutoff = 0.5 / native
            # Fermi filter: truncation with a slightly soft edge (faint Gibbs ringing)
            fermi = 1.0 / (1.0 + np.exp((np.maximum(np.abs(ky), np.abs(kx)) - cutoff) / (0.04 * cutoff)))
            spec *= fermi.astype(np.float32)
            signal = scipy.fft.irfft2(spec, s=self.shape[1:], workers=1).astype(np.float32)
        profile_sigma = 0.45 / sz  # slice profile, FWHM ≈ 1.06 mm
        if profile_sigma > 0.2:
            signal = ndimage.gaussian_filter1d(signal, profile_sigma, axis=0, mode="nearest")
        # polynomial bias field (order 3) on coordinates normalised to [-1, 1], separable sum
        zc, yc, xc = (np.linspace(-1, 1, n, dtype=np.float32) for n in self.shape)
        log_bias = np.zeros(self.shape, np.float32)
        for i in range(4):
            plane = np.zeros(self.shape[1:], np.float32)
            for j in range(4 - i):
                for k in range(4 - i - j):
                    if i + j + k == 0:
                        continue
                    c = rng.uniform(-0.2, 0.2) / (i + j + k)
                    plane += c * np.outer(yc**j, xc**k)
            log_bias += (zc**i)[:, None, None] * plane
        signal *= np.exp(log_bias)
        sigma = 1.0 / rng.uniform(12.0, 40.0)
        real = signal + sigma * rng.standard_normal(self.shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(self.shape, dtype=np.float32)
        magnitude = np.sqrt(real * real + imag * imag)
        gain = rng.uniform(1500.0, 2200.0)
        return np.clip(np.rint(magnitude * gain), 0, 4095).astype(np.int16)


def _shape_params(rng: np.random.Generator, plan: CasePlan, target_percent: float) -> dict:
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
    return {
        "beta_anterior": rng.uniform(5.0, 35.0),
        # centre near the surface so that even small lesions are subchondral
        "depth": rng.uniform(0.85, 1.0) if plan.steinberg == "A" else rng.uniform(0.72, 0.95),
        # (along the lesion axis, medio-lateral, antero-posterior): medial JIC types need lesions
        # narrow medio-laterally and long antero-posteriorly to stay anterosuperior
        "semi": (rng.uniform([0.5, 0.35, 0.8], [0.8, 0.6, 1.15]) if plan.jic in ("A", "B")
                 else rng.uniform([0.5, 0.55, 0.6], [0.8, 0.95, 1.05])),
        "roughness": rng.uniform(0.04, 0.12),
        "band_mm": rng.uniform(1.0, 3.0),
        "double_band": bool(rng.random() < 0.2),
        "mitchell": str(rng.choice(["A", "B", "C", "D"], p=mitchell_p)),
        "collapse_mm": collapse,
        "footprint_rad": float(np.clip(0.8 * cap, 0.35, 1.2)),
    }


def _depression_ok(stage: str | None, depression: float | None) -> bool:
    if depression is None:
        return True
    limit = grading.DEPRESSION_IIIB_MM
    if stage == "IIIB":
        return depression >= limit + DEPRESSION_BUFFER_MM
    return depression <= limit - DEPRESSION_BUFFER_MM


def generate_case(plan: CasePlan, shape=DEFAULT_SHAPE, seed: int = 0) -> GeneratedCase:
    """Generate one case: draw anatomy and lesion, build labels, re-draw the lesion until its
    measured grades are clear of every threshold, then synthesise the image."""
    t0 = time.perf_counter()
    builder = _CaseBuilder(plan, shape, seed)
    rng = builder.rng
    lesion = None
    attempts = 0
    if plan.steinberg is None:
        labels = builder.labels(None, None)
        measurements = grading.grade_labels(labels, builder.meta())
        reasons: list[str] = []
    else:
        low, high = STEINBERG_PERCENT_RANGE[plan.steinberg]
        for attempts in range(1, MAX_ATTEMPTS + 1):
            target = rng.uniform(low, high)
            params = _shape_params(rng, plan, target)
            lesion = builder.search_lesion(target, plan.jic, params)
            labels = builder.labels(lesion, target)
            measurements = grading.grade_labels(labels, builder.meta())
            reasons = grading.ambiguity_reasons(
                measurements, PERCENT_BUFFER, POSITION_BUFFER_MM, ANGLE_BUFFER_DEG
            )
            if measurements["jic"] is None:
                reasons.append("no necrosis on the upper mid-coronal slice")
            elif measurements["jic"] != plan.jic and attempts <= MAX_ATTEMPTS // 2:
                # keep the stratification: retry a few times before accepting another type
                reasons.append(f"JIC {measurements['jic']} instead of {plan.jic}")
            if not _depression_ok(plan.stage, measurements["head_depression_mm"]):
                reasons.append(f"depression {measurements['head_depression_mm']:.2f} mm vs {plan.stage}")
            if not reasons:
                break
    t1 = time.perf_counter()
    measurements["ambiguity"] = "; ".join(reasons) if reasons else None
    image = builder.image(lesion, labels)
    t2 = time.perf_counter()
    meta = builder.meta(
        measurements,
        steinberg=measurements["steinberg"],
        jic=measurements["jic"],
        arco=plan.stage if lesion is not None else None,
    )
    return GeneratedCase(image=image, labels=labels, meta=meta, attempts=max(attempts, 1),
                         timings={"labels_s": t1 - t0, "image_s": t2 - t1})


# ---------------------------------------------------------------------------------- dataset


def write_case(out: Path, case: GeneratedCase) -> None:
    """Write a generated case's image (int16) and labels (uint8) as NIfTI with its geometry."""
    import SimpleITK as sitk

    for array, path in (
        (case.image, out / "imagesTr" / f"{case.meta.case_id}_0000{FILE_ENDING}"),
        (case.labels, out / "labelsTr" / f"{case.meta.case_id}{FILE_ENDING}"),
    ):
        img = sitk.GetImageFromArray(array)
        case.meta.geometry.apply_to(img)
        # SimpleITK's NIfTI writer stores no timestamp, so equal arrays give equal bytes
        sitk.WriteImage(img, str(path), True, 1)


_CASE_FILE = re.compile(r"^avn_\d{3,}(_0000)?\.nii\.gz$")


def synthesize(
    out: Path,
    n_cases: int = 40,
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Dataset:
    """Write the phantom dataset (nnU-Net raw layout + cases.json) to ``out`` and open it.

    ``out`` must be missing or empty unless ``force``: then the dataset files in it are
    overwritten, and phantom case files and a split left from an earlier dataset are removed.
    ``progress(done, total)`` is called after each case.
    """
    out = Path(out)
    if n_cases < 1:
        raise ConfigError(f"--cases must be at least 1, got {n_cases}")
    shape = check_shape(shape)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; choose a folder for the dataset")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(
            f"{out} is not empty; choose a new folder, or pass --force to overwrite its dataset files"
        )
    for sub in ("imagesTr", "labelsTr"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if force:
        keep = {f"avn_{i:03d}" for i in range(n_cases)}
        for sub in ("imagesTr", "labelsTr"):
            for f in (out / sub).iterdir():
                if _CASE_FILE.match(f.name) and f.name.split(".")[0].removesuffix("_0000") not in keep:
                    f.unlink()
        for name in (SPLITS_FILE, SPLITS_META_FILE, CASES_FILE):
            (out / name).unlink(missing_ok=True)

    metas = []
    for i in range(n_cases):
        case = generate_case(plan_case(i), shape, seed)
        write_case(out, case)
        metas.append(case.meta)
        if progress is not None:
            progress(i + 1, n_cases)
    name = dataset_name(n_cases, seed, shape)
    write_dataset_json(out, name, n_cases, synthetic=True)
    write_cases_file(out, CasesFile(
        name=name,
        synthetic=True,
        description=(
            f"Synthetic AVN hip MRI phantom {PHANTOM_VERSION} (avnbench data synth): {n_cases} "
            f"cases, seed {seed}, {shape[0]}x{shape[1]}x{shape[2]} voxels of "
            + "x".join(f"{s:.3g}" for s in spacing_for(shape))
            + " mm (z y x). Not clinical data."
        ),
        cases=metas,
    ))
    return load_dataset(out)
