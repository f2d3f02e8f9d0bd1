"""The GPU table of ``benchmarks/README.md``, from the job folders of a ``benchmarks/gpu_paper.sh`` run.

Per method (and preset) over its finished folds: training epochs, mean seconds per epoch
(``epoch_seconds`` in each fold's ``training_log.jsonl``: reported by the shared training loop,
and by nnU-Net's trainer), fit seconds per fold and inference seconds per case (``result.json``),
and peak GPU memory: ``torch.cuda.max_memory_allocated`` as the training loop records it
(``peak_gpu_memory_mib``), else the peak of the device's used memory that the script sampled with
``nvidia-smi`` while the method ran (``<gpu-mem-dir>/<method>.txt``, MiB), said in the column.

Run as ``python -m avnbench.reporting.report_gpu --work DIR --readme benchmarks/README.md ...``;
the table replaces what lies between :data:`START` and :data:`END` in the readme.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from avnbench.errors import ConfigError

START = "<!-- gpu-table:start -->"
END = "<!-- gpu-table:end -->"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def method_timings(work: Path, method: str, preset: str, gpu_mem_dir: Path | None = None) -> dict | None:
    """Timing and memory of one method's finished folds under ``work`` (None: no finished fold)."""
    results = sorted(Path(work).glob(f"*/{method}/{preset}/fold_*/result.json"))
    if not results:
        return None
    epochs, epoch_seconds, torch_peak = 0, [], []
    fit, predict, n_cases = [], 0.0, 0
    for path in results:
        result = json.loads(path.read_text(encoding="utf-8"))
        fit.append(float(result["fit_seconds"]))
        predict += float(result["predict_seconds"])
        n_cases += int(result["n_cases"])
        log = path.parent / "training_log.jsonl"
        if log.exists():
            points = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
            seconds = [p["value"] for p in points if p["name"] == "epoch_seconds"]
            epochs = max(epochs, len(seconds))
            epoch_seconds += seconds
            torch_peak += [p["value"] for p in points if p["name"] == "peak_gpu_memory_mib"]
    sampled = None
    if gpu_mem_dir is not None and (Path(gpu_mem_dir) / f"{method}.txt").exists():
        values = [float(v) for v in (Path(gpu_mem_dir) / f"{method}.txt").read_text().split() if v.strip()]
        sampled = max(values) if values else None
    if torch_peak:
        memory = f"{max(torch_peak):.0f} (torch max allocated)"
    elif sampled is not None:
        memory = f"{sampled:.0f} (nvidia-smi, device used)"
    else:
        memory = "–"
    return {"method": method, "preset": preset, "folds": len(results), "epochs": epochs,
            "epoch_seconds": sum(epoch_seconds) / len(epoch_seconds) if epoch_seconds else None,
            "fit_seconds": sum(fit) / len(fit), "predict_seconds_per_case": predict / max(n_cases, 1),
            "n_cases": n_cases, "peak_gpu_memory": memory}


def gpu_table(rows: list[dict], header: str) -> str:
    """The markdown of the table with its provenance line above it."""
    lines = [header, "", ("| method | preset | folds | epochs | s/epoch (mean) | fit s/fold | inference s/case | "
                          "peak GPU memory (MiB) |"), "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['preset']} | {r['folds']} | {r['epochs'] or '–'} | "
                     f"{_fmt(r['epoch_seconds'])} | {_fmt(r['fit_seconds'], 1)} | "
                     f"{_fmt(r['predict_seconds_per_case'], 3)} | {r['peak_gpu_memory']} |")
    return "\n".join(lines)


def replace_table(readme: Path, table: str) -> None:
    """Put ``table`` between the GPU-table markers of ``readme`` (appended with them if absent)."""
    text = Path(readme).read_text(encoding="utf-8") if Path(readme).exists() else ""
    block = f"{START}\n{table}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## GPU run of the paper presets (`benchmarks/gpu_paper.sh`)\n\n" + block + "\n"
    Path(readme).write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--readme", type=Path, required=True)
    parser.add_argument("--preset", required=True)
    parser.add_argument("--method", action="append", required=True)
    parser.add_argument("--gpu-mem-dir", type=Path)
    parser.add_argument("--header", required=True, help="provenance line: date, device, data, command")
    args = parser.parse_args(argv)
    rows = [t for m in args.method if (t := method_timings(args.work, m, args.preset, args.gpu_mem_dir))]
    if not rows:
        raise ConfigError(f"no finished fold of {', '.join(args.method)} ({args.preset}) under {args.work}; "
                          "run benchmarks/gpu_paper.sh first")
    replace_table(args.readme, gpu_table(rows, args.header))


if __name__ == "__main__":
    main()
