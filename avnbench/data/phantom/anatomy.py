"""Hip anatomy: the drawn shape of a hip, where it lies in the array, and signed distances of
its tissues (femoral head, neck, acetabulum, cartilage, labrum, capsule) in mm.

Signed distances are approximate, float32, negative inside; the head label is the voxel centres
inside the head surface and on the head side of the head–neck junction (clinical.md §7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import brentq

from avnbench.data.dataset import Geometry, Landmarks, PatientAxes
from avnbench.data.phantom.grid import Grid, patient_to_lps, unit
from avnbench.data.phantom.pelvis import (
    PelvisShape,
    draw_pelvis,
    pelvis_sdf,
    smooth_union,
)
from avnbench.data.phantom.plan import spacing_for
from avnbench.data.phantom.soft_tissue import SoftTissueShape, draw_soft_tissue

if TYPE_CHECKING:
    from avnbench.data.phantom.lesion import Lesion


def truncnorm(rng: np.random.Generator, mean: float, sd: float, low: float, high: float) -> float:
    """A normal draw clipped to [low, high] (one draw from ``rng``)."""
    return float(np.clip(rng.normal(mean, sd), low, high))


@dataclass
class Anatomy:
    """Per-case anatomy in the patient frame (lengths mm, head centre at the origin; angles
    ``*_deg`` degrees, ``*_half_angle`` radians; ``*_axis`` unit vectors). ``semi_axes`` are the
    head ellipsoid's semi-axes along the rows of ``head_axes``; the greater trochanter is an
    ellipsoid (centre, rows of ``trochanter_axes``, semi-axes); ``pelvis`` and ``soft`` hold the
    pelvic bone and the soft tissue (:mod:`.pelvis`, :mod:`.soft_tissue`)."""

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
    sex: str
    head_axes: np.ndarray
    calcar_extra: float
    trochanter_center: np.ndarray
    trochanter_axes: np.ndarray
    trochanter_semi: np.ndarray
    scar_half_mm: float
    ligament_radius: float
    pelvis: PelvisShape
    soft: SoftTissueShape

    @property
    def bone_inner_radius(self) -> float:
        """Radius (mm) of the acetabular bone surface: head, both cartilages and the joint space."""
        return self.radius + self.cartilage_femoral + self.joint_space + self.cartilage_acetabular


def _rotation(rng: np.random.Generator, sd_deg: float) -> np.ndarray:
    """A small random rotation matrix (axis uniform, angle ~ N(0, sd_deg) degrees)."""
    axis = unit(rng.normal(size=3))
    angle = np.deg2rad(rng.normal(0.0, sd_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def draw_anatomy(rng: np.random.Generator, patient_rng: np.random.Generator, side: str) -> Anatomy:
    """Draw a hip's anatomy: the patient's shape (sex, size, angles, proportions) from
    ``patient_rng``, shared by both hips of a patient, and a small per-hip jitter from ``rng``."""
    male = patient_rng.random() < 0.6
    diameter = (
        truncnorm(patient_rng, 48.0, 2.5, 39.0, 54.0) if male
        else truncnorm(patient_rng, 43.0, 2.2, 39.0, 54.0)
    )
    radius = diameter / 2.0 + rng.uniform(-0.3, 0.3)
    # aspherical head (clinical.md §7.2): semi-axes R(1 ± ε), ε ≤ 2 %, an oblique ellipsoid
    eps = patient_rng.uniform(0.0, 0.02)
    pattern = patient_rng.uniform(-1.0, 1.0, 3)
    pattern = pattern / max(np.abs(pattern).max(), 1e-6)
    semi_axes = radius * (1.0 + eps * pattern + rng.uniform(-0.003, 0.003, 3))
    head_axes = _rotation(patient_rng, 25.0) @ _rotation(rng, 4.0)
    # angles: the patient's, with a few degrees of left/right difference
    nsa = float(np.clip(truncnorm(patient_rng, 126.0, 5.0, 115.0, 140.0) + rng.normal(0, 1.2), 115, 140))
    version = float(np.clip(truncnorm(patient_rng, 14.0 + (0 if male else 3), 7.0, 0.0, 30.0)
                            + rng.normal(0, 2.0), 0, 30))
    d, a = np.deg2rad(nsa - 90.0), np.deg2rad(version)
    neck_axis = unit([np.cos(d) * np.cos(a), -np.cos(d) * np.sin(a), -np.sin(d)])

    lcea = float(np.clip(truncnorm(patient_rng, 32.0, 5.0, 22.0, 42.0) + rng.normal(0, 1.5), 22, 42))
    acetabular_version = float(np.clip(truncnorm(patient_rng, 17.0 + (0 if male else 2), 6.0, 5.0, 30.0)
                                       + rng.normal(0, 1.5), 5, 30))
    lc, av = np.deg2rad(lcea), np.deg2rad(acetabular_version)
    acetabular_axis = unit([-np.cos(lc) * np.cos(av), -np.cos(lc) * np.sin(av), np.sin(lc)])
    # fossa: toward the inferior part of the acetabulum, below its pole
    down = np.array([0.0, 0.0, -1.0])
    down = unit(down - down.dot(acetabular_axis) * acetabular_axis)
    fossa_tilt = np.deg2rad(patient_rng.uniform(28, 36))
    fossa_axis = unit(np.cos(fossa_tilt) * acetabular_axis + np.sin(fossa_tilt) * down)
    # fovea: slightly posteroinferior to the centre on the medial surface
    fovea_axis = unit(np.array([-0.8, -0.15, -0.55]) + patient_rng.uniform(-0.1, 0.1, 3)
                      + rng.uniform(-0.03, 0.03, 3))

    # proportions: patient-level fractions with a small per-hip jitter
    def prop(low, high):
        return float(patient_rng.uniform(low, high) * rng.uniform(0.97, 1.03))

    neck_radius = prop(0.62, 0.72) * radius
    # greater trochanter: superolateral and slightly posterior to the neck base
    up = unit(np.array([0.0, 0.0, 1.0]) - neck_axis[2] * neck_axis)
    back = np.cross(up, neck_axis)
    back = back if back[1] < 0 else -back
    trochanter_center = (prop(2.0, 2.3) * radius * neck_axis + prop(0.55, 0.8) * radius * up
                         + prop(0.1, 0.35) * radius * back)
    trochanter_axes = np.stack([neck_axis, back, up])
    trochanter_semi = radius * np.array([prop(0.55, 0.7), prop(0.6, 0.75), prop(0.85, 1.05)])
    anatomy = Anatomy(
        side=side, radius=radius, semi_axes=semi_axes, neck_axis=neck_axis,
        neck_cut=prop(0.55, 0.72) * radius, cut_curvature=prop(0.04, 0.12),
        neck_radius=neck_radius, neck_flare=prop(0.15, 0.35),
        neck_cortex=prop(1.2, 2.0), plate=prop(0.6, 1.0),
        cartilage_femoral=prop(1.2, 2.2) * (1.0 if male else 0.92), joint_space=rng.uniform(0.2, 1.0),
        cartilage_acetabular=prop(1.2, 2.2) * (1.0 if male else 0.92), acetabular_plate=prop(1.0, 2.0),
        acetabular_axis=acetabular_axis,
        rim_offset=-prop(0.0, 0.12) * radius, fossa_axis=fossa_axis,
        fossa_half_angle=np.deg2rad(prop(20, 27)), fovea_axis=fovea_axis,
        fovea_depth=prop(1.0, 2.0), fovea_half_angle=np.deg2rad(prop(9, 12)),
        labrum_height=prop(4.0, 6.5), lcea_deg=lcea,
        wb_medial_deg=rng.uniform(30.0, 40.0),
        acetabular_edge=np.zeros(3), wb_medial_point=np.zeros(3),
        sex="M" if male else "F", head_axes=head_axes, calcar_extra=prop(0.9, 1.8),
        trochanter_center=trochanter_center, trochanter_axes=trochanter_axes,
        trochanter_semi=trochanter_semi, scar_half_mm=prop(0.25, 0.45),
        ligament_radius=prop(1.5, 2.5),
        pelvis=draw_pelvis(patient_rng, rng, radius),
        soft=draw_soft_tissue(patient_rng, rng, radius),
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


# ------------------------------------------------------------------------ signed distances (mm)


def cos_to(p: tuple[np.ndarray, ...], r: np.ndarray, axis) -> np.ndarray:
    """Cosine of the angle between the points' directions (from the head centre) and ``axis``."""
    ax, ay, az = (float(v) for v in axis)
    return (p[0] * ax + p[1] * ay + p[2] * az) / np.maximum(r, np.float32(1e-3))


