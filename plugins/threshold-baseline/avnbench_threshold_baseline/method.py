"""Classical intensity + morphology segmentation of the femoral head and its necrotic lesion.

No learning beyond a handful of numbers estimated on the training cases (two Otsu-style
thresholds and a minimum lesion size). The steps, per case:

1. normalise intensities (divide by the 99th percentile) and smooth (Gaussian, ``sigma_mm``);
2. head candidates: bright voxels (> ``head_threshold``), opened to cut thin bridges to the
   acetabulum and neck, the component nearest the field-of-view centre, holes filled;
3. the femoral head: that component inside the sphere found by its distance transform (the head
   is the thickest part of the proximal femur: the maximum of the distance transform is the head
   centre, its value the radius);
4. necrosis: dark voxels (< ``necrosis_threshold``) inside the eroded head on the side opposite the
   neck, components smaller than ``min_lesion_mm3`` removed; then everything radially outside the
   dark reactive band, seen from the head centre, is necrotic too (the subchondral segment the
   band encloses), and the result is opened.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from pydantic import Field

from avnbench.api import Case, JobResources, Method, MethodCard, MethodConfig, PredictCase, SegmentationPrediction
from avnbench.training import require_fitted

PARAMS_FILE = "threshold_baseline.json"


class ThresholdBaselineConfig(MethodConfig):
    """Smoothing and morphology sizes in mm; the thresholds themselves are learned."""

    PRESETS = {
        "smoke": {"max_training_cases": 4},
        "quick": {},
        "paper": {},
    }

    sigma_mm: float = Field(default=0.6, gt=0, description="Gaussian smoothing sigma (mm)")
    opening_mm: float = Field(default=1.5, ge=0, description="radius of the opening that detaches the head (mm)")
    head_margin_mm: float = Field(default=1.0, description="added to the distance-transform radius (mm)")
    surface_erosion_mm: float = Field(default=1.5, ge=0, description="subchondral plate excluded from lesion search (mm)")
    angular_bin_deg: float = Field(default=4.0, gt=0, description="angular bin of the radial lesion fill (degrees)")
    max_training_cases: int = Field(default=1000, ge=1, description="training cases used to learn thresholds")


def _ball(radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    r = [max(int(np.floor(radius_mm / s)), 0) for s in spacing]
    grids = np.ogrid[tuple(slice(-k, k + 1) for k in r)]
    dist2 = sum((g * s) ** 2 for g, s in zip(grids, spacing))
    return dist2 <= radius_mm**2 + 1e-9


def _otsu_between(a: np.ndarray, b: np.ndarray) -> float:
    """Threshold separating two labelled samples with the least misclassification (Otsu-style)."""
    values = np.sort(np.concatenate([a, b]))
    candidates = np.quantile(values, np.linspace(0.01, 0.99, 199))
    low_is_a = np.median(a) < np.median(b)
    best, best_err = candidates[0], np.inf
    for t in candidates:
        if low_is_a:
            err = np.mean(a > t) + np.mean(b <= t)
        else:
            err = np.mean(a <= t) + np.mean(b > t)
        if err < best_err:
            best, best_err = t, err
    return float(best)


def _head_shape(head: np.ndarray, case: Case) -> tuple[float, float]:
    """Radius (mm) of a reference head and where its neck cut lies (fraction of the radius).

    The centre and radius come from the case's landmarks (given, or estimated by a sphere fit at
    import). The neck lies opposite the head's centroid offset: a truncated sphere's centroid sits
    away from its cut.
    """
    spacing = np.asarray(case.spacing, float)
    pts = np.argwhere(head) * spacing
    if case.meta.landmarks is not None:
        centre = case.meta.geometry.physical_to_index(np.asarray(case.meta.landmarks.head_center_mm)) * spacing
        radius = float(case.meta.landmarks.head_radius_mm)
    else:  # no landmarks: the farthest head voxel from the centroid bounds the radius
        centre = pts.mean(axis=0)
        radius = float(np.linalg.norm(pts - centre, axis=1).max()) / 1.2
    away = pts.mean(axis=0) - centre
    neck = -away / (np.linalg.norm(away) + 1e-9)
    cut = float(((pts - centre) @ neck).max() / radius)
    return radius, min(max(cut, 0.3), 1.0)


def _normalise(image: np.ndarray, spacing: Sequence[float], sigma_mm: float) -> np.ndarray:
    from scipy import ndimage as ndi

    scale = float(np.percentile(image, 99)) or 1.0
    return ndi.gaussian_filter(image / scale, sigma=[sigma_mm / s for s in spacing]).astype(np.float32)


class ThresholdBaseline(Method):
    card = MethodCard(
        name="threshold-baseline",
        task="segmentation",
        description=(
            "Classical baseline without learning: smoothing, thresholds estimated on the training "
            "cases (Otsu-style), connected components, hole filling, opening and a radial fill of "
            "the subchondral segment outside the dark reactive band. The floor of every leaderboard."
        ),
        citation=(
            "Otsu N. A threshold selection method from gray-level histograms. IEEE Trans Syst Man "
            "Cybern 1979;9(1):62-66. Serra J. Image Analysis and Mathematical Morphology. 1982."
        ),
        reference="https://doi.org/10.1109/TSMC.1979.4310076",
    )
    Config = ThresholdBaselineConfig

    @classmethod
    def resources(cls, preset: str, device: str, config: MethodConfig | None = None) -> JobResources:
        """One core and no GPU whatever the device: numpy and scipy only."""
        return JobResources(num_cpus=1, num_gpus=0, memory_mb=1024)

    def fit(self, train_cases: Sequence[Case], val_cases: Sequence[Case], workdir: Path, device: str) -> None:
        """Estimate the head and necrosis thresholds and the minimum lesion size (train + val)."""
        from scipy import ndimage as ndi

        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        cases = list(train_cases) + list(val_cases)
        cases = cases[: cfg.max_training_cases]
        head_in, head_out, vital, dark, lesion_mm3, radii, cuts = [], [], [], [], [], [], []
        for case in cases:
            image = _normalise(case.image_array(), case.spacing, cfg.sigma_mm)
            labels = case.label_array()
            head = labels > 0
            radius, cut = _head_shape(head, case)
            radii.append(radius)
            cuts.append(cut)
            ring = ndi.binary_dilation(head, _ball(4.0, case.spacing)) & ~head
            head_in.append(rng.choice(image[head], size=min(5000, int(head.sum()))))
            head_out.append(rng.choice(image[ring], size=min(5000, int(ring.sum()))))
            inner = ndi.binary_erosion(head, _ball(cfg.surface_erosion_mm, case.spacing))
            nec = (labels == 2) & inner
            vit = (labels == 1) & inner
            if nec.any():
                # the reactive band: necrosis voxels next to vital bone
                band = nec & ndi.binary_dilation(vit, _ball(1.5, case.spacing))
                if band.any():
                    dark.append(rng.choice(image[band], size=min(3000, int(band.sum()))))
                lesion_mm3.append(float((labels == 2).sum() * np.prod(case.spacing)))
            if vit.any():
                vital.append(rng.choice(image[vit], size=min(5000, int(vit.sum()))))
        params = {
            "head_threshold": _otsu_between(np.concatenate(head_out), np.concatenate(head_in)),
            "necrosis_threshold": (
                _otsu_between(np.concatenate(dark), np.concatenate(vital)) if dark else 0.0
            ),
            "min_lesion_mm3": float(0.25 * np.min(lesion_mm3)) if lesion_mm3 else 50.0,
            "head_radius_mm": [float(np.mean(radii)), float(np.std(radii) + 0.5)],
            "neck_cut_fraction": float(np.mean(cuts)),
            "n_training_cases": len(cases),
        }
        Path(workdir).mkdir(parents=True, exist_ok=True)
        (Path(workdir) / PARAMS_FILE).write_text(json.dumps(params, indent=2))
        if self.log is not None:
            for k, v in params.items():
                self.log.param(k, v)

    def predict(self, cases: Sequence[PredictCase], workdir: Path, device: str) -> Iterator[SegmentationPrediction]:
        """Segment each case with the learned thresholds; the head is found in the image itself
        (no landmarks are needed at prediction time)."""
        (params_file,) = require_fitted(self.card.name, Path(workdir), PARAMS_FILE)
        params = json.loads(params_file.read_text())
        for case in cases:
            labels = segment(case.image_array(), case.spacing, params, self.config)
            yield SegmentationPrediction(case_id=case.case_id, labels=labels)


def find_head_sphere(smooth: np.ndarray, spacing: np.ndarray, radius_range_mm: tuple[float, float]) -> tuple[np.ndarray, float]:
    """Hough transform for a bright sphere: centre (voxel index, z y x) and radius (mm).

    Every strong edge voxel votes, along its intensity gradient (which points into the brighter
    head), for centres at each candidate radius; the best-supported (centre, radius) wins.
    """
    from scipy import ndimage as ndi

    grads = np.stack(np.gradient(smooth, *spacing))
    magnitude = np.sqrt((grads**2).sum(axis=0))
    edges = magnitude > np.percentile(magnitude, 95)
    points = np.argwhere(edges)
    unit = grads[:, edges].T / (magnitude[edges][:, None] + 1e-9)
    shape = np.asarray(smooth.shape)
    radii = np.arange(radius_range_mm[0], radius_range_mm[1] + 1e-6, 1.0)
    best = (-1.0, np.zeros(3), radii[0])
    for radius in radii:
        votes = np.zeros(smooth.shape, np.float32)
        centres = np.round(points + unit * radius / spacing).astype(int)
        inside = np.all((centres >= 0) & (centres < shape), axis=1)
        np.add.at(votes, tuple(centres[inside].T), 1.0)
        votes = ndi.gaussian_filter(votes, sigma=1.5 / spacing)
        # normalise by the sphere's surface so large radii are not favoured
        votes /= radius**2
        idx = np.unravel_index(np.argmax(votes), votes.shape)
        if votes[idx] > best[0]:
            best = (float(votes[idx]), np.asarray(idx, float), float(radius))
    return best[1], best[2]


def segment(image: np.ndarray, spacing: Sequence[float], params: dict, cfg: ThresholdBaselineConfig) -> np.ndarray:
    """Label map (0 background, 1 vital, 2 necrosis) of one image (z, y, x); spacing in mm."""
    from scipy import ndimage as ndi

    spacing = np.asarray(spacing, dtype=float)
    smooth = _normalise(image, spacing, cfg.sigma_mm)
    labels = np.zeros(image.shape, np.uint8)
    r_mean, r_sd = params["head_radius_mm"]
    centre, radius = find_head_sphere(smooth, spacing, (r_mean - 3 * r_sd - 1, r_mean + 3 * r_sd + 1))
    grid = np.indices(image.shape, dtype=np.float32)
    offsets = [(grid[a] - centre[a]) * spacing[a] for a in range(3)]
    r = np.sqrt(sum(o * o for o in offsets))
    ball = r <= radius + cfg.head_margin_mm
    bright = smooth > params["head_threshold"]

    # the neck: where the shell just outside the head is bright (elsewhere the dark joint lies there)
    shell = (r > radius + 1.0) & (r <= radius + 3.0) & bright
    if shell.any():
        neck = np.array([o[shell].mean() for o in offsets])
        neck /= np.linalg.norm(neck) + 1e-9
    else:
        neck = np.zeros(3)
    unit = [o / np.maximum(r, 1e-6) for o in offsets]
    cos_to_neck = sum(u * n for u, n in zip(unit, neck))
    head = ball & (r * cos_to_neck <= params["neck_cut_fraction"] * radius)
    labels[head] = 1

    inner = ndi.binary_erosion(head, _ball(cfg.surface_erosion_mm, spacing))
    dark = (smooth < params["necrosis_threshold"]) & inner & (cos_to_neck < -0.2)
    dark = ndi.binary_opening(dark, _ball(0.5 * min(1.0, max(spacing)), spacing))
    dark_cc, n_dark = ndi.label(dark)
    if n_dark == 0:
        return labels
    sizes = ndi.sum(dark, dark_cc, index=np.arange(1, n_dark + 1)) * np.prod(spacing)
    keep = np.flatnonzero(sizes >= params["min_lesion_mm3"]) + 1
    if keep.size == 0:
        return labels
    band = np.isin(dark_cc, keep)

    # radial fill: a head voxel is necrotic if, seen from the centre, it lies beyond the band
    theta = np.arccos(np.clip(unit[0], -1, 1))
    phi = np.arctan2(unit[1], unit[2])
    step = np.deg2rad(cfg.angular_bin_deg)
    n_phi = int(np.ceil(2 * np.pi / step))
    bins = np.floor(theta / step).astype(np.int64) * n_phi + np.floor((phi + np.pi) / step).astype(np.int64)
    min_r = np.full(int(bins.max()) + 1, np.inf)
    np.minimum.at(min_r, bins[band], r[band])
    necrosis = head & (r >= min_r[bins])
    necrosis = ndi.binary_opening(necrosis, _ball(1.0, spacing)) & head
    necrosis |= band
    labels[necrosis] = 2
    return labels
