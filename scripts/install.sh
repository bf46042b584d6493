#!/usr/bin/env bash
# Create .venv and install rnnmeta with the pinned versions in requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
# Robot control (rnnmeta.rl MuJoCo families, their tests): gymnasium + mujoco, about 90 MB and a few seconds
# (mujoco 4's split packages, left by an unpinned `pip install gymnasium[mujoco]`, break mujoco 3.3.0's import)
if .venv/bin/python -m pip show -q mujoco-core >/dev/null 2>&1; then
    .venv/bin/python -m pip uninstall --quiet -y mujoco mujoco-core mujoco-studio
fi
.venv/bin/python -m pip install --quiet -r requirements-mujoco.txt
.venv/bin/python -m pip install --quiet --no-deps -e .
echo "rnnmeta installed in .venv (activate with: . .venv/bin/activate)"
