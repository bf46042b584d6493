#!/usr/bin/env bash
# The test suite, as README names it and CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python
[ -x .venv/bin/python ] && PY=.venv/bin/python
export WANDB_MODE="${WANDB_MODE:-offline}"
# --quick: the unit tests without the real-data learning runs (marked slow)
ARGS=()
for arg in "$@"; do
  if [ "$arg" = "--quick" ]; then ARGS+=(-m "not slow"); else ARGS+=("$arg"); fi
done
# the 15 slowest tests are printed at the end of every run, so growth is visible
exec "$PY" -m pytest -q --durations=15 "${ARGS[@]}"
