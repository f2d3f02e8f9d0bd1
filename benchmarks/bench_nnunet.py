"""nnU-Net plugin speed and memory: fit seconds, predict seconds per case, peak memory, Dice.

Runs nnunet-2d, nnunet-3d, then nnunet-ensemble (which reuses the two members) on one fold of a
phantom, the way the runner calls them (same work-folder layout, internal validation carve and
shared folder), and prints per method: fit s (the first one includes nnU-Net's once-per-dataset
fingerprint/planning/preprocessing, reported separately), predict s per case, peak RSS of this
process and of the nnU-Net child processes, and mean Dice (vital, necrosis) on the fold's
validation cases (scored with avnbench.evaluation.scoring.dice; the benchmark's full scoring is the runner's).

Run:  .venv/bin/python benchmarks/bench_nnunet.py [--data DIR] [--preset quick] [--fold 0]
      (without --data a 24-case phantom at 40x80x80 is made in a temporary folder)
Measured figures and the machine they were taken on: benchmarks/README.md. No GPU here: the
paper preset's timings were not measured.
"""

from __future__ import annotations

import json
import resource
import tempfile
from pathlib import Path


from avnbench.data.dataset import load_dataset

from _common import (  # benchmarks/ is on sys.path when a script runs
    REGIONS, dataset_or_phantom, describe_fold, fold_job, mean_dice, method_bench_parser, timed_fit_predict,
)


def bench(data: Path, workdir: Path, preset: str, fold: int, device: str) -> None:
    from avnbench_nnunet.method import NnunetEnsemble, NnunetThreeD, NnunetTwoD

    dataset = load_dataset(data)
    jobs = {cls: fold_job(cls.card.name, dataset, fold, workdir, preset, device) for cls in (NnunetTwoD, NnunetThreeD, NnunetEnsemble)}
    _, fit_train, fit_val, val_cases = jobs[NnunetTwoD]
    print(describe_fold(dataset, fold, fit_train, fit_val, val_cases, preset, device))
    refs = [c.label_array() for c in val_cases]
    for cls, (job, *cases) in jobs.items():
        predictions, (fit_s, _), (predict_s, _) = timed_fit_predict(cls, job, dataset, *cases)
        scores = mean_dice(predictions, refs, REGIONS[:2])
        members = json.loads((job.job_dir / "nnunet_models.json").read_text())["members"]
        reused = [m["configuration"] for m in members if not m["trained_now"]]
        self_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        child_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"{cls.card.name:16s} fit {fit_s:6.1f} s  predict {predict_s:5.2f} s/case  "
              f"fit+predict {fit_s + predict_s * len(val_cases):6.1f} s  "
              f"Dice vital {scores['vital']:.3f} necrosis {scores['necrosis']:.3f}  "
              f"peak RSS self {self_mib:.0f} MiB, children {child_mib:.0f} MiB"
              + (f"  (reused: {', '.join(reused)})" if reused else ""))
    logs = next(Path(jobs[NnunetTwoD][0].shared_dir).glob("nnunet/*/logs"))
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
