"""dynunet speed and memory: fit seconds, predict seconds per case, peak memory, Dice.

Runs the method the way the runner does (same internal validation carve, work-folder layout)
on one fold of a phantom and prints fit seconds (wall and process CPU), predict seconds per case,
peak RSS of this process, the mean Dice (vital, necrosis, head) on the fold's validation cases
(avnbench.evaluation.scoring.dice; the benchmark's full scoring is the runner's), the epoch the checkpoint
was selected at, and with --baseline the same Dice for threshold-baseline on the same cases.

Run:  .venv/bin/python benchmarks/bench_dynunet.py [--data DIR] [--preset quick] [--fold 0] [--baseline]
      (without --data a 24-case phantom at 40x80x80 is made in a temporary folder)
Goal (2 CPU cores, quick): fit + predict <= 60 s per fold; beat threshold-baseline's Dice.
No GPU here: paper-preset (GPU) timings are not measured.
"""

from __future__ import annotations

import json
import resource
import tempfile
from pathlib import Path

from avnbench.data.dataset import load_dataset

from _common import (  # benchmarks/ is on sys.path when a script runs
    dataset_or_phantom, describe_fold, fold_job, mean_dice, method_bench_parser, timed_fit_predict,
)


def bench(data: Path, workdir: Path, preset: str, fold: int, device: str, baseline: bool) -> None:
    from avnbench_dynunet.method import DynUNetMethod

    dataset = load_dataset(data)
    job, fit_train, fit_val, val_cases = fold_job(DynUNetMethod.card.name, dataset, fold, workdir, preset, device)
    print(describe_fold(dataset, fold, fit_train, fit_val, val_cases, preset, device))
    predictions, (fit_s, fit_cpu), (predict_s, predict_cpu) = timed_fit_predict(
        DynUNetMethod, job, dataset, fit_train, fit_val, val_cases
    )
    refs = [c.label_array() for c in val_cases]
    params = job.job_dir / "training_params.json"
    print(f"fit               {fit_s:7.1f} s wall   {fit_cpu:7.1f} s CPU")
    print(f"predict per case  {predict_s:7.2f} s wall   {predict_cpu:7.2f} s CPU")
    print(f"fit + predict     {fit_s + predict_s * len(val_cases):7.1f} s wall for the fold")
    print(f"peak RSS          {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:7.0f} MiB")
    print("dice dynunet      " + "  ".join(f"{k} {v:.3f}" for k, v in mean_dice(predictions, refs).items()))
    if baseline:
        from avnbench_threshold_baseline.method import ThresholdBaseline

        base_job, *base_cases = fold_job(ThresholdBaseline.card.name, dataset, fold, workdir, "quick", device)
        base_predictions, _, _ = timed_fit_predict(ThresholdBaseline, base_job, dataset, *base_cases)
        print("dice threshold    " + "  ".join(f"{k} {v:.3f}" for k, v in mean_dice(base_predictions, refs).items()))
    chosen = json.loads(params.read_text()) if params.exists() else {}
    print(f"chosen            {json.dumps(chosen, separators=(',', ':'))}")


def main() -> None:
    parser = method_bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--baseline", action="store_true", help="also score threshold-baseline on the same fold")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = dataset_or_phantom(args.data, tmp)
        bench(data, Path(tmp) / "work", args.preset, args.fold, args.device, args.baseline)


if __name__ == "__main__":
    main()
