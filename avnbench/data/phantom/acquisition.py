"""The image: tissue intensities composited with partial volume on the output grid, then
degraded like an acquisition (k-space truncation to the native in-plane resolution, a
through-plane slice profile, a smooth polynomial bias field and Rician noise), all as the
acquisition domain (:mod:`.domains`) says.

Intensities are in the domain's scale (T1: fatty marrow = 1.0) before the gain; the written
image is int16 in [0, 4095]. Partial-volume fractions come from signed distances (mm) with a linear ramp one voxel
wide, so nothing is supersampled.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from scipy import ndimage

from avnbench.data.phantom.anatomy import CaseFrame, HipTissues
from avnbench.data.phantom.domains import DEFAULT_DOMAIN, Domain, get_domain
from avnbench.data.phantom.grid import (
    Grid,
    coarse_steps,
    oriented_field,
    paint,
    ramp,
    smooth_field,
    upsample_linear,
)
from avnbench.data.phantom.lesion import Lesion
from avnbench.data.phantom.lesion_signal import paint_lesion_signal
from avnbench.data.phantom.pelvis import struts_sdf
from avnbench.data.phantom.soft_tissue import muscle_partition, vessel_sdfs


def render_image(frame: CaseFrame, lesion: Lesion | None, noise: np.ndarray, stage: str | None,
                 rng: np.random.Generator, domain: Domain | str = DEFAULT_DOMAIN) -> np.ndarray:
    """The case's MR image (int16, the frame's shape) in acquisition ``domain`` (a
    :class:`~.domains.Domain` or its name): tissues painted back to front (fat and muscle groups,
    vessels, capsule and fluid, pelvis, cartilage, femur, the lesion), textured, then acquired.
    ``noise`` is the lesion-roughening field over the head box; ``stage`` the planned ARCO stage."""
    domain = get_domain(domain)
    an, w = frame.anatomy, frame.width
    full = frame.full_grid()
    p, r = full.p, full.r
    t = domain.tissues
    arthrography = rng.random() < domain.arthrography_share
    marrow = domain.marrow
    muscle = rng.uniform(*t.muscle)
    fat = rng.uniform(*t.fat)
    dark = rng.uniform(*t.dark)
    cartilage = rng.uniform(*t.cartilage)
    fluid = rng.uniform(*t.fluid_arthrography) if arthrography else rng.uniform(*t.fluid_native)
    capsule = rng.uniform(*t.capsule)

    coarse = smooth_field(rng, tuple(full.axes_mm), sigma_mm=10.0)
    medium = smooth_field(rng, tuple(full.axes_mm), sigma_mm=4.0)
    # smooth structures are evaluated on a ~0.85 mm sub-grid (below the native resolution)
    steps = coarse_steps(frame.spacing)
    sub = Grid(frame.shape, frame.spacing, frame.center_index, frame.index_axes, steps=steps)
    signal = render_soft_tissue(frame, sub, domain, muscle, fat, rng)
    trabecular = trabecular_texture(frame, sub, rng)
    struts = upsample_linear(struts_sdf(sub.p, an.pelvis), steps, frame.shape)

    tissue = HipTissues(p, r, an, lesion, pelvis_struts=struts)
    # joint capsule around head and neck, joint fluid inside it
    envelope = tissue.capsule()
    paint(signal, capsule, ramp(envelope - 1.5, w))
    paint(signal, fluid, ramp(envelope, w))

    # pelvis: ilium, ischium, pubis and the acetabular wall (cortex, fatty marrow), fossa fat,
    # ligamentum teres, lunate cartilage and labrum
    paint(signal, dark, ramp(tissue.pelvis_bone(), w))
    pelvis_marrow = domain.from_t1(rng.uniform(0.85, 1.0))
    texture_gain = np.float32(rng.uniform(0.05, 0.10))
    paint(signal, pelvis_marrow * (1.0 + texture_gain * trabecular[2]), ramp(tissue.pelvis_marrow(), w))
    paint(signal, fat * 0.95, ramp(tissue.fossa_fat(), w))
    paint(signal, capsule, ramp(tissue.ligamentum_teres(), w))
    paint(signal, cartilage, ramp(tissue.acetabular_cartilage(), w))
    paint(signal, dark * 1.3, ramp(tissue.labrum(), w))  # the labrum is dark

    # femur: articular cartilage, cortex/subchondral plate, neck, trochanter and head marrow
    paint(signal, cartilage, ramp(tissue.femoral_cartilage(), w))
    paint(signal, dark, ramp(tissue.femur_bone(), w))
    # red marrow toward the intertrochanteric region: darker with distance along the neck
    neck_marrow = domain.from_t1(rng.uniform(0.80, 0.95))
    toward_base = np.clip(tissue.s * np.float32(1.0 / (2.2 * an.radius)), 0.0, 1.0)
    red = np.float32(domain.from_t1(1.0 - rng.uniform(0.05, 0.15)) - domain.from_t1(1.0))
    paint(signal, (neck_marrow + red * toward_base) * (1.0 + np.float32(0.04) * coarse + texture_gain * trabecular[0]),
          ramp(tissue.neck_marrow(), w))
    head_fraction = ramp(tissue.head_marrow(), w)
    # trabecular texture (compressive group in the head) and slight red/yellow heterogeneity
    marrow_texture = (1.0 + np.float32(rng.uniform(0.01, 0.03)) * medium) + texture_gain * trabecular[1]
    paint(signal, marrow * marrow_texture, head_fraction)
    # physeal scar: a thin dark line along the head–neck label boundary, inside the bone, fainter
    # in places (an incompletely visible scar)
    inside_bone = ramp(tissue.bone_interior(), w)
    scar_visibility = np.clip(0.75 + 0.5 * medium, 0.2, 1.0)
    paint(signal, dark * 2.0, ramp(np.abs(tissue.cut) - an.scar_half_mm, w) * inside_bone * scar_visibility)

    if lesion is not None:
        paint_lesion_signal(signal, frame, lesion, noise, stage, p, tissue, head_fraction, inside_bone,
                            rng, domain.from_t1)

    # mild voxel-scale texture, then acquisition: k-space truncation, slice profile, bias, noise
    signal *= 1.0 + rng.uniform(0.01, 0.03) * rng.standard_normal(frame.shape, dtype=np.float32)
    return acquire(signal, frame.spacing, rng, domain)


def render_soft_tissue(frame: CaseFrame, g: Grid, domain: Domain, muscle: float, fat: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Fat, muscle groups and the femoral vessels over the whole array (float32), evaluated on
    the sub-grid ``g`` (smooth structures; below the native resolution) and interpolated."""
    steps = g.steps
    wc = float(np.exp(np.mean(np.log([s * st for s, st in zip(frame.spacing, steps)]))))
    soft = frame.anatomy.soft
    warp = smooth_field(rng, tuple(g.axes_mm), sigma_mm=12.0)
    index, muscle_sdf = muscle_partition(g.p, soft, warp)
    # groups differ a little (fibre orientation, fatty infiltration), and vary slowly within
    per_group = (muscle * rng.uniform(0.9, 1.1, len(soft.muscles))).astype(np.float32)
    slow = smooth_field(rng, tuple(g.axes_mm), sigma_mm=8.0)
    out = np.full(index.shape, fat, np.float32)
    out *= 1.0 + np.float32(0.03) * slow
    paint(out, per_group[index] * (1.0 + np.float32(0.06) * slow), ramp(muscle_sdf, wc))
    artery, vein = vessel_sdfs(g.p, soft)
    paint(out, fat, ramp(np.minimum(artery, vein) - rng.uniform(1.5, 3.0), wc))  # the sheath
    t = domain.tissues
    paint(out, rng.uniform(*t.vein), ramp(vein, wc))
    paint(out, rng.uniform(*t.artery), ramp(artery, wc))
    return upsample_linear(out, steps, frame.shape)


