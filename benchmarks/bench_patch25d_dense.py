"""patch25d-cnn dense inference against patch-by-patch inference: speed ratio and equality.

Both ways classify the same block of voxels of one phantom volume with the same network: the
per-patch way cuts out every voxel's three 32×32 patches and runs the network on batches of them
(as training does); the dense way evaluates the network fully convolutionally ("à trous") on
whole planes. Prints seconds per voxel of both, their ratio (goal: >= 100×), the largest absolute
probability difference (goal: <= 1e-4), and the dense time for the whole volume.

Run:  .venv/bin/python benchmarks/bench_patch25d_dense.py [--shape 40 80 80] [--block 16 48 48]
      [--model WORKDIR]   (a fitted job folder; default: the quick preset's network, Xavier-initialised)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    import torch

    from avnbench.data.phantom import synthesize
    from avnbench_patch25d import network as net
    from avnbench_patch25d.method import Patch25dCNN

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(40, 80, 80), metavar=("Z", "Y", "X"))
    parser.add_argument("--block", type=int, nargs=3, default=(16, 48, 48), metavar=("Z", "Y", "X"),
                        help="centred block of voxels classified both ways")
    parser.add_argument("--model", type=Path, help="a fitted patch25d-cnn job folder")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.model:
        arch = json.loads((args.model / "model.json").read_text())
        model = net.TriplanarPatchCNN(arch["channels"], arch["hidden_units"])
        model.load_state_dict(torch.load(args.model / "model.pt", weights_only=True))
    else:
        cfg = Patch25dCNN.Config.preset("quick")
        torch.manual_seed(0)
        model = net.TriplanarPatchCNN(cfg.channels, cfg.hidden_units)
    model.eval()

    with tempfile.TemporaryDirectory() as tmp:
        dataset = synthesize(Path(tmp) / "phantom", n_cases=1, seed=0, shape=tuple(args.shape))
        image = dataset.cases[0].image_array()
    padded = net.pad_volume(net.normalise_image(image))
    starts = [(s - b) // 2 for s, b in zip(image.shape, args.block)]
    region = tuple(slice(st, st + b) for st, b in zip(starts, args.block))
    grid = np.stack(np.meshgrid(*[np.arange(r.start, r.stop) for r in region], indexing="ij"), -1)
    coords = torch.from_numpy(grid.reshape(-1, 3))
    n_voxels = len(coords)

    def timed(fn):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        return result, time.perf_counter() - wall, time.process_time() - cpu

    patchwise, patch_s, patch_cpu = timed(lambda: net.predict_patchwise(model, padded, coords, batch_size=1024))
    dense, dense_s, dense_cpu = timed(lambda: net.predict_dense(model, padded, region=region))
    _, whole_s, whole_cpu = timed(lambda: net.predict_dense(model, padded))

    diff = float((dense - patchwise.T.reshape(3, *args.block)).abs().max())
    print(f"network: channels {model.channels}, hidden {model.hidden_units}; torch threads {torch.get_num_threads()}")
    print(f"block {tuple(args.block)} of a {tuple(args.shape)} phantom volume: {n_voxels} voxels")
    print("                 wall s   CPU s   wall µs/voxel")
    print(f"per-patch      {patch_s:8.2f} {patch_cpu:7.2f} {patch_s / n_voxels * 1e6:12.1f}   (block)")
    print(f"dense          {dense_s:8.2f} {dense_cpu:7.2f} {dense_s / n_voxels * 1e6:12.1f}   (same block)")
    print(f"dense          {whole_s:8.2f} {whole_cpu:7.2f} {whole_s / image.size * 1e6:12.1f}   (whole volume, {image.size} voxels)")
    print(f"speed ratio, same block:              {patch_s / dense_s:7.1f}x wall  {patch_cpu / dense_cpu:7.1f}x CPU")
    print(f"speed ratio per voxel, whole volume:  {patch_s / n_voxels / (whole_s / image.size):7.1f}x wall"
          f"  {patch_cpu / n_voxels / (whole_cpu / image.size):7.1f}x CPU")
    print(f"largest |p_dense - p_patch|:        {diff:.2e}")


if __name__ == "__main__":
    main()