def bump(cos: np.ndarray, half_angle: float) -> np.ndarray:
    """Smooth cap around an axis from the cosine of the angle to it: 1 on the axis, 0 beyond
    ``half_angle`` (radians), smoothstep in between (no arccos: this runs on whole volumes)."""
    c0 = float(np.cos(half_angle))
    x = (cos - c0) * np.float32(1.0 / (1.0 - c0))
    np.clip(x, 0.0, 1.0, out=x)
    return x * x * (3.0 - 2.0 * x)


def head_sdf(p, r, anatomy: Anatomy, lesion: Lesion | None) -> np.ndarray:
    """Signed distance (mm, approximate) of the femoral head surface: slightly aspherical
    ellipsoid, fovea pit, and the collapse dent over the lesion."""
    q2 = None
    for row, semi in zip(anatomy.head_axes, anatomy.semi_axes):
        rx, ry, rz = (float(v / semi) for v in row)
        c = p[0] * rx + p[1] * ry + p[2] * rz
        q2 = c * c if q2 is None else q2 + c * c
    sdf = (np.sqrt(q2) - 1.0) * float(anatomy.radius)
    sdf += anatomy.fovea_depth * bump(cos_to(p, r, anatomy.fovea_axis), anatomy.fovea_half_angle)
    if lesion is not None and lesion.collapse_mm > 0:
        sdf += lesion.collapse_mm * bump(cos_to(p, r, lesion.direction), lesion.footprint_rad)
    return sdf


