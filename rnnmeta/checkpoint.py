"""Checkpoint files: refuse a truncated or corrupt one with a clear error before Lightning loads it.

Lightning checkpoints are ``torch.save`` zip archives. A run killed while a checkpoint was being
copied, a partial download or a disk error leaves a file that ``torch.load`` rejects deep inside
its zip reader ("failed finding central directory"). :func:`check_checkpoint_file` reads the
archive's directory and the CRC of every member, without unpickling anything, and names the file
and what to do instead.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, Mapping

__all__ = ["CorruptCheckpointError", "LIGHTNING_CKPT_ALIASES", "check_checkpoint_file", "identity_differences"]

#: ``ckpt_path`` values Lightning resolves itself (not file paths).
LIGHTNING_CKPT_ALIASES = frozenset({"last", "best", "hpc", "registry"})
#: What a checkpoint's ``"rnnmeta"`` entry records of the learner that wrote it.
IDENTITY_KEYS = ("learner", "kind", "n_way", "target_dim")


def identity_differences(saved: Mapping[str, Any], mine: Mapping[str, Any]) -> list[str]:
    """The :data:`IDENTITY_KEYS` on which a checkpoint's ``"rnnmeta"`` entry and a learner's identity differ."""
    return [key for key in IDENTITY_KEYS if saved.get(key) != mine.get(key)]


class CorruptCheckpointError(ValueError):
    """A checkpoint file that is truncated, corrupt or not a checkpoint at all."""


def check_checkpoint_file(path: str | os.PathLike) -> Path:
    """Check that ``path`` is a complete ``torch.save`` archive; return it as a :class:`~pathlib.Path`.

    Raises:
        FileNotFoundError: no such file.
        CorruptCheckpointError: the file is not a zip archive (truncated: its directory, written
            last, is missing), or a member fails its CRC check.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (ckpt_path must name a .ckpt file)")
    hint = "it is truncated or corrupt; use another checkpoint of the run (last.ckpt, step=*.ckpt, best-*.ckpt)"
    if path.stat().st_size == 0:
        raise CorruptCheckpointError(f"checkpoint {path} is empty: {hint}")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CorruptCheckpointError(f"checkpoint {path} cannot be read as a torch.save archive ({err}): {hint}") from err
    if bad is not None:
        raise CorruptCheckpointError(f"checkpoint {path}: member {bad!r} fails its CRC check: {hint}")
    return path
