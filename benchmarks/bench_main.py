"""The README's main command, timed: wall time of the whole command and each (method, fold) job's time.

Run:  .venv/bin/python benchmarks/bench_main.py [--out DIR] [--fresh-cache] [--checkout DIR] [-- ARGS]
e.g.  .venv/bin/python benchmarks/bench_main.py --out /tmp/main --fresh-cache
      .venv/bin/python benchmarks/bench_main.py --out /tmp/old --fresh-cache --checkout /tmp/old-clone

Runs ``bash scripts/benchmark.sh`` (the README's main command: every method, ``quick``, all folds,
the built-in phantom, then the leaderboard) of this checkout, or of ``--checkout`` (another clone,
e.g. an older commit, for the back-to-back ratio), with its set-up already done, from a clean
work folder and MLflow store in ``--out`` (which must be empty or missing). ARGS after ``--`` go to
``avnbench run``. ``--fresh-cache`` generates the built-in phantom anew inside ``--out``, so
its generation is part of the time, as on a fresh machine. Prints the wall time, every job's
fit and predict seconds from its ``result.json`` (checkouts from before ``result.json`` existed
print the wall time only), per-method totals and what the jobs do not account for, and writes
them to ``DIR/bench_main.json``.

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


def timed(cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> float:
    """Run ``cmd`` with its output in ``log``; its wall time (s). Exits if it fails."""
    t0 = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    wall = time.perf_counter() - t0
    if rc != 0:
        sys.exit(f"{' '.join(cmd)} failed with exit status {rc}; see {log}")
    return wall


def job_times(workdir: Path) -> list[dict]:
    """Each finished job's method, preset, fold and fit/predict seconds, from its result.json."""
    jobs = []
    for path in sorted(workdir.rglob("result.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        # older commits' result.json do not name method and preset; their folder does
        # (<dataset>/<method>/<preset>/fold_<k>/result.json)
        method, preset = data.get("method", path.parts[-4]), data.get("preset", path.parts[-3])
        jobs.append({
            "method": method, "preset": preset, "fold": data["fold"],
            "fit_s": float(data["fit_seconds"]),
            "predict_s": float(data["predict_seconds"]), "n_cases": int(data["n_cases"]),
        })
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="empty folder for the work folder, store and logs")
    parser.add_argument("--fresh-cache", action="store_true",
                        help="generate the built-in phantom again (a new cache folder in --out)")
    parser.add_argument("--checkout", type=Path, default=ROOT,
                        help="the clone whose scripts/benchmark.sh to time (default: this one)")
    parser.add_argument("run_args", nargs="*", help="passed to avnbench run (after --)")
    args = parser.parse_args()
    out = (args.out or Path(f"/tmp/avnbench-bench-main-{int(time.time())}")).resolve()
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} is not empty; give an empty or new --out folder (the run must start clean)")
    out.mkdir(parents=True, exist_ok=True)
    checkout = args.checkout.resolve()
    if not (checkout / ".venv" / ".avnbench-installed").is_file():
        sys.exit(f"{checkout} has no set-up .venv; run 'bash scripts/setup.sh' there first (its time is not measured)")
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{out / 'mlflow.db'}",
               AVNBENCH_BOARD_OUT=str(out / "leaderboards"))
    if args.fresh_cache:
        env["AVNBENCH_CACHE"] = str(out / "cache")
    cmd = ["bash", "scripts/benchmark.sh", "--workdir", str(out / "work"), *args.run_args]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, check=False,
                            text=True).stdout.strip()
    print(f"running in {checkout} (commit {commit}): {' '.join(cmd)}", flush=True)
    wall = timed(cmd, out / "run.log", env, checkout)
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
    print(f"\nmain command (run + leaderboard): {wall:.0f} s wall ({wall / 60:.1f} min), commit {commit}")
    if jobs:
        print(f"jobs' fit + predict: {in_jobs:.0f} s summed over jobs ({in_jobs / wall:.2f}× the wall time: "
              f"above 1 when jobs ran side by side); the rest of the wall time is start-up, phantom "
              f"generation, nnU-Net's preprocessing, scoring and MLflow")
    else:
        print("no result.json in the work folder (a checkout from before they existed): wall time only")
    print(f"cores: {os.cpu_count()}; load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    (out / "bench_main.json").write_text(json.dumps({
        "checkout": str(checkout), "commit": commit, "run_args": args.run_args, "wall_s": wall,
        "jobs": jobs, "cpu_count": os.cpu_count(), "loadavg_end": os.getloadavg(),
    }, indent=2) + "\n")
    print(f"written: {out / 'bench_main.json'}, leaderboards in {out / 'leaderboards'}")


if __name__ == "__main__":
    main()
