"""The image: tissue intensities composited with partial volume on the output grid, then
degraded like an acquisition (k-space truncation to the native in-plane resolution, a
through-plane slice profile, a smooth polynomial bias field and Rician noise).

Intensities are relative to fatty marrow (1.0) before the gain; the written image is int16 in
[0, 4095]. Partial-volume fractions come from signed distances (mm) with a linear ramp one voxel
wide, so nothing is supersampled.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from scipy import ndimage

from avnbench.data.phantom.anatomy import CaseFrame, HipTissues
from avnbench.data.phantom.grid import smooth_field
from avnbench.data.phantom.lesion import Lesion
from avnbench.data.phantom.lesion_signal import paint_lesion_signal


def ramp(sdf: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume fraction of a region {sdf <= 0} (sdf in mm): 1 inside, 0 outside, linear
    over one voxel width (mm) across the boundary."""
    out = np.multiply(sdf, -1.0 / width, dtype=np.float32)
    out += 0.5
    np.clip(out, 0.0, 1.0, out=out)
    return out


def paint(signal: np.ndarray, value, fraction: np.ndarray) -> None:
    """Composite a tissue of intensity ``value`` over ``signal`` with a partial-volume fraction."""
    signal += (value - signal) * fraction


def render_image(frame: CaseFrame, lesion: Lesion | None, noise: np.ndarray, stage: str | None,
                 rng: np.random.Generator) -> np.ndarray:
    """The case's MR image (int16, the frame's shape): tissues painted back to front (muscle and
    fat, capsule and fluid, pelvis, cartilage, femur, the lesion), textured, then acquired.
    ``noise`` is the lesion-roughening field over the head box; ``stage`` the planned ARCO stage."""
    an, w = frame.anatomy, frame.width
    full = frame.full_grid()
    p, r = full.p, full.r
    arthrography = rng.random() < 0.25
    marrow = 1.0
    muscle = rng.uniform(0.30, 0.45)
    fat = rng.uniform(1.0, 1.15)
    dark = rng.uniform(0.03, 0.12)
    cartilage = rng.uniform(0.35, 0.55)
    fluid = rng.uniform(0.9, 1.3) if arthrography else rng.uniform(0.10, 0.25)
    capsule = rng.uniform(0.15, 0.30)

    coarse = smooth_field(rng, tuple(full.axes_mm), sigma_mm=10.0)
    medium = smooth_field(rng, tuple(full.axes_mm), sigma_mm=4.0)
    signal = (muscle * (1.0 + 0.08 * coarse)).astype(np.float32)
    # intermuscular fat planes (sheets on the zero set of a random field) and fat pockets
    paint(signal, fat, ramp((np.abs(medium) - rng.uniform(0.06, 0.12)) * 2.0, w))
    paint(signal, fat, ramp((rng.uniform(1.2, 1.8) - coarse) * 4.0, w))

    tissue = HipTissues(p, r, an, lesion)
    # joint capsule around head and neck, joint fluid inside it
    envelope = tissue.capsule()
    paint(signal, capsule, ramp(envelope - 1.5, w))
    paint(signal, fluid, ramp(envelope, w))

    # pelvis: acetabular shell with subchondral plate, marrow, outer cortex; fossa recess
    paint(signal, dark, ramp(tissue.pelvis_bone(), w))
    pelvis_marrow = rng.uniform(0.85, 1.0)
    paint(signal, pelvis_marrow, ramp(tissue.pelvis_marrow(), w))
    paint(signal, fat * 0.95, ramp(tissue.fossa_fat(), w))
    paint(signal, cartilage, ramp(tissue.acetabular_cartilage(), w))
    paint(signal, dark * 1.3, ramp(tissue.labrum(), w))  # the labrum is dark

    # femur: articular cartilage, cortex/subchondral plate, neck and head marrow
    paint(signal, cartilage, ramp(tissue.femoral_cartilage(), w))
    paint(signal, dark, ramp(tissue.femur_bone(), w))
    neck_marrow = rng.uniform(0.80, 0.95)
    paint(signal, neck_marrow * (1.0 + np.float32(0.04) * coarse), ramp(tissue.neck_marrow(), w))
    head_fraction = ramp(tissue.head_marrow(), w)
    # slight red/yellow marrow heterogeneity
    marrow_texture = 1.0 + np.float32(rng.uniform(0.02, 0.05)) * medium
    paint(signal, marrow * marrow_texture, head_fraction)
    # physeal scar: a thin dark line along the head–neck label boundary, inside the bone
    inside_bone = ramp(tissue.bone_interior(), w)
    paint(signal, dark * 2.0, ramp(np.abs(tissue.cut) - rng.uniform(0.25, 0.45), w) * inside_bone)

    if lesion is not None:
        paint_lesion_signal(signal, frame, lesion, noise, stage, p, tissue, head_fraction, inside_bone,
                            rng, lambda v: v)

    # texture, then acquisition: k-space truncation, slice profile, bias field, Rician noise
    signal *= 1.0 + rng.uniform(0.03, 0.08) * rng.standard_normal(frame.shape, dtype=np.float32)
    return acquire(signal, frame.spacing, rng)


def acquire(signal: np.ndarray, spacing: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Degrade an ideal image (float32, voxels of ``spacing`` mm, z y x) like an acquisition:
    k-space truncation to a native in-plane resolution of 0.78–0.9 mm, a slice profile of
    FWHM ≈ 1.06 mm, a cubic polynomial bias field and Rician noise; int16 in [0, 4095]."""
    shape = signal.shape
    sz, sy, sx = spacing
    native = rng.uniform(0.78, 0.9)  # acquired in-plane resolution (mm)
    if native > min(sy, sx) * 1.05:
        spec = scipy.fft.rfft2(signal, workers=1)
        ky = np.fft.fftfreq(shape[1], d=sy)[:, None]
        kx = np.fft.rfftfreq(shape[2], d=sx)[None, :]
        cutoff = 0.5 / native
        # Fermi filter: truncation with a slightly soft edge (faint Gibbs ringing)
        fermi = 1.0 / (1.0 + np.exp((np.maximum(np.abs(ky), np.abs(kx)) - cutoff) / (0.04 * cutoff)))
        spec *= fermi.astype(np.float32)
        signal = scipy.fft.irfft2(spec, s=shape[1:], workers=1).astype(np.float32)
    profile_sigma = 0.45 / sz  # slice profile, FWHM ≈ 1.06 mm
    if profile_sigma > 0.2:
        signal = ndimage.gaussian_filter1d(signal, profile_sigma, axis=0, mode="nearest")
    # polynomial bias field (order 3) on coordinates normalised to [-1, 1], separable sum
    zc, yc, xc = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    log_bias = np.zeros(shape, np.float32)
    for i in range(4):
        plane = np.zeros(shape[1:], np.float32)
        for j in range(4 - i):
            for k in range(4 - i - j):
                if i + j + k == 0:
                    continue
                c = rng.uniform(-0.2, 0.2) / (i + j + k)
                plane += c * np.outer(yc**j, xc**k)
        log_bias += (zc**i)[:, None, None] * plane
    signal *= np.exp(log_bias)
    sigma = 1.0 / rng.uniform(12.0, 40.0)
    real = signal + sigma * rng.standard_normal(shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(shape, dtype=np.float32)
    magnitude = np.sqrt(real * real + imag * imag)
    gain = rng.uniform(1500.0, 2200.0)
    return np.clip(np.rint(magnitude * gain), 0, 4095).astype(np.int16)
