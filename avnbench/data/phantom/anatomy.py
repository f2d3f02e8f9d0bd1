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
from avnbench.data.phantom.plan import spacing_for

if TYPE_CHECKING:
    from avnbench.data.phantom.lesion import Lesion


def truncnorm(rng: np.random.Generator, mean: float, sd: float, low: float, high: float) -> float:
    """A normal draw clipped to [low, high] (one draw from ``rng``)."""
    return float(np.clip(rng.normal(mean, sd), low, high))


@dataclass
class Anatomy:
    """Per-case anatomy in the patient frame (lengths mm, head centre at the origin; angles
    ``*_deg`` degrees, ``*_half_angle`` radians; ``*_axis`` unit vectors)."""

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
        """Radius (mm) of the acetabular bone surface: head, both cartilages and the joint space."""
        return self.radius + self.cartilage_femoral + self.joint_space + self.cartilage_acetabular


def draw_anatomy(rng: np.random.Generator, patient_rng: np.random.Generator, side: str) -> Anatomy:
    """Draw a hip's anatomy: patient-level size from ``patient_rng``, hip-level shape from ``rng``."""
    male = patient_rng.random() < 0.6
    diameter = (
        truncnorm(patient_rng, 48.0, 2.5, 39.0, 54.0) if male
        else truncnorm(patient_rng, 43.0, 2.2, 39.0, 54.0)
    )
    radius = diameter / 2.0 + rng.uniform(-0.3, 0.3)
    semi_axes = radius * (1.0 + rng.uniform(-0.02, 0.02, 3))
    nsa = truncnorm(rng, 126.0, 5.0, 115.0, 140.0)
    version = truncnorm(rng, 14.0, 7.0, 0.0, 30.0)
    d, a = np.deg2rad(nsa - 90.0), np.deg2rad(version)
    neck_axis = unit([np.cos(d) * np.cos(a), -np.cos(d) * np.sin(a), -np.sin(d)])

    lcea = truncnorm(rng, 32.0, 5.0, 22.0, 42.0)
    acetabular_version = truncnorm(rng, 17.0, 6.0, 5.0, 30.0)
    lc, av = np.deg2rad(lcea), np.deg2rad(acetabular_version)
    acetabular_axis = unit([-np.cos(lc) * np.cos(av), -np.cos(lc) * np.sin(av), np.sin(lc)])
    # fossa: toward the inferior part of the acetabulum, below its pole
    down = np.array([0.0, 0.0, -1.0])
    down = unit(down - down.dot(acetabular_axis) * acetabular_axis)
    fossa_axis = unit(np.cos(np.deg2rad(32)) * acetabular_axis + np.sin(np.deg2rad(32)) * down)
    fovea_axis = unit([-0.8, -0.15, -0.55])

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
    a = [float(1.0 / v) for v in anatomy.semi_axes]
    q = np.sqrt((p[0] * a[0]) ** 2 + (p[1] * a[1]) ** 2 + (p[2] * a[2]) ** 2)
    sdf = (q - 1.0) * float(anatomy.radius)
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
    ``p`` (patient mm) at distance ``r`` (mm) from the head centre; the lesion dents the head."""

    def __init__(self, p, r, anatomy: Anatomy, lesion: Lesion | None):
        an = self.anatomy = anatomy
        self.p, self.r = p, r
        self.head = head_sdf(p, r, an, lesion)
        s, rho, self.cut = neck_frame(p, r, an)
        self.s, self.rho = s, rho
        neck_radius = an.neck_radius * (1.0 + an.neck_flare * np.maximum(s - 1.1 * an.radius, 0.0) / an.radius)
        self.neck = np.maximum(rho - neck_radius, -s)
        # acetabulum: height above the rim plane, fossa cap, bone shell radii (the fossa recessed)
        m = [float(v) for v in an.acetabular_axis]
        self.height = p[0] * m[0] + p[1] * m[1] + p[2] * m[2] - float(an.rim_offset)
        self.fossa = bump(cos_to(p, r, an.fossa_axis), an.fossa_half_angle)
        self.bone_in = an.bone_inner_radius + 3.5 * np.minimum(self.fossa * 2.0, 1.0)
        self.bone_out = an.bone_inner_radius + an.pelvis_thickness
        # neck cortex thickness (mm): thicker inferiorly (calcar)
        radial_sup = (p[2] - s * float(an.neck_axis[2])) / np.maximum(rho, np.float32(1e-3))
        self.cortex = an.neck_cortex * (1.0 + 0.7 * np.maximum(-radial_sup, 0.0))

    def capsule(self) -> np.ndarray:
        """The joint capsule's envelope around head and neck (joint fluid inside it)."""
        an = self.anatomy
        return np.minimum(self.head - an.cartilage_femoral - an.joint_space - 0.8,
                          np.maximum(self.neck - 2.5, self.s - 1.6 * an.radius))

    def pelvis_bone(self) -> np.ndarray:
        """The acetabular shell of pelvic bone (subchondral plate, marrow and outer cortex)."""
        return np.maximum(np.maximum(self.bone_in - self.r, self.r - self.bone_out), -self.height)

    def pelvis_marrow(self) -> np.ndarray:
        """The pelvic marrow inside the shell, under the subchondral plate."""
        an, r = self.anatomy, self.r
        return np.maximum(np.maximum(self.bone_in + an.acetabular_plate - r, r - self.bone_out + 1.2),
                          1.2 - self.height)

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
    lps = lambda v: tuple(float(x) for x in (center_lps + to_lps @ v))  # noqa: E731
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
