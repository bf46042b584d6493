#!/usr/bin/env bash
# Create .venv and install rnnmeta with the pinned versions in requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
.venv/bin/python -m pip install --quiet --no-deps -e .
echo "rnnmeta installed in .venv (activate with: . .venv/bin/activate)"