def trabecular_texture(frame: CaseFrame, g: Grid, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Anisotropic marrow texture (unit variance, float32, 3 fields): (neck: striations along the
    neck axis, the tensile/neck trabeculae; head: along the patient's superior axis, the
    compressive group, crossed by the neck one; pelvis: an even mix). Made on the sub-grid
    ``g`` (~0.85 mm, below the native resolution) and interpolated."""
    steps = g.steps
    shape = tuple(len(a) for a in g.axes_mm)
    spacing = tuple(s * st for s, st in zip(frame.spacing, steps))
    along_neck = oriented_field(rng, shape, spacing, (0.8, 0.8, 5.0))
    # the superior axis lies close to the array's (z, x) plane: stretch along it by a shear
    sup_z, sup_x = float(frame.index_axes[0][2]), float(frame.index_axes[2][2])
    shear = float(np.clip(sup_x / sup_z, -1.5, 1.5)) if abs(sup_z) > 1e-3 else 0.0
    compressive = oriented_field(rng, shape, spacing, (5.0 / np.sqrt(1 + shear * shear), 0.8, 0.8), shear=shear)
    head = (0.8 * compressive + 0.6 * along_neck)
    pelvis = (0.7 * compressive + 0.7 * along_neck)
    return tuple(upsample_linear(f, steps, frame.shape) for f in (along_neck, head, pelvis))


def acquire(signal: np.ndarray, spacing: tuple[float, float, float], rng: np.random.Generator,
            domain: Domain | str = DEFAULT_DOMAIN) -> np.ndarray:
    """Degrade an ideal image (float32, voxels of ``spacing`` mm, z y x) like an acquisition in
    ``domain``: k-space truncation to its native in-plane resolution (t1: 0.78–0.9 mm), its
    slice profile (t1: FWHM ≈ 1.06 mm), a cubic polynomial bias field, Rician noise and a gain;
    int16 in [0, 4095]."""
    domain = get_domain(domain)
    shape = signal.shape
    sz, sy, sx = spacing
    native = rng.uniform(*domain.native_mm)  # acquired in-plane resolution (mm)
    if native > min(sy, sx) * 1.05:
        spec = scipy.fft.rfft2(signal, workers=1)
        ky = np.fft.fftfreq(shape[1], d=sy)[:, None]
        kx = np.fft.rfftfreq(shape[2], d=sx)[None, :]
        cutoff = 0.5 / native
        # Fermi filter: truncation with a slightly soft edge (faint Gibbs ringing)
        fermi = 1.0 / (1.0 + np.exp((np.maximum(np.abs(ky), np.abs(kx)) - cutoff) / (0.04 * cutoff)))
        spec *= fermi.astype(np.float32)
        signal = scipy.fft.irfft2(spec, s=shape[1:], workers=1).astype(np.float32)
    profile_sigma = domain.slice_fwhm_mm / 2.355 / sz  # Gaussian slice profile
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
                c = rng.uniform(-domain.bias_coefficient, domain.bias_coefficient) / (i + j + k)
                plane += c * np.outer(yc**j, xc**k)
        log_bias += (zc**i)[:, None, None] * plane
    signal *= np.exp(log_bias)
    sigma = domain.snr_reference / rng.uniform(*domain.snr)
    real = signal + sigma * rng.standard_normal(shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(shape, dtype=np.float32)
    magnitude = np.sqrt(real * real + imag * imag)
    gain = rng.uniform(*domain.gain)
    return np.clip(np.rint(magnitude * gain), 0, 4095).astype(np.int16)
