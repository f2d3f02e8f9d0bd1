#!/usr/bin/env bash
# Set up .venv if needed, run every registered method (quick presets, all folds) on the built-in
# phantom, and write the leaderboard. On a CPU the phantom is the half-resolution one (24 cases,
# 40x80x80); with a GPU the full default (40 cases, 80x160x160).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/avnbench run --method all --preset "${AVNBENCH_PRESET:-quick}" "$@"
.venv/bin/avnbench leaderboard
