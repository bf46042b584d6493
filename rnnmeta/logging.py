"""Weights & Biases set-up: online with an account, offline without one, never a prompt.

``rnnmeta`` logs to W&B by default. With no account configured (no ``WANDB_API_KEY`` and no
``api.wandb.ai`` entry in ``~/.netrc``) and no explicit ``WANDB_MODE``, runs are written offline
under ``wandb/`` and can be uploaded later with ``wandb sync wandb/offline-run-*``.
"""

from __future__ import annotations

import os
from pathlib import Path


def wandb_account_configured() -> bool:
    """True when W&B has credentials: ``WANDB_API_KEY`` or an ``api.wandb.ai`` entry in ``~/.netrc``."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def ensure_wandb_mode() -> str:
    """Set ``WANDB_MODE=offline`` unless the user chose a mode or has an account; return the mode in force."""
    if "WANDB_MODE" not in os.environ and not wandb_account_configured():
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    return os.environ.get("WANDB_MODE", "online")
