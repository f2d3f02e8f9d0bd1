"""patch25d-cnn speed and memory: fit seconds, predict seconds per case, peak memory, Dice.

Runs the method the way the runner does (same internal validation carve, work-folder layout)
on one fold of a phantom and prints fit seconds (wall and process CPU), predict seconds per case,
peak RSS of this process, and mean Dice (vital, necrosis, head) on the fold's validation cases
(avnbench.scoring.dice; the benchmark's full scoring is the runner's).

Run:  .venv/bin/python benchmarks/bench_patch25d.py [--data DIR] [--preset quick] [--fold 0]
      (without --data a 24-case phantom at 40x80x80 is made in a temporary folder)
Goal (2 CPU cores, quick): fit + predict <= 40 s per fold; beat threshold-baseline's Dice.
No GPU here: paper-preset timings are not measured.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from avnbench.dataset import load_dataset
from avnbench.methods import TrainingLog
from avnbench.runner import VALIDATION_FRACTION, job_dir_for, without_labels
from avnbench.scoring import dice
from avnbench.splits import carve_validation, ensure_splits

from _common import dataset_or_phantom, method_bench_parser  # benchmarks/ is on sys.path when a script runs


def bench(data: Path, workdir: Path, preset: str, fold: int, device: str) -> None:
    from avnbench_patch25d.method import Patch25dCNN

    dataset = load_dataset(data)
    folds, _ = ensure_splits(dataset)
    fit_train, fit_val = carve_validation(dataset.subset(folds[fold].train), VALIDATION_FRACTION, seed=fold)
    val_cases = dataset.subset(folds[fold].val)
    print(f"{dataset.name}: fold {fold}, {len(fit_train)} train + {len(fit_val)} internal validation "
          f"cases, {len(val_cases)} predicted; preset {preset}, device {device}")
    job_dir = job_dir_for(workdir, dataset.name, Patch25dCNN.card.name, preset, fold)
    method = Patch25dCNN.from_preset(preset)
    method.log = TrainingLog(job_dir)
    wall, cpu = time.perf_counter(), time.process_time()
    method.fit(fit_train, fit_val, job_dir, device)
    fit_s, fit_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    predictions = list(Patch25dCNN.from_preset(preset).predict(without_labels(val_cases), job_dir, device))
    predict_s = (time.perf_counter() - wall) / len(val_cases)
    predict_cpu = (time.process_time() - cpu) / len(val_cases)
    refs = [c.label_array() for c in val_cases]
    scores = {
        name: np.nanmean([dice(select(p.labels), select(r)) for p, r in zip(predictions, refs)])
        for name, select in (("vital", lambda a: a == 1), ("necrosis", lambda a: a == 2), ("head", lambda a: a > 0))
    }
    params = method.log.workdir / "training_params.json"
    print(f"fit               {fit_s:7.1f} s wall   {fit_cpu:7.1f} s CPU")
    print(f"predict per case  {predict_s:7.2f} s wall   {predict_cpu:7.2f} s CPU")
    print(f"fit + predict     {fit_s + predict_s * len(val_cases):7.1f} s wall for the fold")
    print(f"peak RSS          {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:7.0f} MiB")
    print("dice              " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    print(f"chosen            {params.read_text().strip() if params.exists() else '-'}")


def main() -> None:
    parser = method_bench_parser(__doc__.splitlines()[0])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = dataset_or_phantom(args.data, tmp)
        bench(data, Path(tmp) / "work", args.preset, args.fold, args.device)


if __name__ == "__main__":
    main()
