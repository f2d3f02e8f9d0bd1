"""The README's main command, timed: wall time of the whole run and each (method, fold) job's time.

Run:  .venv/bin/python benchmarks/bench_main.py [--out DIR] [-- ARGS FOR avnbench run]
e.g.  .venv/bin/python benchmarks/bench_main.py --out /tmp/main -- --folds 0

Runs ``avnbench run --method all --preset quick`` (every method, all folds, the built-in phantom)
from a clean work folder and MLflow store in ``--out`` (which must be empty or missing), then
``avnbench leaderboard``, exactly as ``scripts/benchmark.sh`` does after its set-up. The built-in
phantom is generated into avnbench's cache once; its generation is timed apart when it happens
here (pass ``--fresh-cache`` to make it happen). Prints the wall time of each step, every job's
fit and predict seconds from its ``result.json``, per method totals, and what the jobs do not
account for (start-up, nnU-Net's preprocessing, scoring, MLflow), and writes them to
``DIR/bench_main.json``.

Goal (issue 17, DESIGN.md): the main command within 30 minutes on 2 CPU cores, and at most 0.5×
the wall time of the main command before the change, measured back to back on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AVNBENCH = ROOT / ".venv" / "bin" / "avnbench"


def timed(cmd: list[str], log: Path, env: dict[str, str]) -> float:
    """Run ``cmd`` with its output in ``log``; its wall time (s). Exits if it fails."""
    t0 = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if rc != 0:
        sys.exit(f"{' '.join(cmd)} failed with exit status {rc}; see {log}")
    return wall


def job_times(workdir: Path) -> list[dict]:
    """Each finished job's method, preset, fold and fit/predict seconds, from its result.json."""
    jobs = []
    for path in sorted(workdir.rglob("result.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        jobs.append({
            "method": data["method"], "preset": data["preset"], "fold": data["fold"],
            "fit_s": float(data["fit_seconds"]),
            "predict_s": float(data["predict_seconds"]), "n_cases": int(data["n_cases"]),
        })
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="empty folder for the work folder, store and logs")
    parser.add_argument("--fresh-cache", action="store_true",
                        help="generate the built-in phantom again (a new cache folder in --out)")
    parser.add_argument("run_args", nargs="*", help="passed to avnbench run (after --)")
    args = parser.parse_args()
    out = args.out or Path(f"/tmp/avnbench-bench-main-{int(time.time())}")
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} is not empty; give an empty or new --out folder (the run must start clean)")
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.fresh_cache:
        env["AVNBENCH_CACHE"] = str(out / "cache")
    uri = f"sqlite:///{out / 'mlflow.db'}"
    run_cmd = [str(AVNBENCH), "run", "--method", "all", "--preset", "quick", "--workdir", str(out / "work"),
               "--tracking-uri", uri, *args.run_args]
    board_cmd = [str(AVNBENCH), "leaderboard", "--tracking-uri", uri, "--out", str(out / "leaderboards")]
    print(f"running: {' '.join(run_cmd)}", flush=True)
    run_wall = timed(run_cmd, out / "run.log", env)
    board_wall = timed(board_cmd, out / "leaderboard.log", env)
    jobs = job_times(out / "work")

    print(f"\n{'method':<20} {'fold':>4} {'fit s':>8} {'predict s':>10} {'cases':>6}")
    per_method: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for j in sorted(jobs, key=lambda j: (j["method"], str(j["fold"]))):
        print(f"{j['method']:<20} {j['fold']:>4} {j['fit_s']:>8.1f} {j['predict_s']:>10.1f} {j['n_cases']:>6}")
        m = per_method[j["method"]]
        m[0] += j["fit_s"]
        m[1] += j["predict_s"]
        m[2] += 1
    print(f"\n{'method':<20} {'jobs':>4} {'fit s':>8} {'predict s':>10}")
    for method, (fit, predict, n) in sorted(per_method.items(), key=lambda kv: -kv[1][0] - kv[1][1]):
        print(f"{method:<20} {n:>4} {fit:>8.1f} {predict:>10.1f}")
    in_jobs = sum(j["fit_s"] + j["predict_s"] for j in jobs)
    print(f"\navnbench run: {run_wall:.0f} s wall ({run_wall / 60:.1f} min); jobs' fit + predict {in_jobs:.0f} s; "
          f"the rest (start-up, preprocessing, scoring, MLflow) {run_wall - in_jobs:.0f} s")
    print(f"avnbench leaderboard: {board_wall:.0f} s; main command in all: {(run_wall + board_wall) / 60:.1f} min")
    print(f"cores: {os.cpu_count()}; load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    (out / "bench_main.json").write_text(json.dumps({
        "run_args": args.run_args, "run_wall_s": run_wall, "leaderboard_wall_s": board_wall,
        "jobs": jobs, "cpu_count": os.cpu_count(), "loadavg_end": os.getloadavg(),
    }, indent=2) + "\n")
    print(f"written: {out / 'bench_main.json'}, leaderboards in {out / 'leaderboards'}")


if __name__ == "__main__":
    main()
