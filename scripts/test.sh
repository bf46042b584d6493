#!/usr/bin/env bash
# The test suite, as README names it and CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python
[ -x .venv/bin/python ] && PY=.venv/bin/python
export WANDB_MODE="${WANDB_MODE:-offline}"
exec "$PY" -m pytest -q "$@"
