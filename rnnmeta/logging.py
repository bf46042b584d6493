"""Console and Weights & Biases set-up: online with an account, offline without one, never a prompt.

:func:`quiet_console` keeps third-party chatter out of the ``rnnmeta`` commands' output; it is
called by the commands, never at import time, so a user's own Python session keeps its warnings.
W&B's behaviour without an account and the place of its debug logs are described in README.md
("Logging").
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Optional


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


def point_wandb_cache(save_dir: str | os.PathLike) -> Optional[Path]:
    """Send W&B's cache, and with it the service's debug logs, to ``<save_dir>/wandb/`` unless the user chose a place.

    W&B writes ``core-debug-*.log`` and ``symon-debug-*.log`` for every process under
    ``$WANDB_CACHE_DIR/wandb/logs/`` (``~/.cache/wandb/logs/`` by default). Takes effect for the W&B
    service started after the call. Returns the logs folder, or None when ``WANDB_CACHE_DIR`` was set.
    """
    if os.environ.get("WANDB_CACHE_DIR"):
        return None
    root = Path(save_dir).expanduser().absolute()
    os.environ["WANDB_CACHE_DIR"] = str(root)
    return root / "wandb" / "logs"


class _DropTips(logging.Filter):
    """Drop Lightning's promotional ``💡 Tip:`` log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.getMessage())


#: Warnings raised inside Lightning about its own dependencies: nothing a user of rnnmeta can act on.
THIRD_PARTY_CHATTER = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)


def quiet_console() -> None:
    """Keep Lightning's tips and third-party deprecation chatter out of a command's console (idempotent)."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in log.filters):
            log.addFilter(_DropTips())
    for message in THIRD_PARTY_CHATTER:
        warnings.filterwarnings("ignore", message=message)
