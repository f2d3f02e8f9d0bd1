"""The pelvic bone around the acetabulum: ilium, ischium and pubis blending into the acetabular wall.

The socket is a shell around the femoral head (thin medially at the quadrilateral plate, thick
under the roof) above the rim plane; struts leave it: the ilium superiorly (a broad plate
sloping medially as it rises), the posterior column behind the socket running down into the
ischium posteroinferiorly, and the anterior column in front of it running into the superior
pubic ramus anteromedially-inferiorly. They are joined by a smooth union (no creases), then the socket cavity
and the joint opening (a cylinder along the acetabular axis beyond the rim plane) are carved out.
Cortex and fatty marrow follow from the same signed distance (mm, approximate, negative inside).

Patient frame (mm): x lateral, y anterior, z superior, origin at the head centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avnbench.data.phantom.grid import unit


@dataclass(frozen=True)
class Strut:
    """A bone column from ``start`` to ``end`` (patient mm) with an elliptical cross-section:
    semi-axes (mm) along ``wide`` (unit vector) and across it, tapering linearly by ``taper``
    (end semi-axes = start × taper)."""

    start: np.ndarray
    end: np.ndarray
    wide: np.ndarray
    semi_wide: float
    semi_thin: float
    taper: float


@dataclass(frozen=True)
class PelvisShape:
    """A hip's pelvic bone: acetabular wall thickness medially and under the roof (mm), cortex
    (mm), the struts (ilium; posterior column and ischium; anterior column; superior pubic
    ramus), and the smooth-union radius (mm)."""

    wall_medial: float
    wall_roof: float
    cortex: float
    ilium: Strut
    ischium: Strut
    anterior_column: Strut
    pubis: Strut
    blend: float


def draw_pelvis(patient_rng: np.random.Generator, rng: np.random.Generator, radius: float) -> PelvisShape:
    """Draw the pelvis: patient-level proportions from ``patient_rng`` (shared by both hips),
    a small per-hip jitter (≈ 5 %) from ``rng``; lengths scale with the head ``radius`` (mm)."""
    s = radius / 22.0
    base = patient_rng.uniform(0.85, 1.15, 12)
    jit = 1.0 + rng.uniform(-0.05, 0.05, 12)
    f = base * jit

    def vec(x, y, z):
        return np.array([x, y, z], dtype=float) * s

    ilium = Strut(
        start=vec(1.0, -3.0 * f[0], 30.0),
        end=vec(-14.0 * f[1], -10.0, 80.0),
        wide=unit([0.15, 1.0, 0.0]),
        semi_wide=24.0 * s * f[2], semi_thin=12.0 * s * f[3], taper=0.55,
    )
    # the posterior column runs behind the socket from the ilium down into the ischium
    ischium = Strut(
        start=vec(-9.0, -31.0 * f[4], 28.0),
        end=vec(-14.0 * f[5], -31.0, -60.0),
        wide=unit([0.5, 1.0, 0.0]),
        semi_wide=13.0 * s * f[6], semi_thin=9.5 * s * f[7], taper=0.85,
    )
    # the anterior column runs in front of the socket into the superior pubic ramus
    anterior_column = Strut(
        start=vec(-8.0, 21.0, 26.0),
        end=vec(-17.0, 17.0 * f[8], -8.0),
        wide=unit([1.0, -0.3, 0.0]),
        semi_wide=10.0 * s * f[11], semi_thin=6.0 * s * jit[3], taper=1.0,
    )
    pubis = Strut(
        start=vec(-17.0, 17.0 * f[8], -8.0),
        end=vec(-60.0, 22.0 * f[9], -14.0 * f[10]),
        wide=unit([0.0, 0.3, 1.0]),
        semi_wide=10.0 * s * f[11], semi_thin=6.5 * s * jit[0], taper=0.8,
    )
    return PelvisShape(
        wall_medial=float(patient_rng.uniform(3.5, 6.0) * jit[1]),
        wall_roof=float(patient_rng.uniform(10.0, 15.0) * jit[2]),
        cortex=float(patient_rng.uniform(1.0, 1.8)),
        ilium=ilium, ischium=ischium, anterior_column=anterior_column, pubis=pubis,
        blend=float(rng.uniform(6.0, 9.0)),
    )


def strut_sdf(p, strut: Strut) -> np.ndarray:
    """Approximate signed distance (mm) to a tapered elliptical column (float32)."""
    a = strut.start.astype(np.float32)
    axis = (strut.end - strut.start).astype(float)
    length = float(np.linalg.norm(axis))
    d = axis / length
    wide = unit(strut.wide - strut.wide.dot(d) * d)
    thin = np.cross(d, wide)
    rel = [p[i] - a[i] for i in range(3)]
    t = rel[0] * float(d[0]) + rel[1] * float(d[1]) + rel[2] * float(d[2])
    tc = np.clip(t, 0.0, length)
    u = rel[0] * float(wide[0]) + rel[1] * float(wide[1]) + rel[2] * float(wide[2])
    v = rel[0] * float(thin[0]) + rel[1] * float(thin[1]) + rel[2] * float(thin[2])
    scale = 1.0 + (strut.taper - 1.0) * tc * np.float32(1.0 / length)
    aw, at = strut.semi_wide * scale, strut.semi_thin * scale
    # normalised elliptical radius × the thin semi-axis: exact across the thin direction
    q = np.sqrt((u / aw) ** 2 + (v / at) ** 2)
    radial = (q - 1.0) * at
    beyond = t - tc  # past either end (0 between them): rounded caps
    outside = np.maximum(radial, 0.0)
    return np.sqrt(outside * outside + beyond * beyond) + np.minimum(radial, 0.0)


def smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum of two signed distances (mm) with blend radius ``k`` (mm)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def struts_sdf(p, shape: PelvisShape) -> np.ndarray:
    """Signed distance (mm) of the struts' smooth union (smooth everywhere: it may be evaluated
    on a coarser grid and interpolated)."""
    bone = strut_sdf(p, shape.ilium)
    for strut in (shape.ischium, shape.anterior_column, shape.pubis):
        bone = smooth_union(bone, strut_sdf(p, strut), shape.blend)
    return bone


def pelvis_sdf(p, r, height, bone_in, inner_radius: float, acetabular_axis, shape: PelvisShape,
               struts: np.ndarray | None = None) -> np.ndarray:
    """Signed distance (mm) of the pelvic bone at points ``p`` (distance ``r`` from the head
    centre, ``height`` above the rim plane along the acetabular axis; ``bone_in`` the socket's
    bone radius, recessed at the fossa; ``inner_radius`` its value away from the fossa);
    ``struts``: :func:`struts_sdf` at ``p`` if already computed."""
    m = [float(v) for v in acetabular_axis]
    # the socket wall: thick under the roof (toward superior), thin at the medial wall
    cos_sup = p[2] / np.maximum(r, np.float32(1e-3))
    w = np.clip(0.5 + 0.5 * cos_sup, 0.0, 1.0) ** 2
    wall = shape.wall_medial + (shape.wall_roof - shape.wall_medial) * w
    shell = np.maximum(r - (inner_radius + wall), -height)
    bone = smooth_union(shell, struts_sdf(p, shape) if struts is None else struts, shape.blend)
    # carve the socket cavity and the joint opening beyond the rim plane
    along = p[0] * m[0] + p[1] * m[1] + p[2] * m[2]
    rho_axis = np.sqrt(np.maximum(r * r - along * along, 0.0))
    opening = np.maximum(height, rho_axis - (inner_radius + 1.0))
    return np.maximum(np.maximum(bone, bone_in - r), -opening)
