"""The built-in synthetic phantom: cropped axial-oblique 3-D T1 hip MRI with AVN of the femoral head.

Analytic anatomy (clinical.md §7) evaluated directly on the output grid: signed distances in mm
(float32) give both the labels (voxel centre inside) and partial-volume fractions for the image
(a linear ramp one voxel wide), so nothing is supersampled. The image is then degraded like an
acquisition: k-space truncation to the native in-plane resolution, a through-plane slice profile,
a smooth polynomial bias field and Rician noise.

Reference grades are measured on the final label maps with :mod:`avnbench.evaluation.grading`,
never copied from generator parameters; a case whose measured grades fall within the §7.8
ambiguity buffers of a threshold is re-drawn. Each case has its own random stream
(``SeedSequence(seed)`` children keyed by case index), so case i is the same whatever the number
of cases, and the same seed gives byte-identical files.

Modules, in the order a case is built: :mod:`.plan` (grid, stratification, seeds), :mod:`.grid`
(patient-frame coordinates, random fields), :mod:`.anatomy` (hip shape, placement, tissue
distances; with :mod:`.pelvis` and :mod:`.soft_tissue`), :mod:`.lesion` (lesion shape, necrosis
label, grade-target search), :mod:`.acquisition` (intensities, partial volume, acquisition
degradations, in an acquisition domain of :mod:`.domains`) and :mod:`.synth` (one case, and the
dataset on disk).
"""

from avnbench.data.phantom.plan import (
    DEFAULT_SHAPE,
    FIELD_OF_VIEW_MM,
    MAX_SPACING_MM,
    MAX_VOXELS,
    MIN_SHAPE,
    PHANTOM_VERSION,
    CasePlan,
    check_shape,
    dataset_name,
    plan_case,
    spacing_for,
)
from avnbench.data.phantom.synth import (
    GeneratedCase,
    generate_case,
    synthesize,
    write_case,
)

__all__ = [
    "DEFAULT_SHAPE",
    "FIELD_OF_VIEW_MM",
    "MAX_SPACING_MM",
    "MAX_VOXELS",
    "MIN_SHAPE",
    "PHANTOM_VERSION",
    "CasePlan",
    "GeneratedCase",
    "check_shape",
    "dataset_name",
    "generate_case",
    "plan_case",
    "spacing_for",
    "synthesize",
    "write_case",
]
