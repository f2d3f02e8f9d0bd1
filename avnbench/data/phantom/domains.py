"""Acquisition domains: the contrast, resolution, noise, bias and gain of a kind of scan.

A :class:`Domain` says how tissues look (intensity ranges per tissue, relative to the domain's
own scale) and how the image is acquired. Three are built in:

- ``t1`` (default): 3-D T1 VIBE/SPGR without fat suppression at 3 T, as the Bern protocol
  (clinical.md §5.5, §7.4): fatty marrow and fat bright, native in-plane 0.78–0.9 mm.
- ``t1fs``: the same sequence with fat suppression (clinical.md §7.4, "optional fat-saturated
  variant"): fatty marrow and fat dark-ish, muscle and cartilage brighter than marrow, and the
  lesion/marrow contrast compressed to a third — a hard domain.
- ``t1-1p5t``: T1 contrast from a 1.5 T scanner: coarser native resolution (1.0–1.2 mm),
  thicker slice profile, lower SNR and a stronger bias field — a scanner shift.

Lesion signal is specified in T1 terms (relative to fatty marrow = 1.0) and mapped into a
domain with :meth:`Domain.from_t1`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from avnbench.errors import ConfigError

Range = tuple[float, float]


class TissueRanges(BaseModel):
    """Intensity ranges U(a, b) per tissue, in the domain's scale (T1: fatty marrow = 1.0)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    muscle: Range
    fat: Range
    dark: Range  # cortex, subchondral plate, labrum, physeal scar
    cartilage: Range
    fluid_native: Range
    fluid_arthrography: Range
    capsule: Range
    artery: Range
    vein: Range


class Domain(BaseModel):
    """One acquisition domain: tissue intensities, the marrow level and lesion/marrow contrast
    that :meth:`from_t1` uses, native in-plane resolution (mm), slice profile FWHM (mm), marrow
    SNR range (and the intensity it refers to), bias-field coefficient bound, gain range and the share of arthrograms."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    title: str
    fat_suppressed: bool
    #: Fatty marrow's intensity in this domain (T1: 1.0, the reference).
    marrow: float
    #: Factor on T1 differences from marrow: 1.0 keeps T1 contrast, < 1 compresses it.
    lesion_contrast: float
    tissues: TissueRanges
    native_mm: Range
    slice_fwhm_mm: float
    snr: Range
    #: The intensity the SNR refers to (noise sigma = snr_reference / SNR).
    snr_reference: float
    bias_coefficient: float
    gain: Range
    arthrography_share: float

    def from_t1(self, value: float) -> float:
        """Map a T1 intensity relative to fatty marrow (1.0) into this domain's scale: marrow
        goes to :attr:`marrow` and differences from it are scaled by :attr:`lesion_contrast`
        (identity for ``t1``); never below 0.02."""
        return max(self.marrow * (1.0 + self.lesion_contrast * (float(value) - 1.0)), 0.02)


T1 = Domain(
    name="t1",
    title="3-D T1 VIBE/SPGR, no fat suppression, 3 T",
    fat_suppressed=False,
    marrow=1.0,
    lesion_contrast=1.0,
    tissues=TissueRanges(
        muscle=(0.30, 0.45), fat=(1.0, 1.15), dark=(0.03, 0.12), cartilage=(0.35, 0.55),
        fluid_native=(0.10, 0.25), fluid_arthrography=(0.9, 1.3), capsule=(0.15, 0.30),
        artery=(0.05, 0.25), vein=(0.15, 0.40),
    ),
    native_mm=(0.78, 0.9),
    slice_fwhm_mm=1.06,
    snr=(12.0, 40.0),
    snr_reference=1.0,
    bias_coefficient=0.2,
    gain=(1500.0, 2200.0),
    arthrography_share=0.25,
)

T1_FAT_SUPPRESSED = Domain(
    name="t1fs",
    title="3-D T1 VIBE/SPGR with fat suppression, 3 T",
    fat_suppressed=True,
    marrow=0.26,
    lesion_contrast=0.33,
    tissues=TissueRanges(
        muscle=(0.38, 0.52), fat=(0.10, 0.20), dark=(0.03, 0.10), cartilage=(0.45, 0.65),
        fluid_native=(0.12, 0.25), fluid_arthrography=(1.0, 1.4), capsule=(0.18, 0.30),
        artery=(0.05, 0.25), vein=(0.20, 0.45),
    ),
    native_mm=(0.8, 0.95),
    slice_fwhm_mm=1.1,
    snr=(10.0, 30.0),
    snr_reference=0.45,
    bias_coefficient=0.2,
    gain=(2000.0, 2800.0),
    arthrography_share=0.25,
)

T1_1P5T = T1.model_copy(update={
    "name": "t1-1p5t",
    "title": "3-D T1 GRE, no fat suppression, 1.5 T",
    "native_mm": (1.0, 1.2),
    "slice_fwhm_mm": 1.5,
    "snr": (8.0, 22.0),
    "bias_coefficient": 0.3,
    "gain": (1200.0, 1800.0),
})

DOMAINS: dict[str, Domain] = {d.name: d for d in (T1, T1_FAT_SUPPRESSED, T1_1P5T)}
DEFAULT_DOMAIN = "t1"


def get_domain(name: str | Domain) -> Domain:
    """The domain called ``name`` (a Domain is returned as is); ConfigError naming the known ones."""
    if isinstance(name, Domain):
        return name
    try:
        return DOMAINS[name]
    except KeyError:
        raise ConfigError(
            f"unknown domain {name!r}; choose one of: {', '.join(DOMAINS)}"
        ) from None
