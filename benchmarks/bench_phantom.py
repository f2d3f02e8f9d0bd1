"""Phantom generation speed and memory: seconds per case (wall and CPU) and peak memory.

Run:  .venv/bin/python benchmarks/bench_phantom.py [--cases N] [--shape Z Y X] [--domain t1]
      (single core: prefix OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1)
Goal: <= 2 s per default-size (80x160x160) case on one core, writing included; half-resolution
(40x80x80) cases well under 0.5 s.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

from avnbench.data.phantom import DEFAULT_SHAPE, synthesize


def bench(n_cases: int, shape: tuple[int, int, int], trace: bool, domain: str = "t1") -> dict[str, float]:
    stamps: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if trace:
            tracemalloc.start()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        synthesize(Path(tmp) / "ds", n_cases=n_cases, seed=0, shape=shape, domain=domain,
                   progress=lambda done, total: stamps.append((time.perf_counter(), time.process_time())))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        peak = tracemalloc.get_traced_memory()[1] if trace else float("nan")
        if trace:
            tracemalloc.stop()
    walls = [b[0] - a[0] for a, b in zip([(wall0, cpu0)] + stamps[:-1], stamps)]
    return {
        "wall_s_per_case": wall / n_cases,
        "cpu_s_per_case": cpu / n_cases,
        "slowest_case_wall_s": max(walls),
        "peak_traced_mib": peak / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--shape", type=int, nargs=3, default=None)
    parser.add_argument("--domain", default="t1", help="acquisition domain (t1, t1fs, t1-1p5t)")
    args = parser.parse_args()
    shapes = [tuple(args.shape)] if args.shape else [DEFAULT_SHAPE, (40, 80, 80)]
    for shape in shapes:
        # timing without tracemalloc (it slows allocation), then memory with it
        speed = bench(args.cases, shape, trace=False, domain=args.domain)
        memory = bench(min(args.cases, 2), shape, trace=True, domain=args.domain)
        print(
            f"{args.domain} shape {'x'.join(map(str, shape))}: {speed['wall_s_per_case']:.2f} s/case wall, "
            f"{speed['cpu_s_per_case']:.2f} s/case CPU, slowest {speed['slowest_case_wall_s']:.2f} s; "
            f"peak traced memory {memory['peak_traced_mib']:.0f} MiB"
        )
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
