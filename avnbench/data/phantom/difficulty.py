"""How hard the phantom is, measured on its written cases: the threshold oracle and where the
lesions lie.

- :func:`oracle_dice`: the best necrosis Dice one global intensity threshold can reach inside
  the true head after 1 mm Gaussian smoothing, the threshold chosen per case with the reference
  in hand, either direction. A phantom whose lesions a threshold finds is no benchmark for
  learned methods; one where that holds only for some stages confounds stage with difficulty.
- :func:`lesion_tilt_deg`: the direction of the necrosis centroid from the head centre, in the
  patient frame of the landmarks (clinical.md §7.3 asks for 5–35° anterior, −15…30° lateral).

Both read only images, label maps and ``cases.json`` metadata, so they measure any dataset in
the avnbench layout, not the generator's parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from avnbench.data.dataset import CaseMeta

#: Smoothing before thresholding (Gaussian sigma, mm).
ORACLE_SIGMA_MM = 1.0
#: Tilt windows the direction statistic counts as "where lesions occur" (degrees): §7.3's
#: ranges widened by 5° for the spread of a centroid around the lesion axis.
ANTERIOR_WINDOW_DEG = (0.0, 45.0)
LATERAL_WINDOW_DEG = (-20.0, 35.0)


@dataclass(frozen=True)
class OracleResult:
    """Best single-threshold necrosis Dice in the true head, the threshold (smoothed image
    units) and whether necrosis is the darker side."""

    dice: float
    threshold: float
    necrosis_darker: bool


def oracle_dice(image: np.ndarray, labels: np.ndarray, spacing_zyx, sigma_mm: float = ORACLE_SIGMA_MM,
                n_quantiles: int = 400) -> OracleResult | None:
    """The threshold oracle of a case: smooth ``image`` with a Gaussian of ``sigma_mm`` (mm, per
    axis in voxels from ``spacing_zyx``), then inside the true head (``labels`` > 0) take the
    threshold among ``n_quantiles`` intensity quantiles, and the side (necrosis darker or
    brighter), that maximises the necrosis (label 2) Dice. None without necrosis."""
    labels = np.asarray(labels)
    head = labels > 0
    truth = labels[head] == 2
    if not truth.any():
        return None
    sigma = [sigma_mm / float(s) for s in spacing_zyx]
    smooth = ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), sigma, mode="nearest")
    values = smooth[head]
    order = np.argsort(values, kind="stable")
    sorted_values, sorted_truth = values[order], truth[order]
    # a split at k puts the k darkest head voxels on one side; quantile splits, both sides
    ks = np.unique(np.clip(np.round(np.linspace(0, values.size, n_quantiles + 1)).astype(int),
                           1, values.size - 1))
    true_below = np.concatenate([[0], np.cumsum(sorted_truth)])[ks]
    n_truth = int(truth.sum())
    dark = 2.0 * true_below / (ks + n_truth)
    bright = 2.0 * (n_truth - true_below) / ((values.size - ks) + n_truth)
    i_dark, i_bright = int(np.argmax(dark)), int(np.argmax(bright))
    if dark[i_dark] >= bright[i_bright]:
        k, dice, darker = ks[i_dark], float(dark[i_dark]), True
    else:
        k, dice, darker = ks[i_bright], float(bright[i_bright]), False
    threshold = float(0.5 * (sorted_values[k - 1] + sorted_values[k]))
    return OracleResult(dice=dice, threshold=threshold, necrosis_darker=darker)


def lesion_tilt_deg(labels: np.ndarray, meta: CaseMeta) -> tuple[float, float] | None:
    """(anterior, lateral) tilt (degrees) from superior of the necrosis centroid seen from the
    head centre: the angles of its projections on the sagittal (anterior, superior) and coronal
    (lateral, superior) planes of the landmarks' patient axes. None without necrosis or
    landmarks."""
    idx = np.argwhere(np.asarray(labels) == 2)
    if idx.size == 0 or meta.landmarks is None:
        return None
    centroid = meta.geometry.index_to_physical(idx.mean(axis=0))
    lm = meta.landmarks
    v = np.asarray(centroid, dtype=float) - np.asarray(lm.head_center_mm, dtype=float)
    lateral = float(v @ np.asarray(lm.patient_axes.lateral))
    anterior = float(v @ np.asarray(lm.patient_axes.anterior))
    superior = float(v @ np.asarray(lm.patient_axes.superior))
    return (float(np.degrees(np.arctan2(anterior, superior))),
            float(np.degrees(np.arctan2(lateral, superior))))


def tilt_in_window(tilt: tuple[float, float]) -> bool:
    """Whether an (anterior, lateral) tilt lies in the counted windows (degrees, inclusive)."""
    (a_lo, a_hi), (l_lo, l_hi) = ANTERIOR_WINDOW_DEG, LATERAL_WINDOW_DEG
    return a_lo <= tilt[0] <= a_hi and l_lo <= tilt[1] <= l_hi


COLLAPSED_STAGES = ("IIIA", "IIIB")


@dataclass(frozen=True)
class CaseDifficulty:
    """One case's measured difficulty: its ARCO stage, grades, oracle (None: lesion-free) and
    necrosis tilt (degrees, (anterior, lateral); None: lesion-free)."""

    case_id: str
    arco: str | None
    steinberg: str | None
    jic: str | None
    oracle: OracleResult | None
    tilt: tuple[float, float] | None


def measure_case(image: np.ndarray, labels: np.ndarray, meta: CaseMeta) -> CaseDifficulty:
    """Oracle and tilt of one case (arrays z y x, metadata from ``cases.json``)."""
    return CaseDifficulty(
        case_id=meta.case_id, arco=meta.arco, steinberg=meta.steinberg, jic=meta.jic,
        oracle=oracle_dice(image, labels, meta.geometry.spacing_zyx),
        tilt=lesion_tilt_deg(labels, meta),
    )


def measure_dataset(dataset) -> list[CaseDifficulty]:
    """:func:`measure_case` for every case of an opened :class:`~avnbench.data.dataset.Dataset`."""
    return [measure_case(c.image_array(), c.label_array(), c.meta) for c in dataset.cases]


def dice_stats(values) -> dict[str, float]:
    """mean, min, max and n of a list of Dice values (NaN statistics when empty)."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        return {"mean": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def oracle_by_group(cases: list[CaseDifficulty]) -> dict[str, dict[str, float]]:
    """Oracle Dice statistics per ARCO stage, then for collapsed (IIIA/IIIB) and pre-collapse
    (every other stage) lesion hips."""
    lesion = [c for c in cases if c.oracle is not None]
    groups: dict[str, dict[str, float]] = {}
    for stage in sorted({c.arco for c in lesion}, key=lambda s: (s is None, str(s))):
        groups[f"ARCO {stage}"] = dice_stats(c.oracle.dice for c in lesion if c.arco == stage)
    groups["collapsed"] = dice_stats(c.oracle.dice for c in lesion if c.arco in COLLAPSED_STAGES)
    groups["pre-collapse"] = dice_stats(c.oracle.dice for c in lesion if c.arco not in COLLAPSED_STAGES)
    return groups
