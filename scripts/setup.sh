#!/usr/bin/env bash
# Create .venv (if needed) and install avnbench, every plugin under plugins/ and the test tools.
# Re-running is cheap: nothing is reinstalled unless a pyproject or the constraints changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.avnbench-installed
want=$(cat constraints.txt pyproject.toml plugins/*/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
editables=(-e ".[test]")
for p in plugins/*/; do editables+=(-e "$p"); done
echo "Installing avnbench and its plugins into .venv (the first time takes several minutes)..."
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt "${editables[@]}"
echo "$want" > "$stamp"