def neck_frame(p, r, anatomy: Anatomy):
    """(s, rho, cut) in mm: coordinate along the neck axis, distance from it, and the signed
    distance to the curved head–neck junction (physeal scar), negative on the head side."""
    n = [float(v) for v in anatomy.neck_axis]
    s = p[0] * n[0] + p[1] * n[1] + p[2] * n[2]
    rho = np.sqrt(np.maximum(r * r - s * s, 0.0))
    cut = s - (float(anatomy.neck_cut) + float(anatomy.cut_curvature / anatomy.radius) * rho * rho)
    return s, rho, cut


class HipTissues:
    """Signed distances (mm, float32, negative inside) of every tissue of a hip at grid points
    ``p`` (patient mm) at distance ``r`` (mm) from the head centre; the lesion dents the head.
    ``pelvis_struts``: the pelvic struts' signed distance at ``p`` when computed elsewhere
    (e.g. interpolated from a coarser grid; see :func:`.pelvis.struts_sdf`)."""

    def __init__(self, p, r, anatomy: Anatomy, lesion: Lesion | None, pelvis_struts: np.ndarray | None = None):
        an = self.anatomy = anatomy
        self.p, self.r = p, r
        self.head = head_sdf(p, r, an, lesion)
        s, rho, self.cut = neck_frame(p, r, an)
        self.s, self.rho = s, rho
        # the neck flares toward its base and widens into the intertrochanteric region
        base = np.maximum(s - 1.6 * an.radius, 0.0) * np.float32(1.0 / an.radius)
        neck_radius = an.neck_radius * (1.0 + an.neck_flare * np.maximum(s - 1.1 * an.radius, 0.0) / an.radius
                                        + 0.8 * base * base)
        self.neck_cone = np.maximum(rho - neck_radius, -s)
        self.neck = smooth_union(self.neck_cone, self._trochanter(), 6.0)
        # acetabulum: height above the rim plane, fossa cap, bone shell radii (the fossa recessed)
        m = [float(v) for v in an.acetabular_axis]
        self.height = p[0] * m[0] + p[1] * m[1] + p[2] * m[2] - float(an.rim_offset)
        self.fossa = bump(cos_to(p, r, an.fossa_axis), an.fossa_half_angle)
        self.bone_in = an.bone_inner_radius + 3.5 * np.minimum(self.fossa * 2.0, 1.0)
        # neck cortex thickness (mm): thin superiorly, thick inferomedially (calcar), thickening
        # toward the shaft
        radial_sup = (p[2] - s * float(an.neck_axis[2])) / np.maximum(rho, np.float32(1e-3))
        calcar = np.maximum(-radial_sup, 0.0) ** 1.5
        toward_shaft = np.clip((s - an.radius) * np.float32(1.0 / an.radius), 0.0, 1.0)
        self.cortex = an.neck_cortex * (1.0 + an.calcar_extra * calcar) * (1.0 + 0.3 * toward_shaft)
        self._pelvis = None
        self._struts = pelvis_struts

    def _trochanter(self) -> np.ndarray:
        """Signed distance (mm, approximate) of the greater trochanter's ellipsoid."""
        an, p = self.anatomy, self.p
        c = [float(v) for v in an.trochanter_center]
        q2 = None
        for row, semi in zip(an.trochanter_axes, an.trochanter_semi):
            rx, ry, rz = (float(v) for v in row)
            u = ((p[0] - c[0]) * rx + (p[1] - c[1]) * ry + (p[2] - c[2]) * rz) * np.float32(1.0 / semi)
            q2 = u * u if q2 is None else q2 + u * u
        return (np.sqrt(q2) - 1.0) * np.float32(an.trochanter_semi.min())

    def trochanter(self) -> np.ndarray:
        """The greater trochanter alone (mm), for tests and previews."""
        return self._trochanter()

    def _pelvis_sdf(self) -> np.ndarray:
        if self._pelvis is None:
            an = self.anatomy
            self._pelvis = pelvis_sdf(self.p, self.r, self.height, self.bone_in, an.bone_inner_radius,
                                      an.acetabular_axis, an.pelvis, self._struts)
        return self._pelvis

    def capsule(self) -> np.ndarray:
        """The joint capsule's envelope around head and neck (joint fluid inside it)."""
        an = self.anatomy
        return np.minimum(self.head - an.cartilage_femoral - an.joint_space - 0.8,
                          np.maximum(self.neck_cone - 2.5, self.s - 1.6 * an.radius))

    def pelvis_bone(self) -> np.ndarray:
        """The pelvic bone: acetabular wall, ilium, ischium and pubis (cortex included)."""
        return self._pelvis_sdf()

    def pelvis_marrow(self) -> np.ndarray:
        """The pelvic marrow inside the cortex, under the acetabular subchondral plate."""
        an = self.anatomy
        return np.maximum(self._pelvis_sdf() + an.pelvis.cortex,
                          self.bone_in + an.acetabular_plate - self.r)

    def ligamentum_teres(self) -> np.ndarray:
        """The ligamentum teres: a band from the fovea to the acetabular fossa (outside the head)."""
        an, p = self.anatomy, self.p
        a = an.radius * an.fovea_axis
        b = (an.bone_inner_radius + 2.0) * an.fossa_axis
        d = b - a
        rel = [p[i] - np.float32(a[i]) for i in range(3)]
        t = np.clip((rel[0] * float(d[0]) + rel[1] * float(d[1]) + rel[2] * float(d[2])) / float(d @ d), 0.0, 1.0)
        dist = np.sqrt(sum((rel[i] - t * float(d[i])) ** 2 for i in range(3)))
        return np.maximum(dist - an.ligament_radius, -self.head)

    def fossa_fat(self) -> np.ndarray:
        """The acetabular fossa: pulvinar fat between the head and the recessed floor."""
        an, r = self.anatomy, self.r
        fossa_sdf = np.maximum(np.maximum(an.radius + an.cartilage_femoral - r, r - self.bone_in), -self.height)
        return np.maximum(fossa_sdf, (0.5 - self.fossa) * 6.0)

    def _joint_inner(self) -> float:
        an = self.anatomy
        return an.radius + an.cartilage_femoral + an.joint_space

    def acetabular_cartilage(self) -> np.ndarray:
        """The acetabular (lunate) cartilage, absent over the fossa."""
        an, r, inner = self.anatomy, self.r, self._joint_inner()
        acet_cart = np.maximum(np.maximum(inner - r, r - an.bone_inner_radius), -self.height)
        return np.maximum(acet_cart, (self.fossa - 0.35) * 6.0)

    def labrum(self) -> np.ndarray:
        """The labrum: a triangle on the acetabular rim."""
        an, r, a, inner = self.anatomy, self.r, self.height, self._joint_inner()
        base = an.bone_inner_radius + 4.0 - inner
        return np.maximum(np.maximum(a, -a - an.labrum_height),
                          np.maximum(inner - 0.3 - r, r - inner - base * (1.0 + a / an.labrum_height)))

    def femoral_cartilage(self) -> np.ndarray:
        """The femoral head's articular cartilage, absent at the fovea."""
        an = self.anatomy
        articular = np.maximum(self.head - an.cartilage_femoral, self.s - 0.9 * an.neck_cut)
        fovea = bump(cos_to(self.p, self.r, an.fovea_axis), an.fovea_half_angle)
        return np.maximum(articular, (fovea - 0.3) * 6.0)

    def femur_bone(self) -> np.ndarray:
        """Head and neck bone, cortex included."""
        return np.minimum(self.head, self.neck)

    def neck_marrow(self) -> np.ndarray:
        """The neck's marrow inside its cortex."""
        return np.maximum(self.neck + self.cortex, -self.s - 2.0)

    def head_marrow(self) -> np.ndarray:
        """The head's marrow under the subchondral plate, on the head side of the junction."""
        return np.maximum(self.head + self.anatomy.plate, self.cut)

    def bone_interior(self) -> np.ndarray:
        """Head and neck marrow together (inside cortex and subchondral plate)."""
        return np.minimum(self.neck + self.cortex, self.head + self.anatomy.plate)


