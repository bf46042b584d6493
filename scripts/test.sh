#!/usr/bin/env bash
# The test suite, as README names it and CI runs it.
#   bash scripts/test.sh            every test, one pytest-xdist worker per usable core
#   bash scripts/test.sh --quick    without the tests marked slow (learning runs on real data, whole commands in child processes)
# RNNMETA_TEST_WORKERS=N sets the number of worker processes (1: one process, no xdist; default auto).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python
[ -x .venv/bin/python ] && PY=.venv/bin/python
export WANDB_MODE="${WANDB_MODE:-offline}"
ARGS=()
for arg in "$@"; do
  if [ "$arg" = "--quick" ]; then ARGS+=(-m "not slow"); else ARGS+=("$arg"); fi
done
# tests run in parallel: pytest-xdist's "auto" is one worker per usable core (each worker takes its share of
# the torch threads: tests/conftest.py); loadgroup keeps the tests of an xdist_group (a costly module fixture)
# on one worker
WORKERS="${RNNMETA_TEST_WORKERS:-auto}"
if ! [[ "$WORKERS" =~ ^(auto|[1-9][0-9]*)$ ]]; then
  echo "RNNMETA_TEST_WORKERS must be an integer >= 1 or auto, got '$WORKERS'" >&2
  exit 2
fi
if [ "$WORKERS" != 1 ]; then
  if "$PY" -c "import xdist" 2>/dev/null; then
    ARGS=(-n "$WORKERS" --dist loadgroup "${ARGS[@]}")
  else
    echo "pytest-xdist is not installed (pip install -r requirements.txt): running the tests in one process" >&2
  fi
fi
# the 15 slowest tests are printed at the end of every run, so growth is visible
exec "$PY" -m pytest -q --durations=15 "${ARGS[@]+"${ARGS[@]}"}"
