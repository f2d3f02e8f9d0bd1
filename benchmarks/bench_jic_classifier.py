"""jic-classifier speed, memory and accuracy: fit seconds, predict seconds per case, peak memory,
JIC accuracy against the majority-class rate.

Runs the method the way the runner does (same internal validation carve, work-folder layout,
labels hidden from predict) on one or more folds of a phantom and prints per fold: fit seconds
(wall and process CPU), predict seconds per case (wall and CPU), the epoch the checkpoint was
selected at, the JIC accuracy on the fold's validation cases that have a reference type, and
the majority-class rate (the accuracy of always predicting the most frequent JIC type of the
fold's training cases), plus the heat map's top-decile-on-necrosis localisation score
(avnbench.evaluation.localization). Ends with the totals over the folds run and the peak RSS.

Run:  .venv/bin/python benchmarks/bench_jic_classifier.py [--data DIR] [--preset quick] [--folds 0]
      (--folds all runs every fold; without --data a 24-case phantom at 40x80x80 is made in a
      temporary folder)
Goal (2 CPU cores, quick): fit + predict <= 20 s per fold; accuracy clearly above the
majority-class rate. No GPU here: paper-preset (GPU) timings are not measured.
"""

from __future__ import annotations

import json
import resource
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from avnbench.data.dataset import load_dataset
from avnbench.evaluation.localization import heatmap_top_decile_on_necrosis
from avnbench.evaluation.slices import mid_coronal_slice
from avnbench.data.splits import ensure_splits

from _common import (  # benchmarks/ is on sys.path when a script runs
    dataset_or_phantom, fold_job, method_bench_parser, timed_fit_predict,
)


def bench_fold(dataset, folds, fold: int, workdir: Path, preset: str, device: str) -> dict:
    from avnbench_jic_classifier.method import MODEL_FILE, JicClassifier

    job, fit_train, fit_val, val_cases = fold_job(JicClassifier.card.name, dataset, fold, workdir, preset, device)
    train_all = dataset.subset(job.train_ids)
    predictions, (fit_wall, fit_cpu), (predict_wall, predict_cpu) = timed_fit_predict(
        JicClassifier, job, dataset, fit_train, fit_val, val_cases
    )

    classes = JicClassifier.card.classes
    majority = Counter(c.meta.jic for c in train_all if c.meta.jic is not None).most_common(1)[0][0]
    graded = [(p, c) for p, c in zip(predictions, val_cases) if c.meta.jic is not None]
    hits = [classes[int(np.argmax(p.probabilities))] == c.meta.jic for p, c in graded]
    majority_hits = [c.meta.jic == majority for _, c in graded]
    localisation = [
        heatmap_top_decile_on_necrosis(p.heatmap, mid_coronal_slice(c.label_array(), c.meta).array)
        for p, c in graded
    ]
    selected = json.loads((job.job_dir / MODEL_FILE).read_text())["selected_epoch"]
    print(
        f"fold {fold}: {len(fit_train)} train + {len(fit_val)} internal val, {len(val_cases)} "
        f"predicted ({len(graded)} with a JIC type) | fit {fit_wall:.1f} s wall, {fit_cpu:.1f} s "
        f"CPU | predict {predict_wall:.3f} s/case wall, {predict_cpu:.3f} s CPU | epoch "
        f"{selected} | accuracy {np.mean(hits):.2f} vs majority ({majority}) "
        f"{np.mean(majority_hits):.2f} | heat map on necrosis "
        f"{np.mean([s for s in localisation if s is not None]):.2f}",
        flush=True,
    )
    return {
        "hits": hits, "majority_hits": majority_hits, "fit_wall": fit_wall, "fit_cpu": fit_cpu,
        "predict_wall": predict_wall, "localisation": [s for s in localisation if s is not None],
    }  # fmt: skip


def main() -> None:
    parser = method_bench_parser(__doc__.splitlines()[0], fold_option=False)
    parser.add_argument("--folds", default="0", help="e.g. 0 or 0,2 or all")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = dataset_or_phantom(args.data, tmp)
        dataset = load_dataset(data)
        folds, _ = ensure_splits(dataset)
        fold_ids = range(len(folds)) if args.folds == "all" else [int(f) for f in args.folds.split(",")]
        print(f"{dataset.name}: jic-classifier preset {args.preset!r} on {args.device}")
        results = [bench_fold(dataset, folds, k, Path(tmp) / "work", args.preset, args.device) for k in fold_ids]

    hits = [h for r in results for h in r["hits"]]
    majority = [h for r in results for h in r["majority_hits"]]
    print(
        f"total over folds {list(fold_ids)}: accuracy {np.mean(hits):.3f} ({sum(hits)}/{len(hits)}) "
        f"vs majority-class rate {np.mean(majority):.3f} | mean fit {np.mean([r['fit_wall'] for r in results]):.1f} s "
        f"wall, {np.mean([r['fit_cpu'] for r in results]):.1f} s CPU | heat map on necrosis "
        f"{np.mean([s for r in results for s in r['localisation']]):.2f} | peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()
