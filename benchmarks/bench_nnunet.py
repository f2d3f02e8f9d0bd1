"""nnU-Net plugin speed and memory: fit seconds, predict seconds per case, peak memory, Dice.

Runs nnunet-2d, nnunet-3d, then nnunet-ensemble (which reuses the two members) on one fold of a
phantom, the way the runner calls them (same work-folder layout, internal validation carve and
shared folder), and prints per method: fit s (the first one includes nnU-Net's once-per-dataset
fingerprint/planning/preprocessing, reported separately), predict s per case, peak RSS of this
process and of the nnU-Net child processes, and mean Dice (vital, necrosis) on the fold's
validation cases (scored with avnbench.scoring.dice; the benchmark's full scoring is the runner's).

Run:  .venv/bin/python benchmarks/bench_nnunet.py [--data DIR] [--preset quick] [--fold 0]
      (without --data a 24-case phantom at 40x80x80 is made in a temporary folder)
Measured figures and the machine they were taken on: benchmarks/README.md. No GPU here: the
paper preset's timings were not measured.
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from avnbench.dataset import load_dataset
from avnbench.methods import JobContext, TrainingLog
from avnbench.runner import VALIDATION_FRACTION, job_dir_for, shared_dir_for, without_labels
from avnbench.scoring import dice
from avnbench.splits import carve_validation, ensure_splits

from _common import dataset_or_phantom, method_bench_parser  # benchmarks/ is on sys.path when a script runs


def bench(data: Path, workdir: Path, preset: str, fold: int, device: str) -> None:
    from avnbench_nnunet.method import NnunetEnsemble, NnunetThreeD, NnunetTwoD

    dataset = load_dataset(data)
    folds, meta = ensure_splits(dataset)
    train_all = dataset.subset(folds[fold].train)
    val_cases = dataset.subset(folds[fold].val)
    fit_train, fit_val = carve_validation(train_all, VALIDATION_FRACTION, seed=fold)
    context = JobContext(
        dataset_dir=dataset.root, dataset_name=dataset.name, dataset_fingerprint=dataset.fingerprint,
        splits_file=dataset.splits_path, split_hash=meta.sha256, fold=fold, preset=preset, seed=0,
        shared_dir=shared_dir_for(workdir, dataset.name).resolve(),
    )
    print(f"{dataset.name}: fold {fold}, {len(fit_train)} train + {len(fit_val)} internal validation "
          f"cases, {len(val_cases)} predicted; preset {preset}, device {device}")
    for cls in (NnunetTwoD, NnunetThreeD, NnunetEnsemble):
        method = cls.from_preset(preset)
        job_dir = job_dir_for(workdir, dataset.name, cls.card.name, preset, fold)
        method.context, method.log = context, TrainingLog(job_dir)
        t0 = time.perf_counter()
        method.fit(fit_train, fit_val, job_dir, device)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        predictions = list(cls.from_preset(preset).predict(without_labels(val_cases), job_dir, device))
        predict_s = (time.perf_counter() - t0) / len(val_cases)
        scores = {
            label: np.nanmean([dice(p.labels == value, c.label_array() == value)
                               for p, c in zip(predictions, val_cases)])
            for label, value in (("vital", 1), ("necrosis", 2))
        }
        members = json.loads((job_dir / "nnunet_models.json").read_text())["members"]
        reused = [m["configuration"] for m in members if not m["trained_now"]]
        self_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        child_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"{cls.card.name:16s} fit {fit_s:6.1f} s  predict {predict_s:5.2f} s/case  "
              f"fit+predict {fit_s + predict_s * len(val_cases):6.1f} s  "
              f"Dice vital {scores['vital']:.3f} necrosis {scores['necrosis']:.3f}  "
              f"peak RSS self {self_mib:.0f} MiB, children {child_mib:.0f} MiB"
              + (f"  (reused: {', '.join(reused)})" if reused else ""))
    logs = next(Path(context.shared_dir).glob("nnunet/*/logs"))
    pre = logs / "preprocess.log"
    if pre.exists():
        spec = logs / "preprocess.spec.json"
        print(f"nnU-Net fingerprint+planning+preprocessing (once per dataset, inside the first fit): "
              f"{pre.stat().st_mtime - spec.stat().st_mtime:.1f} s")


def main() -> None:
    parser = method_bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="work folder (default: temporary)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = dataset_or_phantom(args.data, tmp)
        bench(data, args.workdir or Path(tmp) / "work", args.preset, args.fold, args.device)


if __name__ == "__main__":
    main()