# ----------------------------------------------------------------------------- the case frame


@dataclass
class CaseFrame:
    """Where a hip lies in its array: grid (``shape`` voxels, ``spacing`` mm, z y x), the
    patient-frame directions of the array axes, the head centre (array index, and LPS mm),
    SimpleITK geometry, landmarks, and the head's bounding box as a :class:`Grid`."""

    anatomy: Anatomy
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    #: Partial-volume ramp width (mm): the geometric mean of the spacing.
    width: float
    index_axes: tuple[np.ndarray, np.ndarray, np.ndarray]
    center_index: np.ndarray
    to_lps: np.ndarray
    center_lps: np.ndarray
    geometry: Geometry
    landmarks: Landmarks
    head_grid: Grid

    @property
    def side(self) -> str:
        """"R" or "L"."""
        return self.anatomy.side

    def full_grid(self) -> Grid:
        """Patient coordinates of every voxel of the array."""
        return Grid(self.shape, self.spacing, self.center_index, self.index_axes)


def place_case(anatomy: Anatomy, shape, rng: np.random.Generator) -> CaseFrame:
    """Orient the array along the neck (x toward the head, y ~ anterior, z the slice normal) and
    place the head near the array centre (jitter ±4 mm) and in the pelvis (±8 mm, LPS)."""
    shape = tuple(shape)
    spacing = spacing_for(shape)
    side = anatomy.side
    u1 = -anatomy.neck_axis  # array x: along the neck, toward the head
    anterior = np.array([0.0, 1.0, 0.0])
    u2 = unit(anterior - anterior.dot(u1) * u1)  # array y ~ anterior
    u3 = np.cross(u1, u2)  # array z: slice normal
    to_lps = patient_to_lps(side)
    # a right-handed direction matrix in LPS: the through-plane axis flips for a left hip
    k_axis = u3 if np.linalg.det(to_lps) > 0 else -u3
    index_axes = (k_axis, u2, u1)  # patient-frame directions of array axes (z, y, x)
    jitter = rng.uniform(-4.0, 4.0, 3) / np.asarray(spacing)
    center_index = (np.asarray(shape) - 1) / 2.0 + jitter
    base = np.array([-95.0 if side == "R" else 95.0, 10.0, -80.0])
    center_lps = base + rng.uniform(-8.0, 8.0, 3)
    direction_lps = np.stack([to_lps @ index_axes[2], to_lps @ index_axes[1],
                              to_lps @ index_axes[0]], axis=1)  # columns: i, j, k
    origin = center_lps - direction_lps @ (center_index[::-1] * np.asarray(spacing[::-1]))
    geometry = Geometry(
        size_xyz=tuple(int(s) for s in shape[::-1]),
        spacing_xyz=tuple(float(s) for s in spacing[::-1]),
        origin=tuple(float(o) for o in origin),
        direction=tuple(float(d) for d in direction_lps.ravel()),
    )
    lps = lambda v: tuple(float(x) for x in (center_lps + to_lps @ v))
    landmarks = Landmarks(
        head_center_mm=tuple(float(c) for c in center_lps),
        head_radius_mm=float(anatomy.radius),
        acetabular_lateral_edge_mm=lps(anatomy.acetabular_edge),
        wb_medial_point_mm=lps(anatomy.wb_medial_point),
        patient_axes=PatientAxes(
            lateral=tuple(float(x) for x in to_lps[:, 0]),
            anterior=tuple(float(x) for x in to_lps[:, 1]),
            superior=tuple(float(x) for x in to_lps[:, 2]),
        ),
    )
    margin = anatomy.radius + anatomy.cartilage_femoral + 3.0
    lo = [max(0, int(np.floor(c - margin / s))) for c, s in zip(center_index, spacing)]
    hi = [min(n, int(np.ceil(c + margin / s)) + 1) for c, n, s in zip(center_index, shape, spacing)]
    return CaseFrame(
        anatomy=anatomy, shape=shape, spacing=spacing,
        width=float(np.exp(np.mean(np.log(spacing)))),
        index_axes=index_axes, center_index=center_index, to_lps=to_lps, center_lps=center_lps,
        geometry=geometry, landmarks=landmarks,
        head_grid=Grid(shape, spacing, center_index, index_axes, lo, hi),
    )


def head_mask(frame: CaseFrame, lesion: Lesion | None) -> np.ndarray:
    """The femoral head label (bool, over ``frame.head_grid``): inside the head surface (dented
    by a collapsed lesion) and on the head side of the head–neck junction."""
    g = frame.head_grid
    _, _, cut = neck_frame(g.p, g.r, frame.anatomy)
    return (head_sdf(g.p, g.r, frame.anatomy, lesion) <= 0) & (cut <= 0)
