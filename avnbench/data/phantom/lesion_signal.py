"""How the lesion and its surroundings look on T1 (clinical.md §5.1, §7.3, §7.4).

Painted into the ideal image (before texture and acquisition) by
:func:`avnbench.data.phantom.acquisition.render_image`:

- bone-marrow oedema in the vital head and neck of a share of collapsed hips: smooth, patchy,
  ill-defined low signal fading with distance from the lesion (vital bone: label 1, or
  background in the neck, so it confounds a threshold);
- the necrotic centre by Mitchell class (A/B fat-like, C/D low);
- the reactive interface in every class along the deep margin: a dark band in A/B; in C/D a rim
  distinct from the centre, a dark sclerotic outer line over a brighter granulation layer;
- a double line (outer and inner dark lines) and patchy sclerotic blobs, independent of stage;
- the subchondral fracture line of a collapse.

Every intensity is relative to fatty marrow (1.0) on T1 and goes through ``to_domain`` into the
acquisition domain's scale before it is painted.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from avnbench.data.phantom.anatomy import CaseFrame, HipTissues
from avnbench.data.phantom.grid import paint, ramp, smooth_field
from avnbench.data.phantom.lesion import Lesion, lesion_t

#: Mitchell class centre intensity ranges on T1 (relative to fatty marrow), §7.4.
CENTRE_T1 = {"A": (0.85, 1.05), "B": (0.9, 1.1), "C": (0.25, 0.45), "D": (0.10, 0.25)}
#: Dark reactive band / sclerotic line, and the granulation layer inside a C/D rim (T1).
BAND_T1, GRANULATION_T1 = (0.10, 0.35), (0.45, 0.70)
#: Share of C/D lesions whose centre is mixed with fat-signal islands, and the islands' share.
MIXED_CENTRE_SHARE, FAT_ISLAND_SHARE = 0.6, (0.15, 0.45)
#: Bone-marrow oedema (T1, §7.4), how far around the lesion it is full (mm), and over how many
#: mm it grades back to normal marrow.
EDEMA_T1, EDEMA_EXTENT_MM, EDEMA_FADE_MM = (0.35, 0.65), (3.0, 12.0), (3.0, 8.0)


def mean_semi_mm(lesion: Lesion) -> float:
    """Geometric-mean semi-axis of the scaled lesion (mm): turns its normalised radius into mm."""
    return float(lesion.scale * np.exp(np.mean(np.log(lesion.semi))))


def paint_lesion_signal(signal: np.ndarray, frame: CaseFrame, lesion: Lesion, noise: np.ndarray,
                        stage: str | None, p, tissue: HipTissues, head_fraction: np.ndarray,
                        inside_bone: np.ndarray, rng: np.random.Generator,
                        to_domain: Callable[[float], float]) -> None:
    """Paint the oedema (if the lesion has it) and the lesion into ``signal`` (in place, the
    frame's full grid). ``p`` are the full grid's patient coordinates (mm), ``noise`` the
    lesion-roughening field over the head box, ``head_fraction``/``inside_bone`` the head-marrow
    and bone-interior partial-volume fractions. ``stage`` (the planned ARCO stage) is part of
    the interface but unused: what depends on it (Mitchell class, oedema, collapse depth) was
    drawn with the lesion, and nothing else about its look may follow the stage."""
    del stage
    if lesion.edema:
        _paint_edema(signal, frame, lesion, p, inside_bone, rng, to_domain)
    _paint_lesion(signal, frame, lesion, noise, p, tissue.head, head_fraction, rng, to_domain)


def _paint_edema(signal, frame: CaseFrame, lesion: Lesion, p, inside_bone, rng, to_domain) -> None:
    """Bone-marrow oedema: marrow painted toward a low value over an irregular zone 3–12 mm
    around the lesion's (unroughened) margin, fading to normal marrow over a further 3–8 mm, in
    head and neck marrow; a smooth random field makes its extent patchy and ill-defined."""
    value = to_domain(rng.uniform(*EDEMA_T1))
    extent, fade = rng.uniform(*EDEMA_EXTENT_MM), rng.uniform(*EDEMA_FADE_MM)
    outside_mm = (lesion_t(p, lesion, np.float32(0.0)) - lesion.scale) * mean_semi_mm(lesion)
    axes_mm = tuple((np.arange(n) - c) * s for n, c, s in zip(frame.shape, frame.center_index, frame.spacing))
    patches = smooth_field(rng, axes_mm, sigma_mm=6.0)
    # strength 1 within the (patchy) extent, then a smoothstep down to 0 over ``fade`` mm
    x = (outside_mm - np.float32(extent) * (1.0 + np.float32(0.5) * patches)) * np.float32(1.0 / fade)
    np.clip(x, 0.0, 1.0, out=x)
    strength = 1.0 - x * x * (3.0 - 2.0 * x)
    strength *= inside_bone
    paint(signal, value, strength)


def _paint_lesion(signal, frame: CaseFrame, lesion: Lesion, noise, p, head_sdf, head_fraction,
                  rng: np.random.Generator, to_domain) -> None:
    """The lesion within the head box: Mitchell-class centre, the reactive interface (dark band,
    or in C/D a sclerotic line over a granulation layer; a double line if drawn), patchy
    sclerosis, and the subchondral fracture line of a collapse."""
    w = frame.width
    box = frame.head_grid.slices
    t = lesion_t(tuple(c[box] for c in p), lesion, noise)
    # t is a normalised radius: an approximate signed distance to the lesion margin in mm
    phi = (t - lesion.scale) * mean_semi_mm(lesion)
    head_box = head_fraction[box]
    inside = ramp(phi, w) * head_box
    sig = signal[box]
    paint(sig, to_domain(rng.uniform(*CENTRE_T1[lesion.mitchell])), inside)
    if lesion.mitchell in ("C", "D") and rng.random() < MIXED_CENTRE_SHARE:
        # mixed centre: necrotic marrow keeps its fat signal in places (islands 2–3 mm across),
        # so a low-signal segment is not uniformly low
        field = smooth_field(rng, tuple(frame.head_grid.axes_mm), sigma_mm=float(rng.uniform(2.0, 3.0)))
        share = rng.uniform(*FAT_ISLAND_SHARE)
        level = float(np.quantile(field[inside > 0.5], 1.0 - share)) if (inside > 0.5).any() else np.inf
        islands = ramp((level - field) * np.float32(2.0 * w), w) * inside
        paint(sig, to_domain(rng.uniform(*CENTRE_T1["A"])), islands)
    band_value = to_domain(rng.uniform(*BAND_T1))
    band = lesion.band_mm

    def shell(outer_mm: float, inner_mm: float) -> np.ndarray:
        """Fraction of the shell between ``outer_mm`` and ``inner_mm`` inside the margin."""
        mid, half = (outer_mm + inner_mm) / 2.0, (inner_mm - outer_mm) / 2.0
        return ramp(np.abs(phi + mid) - half, w) * head_box

    if lesion.mitchell in ("C", "D"):
        # a granulation layer (intermediate) under an outer sclerotic line (dark): the rim
        # differs from a dark centre, so no single threshold takes both
        paint(sig, to_domain(rng.uniform(*GRANULATION_T1)), shell(0.0, band))
        paint(sig, band_value, shell(0.0, min(0.8, band / 2.0)))
        if lesion.double_band:
            # double line: a second dark line inside the granulation layer
            paint(sig, band_value, shell(band, band + 0.7))
    elif lesion.double_band:
        # double line: outer and inner dark lines with centre-like signal between them
        paint(sig, band_value, shell(0.0, 0.7))
        paint(sig, band_value, shell(band, band + 0.7))
    else:
        paint(sig, band_value, shell(0.0, band))
    if lesion.sclerosis:
        # patchy sclerosis: small dark blobs (1–4 mm across) inside the lesion
        pts = np.stack([c[box] for c in p], -1)
        lesion_pts = pts[(phi < -1.5) & (head_box > 0.5)]
        if len(lesion_pts):
            for _ in range(int(rng.integers(2, 7))):
                b = lesion_pts[rng.integers(len(lesion_pts))]
                blob = np.sqrt(((pts - b) ** 2).sum(-1)) - rng.uniform(0.5, 2.0)
                paint(sig, to_domain(rng.uniform(0.1, 0.3)), ramp(blob, w) * inside)
    if lesion.collapse_mm > 0:
        depth = rng.uniform(1.5, 3.0)
        line = ramp(np.abs(head_sdf[box] + depth) - rng.uniform(0.3, 0.5), w)
        paint(sig, to_domain(rng.uniform(0.10, 0.30)), line * inside)
    signal[box] = sig
