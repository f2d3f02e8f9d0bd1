"""Speed of avnbench's surface metrics against MONAI's on phantom-like masks (same CPU, one run).

For each label (femoral head, necrosis) of an 80×160×160 pair at 1.0×0.44×0.44 mm it times
ASSD + HD95 + NSD@1mm together:

- avnbench: ``avnbench.evaluation.surface.surface_metrics`` (one computation for all three);
- MONAI: ``compute_average_surface_distance(symmetric=True)`` + ``compute_hausdorff_distance(
  percentile=95)`` + ``compute_surface_dice(use_subvoxels=False)``,

and prints both wall-clock times (best of ``--repeat``), the ratio of wall-clock and of CPU
times, and the largest relative difference of the values. Run:
``python benchmarks/bench_surface_metrics.py [--repeat 5] [--torch-threads 1] [--profile]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from avnbench.evaluation.surface import surface_metrics

SHAPE = (80, 160, 160)
SPACING = (1.0, 0.44, 0.44)  # mm, array order (z, y, x)
CENTRE_MM = (40.3, 35.1, 35.3)
HEAD_RADIUS_MM = 23.0


def _grid_mm() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.meshgrid(*(np.arange(n) * s for n, s in zip(SHAPE, SPACING)), indexing="ij")


def phantom_pair(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reference and a perturbed prediction for the femoral head and the necrotic lesion.

    Head: sphere r = 23 mm vs a sphere whose radius wobbles by about ±0.8 mm (low-order
    spherical-harmonic-like bumps) and is shifted by 0.3 mm. Necrosis: the anterosuperior cap of
    the head cut by a plane, vs a cap cut 1 mm deeper and tilted.
    """
    rng = np.random.default_rng(seed)
    z, y, x = _grid_mm()
    dz, dy, dx = z - CENTRE_MM[0], y - CENTRE_MM[1], x - CENTRE_MM[2]
    r = np.sqrt(dz**2 + dy**2 + dx**2)
    head_ref = r <= HEAD_RADIUS_MM

    theta = np.arccos(np.clip(dz / np.maximum(r, 1e-9), -1, 1))
    phi = np.arctan2(dy, dx)
    wobble = sum(
        a * np.cos(k * theta + b) * np.cos(m * phi + c)
        for a, k, m, b, c in zip(
            rng.uniform(0.2, 0.4, 4), (2, 3, 4, 5), (1, 2, 3, 2), *rng.uniform(0, np.pi, (2, 4))
        )
    )
    r_shift = np.sqrt((dz - 0.3) ** 2 + dy**2 + (dx - 0.2) ** 2)
    head_pred = r_shift <= HEAD_RADIUS_MM + wobble

    normal = np.array([0.6, -0.5, 0.62])
    normal /= np.linalg.norm(normal)
    depth = dz * normal[0] + dy * normal[1] + dx * normal[2]
    necrosis_ref = head_ref & (depth >= 0.55 * HEAD_RADIUS_MM)
    tilted = np.array([0.65, -0.45, 0.6])
    tilted /= np.linalg.norm(tilted)
    depth_pred = dz * tilted[0] + dy * tilted[1] + dx * tilted[2]
    necrosis_pred = head_pred & (depth_pred >= 0.55 * HEAD_RADIUS_MM - 1.0)
    return {"head": (head_pred, head_ref), "necrosis": (necrosis_pred, necrosis_ref)}


def monai_metrics(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """The same three metrics with MONAI 1.6 (inputs as (batch, channel, z, y, x) tensors)."""
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    p = torch.from_numpy(pred)[None, None]
    g = torch.from_numpy(ref)[None, None]
    assd = compute_average_surface_distance(p, g, include_background=True, symmetric=True,
                                            spacing=SPACING)
    hd95 = compute_hausdorff_distance(p, g, include_background=True, percentile=95,
                                      spacing=SPACING)
    nsd = compute_surface_dice(p, g, class_thresholds=[1.0], include_background=True,
                               spacing=SPACING, use_subvoxels=False)
    return {"assd": float(assd), "hd95": float(hd95), "nsd": float(nsd)}


def best_time(fn, repeat: int) -> tuple[float, float, dict[str, float]]:
    """Best wall-clock and best CPU (process) time in s over ``repeat`` calls, and the result.

    The CPU time sums all threads, so it is the fairer figure on a machine shared with other work.
    """
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions (best is kept)")
    parser.add_argument("--profile", action="store_true", help="cProfile avnbench's computation")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch threads for MONAI (default: torch's own choice); 1 avoids "
                        "thread contention on a busy machine, the conservative comparison")
    args = parser.parse_args()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)

    import warnings

    warnings.filterwarnings("ignore")
    pairs = phantom_pair()
    import torch

    print(f"shape {SHAPE}, spacing {SPACING} mm (z, y, x), best of {args.repeat}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'label':<9} {'avnbench s':>11} {'MONAI s':>9} {'ratio':>7} {'CPU ratio':>9} "
          f"{'max rel diff':>13}  values")
    for label, (pred, ref) in pairs.items():
        monai_metrics(pred, ref)  # warm-up: imports and first-call overheads
        surface_metrics(pred, ref, SPACING)
        wall_ours, cpu_ours, ours = best_time(lambda: surface_metrics(pred, ref, SPACING), args.repeat)
        wall_monai, cpu_monai, theirs = best_time(lambda: monai_metrics(pred, ref), args.repeat)
        rel = max(abs(ours[k] - theirs[k]) / max(abs(theirs[k]), 1e-12) for k in ours)
        values = ", ".join(f"{k}={ours[k]:.5f}" for k in ours)
        print(f"{label:<9} {wall_ours:11.4f} {wall_monai:9.4f} {wall_monai / wall_ours:7.1f} "
              f"{cpu_monai / max(cpu_ours, 1e-9):9.1f} {rel:13.2e}  {values}")
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            surface_metrics(pred, ref, SPACING)
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(12)


if __name__ == "__main__":
    main()
