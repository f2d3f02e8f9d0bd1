"""The one checked image reader/writer against plain SimpleITK: what the integrity checks cost.

    .venv/bin/python benchmarks/bench_imageio.py [--repeat 7]

Synthesises one phantom case per size (40×80×80 and the default 80×160×160) into a temporary
folder and prints the best-of-N seconds of `read_image` vs `sitk.ReadImage` and of
`write_image` (temporary name, verify, rename) vs `sitk.WriteImage`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    import SimpleITK as sitk

    from avnbench.data.imageio import read_image, write_image
    from avnbench.data.phantom import synthesize

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'shape':>12} {'read_image':>11} {'sitk.Read':>10} {'write_image':>12} {'sitk.Write':>11}  (ms, best of {args.repeat})")
        for shape in ((40, 80, 80), (80, 160, 160)):
            out = Path(tmp) / "x".join(map(str, shape))
            synthesize(out, n_cases=1, seed=0, shape=shape)
            path = next((out / "imagesTr").glob("*.nii.gz"))
            image = sitk.ReadImage(str(path))
            ours = best_of(args.repeat, lambda: read_image(path))
            plain = best_of(args.repeat, lambda: sitk.ReadImage(str(path)))
            w_ours = best_of(args.repeat, lambda: write_image(image, out / "ours.nii.gz", compression_level=1))
            w_plain = best_of(args.repeat, lambda: sitk.WriteImage(image, str(out / "plain.nii.gz"), True, 1))
            print(f"{'x'.join(map(str, shape)):>12} {ours * 1e3:11.1f} {plain * 1e3:10.1f} {w_ours * 1e3:12.1f} {w_plain * 1e3:11.1f}")


if __name__ == "__main__":
    main()
