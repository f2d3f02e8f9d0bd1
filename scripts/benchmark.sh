#!/usr/bin/env bash
# Set up .venv if needed, run every registered method (quick presets, all folds) on the built-in
# phantom, and write the leaderboard. On a CPU the phantom is the half-resolution one (24 cases,
# 40x80x80); with a GPU the full default (40 cases, 80x160x160).
#
# On a machine without a CUDA GPU the jobs run side by side, one single-threaded job per core, on
# a local Ray (--executor ray --cpu-threads 1, nnU-Net's augmentation in its training process):
# nnU-Net's one training thread leaves its augmentation worker's core mostly idle, so one job per
# core keeps both cores busy (measured in benchmarks/README.md). Arguments given to this script go
# to `avnbench run` after these, so they win (e.g. --executor local). AVNBENCH_BOARD_OUT sets the
# leaderboard's folder (default leaderboards/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
args=(--method all --preset "${AVNBENCH_PRESET:-quick}")
if ! .venv/bin/python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  args+=(--executor ray --cpu-threads 1 --set data_augmentation_processes=0)
fi
.venv/bin/avnbench run "${args[@]}" "$@"
.venv/bin/avnbench leaderboard ${AVNBENCH_BOARD_OUT:+--out "$AVNBENCH_BOARD_OUT"}
