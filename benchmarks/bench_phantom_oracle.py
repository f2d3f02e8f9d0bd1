"""The phantom's difficulty: threshold-oracle necrosis Dice per ARCO stage, where lesions lie,
and the grade mix.

Run:  .venv/bin/python benchmarks/bench_phantom_oracle.py [--cases 40] [--shape Z Y X] [--seed 0]
      .venv/bin/python benchmarks/bench_phantom_oracle.py --data DATASET_DIR   (measure a dataset)
Goal (issue 16): oracle mean <= 0.80 over collapsed (ARCO IIIA/IIIB) hips and within 0.2 of the
pre-collapse mean; lesion centroids tilted 0…45° anteriorly and −20…35° medio-laterally; every
JIC type present; Steinberg A/B/C each >= 25 % of lesion hips.

The oracle (avnbench.data.phantom.difficulty.oracle_dice): the image smoothed with a 1 mm
Gaussian (sigma in mm, per-axis voxels); inside the true head (labels > 0) the single threshold
over 400 intensity quantiles, either side, that maximises that case's necrosis Dice.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

from avnbench.data.dataset import load_dataset
from avnbench.data.phantom import DEFAULT_SHAPE, synthesize
from avnbench.data.phantom.difficulty import (
    ANTERIOR_WINDOW_DEG,
    LATERAL_WINDOW_DEG,
    measure_dataset,
    oracle_by_group,
    tilt_in_window,
)


def _mix(values, order) -> str:
    counts = Counter(values)
    total = sum(counts.values())
    return ", ".join(f"{k} {counts[k]} ({100 * counts[k] / total:.0f} %)" for k in order if counts[k]) or "-"


def report(dataset) -> None:
    cases = measure_dataset(dataset)
    lesion = [c for c in cases if c.oracle is not None]
    print(f"{dataset.name}: {len(cases)} cases, {len(lesion)} with a lesion, "
          f"lesion-free {len(cases) - len(lesion)} ({100 * (len(cases) - len(lesion)) / len(cases):.0f} %)")
    print("oracle necrosis Dice (1 mm smoothing, one threshold in the true head, best per case):")
    for group, s in oracle_by_group(cases).items():
        print(f"  {group:13s} mean {s['mean']:.3f}  min {s['min']:.3f}  max {s['max']:.3f}  n {s['n']}")
    tilts = [c.tilt for c in lesion if c.tilt is not None]
    inside = sum(tilt_in_window(t) for t in tilts)
    ant, lat = [t[0] for t in tilts], [t[1] for t in tilts]
    print(f"lesion centroids tilted {ANTERIOR_WINDOW_DEG[0]:g}…{ANTERIOR_WINDOW_DEG[1]:g}° anteriorly and "
          f"{LATERAL_WINDOW_DEG[0]:g}…{LATERAL_WINDOW_DEG[1]:g}° medio-laterally: {inside}/{len(tilts)} "
          f"({100 * inside / max(len(tilts), 1):.0f} %); anterior {min(ant):.1f}…{max(ant):.1f}°, "
          f"medio-lateral {min(lat):.1f}…{max(lat):.1f}° (lateral positive)")
    print(f"JIC (lesion hips): {_mix([c.jic for c in lesion], ['A', 'B', 'C1', 'C2', None])}")
    print(f"Steinberg (lesion hips): {_mix([c.steinberg for c in lesion], ['A', 'B', 'C'])}")
    print(f"ARCO (lesion hips): {_mix([c.arco for c in lesion], ['I', 'II', 'IIIA', 'IIIB', 'IV'])}")
    ambiguous = sum(c.meta.measurements.get("ambiguity") is not None for c in dataset.cases)
    print(f"kept near a grade threshold (every re-draw failed): {ambiguous}")


def medial_reach(n_cases: int, seed: int, shape) -> None:
    """Can JIC type A occur inside the clinical ranges? For every lesion hip of the plan, the
    most medial lesion they allow (the smallest Steinberg-A size, tilted the full 15° medially,
    the narrowest medio-lateral shape, at 10/20/30° anterior tilt and two depths) is labelled
    and graded; prints how far its x_lat stays lateral of x1 (type A needs x_lat <= x1 - 1 mm)."""
    import dataclasses

    import numpy as np

    from avnbench.data.phantom.anatomy import draw_anatomy, place_case
    from avnbench.data.phantom.lesion import (
        LATERAL_TILT_DEG, MEDIOLATERAL_SEMI, draw_lesion_shape, draw_roughening, label_map, make_lesion,
    )
    from avnbench.data.phantom.plan import STEINBERG_PERCENT_RANGE, case_streams, draw_side, plan_case
    from avnbench.data.phantom.synth import case_meta
    from avnbench.evaluation import grading

    percent = STEINBERG_PERCENT_RANGE["A"][0]
    gaps = []
    for i in range(n_cases):
        plan = plan_case(i)
        if plan.steinberg is None:
            continue
        rng, patient_rng = case_streams(plan, seed)
        anatomy = draw_anatomy(rng, patient_rng, draw_side(plan, patient_rng))
        frame = place_case(anatomy, shape, rng)
        noise = draw_roughening(rng, frame.head_grid)
        meta = case_meta(plan, frame)
        x1 = grading.jic_boundaries_mm(meta)[1]
        base = draw_lesion_shape(rng, dataclasses.replace(plan, steinberg="A", stage="I"), percent)
        best = np.inf
        for beta_anterior in (10.0, 20.0, 30.0):
            for depth in (0.85, 1.0):
                shape_ = dataclasses.replace(
                    base, beta_lateral=LATERAL_TILT_DEG["A"][0], beta_anterior=beta_anterior, depth=depth,
                    semi=np.array([0.65, MEDIOLATERAL_SEMI[0][0], 1.15]))
                m = grading.grade_labels(label_map(frame, make_lesion(anatomy.radius, shape_), noise, percent), meta)
                if m["jic_x_lat_mm"] is not None:
                    best = min(best, m["jic_x_lat_mm"])
        gaps.append(best - x1)
    gaps = np.asarray(gaps)
    print(f"most medial in-range lesion ({percent:g} % of the head, {LATERAL_TILT_DEG['A'][0]:g}° medial): "
          f"x_lat - x1 = {gaps.min():.1f}…{gaps.max():.1f} mm (median {np.median(gaps):.1f}) over {gaps.size} "
          f"hips; JIC A (x_lat <= x1 - 1 mm) possible in {(gaps <= -1.0).sum()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--shape", type=int, nargs=3, default=list(DEFAULT_SHAPE))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, help="measure this dataset instead of synthesising one")
    parser.add_argument("--medial-reach", action="store_true",
                        help="only measure whether JIC type A can occur within the clinical lesion directions")
    args = parser.parse_args()
    if args.medial_reach:
        medial_reach(args.cases, args.seed, tuple(args.shape))
        return
    if args.data is not None:
        report(load_dataset(args.data))
        return
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        dataset = synthesize(Path(tmp) / "ds", n_cases=args.cases, seed=args.seed, shape=tuple(args.shape))
        print(f"synthesised in {time.perf_counter() - t0:.0f} s")
        report(dataset)


if __name__ == "__main__":
    main()
