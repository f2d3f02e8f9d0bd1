"""Soft tissue around the hip: muscle groups in their places, fat sheets between them, and the
femoral vessels.

Each muscle group is a polyline (patient mm) with a half-thickness. A point belongs to the group
whose distance to its polyline minus the half-thickness is smallest (an additively weighted
Voronoi partition, warped by a smooth random field); where the two smallest values are within a
sheet thickness of each other lies an intermuscular fat sheet, so the sheets are smooth surfaces
between neighbouring groups. Points far from every group are fat (pelvic and subcutaneous fat).
The femoral artery and vein run anteromedially, each in a thin fat sheath.

Patient frame (mm): x lateral, y anterior, z superior, origin at the head centre; lengths are
given for a head of radius 22 mm and scaled with the head.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

#: (name, polyline points (x, y, z) mm for R = 22 mm, half-thickness mm).
MUSCLE_GROUPS: tuple[tuple[str, tuple[tuple[float, float, float], ...], float], ...] = (
    ("iliopsoas", ((-4.0, 38.0, 60.0), (2.0, 34.0, 5.0), (8.0, 20.0, -50.0)), 12.0),
    ("gluteus minimus", ((8.0, 8.0, 62.0), (22.0, 6.0, 34.0), (38.0, 4.0, 8.0)), 8.0),
    ("gluteus medius", ((26.0, 2.0, 66.0), (40.0, 0.0, 36.0), (54.0, -4.0, 8.0)), 12.0),
    ("obturator internus", ((-38.0, 14.0, -4.0), (-36.0, -22.0, -8.0), (-10.0, -34.0, -8.0), (34.0, -20.0, -4.0)), 7.0),
    ("quadratus femoris", ((-10.0, -30.0, -44.0), (36.0, -22.0, -32.0)), 8.0),
    ("obturator externus", ((-26.0, 6.0, -36.0), (30.0, -12.0, -20.0)), 7.0),
    ("gemelli and piriformis", ((-20.0, -32.0, 14.0), (40.0, -18.0, 2.0)), 6.5),
    ("gluteus maximus", ((-14.0, -58.0, 24.0), (62.0, -40.0, -44.0)), 14.0),
    ("rectus femoris and sartorius", ((14.0, 34.0, 44.0), (22.0, 40.0, -50.0)), 8.0),
    ("pectineus and adductors", ((-40.0, 24.0, -14.0), (-14.0, 16.0, -64.0)), 10.0),
    ("tensor fasciae latae", ((40.0, 30.0, 34.0), (50.0, 28.0, -50.0)), 7.0),
)


@dataclass(frozen=True)
class SoftTissueShape:
    """A hip's soft tissue: muscle polylines (patient mm) and half-thicknesses (mm), fat-sheet
    half-thickness (mm), reach beyond a group's half-thickness before fat (mm) and warp
    amplitude (mm), and the femoral artery and vein (a point on
    each axis, the common direction, radii in mm)."""

    muscles: tuple[tuple[np.ndarray, float], ...]
    sheet_half: float
    reach_mm: float
    warp_mm: float
    artery_point: np.ndarray
    vein_point: np.ndarray
    vessel_direction: np.ndarray
    artery_radius: float
    vein_radius: float


def draw_soft_tissue(patient_rng: np.random.Generator, rng: np.random.Generator, radius: float) -> SoftTissueShape:
    """Draw the muscle layout and vessels: patient-level build (muscle bulk, fat) from
    ``patient_rng``, per-hip jitter (±1.5 mm, ±5 %) from ``rng``; scaled with ``radius`` (mm)."""
    s = radius / 22.0
    bulk = patient_rng.uniform(0.8, 1.2)  # muscular or slight build
    muscles = []
    for _, points, half in MUSCLE_GROUPS:
        pts = np.asarray(points, float) * s
        pts = pts + patient_rng.uniform(-3.0, 3.0, pts.shape) + rng.uniform(-1.5, 1.5, pts.shape)
        muscles.append((pts, float(half * s * bulk * patient_rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05))))
    # anterior to the superior pubic ramus and the hip joint, medial of the iliopsoas
    artery = np.array([-0.55 * radius, radius + 11.0, 0.0]) + patient_rng.uniform(-2.5, 2.5, 3) + rng.uniform(-1, 1, 3)
    vein = artery + np.array([-9.0, -1.5, 0.0]) * s + rng.uniform(-1, 1, 3)
    direction = np.array([0.12, 0.12, -1.0]) + patient_rng.uniform(-0.08, 0.08, 3)
    return SoftTissueShape(
        muscles=tuple(muscles),
        sheet_half=float(patient_rng.uniform(0.5, 1.1) * rng.uniform(0.9, 1.1)),
        reach_mm=float(patient_rng.uniform(12.0, 18.0)),
        warp_mm=float(rng.uniform(1.5, 3.5)),
        artery_point=artery, vein_point=vein,
        vessel_direction=direction / np.linalg.norm(direction),
        artery_radius=float(patient_rng.uniform(3.2, 4.3) * rng.uniform(0.95, 1.05)),
        vein_radius=float(patient_rng.uniform(4.5, 6.0) * rng.uniform(0.95, 1.05)),
    )


def _polyline_distance(p, points: np.ndarray) -> np.ndarray:
    """Distance (mm, float32) from points ``p`` to a polyline."""
    best = None
    for a, b in itertools.pairwise(points):
        d = b - a
        length2 = float(d @ d)
        rel = [p[i] - np.float32(a[i]) for i in range(3)]
        t = (rel[0] * float(d[0]) + rel[1] * float(d[1]) + rel[2] * float(d[2])) * np.float32(1.0 / length2)
        np.clip(t, 0.0, 1.0, out=t)
        dist2 = (rel[0] - t * float(d[0])) ** 2
        dist2 += (rel[1] - t * float(d[1])) ** 2
        dist2 += (rel[2] - t * float(d[2])) ** 2
        best = dist2 if best is None else np.minimum(best, dist2)
    return np.sqrt(best)


def muscle_partition(p, shape: SoftTissueShape, warp: np.ndarray):
    """The muscle map at points ``p``: (index of the nearest group, int8; signed distance (mm)
    of muscle, negative inside a group and outside the fat sheets around it)."""
    first = second = None
    index = np.zeros(p[0].shape, np.int8)
    for i, (points, half) in enumerate(shape.muscles):
        e = _polyline_distance(p, points) - np.float32(half)
        # each group warps with its own sign so that neighbouring boundaries bend, not shift
        e += np.float32(shape.warp_mm * (1.0 if i % 2 else -1.0)) * warp
        if first is None:
            first, second = e, np.full_like(e, np.inf)
            continue
        closer = e < first
        second = np.minimum(second, np.maximum(first, e))
        first = np.where(closer, e, first)
        index[closer] = i
    # muscle where within a group's reach and more than a sheet away from the bisector
    sdf = np.maximum(np.float32(shape.sheet_half) - 0.5 * (second - first), first - np.float32(shape.reach_mm))
    return index, sdf


def vessel_sdfs(p, shape: SoftTissueShape) -> tuple[np.ndarray, np.ndarray]:
    """Signed distances (mm) of the femoral artery and vein (straight tubes)."""
    out = []
    d = [float(v) for v in shape.vessel_direction]
    for point, radius in ((shape.artery_point, shape.artery_radius), (shape.vein_point, shape.vein_radius)):
        rel = [p[i] - np.float32(point[i]) for i in range(3)]
        along = rel[0] * d[0] + rel[1] * d[1] + rel[2] * d[2]
        dist2 = rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2 - along * along
        out.append(np.sqrt(np.maximum(dist2, 0.0)) - np.float32(radius))
    return out[0], out[1]
