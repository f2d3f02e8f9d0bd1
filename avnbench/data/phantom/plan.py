"""The sampling plan: the phantom's grid, what each case is stratified towards, and its seeds.

Nothing here draws a tissue: the plan fixes case identity (patient, which hip), the Steinberg
size class and ARCO stage cycled by case index (so that small datasets are mixed too), the array
grid for a shape, and the two random streams a case draws everything else from
(``SeedSequence(seed)`` children keyed by case and by patient index, so case i is the same
whatever the number of cases). The JIC type is not planned: it follows from where the lesion
lies and how far the acetabulum covers the head (see :mod:`.lesion`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avnbench.errors import ConfigError

PHANTOM_VERSION = "v2"
DEFAULT_SHAPE = (80, 160, 160)
#: Field of view (mm) along the array axes (z, y, x); any shape keeps it and scales the spacing.
FIELD_OF_VIEW_MM = (80.0, 70.4, 70.4)
#: Coarsest spacing that still resolves the head, its cartilage and a 1–3 mm reactive band (mm).
MAX_SPACING_MM = 2.5
MIN_SHAPE = tuple(int(np.ceil(f / MAX_SPACING_MM)) for f in FIELD_OF_VIEW_MM)  # (32, 29, 29)
MAX_VOXELS = 64 * 1024 * 1024

# Stratification by case index, so that small datasets are mixed too.
STEINBERG_CYCLE = ("A", "B", "C")
STAGE_CYCLE = ("I", "IIIA", "II", "IIIB", "II", "I", "IIIB", "IIIA", "I", "II")
#: Necrosis volume (% of the head) drawn for each Steinberg target, clear of the 15/30 % cuts.
STEINBERG_PERCENT_RANGE = {"A": (4.0, 12.5), "B": (17.0, 28.0), "C": (32.0, 48.0)}
LESION_FREE_EVERY, LESION_FREE_OFFSET = 13, 6


def dataset_name(n_cases: int, seed: int, shape: tuple[int, int, int], domain: str = "t1") -> str:
    """The dataset name, which says it is a synthetic phantom and encodes its parameters
    (acquisition domain, cases, seed, shape)."""
    return (f"avn-phantom-{PHANTOM_VERSION}-{domain}-n{n_cases}-s{seed}-"
            f"{'x'.join(str(s) for s in shape)}")


def spacing_for(shape: tuple[int, int, int]) -> tuple[float, float, float]:
    """Voxel spacing (mm, z y x) that keeps the phantom's field of view for an array shape."""
    return tuple(f / s for f, s in zip(FIELD_OF_VIEW_MM, shape))  # type: ignore[return-value]


def check_shape(shape) -> tuple[int, int, int]:
    """Validate an array shape (voxels, z y x); ConfigError if the head could not be resolved."""
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
    """What case ``index`` should be: identity, the Steinberg size class and the ARCO stage
    it is stratified towards (None for a lesion-free hip)."""

    index: int
    case_id: str
    patient_id: str
    patient_index: int
    bilateral: bool
    steinberg: str | None
    stage: str | None


def plan_case(index: int) -> CasePlan:
    """Deterministic plan of case ``index``: cases 3b and 3b+1 are the two hips of one patient,
    case 3b+2 a patient with one hip; size class and stage cycle by index (lesion-free every
    13th case). The stage does not choose the lesion's place or its image difficulty."""
    block, pos = divmod(index, 3)
    patient_index = 2 * block + (0 if pos < 2 else 1)
    lesion_free = index % LESION_FREE_EVERY == LESION_FREE_OFFSET
    steinberg = None if lesion_free else STEINBERG_CYCLE[(index + block) % 3]
    stage = None if lesion_free else STAGE_CYCLE[index % len(STAGE_CYCLE)]
    return CasePlan(
        index=index, case_id=f"avn_{index:03d}", patient_id=f"pt_{patient_index:03d}",
        patient_index=patient_index, bilateral=pos < 2, steinberg=steinberg, stage=stage,
    )


def case_streams(plan: CasePlan, seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The case's own random stream and its patient's (shared by both hips of a patient)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, plan.index)))
    patient_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, plan.patient_index)))
    return rng, patient_rng


def draw_side(plan: CasePlan, patient_rng: np.random.Generator) -> str:
    """Which hip ("R" or "L"): fixed for a bilateral patient's two cases, drawn for the others
    (the draw is made either way, so the patient stream stays in step)."""
    side_draw = patient_rng.random()
    if plan.bilateral:
        return "R" if plan.index % 3 == 0 else "L"
    return "R" if side_draw < 0.5 else "L"
