"""Seconds per training step of the CPU presets' networks at candidate patch shapes.

Run:  .venv/bin/python benchmarks/bench_patch_shapes.py [--threads 1] [--steps 6] [--channels-last] [--bfloat16] [SPEC ...]

A SPEC is ``dynunet:Z,Y,X[:BATCH]`` (the ``dynunet`` plugin's network at its ``quick`` widths
8-96 and the phantom's topology; batch 1 unless given) or ``nnunet3d:BASE:Z,Y,X:BATCH`` (nnU-Net's PlainConvUNet, 5 stages, as
planned for the phantom's 3d_fullres with ``BASE`` first-stage features, capped at 10×BASE) or
``patch25d:BATCH`` (``patch25d-cnn``'s triplanar 32×32 patch CNN at its ``quick`` widths, BATCH
voxels' patch triplets per step) or ``nnunet2d:BASE:Y,X:BATCH`` (nnU-Net's 2d PlainConvUNet, 5 stages,
``BASE`` first-stage features capped at 16×BASE, as planned for the phantom's 2d).
Each is timed over ``--steps`` forward + backward + SGD steps on random input after two warm-up
steps, with ``--threads`` torch threads. Without SPECs it times the shapes the presets chose
between. Why this exists: CPU convolution speed per voxel depends strongly on the shape and the
batch. PyTorch sends a 3×3×3 convolution of a batch of one to oneDNN only when
channels × depth × height of its input exceed 20480 (``use_mkldnn`` in ATen's Convolution.cpp),
else to its slow reference kernel (``slow_conv3d``): on the project's build machine a 32×64×64
DynUNet patch took 0.92 s per step alone and 0.39 s as a batch of two.
"""

from __future__ import annotations

import argparse
import time

DEFAULT = ["dynunet:32,64,64", "dynunet:32,64,64:2", "dynunet:40,80,80", "dynunet:24,64,64", "dynunet:32,48,48",
           "dynunet:32,48,48:2", "nnunet3d:8:24,48,48:2", "nnunet3d:8:32,48,48:2", "nnunet3d:8:32,48,48:1",
           "nnunet3d:8:40,80,80:1", "nnunet3d:8:40,80,80:2", "nnunet3d:8:32,64,64:1"]


def dynunet(patch: list[int], batch: int = 1):
    import torch
    from monai.networks.nets import DynUNet

    net = DynUNet(3, 1, 3, [[1, 3, 3]] + [[3, 3, 3]] * 4, [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
                  [[1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]], filters=[8, 16, 32, 64, 96],
                  norm_name=("INSTANCE", {"affine": True}), deep_supervision=True, deep_supr_num=2)
    return net, torch.randn(batch, 1, *patch)


def nnunet3d(base: int, patch: list[int], batch: int):
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    stages = 5
    features = [min(base * 2**i, 10 * base) for i in range(stages)]
    net = PlainConvUNet(1, stages, features, torch.nn.Conv3d, [[1, 3, 3]] + [[3, 3, 3]] * (stages - 1),
                        [[1, 1, 1], [1, 2, 2]] + [[2, 2, 2]] * (stages - 2), [2] * stages, 3, [2] * (stages - 1),
                        True, torch.nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None,
                        torch.nn.LeakyReLU, {"inplace": True}, deep_supervision=True)
    return net, torch.randn(batch, 1, *patch)


def nnunet2d(base: int, patch: list[int], batch: int):
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    stages = 5
    features = [min(base * 2**i, 16 * base) for i in range(stages)]
    net = PlainConvUNet(1, stages, features, torch.nn.Conv2d, [[3, 3]] * stages, [[1, 1]] + [[2, 2]] * (stages - 1),
                        [2] * stages, 3, [2] * (stages - 1), True, torch.nn.InstanceNorm2d,
                        {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU, {"inplace": True},
                        deep_supervision=True)
    return net, torch.randn(batch, 1, *patch)


def patch25d(batch: int):
    import torch
    from avnbench_patch25d.network import TriplanarPatchCNN

    return TriplanarPatchCNN((8, 16, 16), 32), torch.randn(batch, 3, 32, 32)


def seconds_per_step(net, x, steps: int, bfloat16: bool = False) -> float:
    """Seconds per SGD step; with ``bfloat16`` the forward pass runs under CPU bfloat16 autocast
    (what ``cpu_bfloat16`` does in ``dynunet`` and nnU-Net's 3d CPU schedules)."""
    import torch

    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99)
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            out = net(x)
        loss = sum(o.float().mean() for o in (out if isinstance(out, (list, tuple)) else [out]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as one job per core)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per shape (default 6)")
    parser.add_argument("--channels-last", action="store_true",
                        help="also time each spec with network and input in channels-last memory order "
                        "(avnbench.training.channels_last, what dynunet's channels_last field does)")
    parser.add_argument("--bfloat16", action="store_true",
                        help="time the forward passes under CPU bfloat16 autocast (the methods' cpu_bfloat16 "
                        "field; fast only on a CPU with AVX512-BF16 or AMX)")
    parser.add_argument("specs", nargs="*", default=DEFAULT)
    args = parser.parse_args()
    import torch

    from avnbench.training import channels_last

    torch.set_num_threads(args.threads)
    extra = f" {'channels-last':>13}" if args.channels_last else ""
    precision = "bfloat16 autocast" if args.bfloat16 else "float32"
    print(f"{'network and patch':<28} {'voxels/step':>12} {'s/step':>8} {'µs/voxel':>9}{extra}   "
          f"(torch threads {args.threads}, {precision})")
    for spec in args.specs:
        kind, *parts = spec.split(":")
        if kind == "dynunet":
            patch, batch = [int(v) for v in parts[0].split(",")], int(parts[1]) if len(parts) > 1 else 1
            net, x = dynunet(patch, batch)
        elif kind == "nnunet3d":
            patch, batch = [int(v) for v in parts[1].split(",")], int(parts[2])
            net, x = nnunet3d(int(parts[0]), patch, batch)
        elif kind == "nnunet2d":
            yx, batch = [int(v) for v in parts[1].split(",")], int(parts[2])
            patch = [1, *yx]
            net, x = nnunet2d(int(parts[0]), yx, batch)
        elif kind == "patch25d":
            batch, patch = int(parts[0]), [3, 32, 32]
            net, x = patch25d(batch)
        else:
            raise SystemExit(f"unknown spec {spec!r}: use dynunet:Z,Y,X[:BATCH], nnunet3d:BASE:Z,Y,X:BATCH, "
                             "nnunet2d:BASE:Y,X:BATCH or patch25d:BATCH")
        voxels = batch * patch[0] * patch[1] * patch[2]
        s = seconds_per_step(net, x, args.steps, args.bfloat16)
        if args.channels_last:
            extra = f" {seconds_per_step(channels_last(net), channels_last(x), args.steps, args.bfloat16):>13.3f}"
        print(f"{spec:<28} {voxels:>12,} {s:>8.3f} {s / voxels * 1e6:>9.2f}{extra}", flush=True)


if __name__ == "__main__":
    main()
